"""Files: the one atomic write, the one lock (``filelock``, so that it works where ``fcntl`` does not) and the cache
root. No torch: the torch-free ONNX runtime uses it too."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Iterator

import filelock

CACHE_ENV = "ACTIONCLIP_CACHE"
# The cache's folders, one per kind of thing kept in it
TEXT_FEATURES, HUB, ONNX = "text_features", "hub", "onnx"


class LockHeld(OSError):
    """Another process holds the lock (raised only by a non-blocking :func:`file_lock`)."""


def cache_root() -> Path:
    """``$ACTIONCLIP_CACHE``, default ``~/.cache/actionclip``: the text features, published checkpoints and exports."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "actionclip"))


def is_plain_name(name: str) -> bool:
    """A file name with no folder in it: what a name read from a file (a model list, a manifest) may be before it is
    joined to a folder of ours, so that it never reaches outside that folder."""
    return name not in ("", ".", "..") and not any(char in name for char in "/\\\0")


def temporary_path(path: Path, suffix: str = ".tmp") -> Path:
    """A hidden name beside ``path`` that is this write's own (pid and random), so that concurrent writers never
    share one."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind an exception: torch's zip writer reports a failed write as "unexpected pos"."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def fsync_directory(directory: Path) -> None:
    """Flush a directory's entries (a rename in it), where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory; its renames are durable enough for a cache
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_file(path) as handle:`` writes into a file of this write's own beside ``path``, then flushes it
    to disk and renames it over ``path``, and flushes the rename: readers and other writers see the old file or the
    new one whole, never a partial one, and a failed write leaves nothing behind (a full disk says so)."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        cause = _os_error(error)
        if cause is not None and cause.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path} (the partial file was removed)") from None
        raise
    fsync_directory(path.parent)


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """``path`` holds ``data`` whole, or is as it was (see :func:`atomic_file`)."""
    with atomic_file(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, blocking: bool = True) -> Iterator[Path]:
    """An exclusive lock on ``path`` between processes (e.g. the ranks of a torchrun job fetching the same file).
    ``blocking=False`` raises :class:`LockHeld` at once when another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path, timeout=-1 if blocking else 0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockHeld(errno.EAGAIN, f"{path} is held by another process") from None
    try:
        yield path
    finally:
        lock.release()
