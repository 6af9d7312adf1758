"""Video data: decoding, frame sampling, transforms, annotation files, datasets, unreadable videos, synthetic videos."""

from actionclip.video.decode import (
    FRAME_OFFSET,
    FRAME_TEMPLATE,
    VIDEO_EXTENSIONS,
    FrameFolder,
    VideoFile,
    VideoReadError,
    count_frames,
    open_video,
    read_frames,
)
from actionclip.video.sampling import sample_clips, sample_indices

from .annotations import (
    AnnotationError,
    Sample,
    charades_csv,
    folder_dataset,
    hmdb51_split,
    kinetics_csv,
    parse_official_list,
    parse_video_list,
    read_class_names,
    ucf101_split,
    video_list_dataset,
)
from .bad_samples import (
    BadSample,
    BadSampleGuard,
    Batch,
    IndexedSamples,
    SeededSamples,
    TooManyBadSamples,
    collate_skip_bad,
    fail_if_too_many,
)
from .check import CheckResult, check_video, check_videos
from .datasets import VideoDataset
from .subsets import base_novel_split, class_subsets, k_shot, select_classes
from .synthetic import SyntheticDataset, make_synthetic_dataset, write_video
from .transforms import CLIP_MEAN, CLIP_STD, TestTransform, ThreeCropTransform, TrainTransform, frames_to_device, normalize

__all__ = [
    "AnnotationError",
    "BadSample",
    "BadSampleGuard",
    "Batch",
    "CLIP_MEAN",
    "CLIP_STD",
    "CheckResult",
    "FRAME_OFFSET",
    "FRAME_TEMPLATE",
    "FrameFolder",
    "IndexedSamples",
    "Sample",
    "SeededSamples",
    "SyntheticDataset",
    "TestTransform",
    "ThreeCropTransform",
    "TooManyBadSamples",
    "TrainTransform",
    "VIDEO_EXTENSIONS",
    "VideoDataset",
    "VideoFile",
    "VideoReadError",
    "base_novel_split",
    "charades_csv",
    "check_video",
    "check_videos",
    "class_subsets",
    "collate_skip_bad",
    "count_frames",
    "fail_if_too_many",
    "folder_dataset",
    "frames_to_device",
    "hmdb51_split",
    "k_shot",
    "kinetics_csv",
    "make_synthetic_dataset",
    "normalize",
    "open_video",
    "parse_official_list",
    "parse_video_list",
    "read_class_names",
    "read_frames",
    "sample_clips",
    "sample_indices",
    "select_classes",
    "ucf101_split",
    "video_list_dataset",
    "write_video",
]
