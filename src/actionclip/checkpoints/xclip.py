"""Import of X-CLIP checkpoints into :class:`~actionclip.models.xclip.XCLIP`.

- ``transformers``' ``XCLIPModel.save_pretrained`` directories (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``), e.g. the published ``microsoft/xclip-*`` models; transformers is not needed to read them;
- the original VideoX ``.pth`` files (``{"model", "optimizer", "lr_scheduler", "max_accuracy", "epoch", "config"}``
  as its ``epoch_saving`` writes them, or a bare state dict), read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from actionclip.checkpoints.config import Count, Positive, check_against_weights, section
from actionclip.host.validation import error_line
from actionclip.models.actionclip import ActionCLIPConfig
from actionclip.models.xclip import XCLIP
from actionclip.weights.errors import CheckpointError
from actionclip.weights.readers import infer_openai_config, load_strict, read_checkpoint, refusal, unwrap_state_dict

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# transformers' defaults for the config fields read here (older config.json files leave some out).
_HF_DEFAULTS = {
    "projection_dim": 512,
    "prompt_layers": 2,
    "prompt_alpha": 0.1,
    "prompt_hidden_act": "quick_gelu",
    "prompt_num_attention_heads": 8,
}
_HF_TEXT_DEFAULTS = {
    "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8,
    "max_position_embeddings": 77, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}  # fmt: skip
_HF_VISION_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "mit_hidden_size": 512,
    "mit_intermediate_size": 2048, "mit_num_hidden_layers": 1, "mit_num_attention_heads": 8, "num_channels": 3, "image_size": 224,
    "patch_size": 32, "num_frames": 8, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}  # fmt: skip

# transformers' spelling of the settings that check_against_weights names in its messages.
_HF_NAMES = {
    "embed_dim": "projection_dim", "num_frames": "vision_config.num_frames", "mit_layers": "vision_config.mit_num_hidden_layers",
    "mit_heads": "vision_config.mit_num_attention_heads", "prompt_heads": "prompt_num_attention_heads",
    "vision_cfg.layers": "vision_config.num_hidden_layers", "vision_cfg.width": "vision_config.hidden_size",
    "vision_cfg.patch_size": "vision_config.patch_size", "vision_cfg.image_size": "vision_config.image_size",
    "text_cfg.layers": "text_config.num_hidden_layers", "text_cfg.width": "text_config.hidden_size",
    "text_cfg.heads": "text_config.num_attention_heads", "text_cfg.context_length": "text_config.max_position_embeddings",
    "text_cfg.vocab_size": "text_config.vocab_size",
}  # fmt: skip
# The integer settings read here (the counts of layers may be zero, the rest must be positive); transformers' configs
# hold many more keys, which are let through.
_HF_INTEGERS = {
    "": ("projection_dim", "prompt_layers", "prompt_num_attention_heads"),
    "text_config": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings"),
    "vision_config": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "mit_hidden_size", "mit_intermediate_size",
                      "mit_num_hidden_layers", "mit_num_attention_heads", "num_channels", "image_size", "patch_size", "num_frames"),
}  # fmt: skip


def _integers(name: str, **sections: type[BaseModel]) -> type[BaseModel]:
    keys = _HF_INTEGERS[name]
    typed = {key: Count if key.endswith("layers") else Positive for key in keys}
    return section(name or "XCLIPConfig", [*keys, *sections], {**typed, **sections}, config=ConfigDict(extra="allow", strict=True))


_HF_CONFIG = _integers("", text_config=_integers("text_config"), vision_config=_integers("vision_config"))

# Prefixes of transformers' keys -> ours; first match wins.
_HF_PREFIXES = (
    ("text_model.embeddings.token_embedding.", "text.token_embedding."),
    ("text_model.embeddings.position_embedding.weight", "text.positional_embedding"),
    ("text_model.encoder.layers.", "text.transformer.resblocks."),
    ("text_model.final_layer_norm.", "text.ln_final."),
    ("text_projection.weight", "text.text_projection"),
    ("vision_model.embeddings.class_embedding", "video.visual.class_embedding"),
    ("vision_model.embeddings.patch_embedding.", "video.visual.conv1."),
    ("vision_model.embeddings.position_embedding.weight", "video.visual.positional_embedding"),
    ("vision_model.pre_layernorm.", "video.visual.ln_pre."),
    ("vision_model.encoder.layers.", "video.visual.transformer.resblocks."),
    ("vision_model.post_layernorm.", "video.visual.ln_post."),
    ("visual_projection.weight", "video.visual.proj"),
    ("mit.position_embedding", "video.mit.positional_embedding"),
    ("mit.encoder.layers.", "video.mit.resblocks."),
    ("prompts_visual_layernorm.", "video.prompts_visual_ln."),
    ("prompts_visual_projection", "video.prompts_visual_proj"),
    ("prompts_generator.layernorm.", "prompts_generator.norm."),
)
# Inside blocks: transformers' (and VideoX's prompt-generator) names -> open_clip's.
_BLOCK_RENAMES = (
    (".self_attn.", ".attn."),
    (".layer_norm1.", ".ln_1."),
    (".layer_norm2.", ".ln_2."),
    (".mlp.fc1.", ".mlp.c_fc."),
    (".mlp.fc2.", ".mlp.c_proj."),
    (".mlp.0.", ".mlp.c_fc."),
    (".mlp.3.", ".mlp.c_proj."),
)
# transformers keeps separate q/k/v projections where open_clip's nn.MultiheadAttention has one in_proj.
_QKV = re.compile(r"(.+\.(?:self_attn|message_attn))\.([qkv])_proj\.(weight|bias)$")
# nn.Linear weights in transformers, ``x @ P`` matrices in CLIP.
_TRANSPOSED = ("text.text_projection", "video.visual.proj")


def _rename(key: str, prefixes=_HF_PREFIXES) -> str:
    for theirs, ours in prefixes:
        if key.startswith(theirs):
            key = ours + key[len(theirs) :]
            break
    for theirs, ours in _BLOCK_RENAMES:
        key = key.replace(theirs, ours)
    return key


def convert_hf_state_dict(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """An ``XCLIPModel`` state dict in our key layout. Unknown keys are passed through, so that loading names them."""
    converted: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith(".position_ids"):  # a buffer that older transformers versions saved
            continue
        match = _QKV.match(key)
        if match:
            qkv.setdefault((match[1], match[3]), {})[match[2]] = value
        else:
            converted[_rename(key)] = value
    for (attention, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{source}: {attention} has {sorted(parts)} {kind} projections, expected q, k and v")
        converted[_rename(f"{attention}.in_proj_{kind}")] = torch.cat([parts["q"], parts["k"], parts["v"]])
    for key in _TRANSPOSED:
        if key in converted:
            converted[key] = converted[key].t()
    return converted


def mlp_ratio(mlp_width: int, width: int) -> float:
    """The ``mlp_ratio`` from which open_clip's ``int(width * mlp_ratio)`` gives ``mlp_width`` back: the plain quotient
    where floating point returns it exactly (4.0 for every published model), else half a unit more (e.g. 15 / 11)."""
    ratio = mlp_width / width
    return ratio if int(width * ratio) == mlp_width else (mlp_width + 0.5) / width


def xclip_config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ActionCLIPConfig:
    """Our config for the architecture an ``XCLIPConfig`` (its ``config.json`` as a dict) describes."""
    if hf.get("model_type") != "xclip":
        raise CheckpointError(f"{source}: model_type is {hf.get('model_type')!r}, not 'xclip' (an XCLIPModel config)")
    top = {**_HF_DEFAULTS, **hf}
    # Old configs also carry text_config_dict / vision_config_dict, which take precedence, as in transformers.
    text = {**_HF_TEXT_DEFAULTS, **(hf.get("text_config") or {}), **(hf.get("text_config_dict") or {})}
    vision = {**_HF_VISION_DEFAULTS, **(hf.get("vision_config") or {}), **(hf.get("vision_config_dict") or {})}
    try:
        _HF_CONFIG.model_validate({**top, "text_config": text, "vision_config": vision})
    except ValidationError as error:
        raise CheckpointError(error_line(error, source, _HF_CONFIG)) from None
    problems = []
    for name, sub in (("text_config", text), ("vision_config", vision)):
        if sub["hidden_size"] % sub["num_attention_heads"]:
            problems.append(f"{name}.num_attention_heads {sub['num_attention_heads']} (does not divide hidden_size {sub['hidden_size']})")
    if text["hidden_act"] != vision["hidden_act"] or vision["hidden_act"] not in ("quick_gelu", "gelu"):
        problems.append(f"hidden_act text {text['hidden_act']!r} / vision {vision['hidden_act']!r} (both 'quick_gelu' or both 'gelu')")
    if top["prompt_hidden_act"] != "quick_gelu":
        problems.append(f"prompt_hidden_act {top['prompt_hidden_act']!r} (only 'quick_gelu')")
    for name, sub in (("text_config", text), ("vision_config", vision)):
        if sub["layer_norm_eps"] != 1e-5:
            problems.append(f"{name}.layer_norm_eps {sub['layer_norm_eps']} (open_clip's towers use 1e-5)")
    if vision["mit_hidden_size"] != top["projection_dim"]:
        # transformers feeds the MIT the projected frame features: any other width fails in XCLIPModel itself.
        problems.append(f"mit_hidden_size {vision['mit_hidden_size']} (the MIT runs at projection_dim {top['projection_dim']})")
    if vision["num_channels"] != 3:
        problems.append(f"num_channels {vision['num_channels']} (only RGB)")
    if problems:
        raise CheckpointError(f"{source}: unsupported X-CLIP settings: " + "; ".join(problems))
    clip = {
        "embed_dim": top["projection_dim"],
        "quick_gelu": vision["hidden_act"] == "quick_gelu",
        "vision_cfg": {
            "image_size": vision["image_size"],
            "patch_size": vision["patch_size"],
            "width": vision["hidden_size"],
            "layers": vision["num_hidden_layers"],
            "head_width": vision["hidden_size"] // vision["num_attention_heads"],
            "mlp_ratio": mlp_ratio(vision["intermediate_size"], vision["hidden_size"]),
        },
        "text_cfg": {
            "context_length": text["max_position_embeddings"],
            "vocab_size": text["vocab_size"],
            "width": text["hidden_size"],
            "heads": text["num_attention_heads"],
            "layers": text["num_hidden_layers"],
            "mlp_ratio": mlp_ratio(text["intermediate_size"], text["hidden_size"]),
        },
    }
    return ActionCLIPConfig(
        clip=clip,
        arch="xclip",
        num_frames=vision["num_frames"],
        mit_layers=vision["mit_num_hidden_layers"],
        mit_heads=vision["mit_num_attention_heads"],
        mit_mlp_ratio=mlp_ratio(vision["mit_intermediate_size"], vision["mit_hidden_size"]),
        prompt_layers=top["prompt_layers"],
        prompt_heads=top["prompt_num_attention_heads"],
        prompt_alpha=top["prompt_alpha"],
    )


def _hf_files(path_or_dir: str | Path) -> tuple[Path, Path]:
    path = Path(path_or_dir)
    directory = path if path.is_dir() else path.parent
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no config.json (expected a directory written by XCLIPModel.save_pretrained)")
    if path.is_file() and path.name != "config.json":
        return config_path, path
    for name in HF_WEIGHT_FILES:
        if (directory / name).is_file():
            return config_path, directory / name
    raise CheckpointError(f"{directory}: no weights ({' or '.join(HF_WEIGHT_FILES)})")


def hf_snapshot(hub_id: str) -> Path:
    """The directory of hub repository ``hub_id`` (config and weights only), through huggingface_hub: its cache, its
    offline mode (HF_HUB_OFFLINE) and its mirror (HF_ENDPOINT)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(
            f"{hub_id}: downloading from the Hugging Face hub needs huggingface_hub (pip install 'actionclip[hub]')"
        ) from None
    try:
        return Path(snapshot_download(hub_id, allow_patterns=["config.json", *HF_WEIGHT_FILES]))
    except Exception as error:  # huggingface_hub raises its own types for offline, missing and gated repositories
        first = str(error).splitlines()[0] if str(error) else ""
        raise CheckpointError(
            f"{hub_id}: cannot download it from the Hugging Face hub ({type(error).__name__}: {first}); HF_ENDPOINT names a hub mirror"
        ) from None


