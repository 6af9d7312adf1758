"""``VideoDataset``: clips sampled, decoded and transformed from a list of ``Sample``.

A video that cannot be read comes out as a ``BadSample`` instead of ``(frames, label)`` (``skip_bad=True``, the
default); ``bad_samples.py`` says what the loops do with it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from actionclip.prompts import clean_class_name
from actionclip.video.clips import read_clips
from actionclip.video.decode import FRAME_OFFSET, FRAME_TEMPLATE, VideoReadError, open_video
from actionclip.video.sampling import sample_clips, sample_indices

from .annotations import Sample, check_labels
from .bad_samples import BadSample, PartlyRead
from .sample_table import SampleTable
from .transforms import TestTransform, TrainTransform


class VideoDataset(Dataset):
    """Clips of ``num_frames`` frames from ``samples``; items are ``(frames, label)``.

    ``frames`` are uint8: the consumer moves them to its device and normalises them there with the dataset's
    ``normalization`` statistics (``frames_to_device``). ``samples`` are kept as a ``SampleTable``.
    ``mode="train"``: random TSN sampling and ``TrainTransform``; ``frames`` is ``[T, 3, S, S]``.
    ``mode="test"``: centre sampling and ``TestTransform``; with ``num_clips > 1`` or a transform that
    returns several crops (``ThreeCropTransform``), ``frames`` is ``[views, T, 3, S, S]``, the views
    clip-major. The label is an int, or a multi-hot float tensor over the classes for multi-label data.
    ``classes`` are the prompt texts: ``class_texts`` if given, else the cleaned ``class_names``.
    With ``seed`` set, item ``i`` of epoch ``e`` (``set_epoch``) is the same clip whatever the workers.
    ``decode_short_side``: video frames larger than that are scaled down while decoding (``VideoFile``).
    ``mark_partly_read``: the item of a video much shorter than its header states (a truncated file) comes in a
    ``PartlyRead`` saying how much could be read; its clips are sampled from that part either way.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        class_names: Sequence[str],
        num_frames: int = 8,
        mode: str = "train",
        transform: Callable | None = None,
        num_clips: int = 1,
        seed: int | None = None,
        skip_bad: bool = True,
        class_texts: Sequence[str] | None = None,
        frame_template: str = FRAME_TEMPLATE,
        frame_offset: int = FRAME_OFFSET,
        decode_short_side: int | None = None,
        mark_partly_read: bool = False,
    ):
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        if num_clips > 1 and mode == "train":
            raise ValueError("num_clips > 1 is for multi-view testing (mode='test')")
        if class_texts is not None and len(class_texts) != len(class_names):
            raise ValueError(f"{len(class_texts)} class texts for {len(class_names)} classes")
        samples = list(samples)
        self.class_names = list(class_names)
        self.classes = list(class_texts) if class_texts is not None else [clean_class_name(c) for c in class_names]
        check_labels(samples, self.class_names, "samples")
        self.samples = SampleTable(samples)
        self.num_frames = num_frames
        self.mode = mode
        self.transform = transform or (TrainTransform() if mode == "train" else TestTransform())
        self.num_clips = num_clips
        self.seed = seed
        self.skip_bad = skip_bad
        self.frame_template = frame_template
        self.frame_offset = frame_offset
        self.decode_short_side = decode_short_side
        self.mark_partly_read = mark_partly_read
        self.epoch = 0

    @property
    def normalization(self) -> str:
        """The statistics the frames are normalised with once on the device: the transform's (CLIP's by default)."""
        return getattr(self.transform, "normalization", "clip")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _target(self, label: int | tuple[int, ...]) -> int | torch.Tensor:
        if isinstance(label, tuple):
            target = torch.zeros(len(self.classes))
            target[list(label)] = 1.0
            return target
        return label

    def _indices(self, count: int, rng: np.random.Generator) -> list[list[int]]:
        if self.mode == "train":
            return [sample_indices(count, self.num_frames, "train", rng)]
        return sample_clips(count, self.num_frames, self.num_clips)

    def _read(self, sample: Sample, rng: np.random.Generator) -> tuple[list[np.ndarray], str | None]:
        """The clips' frames, and the video's ``shortfall`` (how much could be read, if much less than it states)."""
        video = open_video(sample.path, self.frame_template, self.frame_offset, self.decode_short_side)
        clips = read_clips(video, sample.num_frames or video.num_frames, lambda count: self._indices(count, rng))
        return clips, video.shortfall

    # The training engine passes ``(index, sample_seed)`` so that augmentation follows the sample, not the epoch.
    accepts_seed = True

    def __getitem__(self, item: int | tuple[int, int]):
        index, sample_seed = item if isinstance(item, tuple) else (item, None)
        sample = self.samples[index]
        if sample_seed is not None:
            rng = np.random.default_rng(sample_seed)
        else:
            rng = np.random.default_rng(None if self.seed is None else [self.seed, self.epoch, index])
        try:
            clips, shortfall = self._read(sample, rng)
        except VideoReadError as exc:
            if not self.skip_bad:
                raise
            return BadSample(index, sample.path, exc.reason)
        views = [self.transform(torch.from_numpy(clip), rng) for clip in clips]
        if len(views) == 1 and views[0].ndim == 4:
            frames = views[0]
        else:
            frames = torch.cat([v if v.ndim == 5 else v.unsqueeze(0) for v in views])
        item = frames, self._target(sample.label)
        if self.mark_partly_read and shortfall:
            return PartlyRead(item, BadSample(index, sample.path, shortfall))
        return item
