"""Class text features cached on disk, keyed by the text tower's weights, the templates and the labels, so that
running ``predict`` again with the same labels does not run the text encoder (16 templates x 400 Kinetics classes
are 6,400 prompts)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from actionclip.prompts import resolve_templates


def default_cache_dir() -> Path:
    return Path(os.environ.get("ACTIONCLIP_CACHE", Path.home() / ".cache" / "actionclip")) / "text_features"


def text_weights_digest(model: nn.Module) -> str:
    """A hash of every tensor the class text features depend on (the text encoder and its dtype)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.text.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_class_text_features(model: nn.Module, labels, templates=None, cache_dir: str | Path | None = None) -> torch.Tensor:
    """``model.class_text_features(labels, templates)``, read from the cache when an identical request was made."""
    resolved = resolve_templates(templates if templates is not None else model.default_templates)
    request = {"arch": model.config.arch, "weights": text_weights_digest(model), "templates": resolved, "labels": list(labels)}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir or default_cache_dir()) / f"{key}.safetensors"
    device = model.logit_scale.device
    if path.is_file():
        try:
            return load_file(str(path))["features"].to(device)
        except Exception:  # a truncated or foreign file: recompute and overwrite it
            path.unlink(missing_ok=True)
    features = model.class_text_features(labels, resolved)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({"features": features.detach().cpu().contiguous()}, str(tmp))
    os.replace(tmp, path)
    return features
