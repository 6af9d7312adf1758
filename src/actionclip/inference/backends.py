"""The runtime backends of inference behind one interface (``config``, ``logit_scale.device``, ``eval``/``train``,
``class_text_features``, ``video_probabilities``): a torch model prepared for inference, or an ONNX Runtime model
(:mod:`actionclip.inference.onnx_backend`)."""

from __future__ import annotations

import torch
from torch import nn

from actionclip.checkpoints.sources import read_model
from actionclip.host.devices import resolve_precision
from actionclip.inference.inputs import PathLike
from actionclip.inference.onnx_backend import load_onnx_model, wants_onnx
from actionclip.inference.text_cache import remember_text_weights
from actionclip.models.precision import prepare_for_inference


def check_video_text(model: nn.Module, source) -> None:
    """ValueError for a model with a fixed set of classes (the unimodal baseline): inference scores label texts."""
    if not hasattr(model, "class_text_features"):
        raise ValueError(f"{source}: a {model.config.arch!r} model has a fixed set of classes; predict needs a video-text model")


def load_model(
    checkpoint: PathLike | None = None,
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    visual_prompt: str = "Transf",
    num_frames: int = 8,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    runtime: str = "torch",
) -> nn.Module:
    """A video-text model in eval mode on ``device``, from ``checkpoint`` or from ``model_name`` + ``pretrained``.

    ``checkpoint``: our checkpoint directory or run directory, a ``transformers`` X-CLIP directory (recognised by
    its ``config.json``), an official ActionCLIP ``.pt`` (which does not record its ``visual_prompt``), or with
    ``arch="xclip"`` an original X-CLIP ``.pth``. ``model_name``: an open_clip name, ``pretrained`` an open_clip tag
    or weight file (None: random weights). ``arch`` None accepts what the checkpoint holds; otherwise it must match.
    ``precision``: fp32, bf16, fp16 or auto (see :mod:`actionclip.models.precision`).
    ``runtime="onnx"``, or an export directory as ``checkpoint``: a model run by ONNX Runtime with the methods the
    predict loop uses (:mod:`actionclip.inference.onnx_backend`; ``precision`` fp32, int8 or auto).
    """
    if wants_onnx(checkpoint, runtime):
        return load_onnx_model(
            checkpoint,
            model_name,
            pretrained,
            visual_prompt=visual_prompt,
            num_frames=num_frames,
            arch=arch,
            device=device,
            precision=precision,
        )
    model = read_model(checkpoint, model_name, pretrained, visual_prompt=visual_prompt, num_frames=num_frames, arch=arch)
    check_video_text(model, checkpoint or model_name)
    return remember_text_weights(prepare_for_inference(model.to(device).eval(), resolve_precision(precision, device)))
