"""Our checkpoints: a directory of ``model.safetensors`` + ``config.json``, and run directories' ``best``/``last``."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from safetensors.torch import load_file

from actionclip.checkpoints.config import check_against_weights, check_config_dict, weight_shapes
from actionclip.host.files import write_atomically
from actionclip.models.actionclip import ActionCLIPConfig
from actionclip.models.build import build_model
from actionclip.weights.errors import CheckpointError
from actionclip.weights.readers import load_strict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "actionclip"


def save(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (each via a unique temp file + rename)."""
    if getattr(model, "prepared_for_inference", False):
        raise ValueError(
            "this model was prepared for inference (QuickGELU folded into its MLP weights, which are no "
            "longer the model's own); save it before prepare_for_inference, or load it again"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomically(directory / WEIGHTS_FILE, safetensors.torch.save(state, metadata={"format": FORMAT}))
    config = {"format": FORMAT, "version": 1, "config": model.config.to_dict()}
    write_atomically(directory / CONFIG_FILE, json.dumps(config, indent=2).encode())
    return directory


def read_config(directory: str | Path) -> ActionCLIPConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not an actionclip checkpoint directory (no {CONFIG_FILE})")
    try:
        content = json.loads(path.read_text())
    except ValueError as error:
        raise CheckpointError(f"{path}: invalid config ({error})") from error
    found = content.get("format") if isinstance(content, dict) else None
    if found != FORMAT:
        raise CheckpointError(f"{path}: invalid config (format is {found!r}, expected {FORMAT!r})")
    check_config_dict(content.get("config"), path)
    try:
        return ActionCLIPConfig(**content["config"])
    except ValueError as error:  # an unknown visual prompt
        raise CheckpointError(f"{path}: invalid config ({error})") from error


def load(directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the exact model saved by :func:`save`, in eval mode. The config is checked against the weights'
    shapes before anything is allocated."""
    config = read_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    check_against_weights(config, weight_shapes(weights), Path(directory) / CONFIG_FILE, weights)
    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises its own types on missing or truncated files
        raise CheckpointError(f"{weights}: not a readable safetensors file ({error})") from error
    model = build_model(config)
    load_strict(model, state, str(weights))
    return model.to(device).eval()


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from a path: the directory itself, or a run directory's ``best`` or ``last``."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() or path.is_file():
        return path
    for child in ("best", "last"):
        if (path / child / CONFIG_FILE).is_file():
            return path / child
    raise CheckpointError(f"{path}: no actionclip checkpoint here (expected {CONFIG_FILE}, or a run directory with best/ or last/)")
