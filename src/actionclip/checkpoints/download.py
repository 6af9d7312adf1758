"""Downloads of published checkpoints into the cache: resumed after a cut (HTTP Range), verified against the
publisher's sha256, with a progress bar. A partial download lives only as ``<file>.part`` (the next call resumes it);
the finished name appears, by rename, only once the checksum holds. ``ACTIONCLIP_HUB_MIRROR`` replaces every
publisher URL by ``<mirror>/<file name>``.

A server is not trusted to end what it sends: a download stops at the size its entry states (``size``), or at
``MAX_BYTES`` when it states none, and after ``TOTAL_TIMEOUT_S`` however slowly the bytes keep coming (``TIMEOUT_S``
bounds each read only)."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from tqdm import tqdm

from actionclip.checkpoints.registry import Entry
from actionclip.host.files import HUB, cache_root, file_lock, is_plain_name
from actionclip.weights.errors import CheckpointError

MIRROR_ENV = "ACTIONCLIP_HUB_MIRROR"
TIMEOUT_S = 30.0
# Per URL and call; the partial file is kept, so a slow link continues where it stopped on the next call.
TOTAL_TIMEOUT_S = 3600.0
# For entries that state no size: a ViT-L/14 with its optimizer state is about 5 GB. An endless body wrote 306 MB
# in a second.
MAX_BYTES = 8 << 30
_CHUNK = 1 << 20


def hub_cache() -> Path:
    """``$ACTIONCLIP_CACHE/hub`` (default ``~/.cache/actionclip/hub``)."""
    return cache_root() / HUB


def converted_dir(name: str) -> Path:
    """Where the published checkpoint ``name`` is kept once converted to our format."""
    return hub_cache() / "models" / name.replace("/", "--")


def mirror_url() -> str | None:
    return os.environ.get(MIRROR_ENV) or None


def source_urls(entry: Entry) -> list[str]:
    """Where the file of ``entry`` is fetched from: the mirror alone when one is set, else the publisher's URLs."""
    mirror = mirror_url()
    if mirror:
        if not entry.file_name:
            raise CheckpointError(f"{entry.name}: no file name for the mirror to serve (this entry has neither url nor filename)")
        return [mirror.rstrip("/") + "/" + entry.file_name]
    return list(entry.url)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _hint(entry: Entry) -> str:
    name = entry.file_name or entry.name
    if mirror_url():
        return f"does the mirror {mirror_url()} serve {name}?"
    return f"set {MIRROR_ENV}=URL (or --hub-mirror URL) to fetch {name} from a mirror"


def _bound(entry: Entry) -> tuple[int, str]:
    """The most bytes the file of ``entry`` may have, and how an error names that bound."""
    if entry.size is not None:
        return entry.size, f"the {entry.size} bytes that its entry states (size)"
    return MAX_BYTES, f"{MAX_BYTES} bytes, the most a download may have unless its entry states a size"


def _verify(entry: Entry, path: Path, url: str) -> str:
    """The file's sha256 after checking it against the entry's; a mismatch deletes the file and says so."""
    actual = sha256_of(path)
    expected = (entry.sha256 or entry.sha256_prefix or "").lower()
    if expected and not actual.startswith(expected):
        path.unlink(missing_ok=True)
        raise CheckpointError(
            f"{url}: checksum mismatch for {entry.name}: sha256 {actual}, expected "
            f"{'a sha256 starting with ' if not entry.sha256 else ''}{expected}; the file was deleted"
        )
    return actual


