"""Reading frames from video files (PyAV) and from folders of pre-extracted frames.

Frame ``i`` of a video is the ``i``-th frame the decoder emits, in presentation order. The header's
frame count and frame rate are never used to find frames: they are missing or wrong often enough
(variable frame rate, truncated uploads, AVI files that count dropped frames).

Sparse reads decode as little as possible, and give exactly the pixels a full sequential decode gives:

* sorted, de-duplicated indices are served by forward decoding runs, each started either at the
  beginning of the file or by a seek to the key frame at or before its first index. A seek is taken
  only when it skips more frames than it costs, so files with a long GOP (x264's default is 250) are
  read in one forward pass that stops after the last wanted frame, and files with dense key frames
  jump from key frame to key frame;
* packets of frames nobody asked for are decoded with ``skip_frame=NONREF``: a frame no other frame
  references can be dropped without changing any other frame;
* only kept frames are converted to RGB, optionally scaled down in the same pass (``short_side``): for a
  1080p source, converting full-size frames to RGB and resizing them afterwards costs more than decoding;
* where torch is loaded, the decoder uses as many threads as torch's intra-op pool: one in a DataLoader worker,
  where the workers already keep the cores busy and FFmpeg's own threads cost more CPU time for the same frames.

Seeking and skipping need to know which frame a decoded picture is; it is identified by its
timestamp, looked up in the sorted timestamps of the stream's packets (read once by demuxing, which
does not decode). Containers whose timestamps cannot be trusted for that (AVI: packed B-frames give
timestamps out of presentation order) are decoded sequentially, counting frames. If the decoder ever
contradicts the timestamp table, the read is redone sequentially.
"""

from __future__ import annotations

import bisect
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")
# The official ActionCLIP and the mmaction2 rawframe layout: img_00001.jpg is frame 0.
FRAME_TEMPLATE = "img_{:05d}.jpg"
FRAME_OFFSET = 1
# A seek (flush + demuxer jump + decoding an intra frame) costs about this many forward-decoded frames.
SEEK_COST = 12
# Containers whose packet timestamps do not identify frames in presentation order.
_UNTRUSTED_FORMATS = {"avi"}


def is_truncated(decoded_frames: int, header_frames: int | None) -> bool:
    """Fewer frames than the header states, by more than rounding of the stated duration and encoder delay explain.
    Streamable containers (mkv, avi) and mp4 files with the index first lose their tail silently when cut short;
    the header remembers."""
    return header_frames is not None and decoded_frames < header_frames - max(2, 0.05 * header_frames)


class VideoReadError(RuntimeError):
    """A video or frame folder could not be read. ``num_frames`` is the true frame count when known
    (set when a requested index lies past the last decodable frame)."""

    def __init__(self, path: str | os.PathLike, reason: str, num_frames: int | None = None):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.num_frames = num_frames


class _TimestampMismatch(Exception):
    """The decoder's output disagrees with the packet timestamp table."""


def _check_indices(indices: Sequence[int], path) -> list[int]:
    out = [int(i) for i in indices]
    if not out:
        raise ValueError(f"{path}: no frame indices given")
    if min(out) < 0:
        raise ValueError(f"{path}: frame indices must be >= 0, got {min(out)}")
    return out


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoReadError(path, f"cannot open as a video ({exc.strerror or exc})") from exc