def from_hf_xclip(path_or_dir: str | Path) -> XCLIP:
    """Our X-CLIP from a ``transformers`` ``XCLIPModel.save_pretrained`` directory (or its weight file), or from a hub
    id such as ``microsoft/xclip-base-patch32`` (downloaded by huggingface_hub when it is not cached), in eval mode.

    Gives the same ``logits_per_video`` as ``XCLIPModel`` for the same pixel values and token ids.
    """
    if not Path(path_or_dir).exists() and _HUB_ID.fullmatch(str(path_or_dir)):
        path_or_dir = hf_snapshot(str(path_or_dir))
    config_path, weights_path = _hf_files(path_or_dir)
    try:
        hf = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_path}: not a readable JSON file ({error})") from error
    config = xclip_config_from_hf(hf, str(config_path))
    config.pretrained = str(weights_path)
    state = convert_hf_state_dict(unwrap_state_dict(read_checkpoint(weights_path), weights_path), str(weights_path))
    check_against_weights(config, {k: tuple(v.shape) for k, v in state.items()}, config_path, weights_path, _HF_NAMES)
    model = XCLIP(config)
    load_strict(model, state, str(weights_path))
    return model.eval()


class _YacsNodeAsDict:
    """Allow-listed under the name ``yacs.config.CfgNode``, the class of VideoX's pickled training config. The
    weights-only unpickler fills only exact dict types, so every node is rebuilt as an ``OrderedDict``: yacs need not
    be installed and nothing from the file is executed."""

    def __new__(cls):
        return OrderedDict()


