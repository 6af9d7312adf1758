"""Published checkpoints by name: downloaded once (``download.fetch``), converted once to our format in
``$ACTIONCLIP_CACHE/hub/models/<name>``, and loaded from there afterwards, offline.

Every format is read without executing a pickle: our safetensors, ``torch.load(weights_only=True)`` for the official
ActionCLIP, mmaction2, VideoX and ViFi-CLIP files (the yacs configs of the last two through one allow-list), and archives (``.zip``, ``.tar``,
``.tar.gz``) of a checkpoint directory, of which only the expected file names are read, never extracted as paths.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import warnings
import zipfile
from pathlib import Path

import torch

from actionclip.checkpoints import ours as checkpoints
from actionclip.checkpoints import registry
from actionclip.checkpoints.download import converted_dir, fetch, sha256_of
from actionclip.checkpoints.formats import read_format
from actionclip.checkpoints.registry import Entry
from actionclip.checkpoints.xclip import HF_WEIGHT_FILES, hf_snapshot
from actionclip.host.files import file_lock, temporary_path
from actionclip.weights.errors import CheckpointError

SOURCE_FILE = "source.json"
# The files of a checkpoint directory that an archive may hold; nothing else in it is read.
_ARCHIVE_FILES = {"actionclip": (checkpoints.CONFIG_FILE, checkpoints.WEIGHTS_FILE), "hf_xclip": ("config.json",) + HF_WEIGHT_FILES}


class UnverifiedDownloadWarning(UserWarning):
    """A downloaded file whose publisher states no checksum: its sha256 is recorded, not checked."""


def is_published(name: object) -> bool:
    """Whether ``name`` is a published checkpoint's name (built-in or from ``ACTIONCLIP_MODELS``) and no local path."""
    return isinstance(name, str) and not Path(name).exists() and registry.find(name) is not None


def load_published(name: str, device: str | torch.device = "cpu", progress: bool = True) -> torch.nn.Module:
    """The model published as ``name`` in eval mode: from the cache when it was converted before (no network),
    otherwise downloaded, verified and converted first."""
    entry = registry.find(name)
    if entry is None:
        raise CheckpointError(f"{name!r} is not a published checkpoint name (see `actionclip models`)")
    directory = converted_dir(name)
    if not _converted(entry, directory):
        with file_lock(directory.parent / f".{directory.name}.lock"):
            if not _converted(entry, directory):
                shutil.rmtree(directory, ignore_errors=True)
                _convert(entry, directory, progress)
    return checkpoints.load(directory, device)


def _converted(entry: Entry, directory: Path) -> bool:
    """Whether ``directory`` holds ``entry`` converted: a user's list may give a name another file and checksum."""
    try:
        source = json.loads((directory / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    expected = (entry.sha256 or entry.sha256_prefix or "").lower()
    same_source = source.get("hub_id") == entry.hub_id and (source.get("sha256") or "").startswith(expected)
    return same_source and (directory / checkpoints.CONFIG_FILE).is_file()


def _convert(entry: Entry, directory: Path, progress: bool) -> None:
    if entry.hub_id:
        path, digest = hf_snapshot(entry.hub_id), None
    else:
        path = fetch(entry, progress)
        digest = sha256_of(path)
        if not (entry.sha256 or entry.sha256_prefix):
            warnings.warn(
                f"{entry.name}: its publisher states no checksum; the downloaded file's sha256 is {digest} "
                f"(recorded in {directory / SOURCE_FILE})",
                UnverifiedDownloadWarning,
                stacklevel=3,
            )
    model = _import(entry, path)
    # Written beside the final directory, then renamed: a cut conversion leaves no directory that looks finished.
    staging = temporary_path(directory)
    try:
        checkpoints.save(model, staging)
        source = {"name": entry.name, "format": entry.format, "url": entry.url, "hub_id": entry.hub_id, "file": str(path), "sha256": digest}
        (staging / SOURCE_FILE).write_text(json.dumps(source, indent=2))
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _import(entry: Entry, path: Path) -> torch.nn.Module:
    """The model of a downloaded file: an archive of a checkpoint directory is unpacked first, a hub snapshot is a
    ``transformers`` X-CLIP directory already."""
    options = {"visual_prompt": entry.visual_prompt, "num_frames": entry.num_frames or 8, "base": entry.base}
    if entry.format not in _ARCHIVE_FILES or path.is_dir():
        return read_format(entry.format, path, **options)
    unpacked = temporary_path(path, ".unpacked")
    try:
        _unpack(path, unpacked, _ARCHIVE_FILES[entry.format])
        return read_format(entry.format, unpacked, **options)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def _unpack(archive: Path, into: Path, wanted: tuple[str, ...]) -> None:
    """Copy out the members of ``archive`` whose base name is in ``wanted`` (regular files only)."""
    into.mkdir(parents=True)
    found = []
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for info in bundle.infolist():
                    base = info.filename.rstrip("/").rsplit("/", 1)[-1]
                    if base in wanted and not info.is_dir() and base not in found:
                        with bundle.open(info) as source, open(into / base, "wb") as target:
                            shutil.copyfileobj(source, target)
                        found.append(base)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                for member in bundle.getmembers():
                    base = member.name.rstrip("/").rsplit("/", 1)[-1]
                    if base in wanted and member.isfile() and base not in found:
                        with bundle.extractfile(member) as source, open(into / base, "wb") as target:
                            shutil.copyfileobj(source, target)
                        found.append(base)
        else:
            raise CheckpointError(f"{archive}: not a .zip or .tar archive of a checkpoint directory")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise CheckpointError(f"{archive}: not a readable archive ({error})") from error
    if not found:
        raise CheckpointError(f"{archive}: holds none of {', '.join(wanted)}")
