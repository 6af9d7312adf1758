"""``SampleTable``: a dataset's ``Sample`` list kept in a few numpy arrays.

A DataLoader worker is a fork of the process that built the dataset. A list of 240,000 ``Sample`` objects (Kinetics)
is 240,000 reference-counted Python objects plus their strings and tuples: every time a worker touches one (or its
garbage collector walks them) the page holding it is copied, so each worker ends up with a private copy of most
of the list. Arrays are a handful of objects whose pages are only read, so they stay shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from .annotations import Sample


class SampleTable:
    """The samples as arrays, read back one ``Sample`` at a time: ``table[i]``, ``len(table)``, ``iter(table)``.

    Paths are one UTF-8 byte buffer with offsets; labels are one flat array with offsets (a multi-label sample
    has several, and ``multi_label`` says it came as a tuple); ``num_frames`` -1 stands for None."""

    def __init__(self, samples: Iterable[Sample]):
        paths, labels, path_ends, label_ends, multi, frames = [], [], [], [], [], []
        path_end = label_end = 0
        for sample in samples:
            path = sample.path.encode("utf-8", "surrogateescape")  # file names that are not UTF-8 round-trip
            label = sample.label if isinstance(sample.label, tuple) else (sample.label,)
            path_end, label_end = path_end + len(path), label_end + len(label)
            paths.append(path)
            labels.extend(label)
            path_ends.append(path_end)
            label_ends.append(label_end)
            multi.append(isinstance(sample.label, tuple))
            frames.append(-1 if sample.num_frames is None else sample.num_frames)
        self._paths = np.frombuffer(b"".join(paths), dtype=np.uint8)
        self._path_offsets = np.array([0, *path_ends], dtype=np.int64)
        self.labels = np.array(labels, dtype=np.int64)
        self._label_offsets = np.array([0, *label_ends], dtype=np.int64)
        self.multi_label = np.array(multi, dtype=bool)
        self.num_frames = np.array(frames, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.num_frames)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        index = index % len(self)
        path = self._paths[self._path_offsets[index] : self._path_offsets[index + 1]].tobytes()
        labels = self.labels[self._label_offsets[index] : self._label_offsets[index + 1]].tolist()
        frames = int(self.num_frames[index])
        return Sample(
            path.decode("utf-8", "surrogateescape"), tuple(labels) if self.multi_label[index] else labels[0], None if frames < 0 else frames
        )

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))
