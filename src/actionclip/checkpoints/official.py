"""Import of the official ActionCLIP checkpoints (``model_state_dict`` + ``fusion_model_state_dict``)."""

from __future__ import annotations

from pathlib import Path

from actionclip.models.actionclip import ActionCLIP, ActionCLIPConfig
from actionclip.models.temporal import canonical_prompt_name
from actionclip.weights.errors import CheckpointError
from actionclip.weights.readers import infer_openai_config, load_strict, read_checkpoint


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
