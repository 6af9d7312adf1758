"""An embedded collection on disk: ``collection.json`` (the model and settings), shards of normalised embeddings
(``shard-r<rank>-<number>.npy``, one row per video or window) and ``manifest.jsonl``, one line per row or per video
that could not be read.

What a crash can leave is never trusted: a shard is written to a temporary name, flushed to disk and renamed, and only
then are its rows appended to the manifest (one ``write`` per shard, flushed too). A shard the manifest does not name
(a crash between the two) is deleted by the next run, and a manifest line cut short by a crash is ignored.

What a hand can leave is checked (:mod:`actionclip.host.records`): every field of ``collection.json`` and of a manifest
line before it is used, a shard's name is a shard's file name in the folder, and a shard's header and size against the
collection's ``dim`` and ``dtype`` before it is mapped. A video is known by its resolved path, size and modification
time (:func:`video_identity`): named two ways it is one video, changed since it was embedded it is another, whose
rows replace the old ones (:func:`current_records`).
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np

from actionclip.host.files import write_atomically
from actionclip.host.records import NUMBER, OBJECT, POSITIVE, TEXT, check_fields, integer, load_npy, one_of, optional, read_json

MANIFEST = "manifest.jsonl"
INFO = "collection.json"
INDEX = "index.faiss"
INDEX_INFO = "index.json"
DTYPES = {"fp16": np.float16, "fp32": np.float32}
_SHARD = re.compile(r"shard-r(\d+)-(\d+)\.npy")
# What a write of ours killed part-way leaves (host.files.temporary_path): removed by the next run, never anything else.
_TEMPORARY = re.compile(r"\.(shard-r\d+-\d+\.npy|collection\.json|index\.faiss|index\.json)\.\d+\.[0-9a-f]+\.tmp")
LOCK = ".lock"
MAX_DIM = 1 << 16  # embeddings are 512 to 1024 wide; a larger dim read from a file is a mistake, not a model
MAX_FRAMES = 1024
_INFO_RULES = {
    "format": one_of(1),
    "arch": TEXT,
    "precision": TEXT,
    "weights": TEXT,
    "text_weights": TEXT,
    "frames": integer(1, MAX_FRAMES),
    "window": optional(POSITIVE),
    "stride": optional(POSITIVE),
    "dtype": one_of(*DTYPES),
    "dim": integer(1, MAX_DIM),
    "decode_short_side": optional(integer(1, 1 << 16)),
    "source": optional(OBJECT),
}
_SHARD_NAME = (lambda v: isinstance(v, str) and _SHARD.fullmatch(v) is not None, "a shard's file name in the folder, shard-r<rank>-<n>.npy")
_IDENTITY_RULES = {"path": TEXT, "size": optional(integer(0, 1 << 62)), "mtime_ns": optional(integer(-(1 << 63), 1 << 63))}
_ROW_RULES = {
    "video": TEXT,
    "shard": _SHARD_NAME,
    "row": integer(0, 1 << 40),
    "start": optional(NUMBER),
    "end": optional(NUMBER),
    "duration": optional(NUMBER),
    **_IDENTITY_RULES,
}
_ERROR_RULES = {"video": TEXT, "error": TEXT, **_IDENTITY_RULES}


def read_manifest(directory: str | os.PathLike) -> list[dict]:
    """The manifest's records in order, each checked; a line cut short by a crash is skipped."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        rules = _ERROR_RULES if isinstance(record, dict) and "error" in record else _ROW_RULES
        # Collections made before videos were known by their identity have lines without it.
        records.append(check_fields(f"{path}: line {number}", record, rules, may_lack=tuple(_IDENTITY_RULES)))
    return records


