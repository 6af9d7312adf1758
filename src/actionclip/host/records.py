"""The JSON and ``.npy`` files actionclip writes and reads back (an export's ``export.json`` and label features, a
collection's ``collection.json``, manifest lines and shards), read as untrusted: a folder may be copied, edited or
mixed by hand, so every field is checked before it sizes an allocation or names a file, and a wrong one is one line,
``FILE: KEY: must be ..., got ...``. No torch: the ONNX runtime reads export directories with it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from actionclip.host.files import is_plain_name

# A check and what it asks for, as the error line says it.
Rule = tuple[Callable[[Any], bool], str]


def integer(low: int, high: int) -> Rule:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high, f"an integer from {low} to {high}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


NUMBER = (_is_number, "a finite number")
POSITIVE = (lambda v: _is_number(v) and v > 0, "a finite number > 0")
FLAG = (lambda v: isinstance(v, bool), "true or false")
TEXT = (lambda v: isinstance(v, str), "a string")
TEXTS = (lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v), "a non-empty list of strings")
PLAIN_NAME = (lambda v: isinstance(v, str) and is_plain_name(v), "a plain file name inside the folder (no folder, no ..)")
OBJECT = (lambda v: isinstance(v, dict), "a JSON object")


def numbers(count: int, low: float = -math.inf) -> Rule:
    return (
        lambda v: isinstance(v, list) and len(v) == count and all(_is_number(x) and x > low for x in v),
        f"a list of {count} finite numbers" + ("" if low == -math.inf else f" > {low:g}"),
    )


def one_of(*choices: Any) -> Rule:
    return lambda v: v in choices, "one of " + ", ".join(map(str, choices))


def optional(rule: Rule) -> Rule:
    return lambda v: v is None or rule[0](v), f"{rule[1]}, or null"


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(where: str | os.PathLike, data: Any, rules: dict[str, Rule], prefix: str = "", may_lack: tuple[str, ...] = ()) -> dict:
    """``data`` if it is an object with every key of ``rules`` (but those of ``may_lack``) as its rule asks, else a
    ValueError naming the first that is not (``prefix``: the keys above, as in ``files.video``)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: {prefix.rstrip('.') or 'the record'} must be a JSON object, got {_shown(data)}")
    for key, (ok, what) in rules.items():
        if key not in data:
            if key in may_lack:
                continue
            raise ValueError(f"{where}: {prefix}{key}: missing")
        if not ok(data[key]):
            raise ValueError(f"{where}: {prefix}{key}: must be {what}, got {_shown(data[key])}")
    return data


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"{path}: not valid JSON ({str(error).splitlines()[0][:80]})") from None


def load_npy(path: Path, shape: tuple[int | None, ...], dtype: np.dtype, mmap: bool = False) -> np.ndarray:
    """The array in ``path`` once its header says ``shape`` (None: any size there) and ``dtype`` and the file holds
    all of it: a truncated or foreign file is one line, not numpy's message from deep inside a read or a map."""
    if not path.is_file():
        raise ValueError(f"{path}: missing")
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if header is None:
                raise ValueError(f".npy format {version}")
            found, fortran, found_dtype = header(handle)
            offset = handle.tell()
    except (ValueError, OSError, SyntaxError) as error:
        raise ValueError(f"{path}: not a .npy array ({error})") from None
    if len(found) != len(shape) or any(want is not None and want != got for want, got in zip(shape, found)) or found_dtype != dtype:
        wanted = "x".join("N" if n is None else str(n) for n in shape)
        raise ValueError(f"{path}: holds {found_dtype} {found}, not {np.dtype(dtype)} [{wanted}]")
    if fortran or path.stat().st_size < offset + math.prod(found) * found_dtype.itemsize:
        raise ValueError(f"{path}: truncated or not as actionclip writes it (a {found_dtype} array {found})")
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
