"""Unreadable videos never crash a run: one mechanism for training, evaluation and prediction.

A dataset returns a ``BadSample`` in place of a video it cannot read. ``collate_skip_bad``, the ``collate_fn`` of
every loader here, drops those from the batch and keeps them in ``Batch.bad``. Two wrappers add what the loops need:

- ``IndexedSamples`` appends each item's dataset index, by which evaluation puts the results of several processes
  back in dataset order and prediction prints them in input order;
- ``SeededSamples`` (training) loads item ``(index, sample_seed)`` with augmentation drawn from the sample's own seed,
  and replaces an unreadable video by the next one, so that batches stay full and DDP ranks step together; the
  replaced ones still reach ``Batch.bad``.

``fail_if_too_many`` stops a run once more than a fraction of its data is unreadable; ``BadSampleGuard`` applies it
to the epochs of a plain loop::

    dataset = VideoDataset(*ucf101_split(root, splits, 1, "train"), num_frames=8, mode="train", seed=0)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=8, collate_fn=collate_skip_bad)
    guard = BadSampleGuard(max_fraction=0.01)
    for epoch in range(epochs):
        dataset.set_epoch(epoch)  # new clips each epoch, reproducible (not with persistent_workers)
        for frames, labels in guard.epoch(loader):  # frames [B, T, 3, S, S]
            ...
        guard.bad  # BadSample(index, path, reason) of this epoch
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

logger = logging.getLogger("actionclip.data")


@dataclass(frozen=True)
class BadSample:
    """What a dataset returns instead of ``(frames, label)`` for a video it cannot read."""

    index: int
    path: str
    reason: str


class TooManyBadSamples(RuntimeError):
    pass


class Replaced(NamedTuple):
    """A ``SeededSamples`` item: the item loaded, and the unreadable videos it stands in for."""

    item: tuple
    bad: list[BadSample]


class PartlyRead(NamedTuple):
    """An item of a video only part of which could be read (``VideoDataset(mark_partly_read=True)``): the item, sampled
    from the part that could, and a ``BadSample`` whose reason says how much that is."""

    item: tuple
    note: BadSample


class Batch(NamedTuple):
    """A collated batch without its bad samples; ``frames`` and ``labels`` are ``None`` if all were bad."""

    frames: torch.Tensor | None
    labels: torch.Tensor | None
    bad: list[BadSample]  # dropped, or in training replaced
    indices: torch.Tensor | None = None  # the dataset index of each video in ``frames`` (the wrappers)
    seeds: torch.Tensor | None = None  # the sample seed of each (SeededSamples)
    partly_read: Sequence[BadSample] = ()  # videos in ``frames`` of which only a part could be read


def collate_skip_bad(items: list) -> Batch:
    """``collate_fn``: items are ``(frames, label, *extra)`` tuples, ``BadSample``, ``Replaced`` or ``PartlyRead``."""
    good, bad, partly_read = [], [], []
    for item in items:
        if isinstance(item, Replaced):
            bad.extend(item.bad)
            item = item.item
        if isinstance(item, PartlyRead):
            partly_read.append(item.note)
            item = item.item
        (bad if isinstance(item, BadSample) else good).append(item)
    if not good:
        return Batch(None, None, bad)
    frames, labels, *extra = default_collate(good)
    return Batch(frames, labels, bad, *extra, partly_read=partly_read)


class IndexedSamples(Dataset):
    """Item ``i``: ``dataset[indices[i]]`` with that index appended, ``(frames, label, index)`` (in its ``PartlyRead``
    if it is one), or its ``BadSample``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None = None):
        self.dataset = dataset
        # An array, not a list of ints: forked DataLoader workers would each copy the pages of 240k int objects.
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = int(self.indices[position])
        item = self.dataset[index]
        if isinstance(item, PartlyRead):
            return PartlyRead((*item.item, index), item.note)
        return item if isinstance(item, BadSample) else (*item, index)


class SeededSamples(Dataset):
    """Item ``(index, sample_seed)``: ``Replaced((frames, label, index, sample_seed), bad)``, its random augmentation
    drawn from the sample's own seed, not from the worker, the batch or the run. A video that cannot be read is
    replaced by the next one (``bad`` lists those), up to ``max_substitutes`` in a row."""

    def __init__(self, dataset: Dataset, max_substitutes: int = 16):
        self.dataset = dataset
        self.max_substitutes = max_substitutes

    def __len__(self) -> int:
        return len(self.dataset)

    def _load(self, index: int, seed: int):
        if getattr(self.dataset, "accepts_seed", False):
            return self.dataset[(index, seed)]
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        return self.dataset[index]

    def __getitem__(self, item: tuple[int, int]) -> Replaced:
        index, seed = item
        bad = []
        for attempt in range(self.max_substitutes):
            position = (index + attempt) % len(self.dataset)
            loaded = self._load(position, seed)
            if not isinstance(loaded, BadSample):
                video, target = loaded
                return Replaced((video, target, position, seed), bad)
            bad.append(loaded)
        raise TooManyBadSamples(f"{self.max_substitutes} consecutive unreadable videos: " + ", ".join(b.path for b in bad))


def fail_if_too_many(bad: Sequence[BadSample], total: int, max_fraction: float, what: str = "videos", setting: str = "") -> None:
    """Raise ``TooManyBadSamples``, listing the first of them, if more than ``max_fraction`` of ``total`` are bad;
    ``setting`` names where the fraction was set."""
    if len(bad) > max_fraction * total:
        listed = "\n".join(f"  {b.path}: {b.reason}" for b in bad[:20])
        limit = f"{setting}={max_fraction}" if setting else f"{max_fraction:.1%}"
        raise TooManyBadSamples(f"{len(bad)} of {total} {what} are unreadable (more than {limit}):\n{listed}")


class BadSampleGuard:
    """Counts the bad samples of each epoch (see the module docstring). ``max_fraction`` is of the
    dataset's size when the loader has one, else of the samples seen by the end of the epoch."""

    def __init__(self, max_fraction: float = 0.05):
        self.max_fraction = max_fraction
        self.bad: list[BadSample] = []
        self.seen = 0
        self.epochs = 0

    def epoch(self, loader: Iterable[Batch]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(frames, labels)`` of each batch that has good samples."""
        self.bad, self.seen = [], 0
        dataset = getattr(loader, "dataset", None)
        total = len(dataset) if dataset is not None else None
        for batch in loader:
            self.bad.extend(batch.bad)
            self.seen += len(batch.bad) + (0 if batch.frames is None else len(batch.frames))
            if total is not None and batch.bad:
                fail_if_too_many(self.bad, total, self.max_fraction)
            if batch.frames is not None:
                yield batch.frames, batch.labels
        self.epochs += 1
        if self.bad:
            logger.warning(
                "epoch %d: skipped %d of %d videos:\n%s",
                self.epochs,
                len(self.bad),
                self.seen,
                "\n".join(f"  {b.path}: {b.reason}" for b in self.bad),
            )
        fail_if_too_many(self.bad, total if total is not None else self.seen, self.max_fraction)
