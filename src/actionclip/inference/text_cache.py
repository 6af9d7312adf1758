"""Class text features cached on disk, keyed by the text tower's weights, the templates and the labels, so that
running ``predict`` again with the same labels does not run the text encoder (16 templates x 400 Kinetics classes
are 6,400 prompts).

The cache is only an optimisation: a file that cannot be trusted (wrong shape, other labels, a checksum that does
not match, not a safetensors file) and a folder that cannot be written (read-only, full) each give one warning, and
the features are computed as if there were no cache.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from actionclip.host.files import TEXT_FEATURES, cache_root, write_atomically
from actionclip.prompts import resolve_templates
from actionclip.weights.readers import tensor_digest


class TextCacheWarning(UserWarning):
    """The text-feature cache could not be used; the features were computed instead."""


def default_cache_dir() -> Path:
    return cache_root() / TEXT_FEATURES


def text_weights_digest(model: nn.Module) -> str:
    """A hash of every tensor the class text features depend on (the text encoder and its dtype)."""
    return tensor_digest(model.text.state_dict())


def remember_text_weights(model: nn.Module) -> nn.Module:
    """Hash the text weights of ``model`` now, once, as its key in the cache: ``inference.backends.load_model`` does
    this when it loads a model, so that each later call does not copy a ViT-B text tower's 250 MB back from a GPU to
    hash it. Code that changes the weights of such a model afterwards calls this again. A model that never went
    through it is hashed on every call, so that its weights may change between calls."""
    model.text_features_digest = text_weights_digest(model)
    return model


def text_weights_key(model: nn.Module) -> str:
    """The digest that names the text weights of ``model``: the one :func:`remember_text_weights` kept (an ONNX model
    names its own), else its text weights hashed now."""
    return getattr(model, "text_features_digest", None) or text_weights_digest(model)


def _read(path: Path, labels: list[str], shape: tuple[int, ...]) -> torch.Tensor:
    """The features in ``path``; ``ValueError`` saying why they cannot be used for ``labels``."""
    with safe_open(str(path), "pt") as file:
        metadata = file.metadata() or {}
        features = file.get_tensor("features")
    # The key already covers weights, templates and labels; the stored labels catch a file copied or renamed to
    # another key, the shape one written otherwise, the checksum one changed since.
    if "labels" not in metadata or "checksum" not in metadata:
        raise ValueError("no labels or checksum in its metadata (not written by this version)")
    if json.loads(metadata["labels"]) != labels:
        raise ValueError("it holds the features of other labels")
    if tuple(features.shape) != shape:
        raise ValueError(f"features of shape {tuple(features.shape)}, expected {shape}")
    if tensor_digest(features) != metadata["checksum"]:
        raise ValueError("its checksum does not match its features")
    return features


def _write(path: Path, features: torch.Tensor, labels: list[str]) -> None:
    """Write atomically (another process may be reading ``path``); a partial file is removed."""
    features = features.detach().cpu().contiguous()
    data = save({"features": features}, metadata={"labels": json.dumps(labels), "checksum": tensor_digest(features)})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)


def cached_class_text_features(model: nn.Module, labels, templates=None, cache_dir: str | Path | None = None) -> torch.Tensor:
    """``model.class_text_features(labels, templates)``, read from the cache when an identical request was made.
    A cache that cannot be read or written gives one ``TextCacheWarning`` and the computed features."""
    resolved = resolve_templates(templates if templates is not None else model.default_templates)
    labels = list(labels)
    # "format" 2: files with labels and checksum; older files are left alone rather than each warned about.
    # An ONNX model (inference/onnx_backend.py) names its text graph's weights itself: its features are ONNX Runtime's.
    weights = text_weights_key(model)
    request = {"format": 2, "arch": model.config.arch, "weights": weights, "templates": resolved, "labels": labels}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir or default_cache_dir()) / f"{key}.safetensors"
    shape = (len(resolved), len(labels), model.config.clip["embed_dim"])
    problem = None
    try:
        if path.is_file():
            return _read(path, labels, shape).to(model.logit_scale.device)
    except (OSError, SafetensorError, ValueError) as error:
        problem = f"{path}: {error}"
    features = model.class_text_features(labels, resolved)
    try:
        _write(path, features, labels)
    except OSError as error:
        problem = problem or f"cannot write {path}: {error.strerror or error}"
    if problem:
        warnings.warn(f"text feature cache: {problem}; the text encoder ran instead", TextCacheWarning, stacklevel=2)
    return features
