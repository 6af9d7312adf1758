"""The published checkpoints by name: ``published_checkpoints.yaml`` (shipped with the package) plus the user's own
lists named by ``ACTIONCLIP_MODELS`` (YAML files, separated by ``os.pathsep``). Entries are checked by name and type
when read, so that a mistake in a user's list is one line naming the file, the entry and the key."""
from __future__ import annotations

import copy
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from actionclip.weights.errors import CheckpointError

BUILTIN = Path(__file__).with_name("published_checkpoints.yaml")
FORMATS = ("actionclip", "official", "mmaction2", "vificlip", "videox", "hf_xclip")
# What each format needs beyond a source: the official files do not record their visual prompt, ViFi-CLIP's lack
# the token embedding of the CLIP they were tuned from.
_NEEDS = {"official": ("visual_prompt",), "vificlip": ("base",)}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass
class Entry:
    name: str
    format: str
    url: list[str] = field(default_factory=list)
    hub_id: str | None = None
    filename: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    pages: list[str] = field(default_factory=list)
    visual_prompt: str | None = None
    num_frames: int | None = None
    image_size: int | None = None
    base: str | None = None
    architecture: str | None = None
    normalization: str | None = None
    templates: str | None = None
    accuracy: dict[str, Any] | None = None
    license: str | None = None
    publisher: str | None = None
    description: str | None = None
    source: str = "built-in"  # the list it came from

    @property
    def file_name(self) -> str | None:
        """The name of the downloaded file, which a mirror serves too."""
        if self.filename:
            return self.filename
        return Path(unquote(urlsplit(self.url[0]).path)).name if self.url else None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [], {})}


_TYPES = {
    "name": str, "format": str, "url": (str, list), "hub_id": str, "filename": str, "sha256": str, "sha256_prefix": str,
    "pages": list, "visual_prompt": str, "num_frames": int, "image_size": int, "base": str, "architecture": str,
    "normalization": str, "templates": str, "accuracy": dict, "license": str, "publisher": str, "description": str,
}  # fmt: skip


def _entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: expected a mapping with name, url, sha256 and format, got {raw!r}")
    where = f"{where} ({raw['name']})" if isinstance(raw.get("name"), str) else where
    for key, value in raw.items():
        if key not in _TYPES:
            raise CheckpointError(f"{where}: unknown key {key!r} (known: {', '.join(_TYPES)})")
        kinds = _TYPES[key] if isinstance(_TYPES[key], tuple) else (_TYPES[key],)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise CheckpointError(f"{where}: {key} is {value!r}, expected {' or '.join(k.__name__ for k in kinds)}")
    for key in ("name", "format"):
        if key not in raw:
            raise CheckpointError(f"{where}: {key} is missing")
    if raw["format"] not in FORMATS:
        raise CheckpointError(f"{where}: format is {raw['format']!r}, expected one of {', '.join(FORMATS)}")
    urls = [raw["url"]] if isinstance(raw.get("url"), str) else list(raw.get("url", []))
    for url in urls:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https", "file"):
            raise CheckpointError(f"{where}: url {url!r} is not an http://, https:// or file:// URL")
    if not urls and not raw.get("hub_id") and not raw.get("filename"):
        raise CheckpointError(f"{where}: give a url, a hub_id, or the filename that a mirror serves")
    if raw.get("hub_id") and raw["format"] != "hf_xclip":
        raise CheckpointError(f"{where}: hub_id is for format hf_xclip (a transformers directory on the Hugging Face hub)")
    for key in ("sha256", "sha256_prefix"):
        if key in raw and not _HEX.fullmatch(raw[key].lower()):
            raise CheckpointError(f"{where}: {key} {raw[key]!r} is not hexadecimal")
    if "sha256" in raw and len(raw["sha256"]) != 64:
        raise CheckpointError(f"{where}: sha256 has {len(raw['sha256'])} digits, expected 64 (a prefix goes in sha256_prefix)")
    for key in _NEEDS.get(raw["format"], ()):
        if key not in raw:
            raise CheckpointError(f"{where}: format {raw['format']} needs {key}")
    return Entry(**{**raw, "url": urls})


def read_list(path: str | Path, source: str | None = None) -> list[Entry]:
    """The entries of one YAML list (a list of mappings, or a mapping with a ``models`` list)."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read this model list ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise CheckpointError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if isinstance(content, dict) and set(content) == {"models"}:
        content = content["models"]
    if not isinstance(content, list):
        raise CheckpointError(f"{path}: expected a list of models (name, url, sha256, format, ...)")
    entries = [_entry(raw, f"{path}: entry {index + 1}") for index, raw in enumerate(content)]
    for entry in entries:
        entry.source = source or str(path)
    return entries


@functools.lru_cache(maxsize=1)
def _builtin() -> list[Entry]:
    return read_list(BUILTIN, "built-in")


def user_lists() -> list[Path]:
    return [Path(part) for part in os.environ.get("ACTIONCLIP_MODELS", "").split(os.pathsep) if part]


def entries() -> dict[str, Entry]:
    """Every named checkpoint: the built-in list, then the user's lists (which may replace a built-in name)."""
    found = {entry.name: entry for entry in copy.deepcopy(_builtin())}
    for path in user_lists():
        names: set[str] = set()
        for entry in read_list(path):
            if entry.name in names:
                raise CheckpointError(f"{path}: {entry.name!r} is listed twice")
            names.add(entry.name)
            found[entry.name] = entry
    return found


def find(name: str) -> Entry | None:
    return entries().get(name)
