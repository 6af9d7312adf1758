"""Reading sampled clips: the frames of every clip in one decoding pass, shared by the torch datasets and the
torch-free ONNX runtime so that both read the same frames of a video."""

from __future__ import annotations

from typing import Callable

import numpy as np

from actionclip.video.decode import FrameFolder, VideoFile, VideoReadError


def read_clips(video: VideoFile | FrameFolder, count: int, clips_for: Callable[[int], list[list[int]]]) -> list[np.ndarray]:
    """uint8 ``[len(clip), H, W, 3]`` for each clip of frame indices ``clips_for(count)``, read in one pass. When
    fewer than ``count`` frames decode (a truncated file whose header or list promised more), the clips are those
    ``clips_for`` gives for the frames that do."""
    clips = clips_for(count)
    try:
        frames = video.read([i for clip in clips for i in clip])
    except VideoReadError as exc:
        if not exc.num_frames or exc.num_frames >= count:
            raise
        clips = clips_for(exc.num_frames)
        frames = video.read([i for clip in clips for i in clip])
    ends = np.cumsum([len(clip) for clip in clips])
    return [frames[end - len(clip) : end] for clip, end in zip(clips, ends)]
