"""Building a model from an open_clip backbone (``from_open_clip``) or from its config (``build_model``). Published
checkpoints by name are the checkpoints package's (:func:`actionclip.checkpoints.sources.create_model`)."""

from __future__ import annotations

import torch

from actionclip.models.actionclip import ActionCLIP, ActionCLIPConfig, UnimodalClassifier
from actionclip.models.backbone import build_clip, create_clip
from actionclip.models.xclip import XCLIP

_INITS = ("pretrained", "random")
# config.arch -> its class; what each architecture does differently is a class attribute of it (objective,
# has_class_head, video_specific_text, uses_visual_prompt, ...), so a new architecture is one class and one row here.
ARCHITECTURES = {"actionclip": ActionCLIP, "unimodal": UnimodalClassifier, "xclip": XCLIP}


def from_open_clip(
    model_name: str | None,
    pretrained: str | None = None,
    visual_prompt: str = "Transf",
    num_frames: int = 8,
    *,
    arch: str = "actionclip",
    num_classes: int | None = None,
    quick_gelu: bool | None = None,
    init_vision: str = "pretrained",
    init_text: str = "pretrained",
    freeze_vision: bool = False,
    freeze_text: bool = False,
    seed: int | None = None,
    **config_kwargs,
):
    """Build ActionCLIP (``arch="actionclip"``), the unimodal baseline (``arch="unimodal"``) or X-CLIP (``arch="xclip"``).

    ``model_name``: an open_clip model name ("ViT-B-32", "ViT-B-16", "RN50", ...) or a name registered with
    ``actionclip.register_model_config``; None infers the architecture from a local ``pretrained`` file.
    ``pretrained``: an open_clip tag ("openai", ...) or a local OpenAI / open_clip / safetensors file.
    ``init_vision`` / ``init_text`` = "random" re-initialise that tower after loading (Table 2);
    ``freeze_vision`` / ``freeze_text`` stop its gradients (Table 5). ``seed`` fixes every random init.
    Other keyword arguments go to ``ActionCLIPConfig`` (``temporal_layers``, ``max_frames``, ...; for X-CLIP
    ``mit_layers``, ``prompt_layers``, ``prompt_alpha``, ...). X-CLIP ignores ``visual_prompt``: its temporal
    modelling is its own (cross-frame attention and the multi-frame integration transformer).
    """
    if init_vision not in _INITS or init_text not in _INITS:
        raise ValueError(f"init_vision and init_text must be one of {_INITS}")
    if seed is not None:
        torch.manual_seed(seed)
    clip, clip_config = create_clip(model_name, pretrained, quick_gelu)
    if "random" in (init_vision, init_text):
        _reinitialise_towers(clip, clip_config, vision=init_vision == "random", text=init_text == "random")
    config = ActionCLIPConfig(
        clip=clip_config,
        visual_prompt=visual_prompt,
        num_frames=num_frames,
        arch=arch,
        model_name=model_name,
        pretrained=pretrained,
        num_classes=num_classes,
        freeze_vision=freeze_vision,
        freeze_text=freeze_text,
        **config_kwargs,
    )
    return build_model(config, clip)


def build_model(config: ActionCLIPConfig, clip=None):
    """The model an ``ActionCLIPConfig`` describes, around ``clip`` (random weights when None)."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {config.arch!r}; choose {', '.join(repr(a) for a in ARCHITECTURES)}")
    return ARCHITECTURES[config.arch](config, clip)


def _reinitialise_towers(clip, clip_config: dict, vision: bool, text: bool) -> None:
    fresh = build_clip(clip_config).state_dict()
    state = clip.state_dict()
    for key in state:
        is_vision = key.startswith("visual.")
        is_scale = key in ("logit_scale", "logit_bias")
        if (vision and is_vision) or (text and not is_vision and not is_scale):
            state[key] = fresh[key]
    clip.load_state_dict(state)
