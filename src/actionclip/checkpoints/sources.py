"""Any source -> a model: the one dispatcher. A source is an open_clip model name with its pretrained weights, a
published checkpoint's name (``actionclip models``), or a local checkpoint in any format ``formats.py`` reads."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from actionclip.checkpoints import hub
from actionclip.checkpoints.formats import local_format, read_format
from actionclip.models.build import from_open_clip
from actionclip.weights.errors import CheckpointError


def create_model(
    model_name: str | None, pretrained: str | None = None, visual_prompt: str = "Transf", num_frames: int = 8, **kwargs
) -> nn.Module:
    """:func:`actionclip.models.build.from_open_clip` (see its arguments), or, for the name of a published
    checkpoint (``actionclip models``), that model: downloaded and converted once, in eval mode."""
    if hub.is_published(model_name):
        if pretrained is not None:
            raise ValueError(f"{model_name} is a published checkpoint with its own weights; give no pretrained")
        return hub.load_published(model_name)
    return from_open_clip(model_name, pretrained, visual_prompt, num_frames, **kwargs)


def read_model(
    checkpoint: str | os.PathLike | None = None,
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    visual_prompt: str = "Transf",
    num_frames: int = 8,
    arch: str | None = None,
) -> nn.Module:
    """The model of ``checkpoint`` or of ``model_name`` + ``pretrained``, in fp32 on the CPU, in eval mode.

    ``checkpoint``: a published checkpoint's name, our checkpoint directory or run directory, a ``transformers``
    X-CLIP directory, an official ActionCLIP ``.pt`` (which does not record its ``visual_prompt`` and frames), or with
    ``arch="xclip"`` an original X-CLIP ``.pth``. ``model_name``: as :func:`create_model`. ``arch`` None accepts
    what the source holds; otherwise it must match.
    """
    if (checkpoint is None) == (model_name is None):
        raise ValueError("give a checkpoint or a model name (with pretrained weights), one of the two")
    if checkpoint is None:
        model = create_model(model_name, pretrained, visual_prompt, num_frames, arch=arch or "actionclip")
        source = model_name
    elif hub.is_published(checkpoint):
        model = hub.load_published(str(checkpoint))
        source = str(checkpoint)
    else:
        format, path = local_format(Path(checkpoint), arch)
        model = read_format(format, path, visual_prompt=visual_prompt, num_frames=num_frames)
        source = str(checkpoint)
    if arch is not None and model.config.arch != arch:
        raise CheckpointError(f"{source}: holds an {model.config.arch!r} model, not {arch!r}")
    return model.eval()
