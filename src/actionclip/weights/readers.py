"""Reading weight files without executing them, and fitting their tensors into a model.

Formats: safetensors, OpenAI's TorchScript archives, and ``torch.load(weights_only=True)`` pickles (state dicts,
optionally wrapped in ``{"state_dict": ...}`` or ``{"model": ...}`` with DDP's ``module.`` prefixes). The importers
of ``actionclip.checkpoints`` (one per format) and the CLIP backbones of ``actionclip.models.backbone`` build on
these. ``tensor_digest`` hashes a payload's tensors, for files that must be verified when
read again (resumable checkpoints, the text-feature cache).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from actionclip.weights.errors import CheckpointError
from actionclip.weights.torchscript import read_torchscript_state_dict

# Keys of OpenAI's TorchScript archives that are not parameters.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def refusal(error: pickle.UnpicklingError) -> str:
    """What the weights-only unpickler refused, without torch's advice to retry with ``weights_only=False``: that
    would execute whatever the file holds."""
    refused = re.search(r"WeightsUnpickler error: (.*?)(?:\. |\n|$)", str(error))
    return refused[1] if refused else str(error).split("\n")[0]


def read_checkpoint(path: str | Path) -> Any:
    """Load a weight file without executing anything in it: safetensors, a TorchScript archive's tensors
    (``torchscript_archive``), or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if is_torchscript(path):
            return {k: v for k, v in read_torchscript_state_dict(path).items() if k not in _OPENAI_EXTRA_KEYS}
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused, it holds more than weights: {refusal(error)}") from error
    except Exception as error:  # every reader raises its own type on truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from error


def unwrap_state_dict(checkpoint: Any, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: unwraps ``state_dict``/``model`` and strips ``module.``."""
    if isinstance(checkpoint, dict) and "model_state_dict" in checkpoint:
        raise CheckpointError(f"{path}: an official ActionCLIP checkpoint; load it with actionclip.from_official_checkpoint")
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if key in checkpoint and isinstance(checkpoint[key], dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise CheckpointError(f"{path}: does not contain a state dict of tensors")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in checkpoint.items() if k not in _OPENAI_EXTRA_KEYS}


def infer_openai_config(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The config of an OpenAI-layout CLIP state dict, read off its shapes as OpenAI's ``build_model`` does
    (heads = width // 64), so any ViT or ResNet size loads, tiny ones included. QuickGELU, as OpenAI trained."""
    try:
        if "visual.proj" in state_dict:
            width = state_dict["visual.conv1.weight"].shape[0]
            patch = state_dict["visual.conv1.weight"].shape[-1]
            grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            layers = len([k for k in state_dict if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
            vision_cfg = {"layers": layers, "width": width, "patch_size": patch, "image_size": patch * grid, "head_width": 64}
        else:
            counts = [len({k.split(".")[2] for k in state_dict if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4)]
            width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
            grid = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            vision_cfg = {"layers": counts, "width": width, "image_size": grid * 32, "head_width": 64}
        text_width = state_dict["ln_final.weight"].shape[0]
        text_cfg = {
            "context_length": state_dict["positional_embedding"].shape[0],
            "vocab_size": state_dict["token_embedding.weight"].shape[0],
            "width": text_width,
            "heads": max(1, text_width // 64),
            "layers": len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
        }
        embed_dim = state_dict["text_projection"].shape[1]
    except KeyError as missing:
        raise CheckpointError(f"not an OpenAI-layout CLIP state dict: missing key {missing}") from None
    return {"embed_dim": embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg, "quick_gelu": True}


def key_mismatches(own: dict[str, tuple[int, ...]], theirs: dict[str, tuple[int, ...]]) -> str:
    """Every missing, unexpected or mis-shaped key of ``theirs`` (a file's shapes) against ``own`` (a model's), on one
    line; empty when they agree."""
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    mismatched = [
        f"{k}: file {tuple(theirs[k])} vs model {tuple(own[k])}" for k in own if k in theirs and tuple(theirs[k]) != tuple(own[k])
    ]
    parts = []
    for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if keys:
            parts.append(f"{title}: " + ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else ""))
    return "; ".join(parts)


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names every missing, unexpected or mis-shaped key."""
    own = module.state_dict()
    mismatches = key_mismatches({k: v.shape for k, v in own.items()}, {k: v.shape for k, v in state_dict.items()})
    if mismatches:
        raise CheckpointError(f"{source} does not fit the model: {mismatches}")
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()})


def tensor_digest(payload) -> str:
    """A hash of every tensor (names, dtypes, shapes, bytes) and every other value of a nested payload."""
    digest = hashlib.blake2b(digest_size=16)

    def visit(value, key: str) -> None:
        if isinstance(value, dict):
            for name in sorted(value, key=str):
                visit(value[name], f"{key}.{name}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{key}.{index}")
        elif isinstance(value, torch.Tensor):
            digest.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        else:
            digest.update(f"{key}={value!r}".encode())

    visit(payload, "")
    return digest.hexdigest()
