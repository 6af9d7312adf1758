"""CLIP backbones from open_clip: configs, weight files in every common format, architecture inference.

``pretrained`` may be an open_clip tag (downloaded by open_clip when online) or a local file:
an OpenAI TorchScript ``.pt``, an OpenAI or open_clip state dict (``.pt``/``.pth``/``.bin``, optionally
wrapped in ``{"state_dict": ...}`` with ``module.`` prefixes) or a ``.safetensors`` file.
"""
from __future__ import annotations

import copy
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

# Tiny OpenAI-style CLIPs (ViT, QuickGELU, the real 77-token BPE text tower) for smoke runs and demos on a CPU.
_CUSTOM_CONFIGS: dict[str, dict[str, Any]] = {
    "actionclip-tiny-vit": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    },
}

# Keys of OpenAI's TorchScript archives that are not parameters.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class CheckpointError(RuntimeError):
    """A weight file that cannot be read, or does not fit the model it is loaded into."""


def register_model_config(name: str, config: dict[str, Any]) -> None:
    """Make an open_clip-style model config (``embed_dim``, ``vision_cfg``, ``text_cfg``...) available by name."""
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in config:
            raise ValueError(f"model config {name!r} lacks {key!r}")
    _CUSTOM_CONFIGS[name] = copy.deepcopy(config)


def get_model_config(name: str) -> dict[str, Any]:
    if name in _CUSTOM_CONFIGS:
        return copy.deepcopy(_CUSTOM_CONFIGS[name])
    config = open_clip.get_model_config(name.replace("/", "-"))
    if config is None:
        raise ValueError(f"unknown model {name!r}: not an open_clip model nor registered with register_model_config")
    return copy.deepcopy(config)


def build_clip(config: dict[str, Any]) -> nn.Module:
    """An open_clip CLIP (or CustomTextCLIP) with random weights, from a config dict."""
    config = copy.deepcopy(config)
    custom_text = config.pop("custom_text", False) or "hf_model_name" in config["text_cfg"]
    if custom_text and "multimodal_cfg" in config:
        raise ValueError("CoCa-style models are not supported as ActionCLIP backbones")
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    return cls(**config)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def read_checkpoint(path: str | Path) -> Any:
    """Load a weight file safely: safetensors, TorchScript, or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if _is_torchscript(path):
            scripted = torch.jit.load(str(path), map_location="cpu")
            return {k: v for k, v in scripted.state_dict().items() if k not in _OPENAI_EXTRA_KEYS}
        return torch.load(path, map_location="cpu", weights_only=True)
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
    return {
        (k[len("module.") :] if k.startswith("module.") else k): v
        for k, v in checkpoint.items()
        if k not in _OPENAI_EXTRA_KEYS
    }


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


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names every missing, unexpected or mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit the model:"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                lines.append(f"  {title}: {shown}")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()})


def create_clip(model_name: str | None, pretrained: str | None = None, quick_gelu: bool | None = None) -> tuple[nn.Module, dict]:
    """Build an open_clip CLIP and return it with the config that rebuilds it.

    ``model_name`` None with a local file infers the architecture from the file (OpenAI layout).
    ``quick_gelu`` None means: QuickGELU for OpenAI weights (the ``openai`` tag, TorchScript files, names
    ending in ``-quickgelu``, inferred architectures), otherwise what the model config says.
    """
    if pretrained is not None and not Path(pretrained).is_file():
        if model_name is None:
            raise ValueError(f"pretrained={pretrained!r} is not a file; name the model to use an open_clip tag")
        return _create_from_tag(model_name, pretrained, quick_gelu)

    state_dict = None
    if pretrained is not None:
        is_openai_archive = pretrained.endswith(".pt") and _is_torchscript(Path(pretrained))
        state_dict = unwrap_state_dict(read_checkpoint(pretrained), pretrained)
        if quick_gelu is None and is_openai_archive:
            quick_gelu = True
    if model_name is None:
        if state_dict is None:
            raise ValueError("give a model name, a pretrained file, or both")
        config = infer_openai_config(state_dict)
    else:
        config = get_model_config(model_name)
        if quick_gelu is None and model_name.endswith("-quickgelu"):
            quick_gelu = True
    if quick_gelu is not None:
        config["quick_gelu"] = quick_gelu
    clip = build_clip(config)
    if state_dict is not None:
        if isinstance(clip, open_clip.CustomTextCLIP) and "positional_embedding" in state_dict:
            state_dict = open_clip.model.convert_to_custom_text_state_dict(state_dict)
        load_strict(clip, state_dict, pretrained)
    return clip, config


def _create_from_tag(model_name: str, tag: str, quick_gelu: bool | None) -> tuple[nn.Module, dict]:
    name = model_name.replace("/", "-")
    tag_cfg = open_clip.get_pretrained_cfg(name, tag)
    if not tag_cfg:
        known = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(f"{tag!r} is neither a file nor an open_clip tag of {name}; tags: {known}")
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False)) or name.endswith("-quickgelu")
    try:
        clip = open_clip.create_model(name, pretrained=tag, force_quick_gelu=quick_gelu)
    except RuntimeError as error:
        raise CheckpointError(
            f"could not fetch open_clip weights {name}/{tag} (offline?): {error}. "
            "Download them once where there is internet, then pass the file as pretrained=PATH."
        ) from error
    config = get_model_config(name)
    config["quick_gelu"] = quick_gelu or config.get("quick_gelu", False)
    return clip, config