def _plain(value: Any) -> Any:
    # Nested nodes -> plain dicts (dropping the yacs flags that the unpickler put in their __dict__).
    return {k: _plain(v) for k, v in value.items()} if isinstance(value, dict) else value


def read_videox_checkpoint(path: str | Path) -> Any:
    """An original X-CLIP ``.pth`` loaded with ``torch.load(weights_only=True)``; its yacs ``config`` comes back as
    nested dicts. Files that pickle anything beyond tensors, plain containers and a yacs config are refused.
    Needs torch >= 2.6 (allow-listing a class under another module path)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals([(_YacsNodeAsDict, "yacs.config.CfgNode")]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: refused by the weights-only unpickler: {refusal(error)}") from error
    except Exception as error:  # truncated files and foreign formats
        raise CheckpointError(f"{path}: not a readable X-CLIP checkpoint ({type(error).__name__}: {error})") from error
    if isinstance(checkpoint, dict) and "config" in checkpoint:
        checkpoint["config"] = _plain(checkpoint["config"])
    return checkpoint


def _videox_key(key: str) -> str:
    if key.startswith(("visual.", "mit.", "prompts_visual_")):
        return "video." + key
    if key.startswith("prompts_generator."):
        return _rename(key, prefixes=())  # only its MLP's ``mlp.0`` / ``mlp.3`` change
    return key if key == "logit_scale" else "text." + key


def from_videox_checkpoint(path: str | Path) -> XCLIP:
    """Our X-CLIP from an original VideoX ``.pth``, in eval mode, fp32. The architecture (CLIP size, frames, MIT
    and prompt-generator depth) is read off the state-dict shapes; heads are width // 64 as in the original."""
    state = unwrap_state_dict(read_videox_checkpoint(path), path)
    if "mit.positional_embedding" not in state:
        raise CheckpointError(f"{path}: not an X-CLIP checkpoint (no 'mit.positional_embedding' in its state dict)")
    clip_state = {k: v for k, v in state.items() if not k.startswith(("mit.", "prompts_")) and ".message_" not in k}
    config = ActionCLIPConfig(
        clip=infer_openai_config(clip_state),
        arch="xclip",
        num_frames=state["mit.positional_embedding"].shape[1],
        mit_layers=len({k.split(".")[2] for k in state if k.startswith("mit.resblocks.")}),
        prompt_layers=len({k.split(".")[2] for k in state if k.startswith("prompts_generator.decoder.")}),
        pretrained=str(path),
    )
    model = XCLIP(config)
    load_strict(model, {_videox_key(k): v for k, v in state.items()}, str(path))
    return model.eval()
