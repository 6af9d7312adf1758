"""What evaluation checks before it scores a model on a config's data: the classes, frames per clip and image size.

A model that cannot score the data (a classifier head trained on other classes, learned frame positions for another
frame count, another input size) is refused with one line naming the config key, before any video is decoded; a frame
count the model computes correctly but was not trained with is evaluated, with a warning saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

logger = logging.getLogger("actionclip.engine")


class EvaluationMismatch(ValueError):
    """The model cannot be evaluated on the data a config describes: its classes, frames per clip or image size."""


def check_classes(model: nn.Module, source: str, num_classes: int) -> None:
    """A classifier head scores only the classes it was trained on; a video-text model scores any class list."""
    head = model.config.num_classes if model.has_class_head else None
    if head is not None and head != num_classes:
        raise EvaluationMismatch(
            f"{source} has a {head}-class head (model.arch unimodal) but the config's validation data (data section) "
            f"has {num_classes} classes; a classifier head only scores the classes it was trained on"
        )


def check_frames(model: nn.Module, source: str, num_frames: int) -> str | None:
    """Refuse a frame count the model cannot compute correctly; return the warning (logged) when it can but was trained
    with another."""
    trained = model.config.num_frames
    if num_frames == trained:
        return None
    prompt = model.temporal_module
    if not model.any_frame_count:
        raise EvaluationMismatch(
            f"{source} was trained on {trained} frames per clip and {prompt} learned a position for each; "
            f"model.num_frames is {num_frames}: set model.num_frames={trained}"
        )
    warning = (
        f"{source} was trained on {trained} frames per clip; evaluating on model.num_frames={num_frames} "
        f"({prompt} runs on any number of frames)"
    )
    logger.warning(warning)
    return warning


def check_image_size(model: nn.Module, source: str, image_size: int) -> None:
    size = model.config.clip["vision_cfg"]["image_size"]
    height, width = size if isinstance(size, Sequence) else (size, size)
    if (height, width) != (image_size, image_size):
        advice = f"set data.image_size={height}" if height == width else "evaluation crops square frames"
        raise EvaluationMismatch(f"{source} takes {height}x{width} images but data.image_size is {image_size}: {advice}")
