"""From a ``DataConfig`` (the ``data:`` section of an experiment config) to a ``VideoDataset``.

Formats (``data.format``) and the settings they read:
- ``list``: ``<video> <label>`` lines (mmaction2, ViFi-CLIP) in ``train``/``val``, names in ``classes``;
- ``official``: ``<frame folder> <num_frames> <label>`` lines, ``classes``;
- ``kinetics``: annotation CSVs in ``train``/``val``, videos under ``root`` (``options.train_root`` /
  ``options.val_root`` when the splits live apart), optional ``classes`` to fix the label order;
- ``ucf101`` / ``hmdb51``: official split files in ``options.split_dir``, split ``split`` (1-3);
- ``charades``: ``Charades_v1_train.csv`` / ``_test.csv`` in ``train``/``val``, ``classes`` = the class list;
- ``folder``: ``root/<class name>/<video>`` trees at ``train``/``val``;
- ``synthetic``: generated shape videos under ``root/train-<key>`` and ``root/val-<key>``, the key a hash of
  their settings (see ``DataOptions``).
Every format also reads ``options.shots``, ``exclude_classes``, ``class_ids`` and ``class_texts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_type_hints

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict  # pydantic reads typing's TypedDict only from Python 3.12

from actionclip.data.annotations import (
    Sample,
    charades_csv,
    folder_dataset,
    hmdb51_split,
    kinetics_csv,
    read_class_names,
    ucf101_split,
    video_list_dataset,
)
from actionclip.data.datasets import VideoDataset
from actionclip.data.subsets import k_shot, select_classes
from actionclip.data.synthetic import keyed_synthetic_dataset
from actionclip.data.transforms import TestTransform, ThreeCropTransform, TrainTransform
from actionclip.host.validation import EMPTY_IS_DEFAULT, Flag, Integer, Number

# The TrainTransform settings that ``data.train_transform`` may change (size, RandAugment and normalisation have
# keys of their own), each one optional.
_SCALARS = {bool: Flag, int: Integer, float: Number}
TrainTransformSettings = TypedDict(
    "TrainTransformSettings",
    {
        name: _SCALARS.get(hint, hint)
        for name, hint in get_type_hints(TrainTransform).items()
        if name not in ("size", "randaugment", "normalization")
    },
    total=False,
)
TrainTransformSettings.__pydantic_config__ = ConfigDict(extra="forbid")


class DataOptions(BaseModel):
    """``data.options``: settings that only some formats read."""

    model_config = ConfigDict(extra="forbid")

    split_dir: str | None = None  # ucf101 / hmdb51: the folder of the official split files
    train_root: str | None = None  # kinetics: the training videos, when not under data.root
    val_root: str | None = None  # kinetics: the validation videos, when not under data.root
    shots: Integer | None = None  # a K-shot training subset, seeded by train.seed
    exclude_classes: str | None = None  # a class file whose classes are dropped (Kinetics-600 minus Kinetics-400)
    class_ids: list[Integer] | None = None  # keep these classes, relabelled 0..n-1
    class_texts: str | None = None  # a file with one prompt text per class, in label order
    # synthetic: the arguments of make_synthetic_dataset (None: its defaults) and the validation part's size
    shapes: list[str] | None = None
    colours: list[str] | None = None
    motions: list[str] | None = None
    clips_per_class: Integer | None = None
    val_clips_per_class: Integer | None = None  # None: clips_per_class
    size: Integer | None = None
    num_frames: Integer | None = None
    fps: Integer | None = None
    seed: Integer = 0  # of the training videos; the validation videos use seed + 1


class DataConfig(BaseModel):
    """The ``data:`` section of an experiment config."""

    model_config = ConfigDict(extra="forbid")

    format: str = "list"  # one of FORMATS
    root: str = "."
    train: str | None = None
    val: str | None = None
    classes: str | None = None
    split: Integer = 1
    clean_class_names: Flag = True
    image_size: Integer = Field(224, ge=1)
    batch_size: Integer = Field(16, ge=1)  # per process
    workers: Integer = Field(4, ge=0)
    randaugment: Flag = False
    train_transform: TrainTransformSettings = Field(default_factory=dict)  # e.g. {grayscale_p: 0}
    normalization: str = "clip"  # clip | imagenet (X-CLIP's recipe)
    frame_template: str = "img_{:05d}.jpg"
    frame_offset: Integer = 1
    max_bad_fraction: Number = 0.01  # training fails if more than this fraction of samples is unreadable
    options: Annotated[DataOptions, EMPTY_IS_DEFAULT] = Field(default_factory=DataOptions)


FORMATS = ("list", "official", "kinetics", "ucf101", "hmdb51", "charades", "folder", "synthetic")


def _need(value, what: str, fmt: str):
    if value is None:
        raise ValueError(f"data.{what} is required for data.format={fmt!r}")
    return value


def _synthetic(config: DataConfig, subset: str) -> tuple[list[Sample], list[str]]:
    options = config.options
    settings = {name: getattr(options, name) for name in ("shapes", "colours", "motions", "clips_per_class", "size", "num_frames", "fps")}
    if subset == "val" and options.val_clips_per_class is not None:
        settings["clips_per_class"] = options.val_clips_per_class
    seed = options.seed + 1 if subset == "val" else options.seed
    return keyed_synthetic_dataset(config.root, subset, seed=seed, **{k: v for k, v in settings.items() if v is not None})


def dataset_samples(config: DataConfig, subset: str) -> tuple[list[Sample], list[str]]:
    """``(samples, class_names)`` of the ``train`` or ``val`` part of the data a config describes."""
    fmt = config.format
    path = config.train if subset == "train" else config.val
    test_subset = "train" if subset == "train" else "test"
    if fmt in ("list", "official"):
        return video_list_dataset(_need(path, subset, fmt), _need(config.classes, "classes", fmt), config.root, official=fmt == "official")
    if fmt == "kinetics":
        root = (config.options.train_root if subset == "train" else config.options.val_root) or config.root
        names = read_class_names(config.classes) if config.classes else None
        return kinetics_csv(_need(path, subset, fmt), root, names)
    if fmt in ("ucf101", "hmdb51"):
        split_dir = _need(config.options.split_dir, "options.split_dir", fmt)
        reader = ucf101_split if fmt == "ucf101" else hmdb51_split
        return reader(config.root, split_dir, config.split, test_subset)
    if fmt == "charades":
        return charades_csv(_need(path, subset, fmt), config.root, _need(config.classes, "classes", fmt))
    if fmt == "folder":
        return folder_dataset(_need(path, subset, fmt))
    if fmt == "synthetic":
        return _synthetic(config, subset)
    raise ValueError(f"unknown data.format {fmt!r}; choose one of {', '.join(FORMATS)}")


def has_train(config: DataConfig) -> bool:
    """Whether the config describes training data (split-file formats always do)."""
    return config.train is not None or config.format in ("ucf101", "hmdb51", "synthetic")


def has_val(config: DataConfig) -> bool:
    """Whether the config describes validation data (split-file formats always do)."""
    return config.val is not None or config.format in ("ucf101", "hmdb51", "synthetic")


def parse_views(views: str) -> tuple[int, int]:
    """ "10x3" -> (10 clips, 3 crops)."""
    try:
        clips, crops = (int(part) for part in views.lower().split("x"))
    except ValueError:
        raise ValueError(f"views must look like CLIPSxCROPS (1x1, 4x3, 10x3), got {views!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise ValueError(f"views: clips must be >= 1 and crops 1 or 3, got {views!r}")
    return clips, crops


def build_dataset(config: DataConfig, subset: str, num_frames: int, seed: int = 0, views: str = "1x1") -> VideoDataset:
    """The ``VideoDataset`` for ``subset`` ("train" or "val"): train-time augmentation for "train", test
    transforms and ``views`` (clips x crops) for "val"."""
    samples, class_names = dataset_samples(config, subset)
    options = config.options
    if options.exclude_classes:
        # e.g. Kinetics-600 minus the Kinetics-400 classes: the 220 new classes of the zero-shot protocol.
        excluded = set(read_class_names(options.exclude_classes))
        samples, class_names = select_classes(samples, class_names, [i for i, name in enumerate(class_names) if name not in excluded])
    if options.class_ids is not None:
        samples, class_names = select_classes(samples, class_names, options.class_ids)
    if options.shots and subset == "train":
        samples = k_shot(samples, options.shots, seed)
    class_texts = None
    if options.class_texts:
        class_texts = [line.strip() for line in Path(options.class_texts).read_text().splitlines() if line.strip()]
    elif not config.clean_class_names:
        class_texts = list(class_names)
    if subset == "train":
        randaugment = (2, 9) if config.randaugment else None
        transform, num_clips = (
            TrainTransform(size=config.image_size, randaugment=randaugment, normalization=config.normalization, **config.train_transform),
            1,
        )
        decode_short_side = None  # the multi-scale crops are taken from the full frame
    else:
        num_clips, crops = parse_views(views)
        test_transform = ThreeCropTransform if crops == 3 else TestTransform
        transform = test_transform(size=config.image_size, normalization=config.normalization)
        # Scaled down while decoding, to the side the transform resizes to anyway: 10 clips of 32 frames at 1080p
        # would otherwise be 6 GB of RGB per video.
        decode_short_side = transform.short_side
    return VideoDataset(
        samples,
        class_names,
        num_frames=num_frames,
        mode="train" if subset == "train" else "test",
        transform=transform,
        num_clips=num_clips,
        seed=seed,
        class_texts=class_texts,
        frame_template=config.frame_template,
        frame_offset=config.frame_offset,
        decode_short_side=decode_short_side,
    )