def video_identity(path: str) -> dict:
    """What tells one video file from another: its resolved path, size and modification time (None for a file that
    cannot be read, which is then tried again once it can)."""
    resolved = os.path.realpath(path)
    try:
        stat = os.stat(resolved)
    except OSError:
        return {"path": resolved, "size": None, "mtime_ns": None}
    return {"path": resolved, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def identity(record: dict) -> tuple:
    return record.get("path") or os.path.realpath(record["video"]), record.get("size"), record.get("mtime_ns")


def current_records(records: list[dict]) -> list[dict]:
    """The records that stand, in the order their videos first appear: for each video file, those of its latest
    embedding (a file changed since, or a failed video tried again, replaces its earlier lines), each clip once (a
    line repeated by hand is not a second result)."""
    latest: dict[str, tuple[tuple, list[dict], set]] = {}
    for record in records:
        key = identity(record)
        standing = latest.get(key[0])
        if standing is None or standing[0] != key or "error" in record or "error" in standing[1][0]:
            latest[key[0]] = standing = (key, [], set())
        clip = (record.get("start"), record.get("end"))
        if clip not in standing[2]:
            standing[1].append(record)
            standing[2].add(clip)
    return [record for _, kept, _ in latest.values() for record in kept]


def append_manifest(directory: Path, records: list[dict]) -> None:
    """Append ``records`` in one write, flushed to disk; processes appending at once do not interleave lines."""
    if not records:
        return
    path = directory / MANIFEST
    data = "".join(json.dumps(record) + "\n" for record in records).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a line cut short by a crash stays on its own line, ignored
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(directory: Path, rank: int, rows: np.ndarray) -> str:
    """Write ``rows`` as this rank's next shard; its file name."""
    numbers = [int(m.group(2)) for p in directory.iterdir() if (m := _SHARD.fullmatch(p.name)) and int(m.group(1)) == rank]
    name = f"shard-r{rank:03d}-{max(numbers, default=-1) + 1:05d}.npy"
    buffer = io.BytesIO()
    np.save(buffer, rows)
    write_atomically(directory / name, buffer.getvalue())
    return name


def check_output(directory: Path) -> None:
    """ValueError unless ``directory`` is new, empty or a collection: embed writes and deletes files only in a
    folder of its own, never among a user's."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory}: not a folder; embed into a new or empty folder")
    if directory.is_dir() and not (directory / INFO).exists():
        others = sorted(p.name for p in directory.iterdir() if p.name != LOCK and not _TEMPORARY.fullmatch(p.name))
        if others:
            raise ValueError(
                f"{directory}: not empty and not a collection (no {INFO}; it holds {others[0]}); embed into a new or empty folder"
            )


def remove_unlisted_shards(directory: Path, records: list[dict]) -> list[str]:
    """Delete the shards and temporary files a crash left that the manifest does not name; their names."""
    listed = {record.get("shard") for record in records}
    removed = []
    for path in directory.iterdir():
        if (_SHARD.fullmatch(path.name) and path.name not in listed) or _TEMPORARY.fullmatch(path.name):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def read_info(directory: str | os.PathLike) -> dict:
    path = Path(directory) / INFO
    if not path.is_file():
        raise ValueError(f"{directory}: not an embedded collection (no {INFO}; make one with `actionclip embed`)")
    return check_fields(path, read_json(path), _INFO_RULES)


def load_embeddings(directory: str | os.PathLike, records: list[dict] | None = None) -> tuple[list[dict], np.ndarray]:
    """The standing rows of the manifest (:func:`current_records` with a shard; ``records``: those, already read) and
    their embeddings ``[N, D]`` in the same order, in the dtype they were stored in."""
    directory = Path(directory)
    info = read_info(directory)
    dtype = DTYPES[info["dtype"]]
    records = current_records(read_manifest(directory)) if records is None else records
    rows = [record for record in records if "shard" in record]
    shards: dict[str, np.ndarray] = {}
    for record in rows:
        if record["shard"] not in shards:
            # A plain name by the manifest's check: the shard is inside the folder.
            shards[record["shard"]] = load_npy(directory / record["shard"], (None, info["dim"]), dtype, mmap=True)
        if record["row"] >= len(shards[record["shard"]]):
            raise ValueError(
                f"{directory / MANIFEST}: {record['video']}: row {record['row']} of {record['shard']}, which has {len(shards[record['shard']])}"
            )
    matrix = np.empty((len(rows), info["dim"]), dtype)
    # Rows are appended shard by shard: copy runs of consecutive rows of one shard at once.
    start = 0
    while start < len(rows):
        shard, first = rows[start]["shard"], rows[start]["row"]
        stop = start + 1
        while stop < len(rows) and rows[stop]["shard"] == shard and rows[stop]["row"] == first + stop - start:
            stop += 1
        matrix[start:stop] = shards[shard][first : first + stop - start]
        start = stop
    return rows, matrix