def fetch(entry: Entry, progress: bool = True) -> Path:
    """The verified file of ``entry`` in the cache, downloaded (or resumed) first if it is not there."""
    name = entry.file_name
    if not name:
        raise CheckpointError(f"{entry.name}: nothing to download (no url and no filename)")
    directory = hub_cache() / "files"
    target = directory / name
    if not is_plain_name(name):  # the registry refuses such names; nothing outside the cache is ever touched
        raise CheckpointError(f"{entry.name}: {name!r} is not a plain file name")
    with file_lock(directory / f".{name}.lock"):
        expected = (entry.sha256 or entry.sha256_prefix or "").lower()
        if target.is_file() and sha256_of(target).startswith(expected):
            return target
        target.unlink(missing_ok=True)  # another entry's file of the same name
        urls = source_urls(entry)
        if not urls:
            where = f" (by hand: {'; '.join(entry.pages)})" if entry.pages else ""
            raise CheckpointError(
                f"{entry.name}: its publisher gives no direct download{where}; save the file as {target}, "
                f"or set {MIRROR_ENV}=URL (or --hub-mirror URL) to a mirror that serves {name}"
            )
        failures = []
        for url in urls:
            part = directory / f"{name}.part"
            try:
                _download(url, part, progress, _bound(entry))
            except _Failed as failure:
                failures.append(f"{url}: {failure}")
                continue
            _verify(entry, part, url)
            os.replace(part, target)
            return target
        raise CheckpointError(f"cannot download {entry.name}: {'; '.join(failures)}; {_hint(entry)}")


class _Failed(Exception):
    """One URL that did not give the file (the next URL is tried)."""


def _download(url: str, part: Path, progress: bool, bound: tuple[int, str]) -> None:
    limit, limit_text = bound
    if urlsplit(url).scheme == "file":
        source = Path(url2pathname(urlsplit(url).path))
        if not source.is_file():
            raise _Failed("no such file")
        if source.stat().st_size > limit:
            raise _Failed(f"has {source.stat().st_size} bytes, more than {limit_text}")
        shutil.copyfile(source, part)
        return
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    have = part.stat().st_size if part.is_file() else 0
    if have > limit:  # left by a download that had no bound
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "actionclip", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=min(TIMEOUT_S, TOTAL_TIMEOUT_S))
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part is already whole; the checksum decides
            return
        raise _Failed(f"HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, socket.timeout, OSError) as error:
        reason = getattr(error, "reason", error)
        text = "timed out" if isinstance(reason, (socket.timeout, TimeoutError)) else f"cannot connect ({reason})"
        raise _Failed(text) from None
    with response:
        if response.status != 206:
            have = 0  # the server ignored the Range header: start again
        total = _total(response.headers.get("Content-Length"), have)
        if total is not None and total > limit:
            raise _Failed(f"announces {total} bytes, more than {limit_text}")
        written = _receive(response, part, have, total, progress, deadline, bound)
    if total is not None and written < total:
        raise _Failed(f"connection cut after {written} of {total} bytes; the partial file {part} is kept and the next call resumes it")


def _total(length: str | None, have: int) -> int | None:
    """The whole file's size from a response's Content-Length (None: not stated)."""
    if length is None:
        return None
    if not re.fullmatch(r"[0-9]+", length.strip()):
        raise _Failed(f"its Content-Length {length!r} is not a number of bytes")
    return have + int(length)


def _receive(response, part: Path, have: int, total: int | None, progress: bool, deadline: float, bound: tuple[int, str]) -> int:
    """Append the body of ``response`` to ``part`` (which holds ``have`` bytes); the bytes the part then holds."""
    limit, limit_text = bound
    written = have
    with (
        open(part, "ab" if have else "wb") as handle,
        tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name[: -len(".part")],
            disable=not progress,
            file=sys.stderr,
            leave=False,
        ) as bar,
    ):
        try:
            # read1 returns what one read of the socket gives, so that a server dripping bytes meets the deadline
            for block in iter(lambda: response.read1(_CHUNK), b""):
                handle.write(block)
                written += len(block)
                bar.update(len(block))
                if written > limit:
                    break
                if time.monotonic() > deadline:
                    raise _Failed(
                        f"not done after {TOTAL_TIMEOUT_S:g} s ({written} of {total or '?'} bytes); the partial file {part} "
                        "is kept and the next call resumes it"
                    )
        except (OSError, http.client.HTTPException, socket.timeout) as error:
            raise _Failed(
                f"connection cut after {written} of {total or '?'} bytes ({type(error).__name__}); "
                f"the partial file {part} is kept and the next call resumes it"
            ) from None
    if written > limit:
        part.unlink()
        raise _Failed(f"sent more than {limit_text}; the partial file was deleted")
    return written
