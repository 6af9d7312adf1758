"""The clips of a video collection, for embeddings and timelines: one clip per video (the clip ``actionclip eval``
scores), or one clip per sliding window of ``window`` seconds every ``stride`` seconds.

Times are the frames' presentation timestamps (pts) in seconds, so variable frame rates and streams that do not start
at 0 are placed right. A window ``[start, end)`` holds the frames whose pts lie in it, and its clip samples ``T`` of
them as the test protocol samples a whole video (the centre of ``T`` equal segments). The windows of a video are
decoded in one forward pass (``VideoFile.stream``), each handed on as soon as its last frame is decoded, so that a
long video never lies in memory whole.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from actionclip.video.decode import VideoFile, VideoReadError, open_video
from actionclip.video.sampling import sample_indices

from .transforms import TestTransform

# Where the packets carry no usable timestamps (AVI) and the header states no frame rate.
FALLBACK_FRAME_RATE = 25.0
# The most windows of one video: 28 hours at a 1 s stride. A stride far below a frame's duration planned windows
# without end (`--window 1 --stride 0.0000001` grew memory by 55 MB/s and printed nothing).
MAX_WINDOWS = 100_000


@dataclass(frozen=True)
class Window:
    start: float  # seconds (pts)
    end: float
    indices: tuple[int, ...]  # the T frames sampled in it


def frame_times(video) -> list[float] | None:
    """The pts in seconds of each frame of ``video`` (a ``VideoFile``): from the packets, or for containers whose
    timestamps cannot identify frames, the frame index over the stated frame rate. None for a frame folder."""
    if not isinstance(video, VideoFile):
        return None
    times = video.frame_times
    if times is None:
        rate = video.frame_rate or FALLBACK_FRAME_RATE
        times = [i / rate for i in range(video.num_frames)]
    return times


def video_end(times: Sequence[float]) -> float:
    """The end of the last frame: its pts plus the previous frame's duration."""
    return times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1 / FALLBACK_FRAME_RATE)


def check_window(window: float | None, stride: float | None) -> tuple[float | None, float | None]:
    """``(window, stride)`` checked; stride defaults to the window (no overlap)."""
    if window is None:
        if stride is not None:
            raise ValueError("a stride needs a window (--window SECONDS)")
        return None, None
    stride = window if stride is None else stride
    if not window > 0 or not stride > 0:
        raise ValueError(f"window and stride must be > 0 seconds, got {window} and {stride}")
    return float(window), float(stride)


def plan_windows(times: Sequence[float], num_frames: int, window: float | None, stride: float | None) -> list[Window]:
    """The windows of a video whose frames have pts ``times`` (seconds, sorted). ``window`` None: one window over the
    whole video, sampled exactly as ``actionclip eval`` samples it. Windows start every ``stride`` seconds from the
    first frame until one reaches the end of the video; the last is cut at the end. Windows without frames (a gap in
    a variable-frame-rate stream) are left out. More than ``MAX_WINDOWS`` is a ValueError."""
    end = video_end(times)
    if window is None:
        return [Window(times[0], end, tuple(sample_indices(len(times), num_frames, "test")))]
    count = max(math.ceil((end - 1e-9 - window - times[0]) / stride), 0) + 1  # the loop's last k, plus one
    if count > MAX_WINDOWS:
        raise ValueError(
            f"--window {window} with --stride {stride} gives {count} windows over its {end - times[0]:.1f} s, more than "
            f"{MAX_WINDOWS} per video: give a longer --stride"
        )
    windows, k = [], 0
    while True:
        # Multiples of the stride, not a running sum, so that rounding does not drift along an hour of video.
        start = round(times[0] + k * stride, 6)
        stop = round(min(start + window, end), 6)
        first, after = bisect.bisect_left(times, start - 1e-9), bisect.bisect_left(times, stop - 1e-9)
        if after > first:
            windows.append(Window(start, stop, tuple(first + i for i in sample_indices(after - first, num_frames, "test"))))
        if start + window >= end - 1e-9:
            return windows
        k += 1


