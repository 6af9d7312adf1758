"""CLIP backbones from open_clip: model configs, construction, and their pretrained weights.

``pretrained`` may be an open_clip tag (downloaded by open_clip when online) or a local file:
an OpenAI TorchScript ``.pt``, an OpenAI or open_clip state dict (``.pt``/``.pth``/``.bin``, optionally
wrapped in ``{"state_dict": ...}`` with ``module.`` prefixes) or a ``.safetensors`` file (read by ``weight_files``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import open_clip
from torch import nn

from actionclip.weights.errors import CheckpointError
from actionclip.weights.readers import infer_openai_config, is_torchscript, load_strict, read_checkpoint, unwrap_state_dict

# Tiny OpenAI-style CLIPs (ViT, QuickGELU, the real 77-token BPE text tower) for smoke runs and demos on a CPU.
_CUSTOM_CONFIGS: dict[str, dict[str, Any]] = {
    "actionclip-tiny-vit": {
        "embed_dim": 64,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    }
}


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


def build_vision_tower(config: dict[str, Any]) -> nn.Module:
    """The image tower of ``build_clip(config)`` alone (the same module, the same random init): a model that has no
    text tower must not allocate one, however large its config's ``text_cfg``."""
    return open_clip.model._build_vision_tower(config["embed_dim"], config["vision_cfg"], config.get("quick_gelu", False))


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
        is_openai_archive = pretrained.endswith(".pt") and is_torchscript(Path(pretrained))
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
