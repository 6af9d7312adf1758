"""From a ``DataConfig`` to a ``VideoDataset``: one function per annotation format, chosen by ``format``.

Formats (``data.format``) and the settings they read:
- ``list``: ``<video> <label>`` lines (mmaction2, ViFi-CLIP) in ``train``/``val``, names in ``classes``;
- ``official``: ``<frame folder> <num_frames> <label>`` lines, ``classes``;
- ``kinetics``: annotation CSVs in ``train``/``val``, videos under ``root`` (``options.train_root`` /
  ``options.val_root`` when the splits live apart), optional ``classes`` to fix the label order;
- ``ucf101`` / ``hmdb51``: official split files in ``options.split_dir``, split ``split`` (1-3);
- ``charades``: ``Charades_v1_train.csv`` / ``_test.csv`` in ``train``/``val``, ``classes`` = the class list;
- ``folder``: ``root/<class name>/<video>`` trees at ``train``/``val``;
- ``synthetic``: generated shape videos under ``root/train`` and ``root/val`` (``options`` go to
  ``make_synthetic_dataset``; ``val_clips_per_class`` sets the validation size).
Common ``options``: ``shots`` (K-shot training subset, seeded by ``train.seed``), ``exclude_classes`` (a class
file whose classes are dropped), ``class_ids`` (then keep and relabel these classes), ``class_texts`` (a file
with one prompt text per class, in label order).
"""
from __future__ import annotations

from pathlib import Path

from actionclip.data.datasets import (
    Sample,
    VideoDataset,
    charades_csv,
    folder_dataset,
    hmdb51_split,
    kinetics_csv,
    read_class_names,
    ucf101_split,
    video_list_dataset,
)
from actionclip.data.subsets import k_shot, select_classes
from actionclip.data.synthetic import make_synthetic_dataset
from actionclip.data.transforms import TestTransform, ThreeCropTransform, TrainTransform

FORMATS = ("list", "official", "kinetics", "ucf101", "hmdb51", "charades", "folder", "synthetic")


def _need(value, what: str, fmt: str):
    if value is None:
        raise ValueError(f"data.{what} is required for data.format={fmt!r}")
    return value


def _synthetic(config, subset: str) -> tuple[list[Sample], list[str]]:
    options = {k: v for k, v in config.options.items() if k not in ("shots", "class_ids", "class_texts", "val_clips_per_class")}
    seed = options.pop("seed", 0)
    if subset == "val":
        options["clips_per_class"] = config.options.get("val_clips_per_class", options.get("clips_per_class", 2))
        seed += 1
    root = Path(config.root) / subset
    if (root / "list.txt").is_file() and (root / "classes.csv").is_file():
        return video_list_dataset(root / "list.txt", root / "classes.csv", root)
    written = make_synthetic_dataset(root, seed=seed, **options)
    return written.samples, written.classes


def dataset_samples(config, subset: str) -> tuple[list[Sample], list[str]]:
    """``(samples, class_names)`` of the ``train`` or ``val`` part of the data a config describes."""
    fmt = config.format
    path = config.train if subset == "train" else config.val
    test_subset = "train" if subset == "train" else "test"
    if fmt in ("list", "official"):
        return video_list_dataset(_need(path, subset, fmt), _need(config.classes, "classes", fmt), config.root, official=fmt == "official")
    if fmt == "kinetics":
        root = config.options.get(f"{subset}_root", config.root)
        names = read_class_names(config.classes) if config.classes else None
        return kinetics_csv(_need(path, subset, fmt), root, names)
    if fmt in ("ucf101", "hmdb51"):
        split_dir = _need(config.options.get("split_dir"), "options.split_dir", fmt)
        reader = ucf101_split if fmt == "ucf101" else hmdb51_split
        return reader(config.root, split_dir, config.split, test_subset)
    if fmt == "charades":
        return charades_csv(_need(path, subset, fmt), config.root, _need(config.classes, "classes", fmt))
    if fmt == "folder":
        return folder_dataset(_need(path, subset, fmt))
    if fmt == "synthetic":
        return _synthetic(config, subset)
    raise ValueError(f"unknown data.format {fmt!r}; choose one of {', '.join(FORMATS)}")


def has_val(config) -> bool:
    """Whether the config describes validation data (split-file formats always do)."""
    return config.val is not None or config.format in ("ucf101", "hmdb51", "synthetic")


def parse_views(views: str) -> tuple[int, int]:
    """"10x3" -> (10 clips, 3 crops)."""
    try:
        clips, crops = (int(part) for part in views.lower().split("x"))
    except ValueError:
        raise ValueError(f"views must look like CLIPSxCROPS (1x1, 4x3, 10x3), got {views!r}") from None
    if clips < 1 or crops not in (1, 3):
        raise ValueError(f"views: clips must be >= 1 and crops 1 or 3, got {views!r}")
    return clips, crops


def build_dataset(config, subset: str, num_frames: int, seed: int = 0, views: str = "1x1") -> VideoDataset:
    """The ``VideoDataset`` for ``subset`` ("train" or "val"): train-time augmentation for "train", test
    transforms and ``views`` (clips x crops) for "val"."""
    samples, class_names = dataset_samples(config, subset)
    if config.options.get("exclude_classes"):
        # e.g. Kinetics-600 minus the Kinetics-400 classes: the 220 new classes of the zero-shot protocol.
        excluded = set(read_class_names(config.options["exclude_classes"]))
        samples, class_names = select_classes(samples, class_names, [i for i, name in enumerate(class_names) if name not in excluded])
    class_ids = config.options.get("class_ids")
    if class_ids is not None:
        samples, class_names = select_classes(samples, class_names, class_ids)
    shots = config.options.get("shots")
    if shots and subset == "train":
        samples = k_shot(samples, int(shots), seed)
    class_texts = None
    if config.options.get("class_texts"):
        class_texts = [line.strip() for line in Path(config.options["class_texts"]).read_text().splitlines() if line.strip()]
    elif not config.clean_class_names:
        class_texts = list(class_names)
    if subset == "train":
        randaugment = (2, 9) if config.randaugment else None
        transform, num_clips = TrainTransform(size=config.image_size, randaugment=randaugment, normalization=config.normalization, **config.train_transform), 1
    else:
        num_clips, crops = parse_views(views)
        test_transform = ThreeCropTransform if crops == 3 else TestTransform
        transform = test_transform(size=config.image_size, normalization=config.normalization)
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
    )
