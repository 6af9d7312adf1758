"""The inputs of inference: label lists, video paths (folders expanded), the clips each video is scored on, the
numeric options checked, and a ranked result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from actionclip.data.annotations import Sample, read_text
from actionclip.data.bad_samples import IndexedSamples
from actionclip.data.build import parse_views
from actionclip.data.datasets import VideoDataset
from actionclip.data.transforms import TestTransform, ThreeCropTransform
from actionclip.video.decode import find_videos

PathLike = str | os.PathLike


def parse_labels(text: str) -> list[str]:
    """ "arm wrestling, playing guitar" -> ["arm wrestling", "playing guitar"]."""
    return [label.strip() for label in text.split(",") if label.strip()]


def read_labels(path: PathLike) -> list[str]:
    """One label per line (UTF-8, with or without a byte-order mark); blank lines and lines starting with '#' are
    skipped."""
    lines = read_text(path).splitlines()
    labels = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not labels:
        raise ValueError(f"{path}: no labels found")
    return labels


def check_labels(labels: Sequence[str]) -> list[str]:
    labels = parse_labels(labels) if isinstance(labels, str) else [str(label) for label in labels]
    if not labels:
        raise ValueError("no labels given")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"labels given more than once: {duplicates}")
    return labels


def collect_videos(inputs: PathLike | Sequence[PathLike]) -> list[str]:
    """Input paths with every folder replaced by the video files below it (recursive, sorted).

    Files are kept whatever their extension (the user named them) and missing ones are kept too, so that each
    gets its own error, as do broken symbolic links in folders. A folder without video files is kept as is: it is
    read as a folder of frames (``img_00001.jpg``, ... as in the official ActionCLIP data), or reported.
    """
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths.extend(find_videos(item) or [str(item)])
        else:
            paths.append(str(item))
    return paths


def video_clips(
    paths: Sequence[str], num_frames: int, size: int, views: str = "1x1", decode_short_side: int | None = None, normalization: str = "clip"
) -> IndexedSamples:
    """Item ``i``: ``(frames, 0, i)`` with ``frames`` ``[T, 3, S, S]`` or ``[V, T, 3, S, S]`` (V = clips x crops),
    or a ``BadSample``. The clips are those ``actionclip eval`` scores (``VideoDataset``'s test mode); the label is
    unused. A truncated video's item is a ``PartlyRead``. ``normalization``: the mean/std, clip or imagenet."""
    clips, crops = parse_views(views)
    transform = (ThreeCropTransform if crops == 3 else TestTransform)(size=size, normalization=normalization)
    dataset = VideoDataset(
        [Sample(path, 0) for path in paths],
        ["unused"],
        num_frames,
        "test",
        transform,
        clips,
        decode_short_side=decode_short_side,
        mark_partly_read=True,
    )
    return IndexedSamples(dataset)


def check_at_least_one(**values: int | None) -> None:
    """ValueError naming the first value below 1 (None: not given). 0 would otherwise pass for "not given" in
    ``value or default``, and a negative size fails every video's decoding."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def ranked(path: str, probabilities: torch.Tensor, labels: Sequence[str], top_k: int) -> dict:
    scores, order = probabilities.topk(min(top_k, len(labels)))
    return {"video": path, "labels": [labels[i] for i in order.tolist()], "scores": scores.tolist()}
