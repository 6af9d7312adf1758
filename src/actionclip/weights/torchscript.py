"""The tensors of a TorchScript archive (OpenAI's released CLIP ``.pt`` files), read as data, never run.

``torch.jit.load`` rebuilds the scripted module, and so runs the archive's code: a module's TorchScript
``__setstate__`` can call ``torch.from_file`` or ``aten::save`` and read or write any path. Here the module tree in
``data.pkl`` is unpickled with every ``__torch__`` class replaced by a plain record of its attributes, tensors are
rebuilt from the archive's storages, and which attributes are parameters and buffers is read from the
``__parameters__`` / ``__buffers__`` lines of the archive's class declarations, as text.
"""

from __future__ import annotations

import collections
import pickle
import re
import zipfile
from pathlib import Path

import torch

# Storage types name the dtype of each tensor's bytes in the pickle.
_STORAGE_DTYPES = {
    f"{name}Storage": dtype
    for name, dtype in [
        ("Float", torch.float32),
        ("Half", torch.float16),
        ("BFloat16", torch.bfloat16),
        ("Double", torch.float64),
        ("Long", torch.int64),
        ("Int", torch.int32),
        ("Short", torch.int16),
        ("Char", torch.int8),
        ("Byte", torch.uint8),
        ("Bool", torch.bool),
    ]
}
_REBUILDERS = {"_rebuild_tensor_v2": torch._utils._rebuild_tensor_v2, "_rebuild_tensor": torch._utils._rebuild_tensor}
# TorchScript's typed containers: each returns its argument, so the data stands for itself.
_CONTAINERS = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "restore_type_tag")
_CLASS = re.compile(r"^class (\w+)\(", re.M)
_NAMES = re.compile(r'"([^"]*)"')


class ScriptObject(dict):
    """Stands in for an object of a TorchScript class: its attributes, and nothing of its code."""

    qualified_name = ""

    def __setstate__(self, state) -> None:
        if isinstance(state, dict):
            self.update(state)


def _identity(data, *type_tag):
    return data


class _ArchiveUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, prefix: str):
        super().__init__(archive.open(f"{prefix}data.pkl"))
        self.archive, self.prefix = archive, prefix
        self.classes: dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            return self.classes.setdefault(qualified, type(name, (ScriptObject,), {"qualified_name": qualified}))
        if module == "torch._utils" and name in _REBUILDERS:
            return _REBUILDERS[name]
        if module == "torch.jit._pickle" and name in _CONTAINERS:
            return _identity
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refused: {module}.{name} is not part of a TorchScript module's weights")

    def persistent_load(self, pid):
        kind, dtype, key = pid[0], pid[1], pid[2]
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"refused: persistent id {pid!r}")
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        untyped = torch.frombuffer(raw, dtype=torch.uint8).clone().untyped_storage() if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def _declared_state(archive: zipfile.ZipFile, prefix: str) -> dict[str, set[str]]:
    """``qualified class name -> names of its parameters and buffers``, from the class declarations in ``code/``."""
    declared = {}
    for name in archive.namelist():
        if not (name.startswith(f"{prefix}code/") and name.endswith(".py")):
            continue
        module = name[len(f"{prefix}code/") : -len(".py")].replace("/", ".")
        text = archive.read(name).decode("utf-8", errors="replace")
        starts = [(m.start(), m.group(1)) for m in _CLASS.finditer(text)] + [(len(text), "")]
        for (start, cls), (end, _) in zip(starts, starts[1:]):
            body = text[start:end]
            names = set()
            for kind in ("__parameters__", "__buffers__"):
                line = re.search(rf"^\s*{kind} = \[(.*)\]", body, re.M)
                names.update(_NAMES.findall(line.group(1)) if line else ())
            declared[f"{module}.{cls}"] = names
    return declared


def _flatten(obj: ScriptObject, declared: dict[str, set[str]], prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = declared.get(obj.qualified_name, set())
    for name, value in obj.items():
        if isinstance(value, ScriptObject):
            _flatten(value, declared, f"{prefix}{name}.", out)
        elif isinstance(value, torch.Tensor) and name in state:
            out[prefix + name] = value


def read_torchscript_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters and buffers of the scripted module in ``path``, named as its ``state_dict()`` names them."""
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"expected one <archive>/data.pkl, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        root = _ArchiveUnpickler(archive, prefix).load()
        if not isinstance(root, ScriptObject):
            raise ValueError(f"data.pkl holds a {type(root).__name__}, not a scripted module")
        state: dict[str, torch.Tensor] = {}
        _flatten(root, _declared_state(archive, prefix), "", state)
    return state
