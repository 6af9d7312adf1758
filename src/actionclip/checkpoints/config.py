"""A checkpoint's config checked against its weights before any model is built from it.

Model sizes come from the config, JSON that people edit by hand: one wrong number (``temporal_layers: 1000000``, a
width of 1e9) would allocate gigabytes before anything complained, and an unknown key would surface as a TypeError deep
in open_clip. So keys and types are checked by name (pydantic models of its sections), then block counts and sizes
against the weight file's header (shapes only, no tensor data), then every parameter of the model built on the meta
device (no memory) against the file.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, create_model
from safetensors import safe_open

from actionclip.host.validation import error_line
from actionclip.models.actionclip import ActionCLIPConfig
from actionclip.models.build import ARCHITECTURES, build_model
from actionclip.models.xclip import XCLIP
from actionclip.weights.errors import CheckpointError
from actionclip.weights.readers import key_mismatches

# Far above the 8-32 frames CLIP video models run at; a num_frames that no weight pins down (MeanP, Conv1D, LSTM,
# Shift) is what predict and eval sample and decode per clip.
MAX_FRAMES_WITHOUT_WEIGHTS = 1024


Positive = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
_RATIO = Annotated[float, Field(gt=0)]
_SIZE = Positive | Annotated[tuple[Positive, Positive], Strict(False)]  # JSON has no tuples: a list of two
_JSON_CHECKS = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, protected_namespaces=())


def section(
    name: str, known: list[str], typed: dict[str, Any], required: tuple[str, ...] = (), config: ConfigDict = _JSON_CHECKS
) -> type[BaseModel]:
    """A model of one section of a config.json: the keys in ``known``, the types of those in ``typed`` (the others
    may hold anything), ``required`` ones. It only checks: the dict itself then builds the model, so the defaults
    here are never used."""
    fields: dict[str, Any] = {key: (typed.get(key, Any), ... if key in required else None) for key in known}
    return create_model(name, __config__=config, **fields)


# Each section of the config: the keys it may hold (ours, open_clip's CLIP arguments plus build_clip's custom_text,
# open_clip's tower configs) and the types of those that size a model.
_VISION = section(
    "vision_cfg",
    [f.name for f in dataclasses.fields(CLIPVisionCfg)],
    {
        "layers": Count | list[Count],
        "width": Positive,
        "head_width": Positive,
        "mlp_ratio": _RATIO,
        "patch_size": _SIZE,
        "image_size": _SIZE,
    },
)
_TEXT = section(
    "text_cfg",
    [f.name for f in dataclasses.fields(CLIPTextCfg)],
    {"context_length": Positive, "vocab_size": Positive, "width": Positive, "heads": Positive, "layers": Count, "mlp_ratio": _RATIO},
)
_CLIP = section(
    "clip",
    [*inspect.signature(open_clip.CLIP).parameters, "custom_text"],
    {"embed_dim": Positive, "vision_cfg": _VISION, "text_cfg": _TEXT, "quick_gelu": bool, "custom_text": bool},
    required=("embed_dim", "vision_cfg", "text_cfg"),
)
CHECKPOINT_CONFIG = section("config", [f.name for f in dataclasses.fields(ActionCLIPConfig)], {
    "clip": _CLIP, "visual_prompt": str, "num_frames": Positive, "arch": str, "model_name": str | None,
    "pretrained": str | None, "temporal_layers": Count, "temporal_heads": Positive | None, "max_frames": Positive,
    "num_classes": Positive | None, "freeze_vision": bool, "freeze_text": bool, "extra": dict, "mit_layers": Count,
    "mit_heads": Positive | None, "mit_mlp_ratio": _RATIO, "prompt_layers": Count, "prompt_heads": Positive | None,
    "prompt_alpha": float, "templates": str | list[str] | None, "test_logit_scale": _RATIO | None,
    "normalization": Literal["clip", "imagenet"] | None, "temporal_ln_eps": _RATIO,
}, required=("clip",))  # fmt: skip
# Where each visual prompt's transformer keeps its blocks.
_TEMPORAL_BLOCKS = {"Transf": "video.temporal.transformer.resblocks.", "Transf_cls": "video.temporal.transformer.transformer_enc.layers."}


def check_config_dict(config: dict[str, Any], path: str | Path) -> None:
    """Refuse, by name, keys that no model has and values of the wrong type, before ``ActionCLIPConfig`` is made."""
    try:
        CHECKPOINT_CONFIG.model_validate(config)
    except ValidationError as error:
        raise CheckpointError(error_line(error, str(path), CHECKPOINT_CONFIG)) from None


def weight_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a safetensors file, from its header alone."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a list: safe_open is not iterable
            return {name: tuple(weights.get_slice(name).get_shape()) for name in names}
    except Exception as error:  # safetensors raises its own types on missing or truncated files
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from error


def _blocks(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    return len({key[len(prefix) :].split(".", 1)[0] for key in shapes if key.startswith(prefix)})


def check_against_weights(
    config: ActionCLIPConfig,
    shapes: dict[str, tuple[int, ...]],
    config_path: str | Path,
    weights_path: str | Path,
    names: dict[str, str] | None = None,
) -> None:
    """Refuse a config whose block counts, sizes or heads disagree with the weights' ``shapes`` (our key layout), then
    any other difference between the model it describes and the file; nothing is allocated. ``names``: how the
    config file spells our settings, for the messages (e.g. transformers' ``vision_config.num_hidden_layers``)."""
    names = names or {}

    def expect(name: str, value: Any, actual: Any, evidence: str) -> None:
        if value != actual:
            raise CheckpointError(f"{config_path}: {names.get(name, name)} is {value!r} but {weights_path} has {actual!r} {evidence}")

    def expect_dim(name: str, value: Any, key: str, axis: int, offset: int = 0) -> None:
        if key in shapes and len(shapes[key]) > abs(axis):
            expect(name, value, shapes[key][axis] - offset, f"({key}: {list(shapes[key])})")

    def divides(name: str, heads: int, width_name: str, width: int) -> None:
        if width % heads:
            raise CheckpointError(
                f"{config_path}: {names.get(name, name)} is {heads}, which does not divide {names.get(width_name, width_name)} {width}"
            )

    vision, text = CLIPVisionCfg(**config.clip["vision_cfg"]), CLIPTextCfg(**config.clip["text_cfg"])
    architecture = ARCHITECTURES[config.arch]
    embed_dim = config.clip["embed_dim"]
    if not vision.timm_model_name:
        if isinstance(vision.layers, int):
            expect("vision_cfg.layers", vision.layers, _blocks(shapes, "video.visual.transformer.resblocks."), "vision blocks")
        else:
            counts = [_blocks(shapes, f"video.visual.layer{stage}.") for stage in range(1, len(vision.layers) + 1)]
            expect("vision_cfg.layers", list(vision.layers), counts, "ResNet blocks per stage")
    if architecture.has_text_tower and not text.hf_model_name:
        expect("text_cfg.layers", text.layers, _blocks(shapes, "text.transformer.resblocks."), "text blocks")
    if architecture is XCLIP:  # its own temporal modules: cross-frame attention, MIT, prompts generator
        expect("mit_layers", config.mit_layers, _blocks(shapes, "video.mit.resblocks."), "MIT blocks")
        expect("prompt_layers", config.prompt_layers, _blocks(shapes, "prompts_generator.decoder."), "prompt generator blocks")
    elif config.visual_prompt in _TEMPORAL_BLOCKS:
        blocks = _blocks(shapes, _TEMPORAL_BLOCKS[config.visual_prompt])
        expect("temporal_layers", config.temporal_layers, blocks, f"{config.visual_prompt} temporal blocks")

    for key in ("text.text_projection", "video.visual.proj"):
        expect_dim("embed_dim", embed_dim, key, -1)
    if not vision.timm_model_name and isinstance(vision.layers, int):
        expect_dim("vision_cfg.width", vision.width, "video.visual.conv1.weight", 0)
        divides("vision_cfg.head_width", vision.head_width, "vision_cfg.width", vision.width)
        positions = "video.visual.positional_embedding"
        if isinstance(vision.patch_size, int) and isinstance(vision.image_size, int) and positions in shapes:
            expect_dim("vision_cfg.patch_size", vision.patch_size, "video.visual.conv1.weight", -1)
            # A square grid of patches plus the class token.
            if (vision.image_size // vision.patch_size) ** 2 + 1 != shapes[positions][0]:
                grid = math.isqrt(max(0, shapes[positions][0] - 1))
                expect("vision_cfg.image_size", vision.image_size, grid * vision.patch_size, f"({positions}: {list(shapes[positions])})")
    if architecture.has_text_tower and not text.hf_model_name:
        expect_dim("text_cfg.width", text.width, "text.ln_final.weight", 0)
        expect_dim("text_cfg.context_length", text.context_length, "text.positional_embedding", 0)
        expect_dim("text_cfg.vocab_size", text.vocab_size, "text.token_embedding.weight", 0)
        divides("text_cfg.heads", text.heads, "text_cfg.width", text.width)

    if architecture is XCLIP:
        expect_dim("num_frames", config.num_frames, "video.mit.positional_embedding", 1)
        divides("mit_heads", config.mit_heads or max(1, embed_dim // 64), "embed_dim", embed_dim)
        divides("prompt_heads", config.prompt_heads or max(1, embed_dim // 64), "embed_dim", embed_dim)
    elif config.visual_prompt == "Transf":
        expect_dim("max_frames", config.max_frames, "video.temporal.frame_position_embeddings.weight", 0)
        divides("temporal_heads", config.temporal_heads, "embed_dim", embed_dim)
    elif config.visual_prompt == "Transf_cls":
        expect_dim("num_frames", config.num_frames, "video.temporal.transformer.pos_embed", 1, 1)
    elif config.visual_prompt == "Joint":
        expect_dim("num_frames", config.num_frames, "video.time_embedding", 0)
    elif config.num_frames > MAX_FRAMES_WITHOUT_WEIGHTS:
        raise CheckpointError(
            f"{config_path}: {names.get('num_frames', 'num_frames')} is {config.num_frames}, more than "
            f"{MAX_FRAMES_WITHOUT_WEIGHTS} frames per clip"
        )
    if architecture.has_class_head:
        expect_dim("num_classes", config.num_classes, "head.weight", 0)

    try:
        with torch.device("meta"):
            model = build_model(config)
    except (ValueError, TypeError, AssertionError) as error:  # what the modules say of settings they cannot take
        raise CheckpointError(f"{config_path}: describes no model that can be built ({error})") from error
    mismatches = key_mismatches({k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes)
    if mismatches:
        raise CheckpointError(f"{weights_path} does not fit the model {config_path} describes: {mismatches}")
