"""What frames a model takes: the side of its square input and the mean/std its frames are normalised with. Also
read off an ONNX model's config, whose shape is the same."""

from __future__ import annotations

from torch import nn


def model_image_size(model: nn.Module) -> int:
    """The side of the square frames the model takes (its CLIP's ``vision_cfg.image_size``)."""
    size = model.config.clip["vision_cfg"]["image_size"]
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f"the model's input is not square ({size}); predict crops square frames")
        size = size[0]
    return int(size)


def model_normalization(model: nn.Module) -> str:
    """The input mean/std of the model's frames: its source's for an imported model (ViFi-CLIP: ImageNet's), else
    CLIP's."""
    return getattr(model.config, "normalization", None) or "clip"
