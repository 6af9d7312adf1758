"""Annotation files of the datasets of ActionCLIP and its successors, read into ``Sample`` lists.

Every reader returns ``(samples, class_names)``: a list of ``Sample`` and the raw class names in label order, for
``VideoDataset(samples, class_names, ...)``. A malformed annotation line raises ``AnnotationError`` naming the file,
the line number and the line. Formats: the official ActionCLIP frame lists, mmaction2 / ViFi-CLIP video lists,
Kinetics CSVs, the UCF-101 and HMDB-51 split files, Charades (multi-label) and ``root/<class>/<video>`` folders.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from actionclip.video.decode import is_video_file

logger = logging.getLogger("actionclip.data")


@dataclass(frozen=True)
class Sample:
    """One video: a file or frame folder, its label (a class index, or a tuple of them for multi-label
    data), and its frame count when the annotation gives one (``None``: counted from the video)."""

    path: str
    label: int | tuple[int, ...]
    num_frames: int | None = None


class AnnotationError(ValueError):
    def __init__(self, file: str | os.PathLike, line_number: int, line: str, reason: str):
        super().__init__(f"{file}:{line_number}: {reason}: {line!r}")
        self.file, self.line_number, self.line, self.reason = str(file), line_number, line, reason


def read_text(file: str | os.PathLike, newline: str | None = None) -> str:
    """The text of a UTF-8 file without the byte-order mark that Windows editors put first (it would become part of
    the first label or column name); ``ValueError`` naming the file if it is not UTF-8."""
    try:
        with open(file, encoding="utf-8-sig", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8") from None


def _lines(file: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based line numbers."""
    if not os.path.isfile(file):
        raise FileNotFoundError(f"annotation file not found: {file}")
    for number, line in enumerate(read_text(file).split("\n"), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _int(text: str, file, number: int, line: str, what: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise AnnotationError(file, number, line, f"{what} {text!r} is not an integer") from None
    if value < minimum:
        raise AnnotationError(file, number, line, f"{what} must be >= {minimum}, got {value}")
    return value


def _label(text: str, file, number: int, line: str, num_classes: int | None) -> int:
    label = _int(text, file, number, line, "label")
    if num_classes is not None and label >= num_classes:
        raise AnnotationError(file, number, line, f"label {label} but only {num_classes} class names")
    return label


def _join(root: str | os.PathLike | None, path: str) -> str:
    return os.path.join(root, path) if root is not None else path


def read_class_names(file: str | os.PathLike) -> list[str]:
    """Class names in label order from ``id,name`` CSV (official / ViFi-CLIP label files, header
    optional), ``<id> <name>`` lines (UCF-101 ``classInd.txt``, Charades ``c000 Holding some clothes``;
    ids may start at 0 or 1) or one name per line (Kinetics / mmaction2 label maps)."""
    lines = list(_lines(file))
    if not lines:
        raise AnnotationError(file, 0, "", "no class names")
    if str(file).lower().endswith(".csv"):
        rows = [(n, line, next(csv.reader([line]))) for n, line in lines]
        if rows[0][2][0].strip().lower() == "id":
            rows = rows[1:]
        entries = []
        for n, line, row in rows:
            if len(row) < 2:
                raise AnnotationError(file, n, line, "expected 'id,name'")
            entries.append((_int(row[0].strip(), file, n, line, "class id"), ",".join(row[1:]).strip(), n, line))
    else:
        with_ids = [re.fullmatch(r"c?(\d+)\s+(.+)", line) for _, line in lines]
        if not all(with_ids):
            return [line for _, line in lines]
        entries = [(int(m.group(1)), m.group(2).strip(), n, line) for m, (n, line) in zip(with_ids, lines)]
    entries.sort()
    first = entries[0][0]
    for expected, (class_id, _, n, line) in enumerate(entries, start=first):
        if class_id != expected:
            raise AnnotationError(file, n, line, f"class ids must be consecutive from {first}; expected {expected}")
    return [name for _, name, _, _ in entries]


def parse_official_list(
    list_file: str | os.PathLike, root: str | os.PathLike | None = None, num_classes: int | None = None
) -> list[Sample]:
    """The official ActionCLIP list: ``<frame folder> <num_frames> <label>`` per line; a label must be below
    ``num_classes`` when given."""
    samples = []
    for n, line in _lines(list_file):
        parts = line.rsplit(maxsplit=2)
        if len(parts) != 3:
            raise AnnotationError(list_file, n, line, "expected '<frame folder> <num_frames> <label>'")
        frames = _int(parts[1], list_file, n, line, "num_frames", minimum=1)
        samples.append(Sample(_join(root, parts[0]), _label(parts[2], list_file, n, line, num_classes), frames))
    return samples


def parse_video_list(list_file: str | os.PathLike, root: str | os.PathLike | None = None, num_classes: int | None = None) -> list[Sample]:
    """mmaction2 video lists and ViFi-CLIP split files: ``<video path> <label>`` per line; a label must be below
    ``num_classes`` when given."""
    samples = []
    for n, line in _lines(list_file):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise AnnotationError(list_file, n, line, "expected '<video path> <label>'")
        samples.append(Sample(_join(root, parts[0]), _label(parts[1], list_file, n, line, num_classes)))
    return samples


def check_labels(samples: list[Sample], class_names: list[str], source) -> None:
    labels = [label for s in samples for label in (s.label if isinstance(s.label, tuple) else (s.label,))]
    if labels and max(labels) >= len(class_names):
        raise ValueError(f"{source}: label {max(labels)} but only {len(class_names)} class names")


def video_list_dataset(list_file, class_file, root=None, official: bool = False) -> tuple[list[Sample], list[str]]:
    """A list file (``official=True``: ``<frame folder> <num_frames> <label>``, else ``<video> <label>``)
    with its class-name file, e.g. ViFi-CLIP's ``hmdb_split1_train.txt`` + ``hmdb_51_labels.csv``."""
    class_names = read_class_names(class_file)
    samples = (parse_official_list if official else parse_video_list)(list_file, root, len(class_names))
    return samples, class_names


def _index_videos(root: str | os.PathLike) -> dict[str, str]:
    """File stem -> path for every video under ``root``."""
    index = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if is_video_file(name):
                index.setdefault(os.path.splitext(name)[0], os.path.join(folder, name))
    return index


def kinetics_csv(
    csv_file: str | os.PathLike, root: str | os.PathLike, class_names: Sequence[str] | None = None, missing: str = "skip"
) -> tuple[list[Sample], list[str]]:
    """Kinetics-400/600/700 annotations (``label,youtube_id,time_start,time_end,split``). Videos are the
    usual ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` files anywhere below ``root`` (flat, or in class
    or split folders). Classes are ``class_names`` if given (pass the training classes when reading
    val/test), else the sorted labels of this file: the standard label order. Videos that are not on
    disk (taken down from YouTube) are skipped with a warning, or raise with ``missing="error"``."""
    if missing not in ("skip", "error"):
        raise ValueError(f"missing must be 'skip' or 'error', got {missing!r}")
    rows = list(csv.reader(io.StringIO(read_text(csv_file, newline=""))))
    if not rows:
        raise AnnotationError(csv_file, 1, "", "empty file")
    header = [h.strip() for h in rows[0]]
    needed = ("label", "youtube_id", "time_start", "time_end")
    if not all(h in header for h in needed):
        raise AnnotationError(csv_file, 1, ",".join(rows[0]), f"header must contain {', '.join(needed)}")
    col = {h: header.index(h) for h in needed}
    entries = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        line = ",".join(row)
        if len(row) != len(header):
            raise AnnotationError(csv_file, n, line, f"expected {len(header)} fields, got {len(row)}")
        try:
            start, end = (int(float(row[col[k]])) for k in ("time_start", "time_end"))
        except ValueError:
            raise AnnotationError(csv_file, n, line, "time_start/time_end must be numbers") from None
        entries.append((n, line, row[col["label"]].strip(), f"{row[col['youtube_id']]}_{start:06d}_{end:06d}"))
    names = list(class_names) if class_names is not None else sorted({label for _, _, label, _ in entries})
    label_of = {name: i for i, name in enumerate(names)}
    videos = _index_videos(root)
    samples, absent = [], []
    for n, line, label, stem in entries:
        if label not in label_of:
            raise AnnotationError(csv_file, n, line, f"label {label!r} is not one of the {len(names)} classes")
        if stem in videos:
            samples.append(Sample(videos[stem], label_of[label]))
        else:
            absent.append(stem)
    if absent:
        message = f"{csv_file}: {len(absent)} of {len(entries)} videos not found under {root} (first: {absent[0]})"
        if missing == "error":
            raise FileNotFoundError(message)
        logger.warning(message)
    return samples, names


def ucf101_split(
    root: str | os.PathLike, split_dir: str | os.PathLike, split: int = 1, subset: str = "train"
) -> tuple[list[Sample], list[str]]:
    """UCF-101 official splits: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0N.txt``
    (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``) and ``testlist0N.txt`` (path only; the class is
    the folder). Labels are 0-based; videos are ``root/<path>``."""
    if split not in (1, 2, 3) or subset not in ("train", "test"):
        raise ValueError(f"UCF-101 has splits 1-3 and subsets 'train'/'test', got {split}, {subset!r}")
    class_names = read_class_names(Path(split_dir) / "classInd.txt")
    label_of = {name.lower(): i for i, name in enumerate(class_names)}
    list_file = Path(split_dir) / f"{subset}list0{split}.txt"
    samples = []
    for n, line in _lines(list_file):
        parts = line.split()
        if len(parts) != (2 if subset == "train" else 1):
            raise AnnotationError(
                list_file, n, line, "expected '<class>/<video> <label>'" if subset == "train" else "expected '<class>/<video>'"
            )
        folder = parts[0].replace("\\", "/").split("/")[0].lower()
        if folder not in label_of:
            raise AnnotationError(list_file, n, line, f"class folder {folder!r} is not in classInd.txt")
        label = label_of[folder]
        if subset == "train" and _int(parts[1], list_file, n, line, "label", minimum=1) - 1 != label:
            raise AnnotationError(list_file, n, line, f"label does not match class {class_names[label]!r} (classInd.txt id {label + 1})")
        samples.append(Sample(os.path.join(root, parts[0]), label))
    return samples, class_names


def hmdb51_split(
    root: str | os.PathLike, split_dir: str | os.PathLike, split: int = 1, subset: str = "train"
) -> tuple[list[Sample], list[str]]:
    """HMDB-51 official splits: ``<class>_test_split<N>.txt`` with lines ``<video> <tag>``, tag 1 =
    train, 2 = test, 0 = unused. Classes are the sorted class names; videos are ``root/<class>/<video>``."""
    if split not in (1, 2, 3) or subset not in ("train", "test"):
        raise ValueError(f"HMDB-51 has splits 1-3 and subsets 'train'/'test', got {split}, {subset!r}")
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in Path(split_dir).iterdir() if p.name.endswith(suffix))
    if not files:
        raise FileNotFoundError(f"no '*{suffix}' files in {split_dir}")
    class_names = [p.name[: -len(suffix)] for p in files]
    wanted = "1" if subset == "train" else "2"
    samples = []
    for label, (name, file) in enumerate(zip(class_names, files)):
        for n, line in _lines(file):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise AnnotationError(file, n, line, "expected '<video> <tag>' with tag 0, 1 or 2")
            if parts[1] == wanted:
                samples.append(Sample(os.path.join(root, name, parts[0]), label))
    return samples, class_names


def charades_csv(
    csv_file: str | os.PathLike, root: str | os.PathLike, class_file: str | os.PathLike, extension: str = ".mp4"
) -> tuple[list[Sample], list[str]]:
    """Charades ``Charades_v1_train.csv`` / ``_test.csv``: multi-label samples whose labels are the
    classes of the ``actions`` column (``c092 11.90 21.20;c147 0.00 12.60``); class names from
    ``Charades_v1_classes.txt``. Videos are ``root/<id><extension>``."""
    class_names = read_class_names(class_file)
    with io.StringIO(read_text(csv_file, newline="")) as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"id", "actions"} <= set(reader.fieldnames):
            raise AnnotationError(csv_file, 1, ",".join(reader.fieldnames or []), "header must contain id and actions")
        samples = []
        for row in reader:
            n, line = reader.line_num, ",".join(v or "" for v in row.values())
            labels = set()
            for action in filter(None, (a.strip() for a in (row["actions"] or "").split(";"))):
                match = re.fullmatch(r"c(\d+)\s+[\d.]+\s+[\d.]+", action)
                if not match:
                    raise AnnotationError(csv_file, n, line, f"action {action!r} is not 'cNNN start end'")
                if int(match.group(1)) >= len(class_names):
                    raise AnnotationError(csv_file, n, line, f"class c{match.group(1)} is not in {class_file}")
                labels.add(int(match.group(1)))
            samples.append(Sample(os.path.join(root, row["id"] + extension), tuple(sorted(labels))))
    return samples, class_names


def folder_dataset(root: str | os.PathLike) -> tuple[list[Sample], list[str]]:
    """Custom data laid out as ``root/<class name>/<video>`` (videos at any depth below the class folder).
    Classes are the sorted folder names."""
    class_dirs = sorted(p for p in Path(root).iterdir() if p.is_dir())
    if not class_dirs:
        raise FileNotFoundError(f"no class folders in {root}")
    samples = []
    for label, folder in enumerate(class_dirs):
        videos = sorted(str(p) for p in folder.rglob("*") if p.is_file() and is_video_file(p))
        if not videos:
            logger.warning("%s: class folder has no videos", folder)
        samples.extend(Sample(v, label) for v in videos)
    return samples, [p.name for p in class_dirs]
