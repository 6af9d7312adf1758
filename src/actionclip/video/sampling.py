"""Which frames of a video make a clip: segment-based (TSN) sampling as in the official ActionCLIP code.

The video's ``num_frames`` frames are cut into ``T`` equal segments. Training takes one random frame
from each segment; testing takes the centre of each. Both follow ``datasets/datasets.py`` of the
official code (``_sample_indices`` / ``_get_val_indices`` with ``new_length=1``), but return 0-based
indices: the official code adds ``index_bias=1`` to turn them into ``img_00001.jpg``-style file numbers.
"""

from __future__ import annotations

import numpy as np

RandomSource = np.random.Generator | np.random.RandomState | int | None


def as_rng(rng: RandomSource) -> np.random.Generator | np.random.RandomState:
    """Turn ``rng`` into a random source. An int seeds a legacy ``RandomState`` so that
    ``sample_indices(..., rng=seed)`` draws exactly what the official code draws after ``np.random.seed(seed)``."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (np.random.Generator, np.random.RandomState)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.RandomState(int(rng))
    raise TypeError(f"rng must be a numpy Generator, RandomState, int seed or None, not {type(rng).__name__}")


def _randint(rng: np.random.Generator | np.random.RandomState, high: int, size: int | None = None):
    # Same call pattern for both kinds of source, so a RandomState replays the official draws.
    if isinstance(rng, np.random.RandomState):
        return rng.randint(high, size=size)
    return rng.integers(high, size=size)


def _check(num_frames: int, T: int) -> None:
    if int(num_frames) < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if int(T) < 1:
        raise ValueError(f"T (frames per clip) must be >= 1, got {T}")


def sample_indices(num_frames: int, T: int, mode: str = "train", rng: RandomSource = None) -> list[int]:
    """Return ``T`` 0-based frame indices of a video with ``num_frames`` frames.

    ``mode="train"``: one random frame in each segment ``[i*N//T, (i+1)*N//T)``; a video with
    ``N <= T`` frames gives every frame once plus ``T-N`` random repeats, sorted.
    ``mode="test"``: the centre of each segment, ``int(i*N/T + (N/T - 1)/2)`` (``i*N//T`` when
    ``N <= T``, ``N//2`` when ``T == 1``); deterministic, ``rng`` is unused.
    """
    _check(num_frames, T)
    n, t = int(num_frames), int(T)
    if mode == "test":
        if t == 1:
            return [n // 2]
        if n <= t:
            return [i * n // t for i in range(t)]
        offset = (n / t - 1) / 2.0
        return [int(i * n / t + offset) for i in range(t)]
    if mode != "train":
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    rng = as_rng(rng)
    if n <= t:
        extra = _randint(rng, n, size=t - n)
        return sorted(int(i) for i in np.concatenate([np.arange(n), extra]))
    ticks = [i * n // t for i in range(t + 1)]
    return [ticks[i] + int(_randint(rng, ticks[i + 1] - ticks[i])) for i in range(t)]


def sample_clips(num_frames: int, T: int, num_clips: int) -> list[list[int]]:
    """``num_clips`` test clips of ``T`` frames for multi-view testing.

    Every clip spans the whole video with one frame per segment; clip ``k`` takes the point at
    ``(k + 0.5) / num_clips`` of each segment, so the clips interleave evenly. With one clip this is
    exactly ``sample_indices(num_frames, T, "test")``. A video with ``N <= T`` frames has nothing
    more to show: every clip is the test clip.
    """
    _check(num_frames, T)
    if int(num_clips) < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    n, t, k_clips = int(num_frames), int(T), int(num_clips)
    if n <= t or (t == 1 and k_clips == 1):
        return [sample_indices(n, t, "test") for _ in range(k_clips)]
    seg = n / t
    return [[int(i * seg + (k + 0.5) * seg / k_clips - 0.5) for i in range(t)] for k in range(k_clips)]
