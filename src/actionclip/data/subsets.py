"""Few-shot and zero-shot subsets: K samples per class, base/novel class splits, disjoint class sets.

These follow the protocols of X-CLIP and ViFi-CLIP: few-shot training on K = 2, 4, 8 or 16 videos per
class, base-to-novel generalisation (train on the first half of the classes, test on both halves),
and zero-shot testing on random class subsets.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from .annotations import Sample


def k_shot(samples: Sequence[Sample], k: int, seed: int = 0) -> list[Sample]:
    """``k`` samples of every class, drawn without replacement under ``seed``; order as in ``samples``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        if isinstance(sample.label, tuple):
            raise ValueError(f"{sample.path}: k-shot sampling needs single-label samples")
        by_class[sample.label].append(i)
    short = {label: len(idx) for label, idx in by_class.items() if len(idx) < k}
    if short:
        raise ValueError(f"{len(short)} classes have fewer than {k} samples (class: count) {dict(sorted(short.items()))}")
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for label in sorted(by_class) for i in rng.choice(by_class[label], size=k, replace=False))
    return [samples[i] for i in chosen]


def base_novel_split(num_classes: int, num_base: int | None = None) -> tuple[list[int], list[int]]:
    """Base classes are the first ``num_base`` label ids (default: the first half, rounded up), novel
    classes the rest, as in ViFi-CLIP's base-to-novel protocol."""
    num_base = (num_classes + 1) // 2 if num_base is None else num_base
    if not 0 < num_base < num_classes:
        raise ValueError(f"num_base must be between 1 and {num_classes - 1}, got {num_base}")
    return list(range(num_base)), list(range(num_base, num_classes))


def select_classes(samples: Sequence[Sample], class_names: Sequence[str], class_ids: Sequence[int]) -> tuple[list[Sample], list[str]]:
    """The samples of ``class_ids``, relabelled ``0..len(class_ids)-1`` in the order given, and their names."""
    new_label = {old: new for new, old in enumerate(class_ids)}
    if len(new_label) != len(class_ids) or any(not 0 <= c < len(class_names) for c in class_ids):
        raise ValueError(f"class_ids must be distinct ids below {len(class_names)}")
    kept = [Sample(s.path, new_label[s.label], s.num_frames) for s in samples if not isinstance(s.label, tuple) and s.label in new_label]
    return kept, [class_names[c] for c in class_ids]


def class_subsets(num_classes: int, subset_size: int, num_subsets: int, seed: int = 0) -> list[list[int]]:
    """``num_subsets`` disjoint random sets of ``subset_size`` class ids (each sorted) for zero-shot evaluation."""
    if subset_size < 1 or num_subsets < 1 or subset_size * num_subsets > num_classes:
        raise ValueError(f"cannot draw {num_subsets} disjoint subsets of {subset_size} from {num_classes} classes")
    order = np.random.default_rng(seed).permutation(num_classes)
    return [sorted(int(c) for c in order[i * subset_size : (i + 1) * subset_size]) for i in range(num_subsets)]