def window_frames(video: VideoFile, windows: list[Window]) -> Iterator[tuple[Window, np.ndarray]]:
    """Each window with its frames ``[T, H, W, 3]``, from one forward decoding pass over ``video``. A frame is kept
    only until the last window that samples it has been handed on."""
    last_use: dict[int, int] = {}
    for number, window in enumerate(windows):
        for index in window.indices:
            last_use[index] = number
    frames: dict[int, np.ndarray] = {}
    pending = 0
    for index, frame in video.stream(sorted(last_use)):
        frames[index] = frame
        while pending < len(windows) and max(windows[pending].indices) <= index:
            yield windows[pending], np.stack([frames[i] for i in windows[pending].indices])
            for i in set(windows[pending].indices):
                if last_use[i] == pending:
                    del frames[i]
            pending += 1


class CollectionClips(IterableDataset):
    """Batches of clips of ``paths``: ``(frames, clips, finished)``. ``frames``: uint8 ``[B, T, 3, S, S]`` (None when
    a batch only reports finished videos); ``clips``: ``(path position, start, end)`` of each; ``finished``: one dict
    per video whose clips have all been handed on, ``{"position", "start", "end"}`` (its first frame and the end of
    its last, in seconds; None for a frame folder) plus ``"warning"`` for a truncated file, or ``{"position",
    "error"}`` for a video that cannot be read (clips of it already handed on are to be dropped). With DataLoader
    workers each takes every n-th video. Use ``DataLoader(dataset, batch_size=None)``."""

    def __init__(
        self,
        paths: Sequence[str],
        num_frames: int,
        size: int,
        window: float | None = None,
        stride: float | None = None,
        batch_size: int = 8,
        decode_short_side: int | None = None,
        normalization: str = "clip",
    ):
        self.paths = list(paths)
        self.num_frames = num_frames
        self.window, self.stride = check_window(window, stride)
        self.transform = TestTransform(size=size, normalization=normalization)
        self.batch_size = batch_size
        self.decode_short_side = decode_short_side

    @property
    def normalization(self) -> str:
        return self.transform.normalization

    def _clips(self, position: int) -> Iterator[tuple[np.ndarray, float | None, float | None] | dict]:
        """The clips of video ``position``, then its ``finished`` dict."""
        video = open_video(self.paths[position], short_side=self.decode_short_side)
        times = frame_times(video)
        if times is None:
            if self.window is not None:
                raise VideoReadError(video.path, "a frame folder has no timestamps: windows need a video file")
            indices = sample_indices(video.num_frames, self.num_frames, "test")
            yield video.read(indices), None, None
            yield {"position": position, "start": None, "end": None}
            return
        try:
            windows = plan_windows(times, self.num_frames, self.window, self.stride)
        except ValueError as error:  # too many windows for this video: its error, the other videos go on
            raise VideoReadError(video.path, str(error)) from None
        if self.window is None:  # a few frames: seek to them, as eval does
            try:
                frames = video.read(windows[0].indices)
            except VideoReadError as exc:
                if not exc.num_frames or exc.num_frames >= len(times):
                    raise
                # Fewer frames decode than the packets promised: sample again within them, as eval does.
                times = times[: exc.num_frames]
                windows = plan_windows(times, self.num_frames, None, None)
                frames = video.read(windows[0].indices)
            yield frames, windows[0].start, windows[0].end
        else:
            for window, frames in window_frames(video, windows):
                yield frames, window.start, window.end
        done = {"position": position, "start": times[0], "end": video_end(times)}
        if video.shortfall:
            done["warning"] = video.shortfall
        yield done

    def __iter__(self):
        worker = get_worker_info()
        positions = range(len(self.paths))
        if worker is not None:
            positions = positions[worker.id :: worker.num_workers]
        frames, clips, finished = [], [], []
        for position in positions:
            try:
                for item in self._clips(position):
                    if isinstance(item, dict):
                        finished.append(item)
                        continue
                    clip, start, end = item
                    frames.append(self.transform(torch.from_numpy(clip)))
                    clips.append((position, start, end))
                    if len(frames) == self.batch_size:
                        yield torch.stack(frames), clips, finished
                        frames, clips, finished = [], [], []
            except VideoReadError as exc:
                finished.append({"position": position, "error": exc.reason})
        if frames or finished:
            yield (torch.stack(frames) if frames else None), clips, finished
