"""An embedded collection on disk: ``collection.json`` (the model and settings), shards of normalised embeddings
(``shard-r<rank>-<number>.npy``, one row per video or window) and ``manifest.jsonl``, one line per row or per video
that could not be read.

What a crash can leave is never trusted: a shard is written to a temporary name, flushed to disk and renamed, and only
then are its rows appended to the manifest (one ``write`` per shard, flushed too). A shard the manifest does not name
(a crash between the two) is deleted by the next run, and a manifest line cut short by a crash is ignored.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np

from actionclip.host.files import write_atomically

MANIFEST = "manifest.jsonl"
INFO = "collection.json"
INDEX = "index.faiss"
INDEX_INFO = "index.json"
DTYPES = {"fp16": np.float16, "fp32": np.float32}
_SHARD = re.compile(r"shard-r(\d+)-(\d+)\.npy")


def read_manifest(directory: str | os.PathLike) -> list[dict]:
    """The manifest's records in order; a line cut short by a crash is skipped."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "video" in record:
            records.append(record)
    return records


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


def remove_unlisted_shards(directory: Path, records: list[dict]) -> list[str]:
    """Delete the shards and temporary files a crash left that the manifest does not name; their names."""
    listed = {record.get("shard") for record in records}
    removed = []
    for path in directory.iterdir():
        if (_SHARD.fullmatch(path.name) and path.name not in listed) or path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def read_info(directory: str | os.PathLike) -> dict:
    path = Path(directory) / INFO
    if not path.is_file():
        raise ValueError(f"{directory}: not an embedded collection (no {INFO}; make one with `actionclip embed`)")
    return json.loads(path.read_text(encoding="utf-8"))


def load_embeddings(directory: str | os.PathLike) -> tuple[list[dict], np.ndarray]:
    """The manifest's rows (records with a shard) and their embeddings ``[N, D]`` in the same order, in the dtype
    they were stored in."""
    directory = Path(directory)
    info = read_info(directory)
    rows = [record for record in read_manifest(directory) if "shard" in record]
    if not rows:
        return rows, np.zeros((0, info["dim"]), DTYPES[info["dtype"]])
    shards: dict[str, np.ndarray] = {}
    for record in rows:
        if record["shard"] not in shards:
            shards[record["shard"]] = np.load(directory / record["shard"], mmap_mode="r")
    matrix = np.empty((len(rows), info["dim"]), DTYPES[info["dtype"]])
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