def _decoder_threads() -> int:
    """torch's intra-op threads where torch is loaded (one in a DataLoader worker), else 0: FFmpeg's choice. torch
    is not imported here, so that the torch-free ONNX runtime decodes with this module."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else 0


def video_stream(container, path: str):
    if not container.streams.video:
        raise VideoReadError(path, "no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = _decoder_threads()
    return stream


def decode_frames(container, stream, wanted_pts: set[int] | None = None) -> Iterator[list[av.VideoFrame]]:
    """Yield the frames of each packet, tolerating corrupt packets and a truncated tail like ffmpeg:
    a packet that fails to decode is dropped, a demuxer error ends the stream. With ``wanted_pts``,
    the decoder drops non-reference frames whose timestamp is not wanted."""
    codec = stream.codec_context
    try:
        for packet in container.demux(stream):
            if wanted_pts is not None and packet.size:
                codec.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
            try:
                yield packet.decode()
            except av.error.FFmpegError:
                continue
    except av.error.FFmpegError:
        try:
            yield stream.decode(None)
        except av.error.FFmpegError:
            return


def _to_rgb(frame: av.VideoFrame, short_side: int | None = None) -> np.ndarray:
    # threads=1: PyAV 17+ scales with FFmpeg's threads by default, and a DataLoader worker forked from a process that
    # had scaled that way hung in its first conversion; the workers are the parallelism anyway.
    scale = short_side / min(frame.width, frame.height) if short_side else 1.0
    if scale < 1:
        width, height = round(frame.width * scale), round(frame.height * scale)
        image = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA", threads=1).to_ndarray()
    else:
        image = frame.to_ndarray(format="rgb24", threads=1)
    # Phones store portrait video as landscape plus a display matrix; show it the way players do.
    quarter_turns = round((frame.rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def _stack(frames: dict[int, np.ndarray], indices: list[int], path: str) -> np.ndarray:
    shapes = {frames[i].shape for i in set(indices)}
    if len(shapes) > 1:
        raise VideoReadError(path, f"frame size changes within the video: {sorted(shapes)}")
    return np.stack([frames[i] for i in indices])


class VideoFile:
    """A video file: its frame count and sparse reads. Opening it demuxes the file once (no decoding).
    ``short_side``: frames whose short side is longer are scaled down to it (area averaging) as they are
    converted to RGB; smaller ones are left as they are."""

    def __init__(self, path: str | os.PathLike, short_side: int | None = None):
        self.path = str(path)
        self.short_side = short_side
        if not os.path.exists(self.path):
            if os.path.islink(self.path):
                raise VideoReadError(self.path, f"broken symbolic link (to {os.readlink(self.path)})")
            raise VideoReadError(self.path, "file not found")
        if os.path.isdir(self.path):
            raise VideoReadError(self.path, "is a directory, not a video file")
        if os.path.getsize(self.path) == 0:
            raise VideoReadError(self.path, "empty file (0 bytes)")
        container = _open(self.path)
        with container:
            stream = video_stream(container, self.path)
            trusted = container.format.name not in _UNTRUSTED_FORMATS
            # What the header claims, kept only to spot truncated files (it is not used to find frames).
            self.header_frames: int | None = stream.frames or None
            self.frame_rate = float(stream.average_rate) if stream.average_rate else None
            self.time_base = stream.time_base
            if self.header_frames is None and container.duration and self.frame_rate:
                # Matroska's duration counts from 0, not from a stream that starts later (MPEG-TS's from its start:
                # a truncation of less than its start time goes unnoticed there).
                span = container.duration - max(container.start_time or 0, 0)
                self.header_frames = round(span / 1e6 * self.frame_rate)
            timestamps, keys = [], []
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        timestamps.append(packet.pts)
                        keys.append(packet.is_keyframe)
            except av.error.FFmpegError:
                pass  # truncated: the packets read so far are all there is
        if not timestamps:
            raise VideoReadError(self.path, "no video packets (empty or unreadable stream)")
        self._packet_count = len(timestamps)
        self._known_count: int | None = None
        self._pts: list[int] = []
        self._keyframes: list[int] = []
        if trusted and None not in timestamps and len(set(timestamps)) == len(timestamps):
            self._pts = sorted(timestamps)
            rank = {pts: i for i, pts in enumerate(self._pts)}
            self._keyframes = sorted(rank[pts] for pts, key in zip(timestamps, keys) if key)
        self._index_of_pts = {pts: i for i, pts in enumerate(self._pts)}

    @property
    def num_frames(self) -> int:
        """Frame count from the packets (every packet of a video stream carries one frame); replaced by
        the decoder's count once a read runs into the end of the decodable frames."""
        return self._known_count if self._known_count is not None else self._packet_count

    @property
    def shortfall(self) -> str | None:
        """How much of what the header states can be read, e.g. "only 1.2 s of 10.0 s could be decoded", when that
        is much less (a truncated file); else None."""
        if not is_truncated(self.num_frames, self.header_frames):
            return None
        if self.frame_rate:
            return f"only {self.num_frames / self.frame_rate:.1f} s of {self.header_frames / self.frame_rate:.1f} s could be decoded"
        return f"only {self.num_frames} of {self.header_frames} frames could be decoded"

    @property
    def frame_times(self) -> list[float] | None:
        """Each frame's presentation time in seconds (its pts, so variable frame rates and streams that do not
        start at 0 are right), or None where the packets' timestamps cannot identify frames (AVI)."""
        if not self._pts or self.time_base is None:
            return None
        return [float(pts * self.time_base) for pts in self._pts]

    def stream(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` for each of the sorted, de-duplicated ``indices``, in one forward decoding pass
        without seeking and without holding more than one frame: for a long video read window after window.
        Frames are identified by timestamp when the packets allow it, else counted. A requested index past the
        last decodable frame ends the stream with ``VideoReadError``."""
        pending = set(_check_indices(indices, self.path))
        last, count = max(pending), -1
        wanted_pts = {self._pts[i] for i in pending if i < len(self._pts)} if self._pts else None
        try:
            with _open(self.path) as container:
                stream = video_stream(container, self.path)
                for decoded in decode_frames(container, stream, wanted_pts):
                    for frame in decoded:
                        count += 1
                        index = self._index_of_pts.get(frame.pts) if self._pts else count
                        if index in pending:
                            pending.discard(index)
                            yield index, _to_rgb(frame, self.short_side)
                    if not pending or (count >= last and not self._pts):
                        break
        except av.error.FFmpegError as exc:
            raise VideoReadError(self.path, f"decoding failed ({exc})") from exc
        if pending and self._pts:  # frames skipped by the decoder were not counted: no frame count to tell
            raise VideoReadError(self.path, f"frame {min(pending)} did not decode (a corrupt or truncated stream)")
        if pending:
            self._known_count = count + 1
            raise VideoReadError(self.path, f"frame {min(pending)} requested but only {count + 1} frames decode", num_frames=count + 1)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 ``[len(indices), H, W, 3]``."""
        indices = _check_indices(indices, self.path)
        targets = sorted(set(indices))
        try:
            if self._pts and self._keyframes and targets[-1] < len(self._pts):
                try:
                    return _stack(self._read_by_timestamp(targets), indices, self.path)
                except _TimestampMismatch:
                    self._pts, self._keyframes = [], []
            return _stack(self._read_sequential(targets), indices, self.path)
        except av.error.FFmpegError as exc:
            raise VideoReadError(self.path, f"decoding failed ({exc})") from exc

    def _plan(self, targets: list[int]) -> list[tuple[int | None, list[int]]]:
        """Split sorted targets into forward runs ``(seek_to_keyframe or None for file start, targets)``."""
        runs: list[tuple[int | None, list[int]]] = [(None, [])]
        position = -1  # last frame the decoder will have produced
        for target in targets:
            key = self._keyframes[bisect.bisect_right(self._keyframes, target) - 1] if target >= self._keyframes[0] else 0
            if key > position + 1 and (target - key) + SEEK_COST < target - position - 1:
                runs.append((key, []))
            runs[-1][1].append(target)
            position = target
        return [run for run in runs if run[1]]

    def _read_by_timestamp(self, targets: list[int]) -> dict[int, np.ndarray]:
        wanted_pts = {self._pts[t] for t in targets}
        frames: dict[int, np.ndarray] = {}
        with _open(self.path) as container:
            stream = video_stream(container, self.path)
            for start, run in self._plan(targets):
                if start is not None:
                    container.seek(self._pts[start], stream=stream, backward=True)
                pending, last, first, previous = set(run), run[-1], True, -1
                for decoded in decode_frames(container, stream, wanted_pts):
                    for frame in decoded:
                        index = self._index_of_pts.get(frame.pts)
                        if index is None or index <= previous or (first and start is not None and index > start):
                            raise _TimestampMismatch
                        first, previous = False, index
                        if index in pending:
                            frames[index] = _to_rgb(frame, self.short_side)
                            pending.discard(index)
                    if previous >= last:
                        break
                if pending:
                    # Fewer frames decoded than the packets promised (a corrupt or truncated stream): let a
                    # sequential pass find the frames, or the exact count for the error.
                    raise _TimestampMismatch
        return frames

    def _read_sequential(self, targets: list[int]) -> dict[int, np.ndarray]:
        frames: dict[int, np.ndarray] = {}
        pending, last, index = set(targets), targets[-1], -1
        with _open(self.path) as container:
            stream = video_stream(container, self.path)
            for decoded in decode_frames(container, stream):
                for frame in decoded:
                    index += 1
                    if index in pending:
                        frames[index] = _to_rgb(frame, self.short_side)
                        pending.discard(index)
                if index >= last:
                    break
        if pending:
            self._known_count = index + 1
            raise VideoReadError(self.path, f"frame {min(pending)} requested but only {index + 1} frames decode", num_frames=index + 1)
        return frames


class FrameFolder:
    """A folder of pre-extracted frames named by ``template`` (``img_00001.jpg`` = frame 0 by default)."""

    shortfall = None  # no header to compare with: a list's frame count is checked where the list is read

    def __init__(self, path: str | os.PathLike, template: str = FRAME_TEMPLATE, offset: int = FRAME_OFFSET):
        self.path = str(path)
        self.template = template
        self.offset = offset
        if not os.path.isdir(self.path):
            raise VideoReadError(self.path, "frame folder not found")
        names = set(os.listdir(self.path))
        count = 0
        while template.format(count + offset) in names:
            count += 1
        if count == 0:
            raise VideoReadError(self.path, f"no frames named like {template.format(offset)!r}")
        self.num_frames = count

    def read(self, indices: Sequence[int]) -> np.ndarray:
        indices = _check_indices(indices, self.path)
        frames = {}
        for index in sorted(set(indices)):
            file = os.path.join(self.path, self.template.format(index + self.offset))
            if index >= self.num_frames:
                raise VideoReadError(
                    file, f"frame {index} requested but the folder has {self.num_frames} frames", num_frames=self.num_frames
                )
            try:
                with Image.open(file) as image:
                    frames[index] = np.asarray(image.convert("RGB"))
            except OSError as exc:
                raise VideoReadError(file, f"cannot read frame image ({exc})") from exc
        return _stack(frames, indices, self.path)


def open_video(
    path: str | os.PathLike, template: str = FRAME_TEMPLATE, offset: int = FRAME_OFFSET, short_side: int | None = None
) -> VideoFile | FrameFolder:
    """A ``FrameFolder`` for a directory, else a ``VideoFile`` (scaling down to ``short_side``); both have
    ``num_frames`` and ``read(indices)``."""
    if os.path.isdir(path):
        return FrameFolder(path, template, offset)
    return VideoFile(path, short_side)


def read_frames(path: str | os.PathLike, indices: Sequence[int], template: str = FRAME_TEMPLATE, offset: int = FRAME_OFFSET) -> np.ndarray:
    """Frames ``indices`` (0-based, any order, repeats allowed) of a video file or frame folder, as a
    uint8 array ``[len(indices), H, W, 3]`` in the order given. Raises ``VideoReadError``."""
    return open_video(path, template, offset).read(indices)


def count_frames(path: str | os.PathLike, template: str = FRAME_TEMPLATE, offset: int = FRAME_OFFSET) -> int:
    """The number of frames that actually decode (the whole file is decoded; the header is ignored).
    For a frame folder: the number of consecutive frame files from the first one."""
    if os.path.isdir(path):
        return FrameFolder(path, template, offset).num_frames
    VideoFile(path)  # clear errors for missing, empty and non-video files
    count = 0
    with _open(str(path)) as container:
        stream = video_stream(container, str(path))
        for decoded in decode_frames(container, stream):
            count += len(decoded)
    return count


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def find_videos(folder: str | os.PathLike) -> list[str]:
    """Every file below ``folder`` (recursive, sorted) with a video extension; broken symbolic links are kept, so
    that they are reported rather than silently left out."""
    return sorted(str(p) for p in Path(folder).rglob("*") if (p.is_file() or (p.is_symlink() and not p.exists())) and is_video_file(p))
