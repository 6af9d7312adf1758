"""Import of mmaction2's ActionCLIP checkpoints (open-mmlab/mmaction2 ``projects/actionclip``, v1.2.0).

Their files are mmengine checkpoints, ``{"meta", "state_dict"}``, read with ``torch.load(weights_only=True)``.
``clip.*`` is an OpenAI CLIP (``clip.load``) and ``adapter.*`` its ``TransformerAdapter``: a frame-position table of
T rows and a CLIP ``Transformer`` of N layers (heads = text width // 64) over the frame features, the output
``mean_T(x + Transformer(x + pos))``: the official ``Transf``, but for torch's LayerNorm (eps 1e-5) where the official
temporal transformer has a TF-style one with eps 1e-12, and a table of T rows rather than 77. At test time the
project normalises frames with CLIP's mean and std times 255 (``[122.771, 116.746, 104.093]``,
``[68.500, 66.632, 70.323]``: CLIP's to the third decimal) and scores ``softmax(100 cos)`` averaged over its 16
templates (the official ActionCLIP's, in the same order) and the views: our ActionCLIP's defaults.
"""

from __future__ import annotations

from pathlib import Path

from actionclip.models.actionclip import ActionCLIP, ActionCLIPConfig
from actionclip.weights.errors import CheckpointError
from actionclip.weights.readers import infer_openai_config, load_strict, read_checkpoint

# Buffers of mmengine's data preprocessor, saved by some versions; the normalisation is CLIP's either way.
_IGNORED = ("data_preprocessor.",)
_TORCH_LAYER_NORM_EPS = 1e-5


def from_mmaction2_checkpoint(path: str | Path) -> ActionCLIP:
    """Our ActionCLIP (``Transf``) from an mmaction2 ``projects/actionclip`` checkpoint, in eval mode, fp32. The CLIP
    size, the adapter's layers and its frames T are read off the shapes."""
    checkpoint = read_checkpoint(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "adapter.frame_position_embeddings.weight" not in state:
        raise CheckpointError(
            f"{path}: not an mmaction2 ActionCLIP checkpoint (no state_dict with adapter.frame_position_embeddings.weight)"
        )
    clip_state, adapter, unknown = {}, {}, []
    for key, value in state.items():
        if key.startswith("clip."):
            clip_state[key[len("clip.") :]] = value
        elif key.startswith("adapter."):
            adapter[key[len("adapter.") :]] = value
        elif not key.startswith(_IGNORED):
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{path}: keys outside clip.* and adapter.*: {', '.join(sorted(unknown)[:8])}")
    frames = adapter["frame_position_embeddings.weight"].shape[0]
    config = ActionCLIPConfig(
        clip=infer_openai_config(clip_state),
        visual_prompt="Transf",
        num_frames=frames,
        max_frames=frames,
        temporal_layers=len({k.split(".")[2] for k in adapter if k.startswith("transformer.resblocks.")}),
        temporal_ln_eps=_TORCH_LAYER_NORM_EPS,
        normalization="clip",
        pretrained=str(path),
    )
    ours = {("video." + k if k.startswith("visual.") else k if k == "logit_scale" else "text." + k): v for k, v in clip_state.items()}
    ours.update({"video.temporal." + k: v for k, v in adapter.items()})
    model = ActionCLIP(config)
    load_strict(model, ours, str(path))
    return model.eval()
