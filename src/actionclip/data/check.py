"""Scan a dataset for videos that will not load: missing, empty, not a video, truncated, too short.

Every video is decoded in full (sparse reads during training would only find a bad tail by chance),
in parallel worker processes.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image
from tqdm import tqdm

from actionclip.video.decode import (
    FRAME_OFFSET,
    FRAME_TEMPLATE,
    FrameFolder,
    VideoFile,
    VideoReadError,
    count_frames,
    find_videos,
    is_truncated,
)

from .annotations import parse_official_list, parse_video_list, read_text
from .build import DataConfig, dataset_samples, has_train, has_val


@dataclass
class CheckResult:
    path: str
    num_frames: int | None  # frames that decode
    problem: str | None  # None when the video is fine

    def to_dict(self) -> dict:
        return asdict(self)


def check_video(
    path: str, min_frames: int = 1, expected_frames: int | None = None, template: str = FRAME_TEMPLATE, offset: int = FRAME_OFFSET
) -> CheckResult:
    """Decode a whole video file (or read every image of a frame folder) and report what is wrong with it."""
    try:
        if os.path.isdir(path):
            folder = FrameFolder(path, template, offset)
            count = folder.num_frames
            for i in range(count):
                with Image.open(os.path.join(path, template.format(i + offset))) as image:
                    image.verify()
            packets = header = None
        else:
            video = VideoFile(path)
            packets, header = video.num_frames, video.header_frames
            count = count_frames(path)
    except VideoReadError as exc:
        return CheckResult(path, None, exc.reason)
    except OSError as exc:  # an image of a frame folder
        return CheckResult(path, None, f"unreadable frame image ({exc})")
    if count == 0:
        return CheckResult(path, 0, "no decodable frames")
    if packets is not None and count < packets:
        return CheckResult(path, count, f"corrupt: {count} frames decode from {packets} video packets")
    if is_truncated(count, header):
        return CheckResult(path, count, f"truncated: {count} frames decode, the header says {header}")
    if expected_frames is not None and count < expected_frames:
        return CheckResult(path, count, f"only {count} frames decode, the list says {expected_frames}")
    if count < min_frames:
        return CheckResult(path, count, f"short: {count} frames (fewer than {min_frames})")
    return CheckResult(path, count, None)


def _check_one(args: tuple) -> CheckResult:
    return check_video(*args)


def targets_of(list_or_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[str, int | None]]:
    """``(path, frame count from the list or None)`` for every video of a list file or below a directory.

    A list file is the official format (``<frame folder> <num_frames> <label>``) when its first line
    ends with two integers, else a video list (``<video> <label>``); relative paths are resolved from
    ``root``, by default the list file's folder.
    """
    list_or_dir = Path(list_or_dir)
    if list_or_dir.is_dir():
        return [(path, None) for path in find_videos(list_or_dir)]
    if not list_or_dir.is_file():
        raise FileNotFoundError(f"no such list file or directory: {list_or_dir}")
    root = list_or_dir.parent if root is None else root
    first = next((line.split() for line in read_text(list_or_dir).splitlines() if line.strip() and not line.startswith("#")), [])
    official = len(first) >= 3 and first[-1].isdigit() and first[-2].isdigit()
    if official:
        return [(s.path, s.num_frames) for s in parse_official_list(list_or_dir, root)]
    return [(s.path, None) for s in parse_video_list(list_or_dir, root)]


def config_targets(data: DataConfig) -> list[tuple[str, int | None]]:
    """``(path, frame count from the list or None)`` for every video of an experiment config's training and
    validation data (duplicates once)."""
    subsets = (["train"] if has_train(data) else []) + (["val"] if has_val(data) else [])
    targets = {}
    for subset in subsets:
        for sample in dataset_samples(data, subset)[0]:
            targets.setdefault(sample.path, sample.num_frames)
    return list(targets.items())


def check_videos(
    targets: Sequence[tuple[str, int | None]],
    min_frames: int = 1,
    workers: int | None = None,
    template: str = FRAME_TEMPLATE,
    offset: int = FRAME_OFFSET,
    progress: bool = True,
) -> list[CheckResult]:
    """``check_video`` for every ``(path, expected_frames)``, in ``workers`` processes (0: in this one)."""
    jobs = [(path, min_frames, expected, template, offset) for path, expected in targets]
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = dict(total=len(jobs), desc="checking videos", unit="video", disable=not progress)
    if workers <= 1:
        return [_check_one(job) for job in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_check_one, jobs, chunksize=4), **bar))
