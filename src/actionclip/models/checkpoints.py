"""Our checkpoints (a directory: ``model.safetensors`` + ``config.json``) and import of the official
ActionCLIP checkpoints (``model_state_dict`` + ``fusion_model_state_dict``)."""
from __future__ import annotations

import errno
import json
import os
import secrets
from pathlib import Path

import safetensors.torch
import torch
from safetensors.torch import load_file

from actionclip.models.actionclip import ActionCLIP, ActionCLIPConfig
from actionclip.models.checkpoint_config import check_against_weights, check_config_dict, weight_shapes
from actionclip.models.factory import build_model
from actionclip.models.temporal import canonical_prompt_name
from actionclip.models.weight_files import CheckpointError, infer_openai_config, load_strict, read_checkpoint

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "actionclip"


def save(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (each via a unique temp file + rename)."""
    if getattr(model, "prepared_for_inference", False):
        raise ValueError("this model was prepared for inference (QuickGELU folded into its MLP weights, which are no "
                         "longer the model's own); save it before prepare_for_inference, or load it again")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _write_atomically(directory / WEIGHTS_FILE, safetensors.torch.save(state, metadata={"format": FORMAT}))
    config = {"format": FORMAT, "version": 1, "config": model.config.to_dict()}
    _write_atomically(directory / CONFIG_FILE, json.dumps(config, indent=2).encode())
    return directory


def _write_atomically(path: Path, data: bytes) -> None:
    """Write under a name of this write's own, then rename: readers and other writers never see a partial file,
    and a failed write leaves nothing behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path} (the partial file was removed)") from None
        raise
    os.replace(tmp, path)


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


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _our_key(openai_key: str) -> str:
    if openai_key.startswith("visual."):
        return "video." + openai_key
    return openai_key if openai_key == "logit_scale" else "text." + openai_key


def from_official_checkpoint(path: str | Path, visual_prompt: str, num_frames: int = 8) -> ActionCLIP:
    """Read an official ActionCLIP ``.pt`` (``model_state_dict`` + ``fusion_model_state_dict``, ``module.``
    prefixes, fp16 or fp32) into our model. The CLIP architecture is read off the state-dict shapes as
    OpenAI's ``build_model`` does, so any ViT size loads. Returns the model in eval mode, fp32."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not an official ActionCLIP checkpoint (no 'model_state_dict')")
    prompt = canonical_prompt_name(visual_prompt)
    clip_state = {}
    for key, value in checkpoint["model_state_dict"].items():
        key = _strip_module(key)
        # The official Shift wraps each visual block in a module whose child is ``net``.
        clip_state[key.replace(".net.", ".") if key.startswith("visual.") else key] = value
    time_embedding = clip_state.pop("visual.time_embedding", None)
    clip_config = infer_openai_config(clip_state)
    state = {_our_key(k): v for k, v in clip_state.items()}
    if time_embedding is not None:
        state["video.time_embedding"] = time_embedding

    fusion = {_strip_module(k): v for k, v in checkpoint.get("fusion_model_state_dict", {}).items()}
    if prompt != "Transf":
        # The official visual_prompt creates this table for every prompt but only Transf uses it.
        fusion.pop("frame_position_embeddings.weight", None)
    extra = {}
    if prompt == "Transf" and "frame_position_embeddings.weight" in fusion:
        extra["max_frames"] = fusion["frame_position_embeddings.weight"].shape[0]
    state.update({"video.temporal." + k: v for k, v in fusion.items()})

    config = ActionCLIPConfig(clip=clip_config, visual_prompt=prompt, num_frames=num_frames, pretrained=str(path), **extra)
    model = ActionCLIP(config)
    load_strict(model, state, str(path))
    return model.eval()


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from a path: the directory itself, or a run directory's ``best`` or ``last``."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() or path.is_file():
        return path
    for child in ("best", "last"):
        if (path / child / CONFIG_FILE).is_file():
            return path / child
    raise CheckpointError(f"{path}: no actionclip checkpoint here (expected {CONFIG_FILE}, or a run directory with best/ or last/)")


def load_any(path: str | Path, visual_prompt: str = "Transf", num_frames: int = 8, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Our checkpoint (a directory or a run directory), an official ActionCLIP ``.pt`` file (which does not
    record its visual prompt, hence ``visual_prompt``), or a published checkpoint's name (``actionclip models``)."""
    from actionclip.models import hub  # hub builds on this module

    if hub.is_published(path):
        return hub.load_published(str(path), device)
    path = resolve(path)
    if path.is_file():
        return from_official_checkpoint(path, visual_prompt, num_frames).to(device)
    return load(path, device)
