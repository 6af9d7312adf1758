"""The published checkpoints by name: ``published_checkpoints.yaml`` (shipped with the package) plus the user's own
lists named by ``ACTIONCLIP_MODELS`` (YAML files, separated by ``os.pathsep``). Entries are checked by name and type
when read (``Entry``, a pydantic model), so that a mistake in a user's list is one line naming the file, the entry and
the key."""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from actionclip.host.files import is_plain_name
from actionclip.host.validation import error_line
from actionclip.weights.errors import CheckpointError

BUILTIN = Path(__file__).with_name("published_checkpoints.yaml")
FORMATS = ("actionclip", "official", "mmaction2", "vificlip", "videox", "hf_xclip")
# What each format needs beyond a source: the official files do not record their visual prompt, ViFi-CLIP's lack
# the token embedding of the CLIP they were tuned from.
_NEEDS = {"official": ("visual_prompt",), "vificlip": ("base",)}
_HEX = re.compile(r"[0-9a-f]+")


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value  # one url, or the list of mirrors tried in order


class Entry(BaseModel):
    """One named checkpoint, as a list gives it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    format: Literal[FORMATS]
    url: Annotated[list[str], BeforeValidator(_listed)] = []
    hub_id: str | None = None
    filename: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None  # bytes: where a download stops (download.MAX_BYTES when not stated)
    pages: list[str] = []
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
    _source: str = PrivateAttr("built-in")  # the list it came from; no key of a list

    @field_validator("url")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if urlsplit(url).scheme not in ("http", "https", "file"):
                raise ValueError(f"{url!r} is not an http://, https:// or file:// URL")
        return urls

    @field_validator("sha256", "sha256_prefix")
    @classmethod
    def _hexadecimal(cls, digits: str | None, info: ValidationInfo) -> str | None:
        if digits is not None and not _HEX.fullmatch(digits.lower()):
            raise ValueError(f"{digits!r} is not hexadecimal")
        if digits is not None and info.field_name == "sha256" and len(digits) != 64:
            raise ValueError(f"has {len(digits)} digits, expected 64 (a prefix goes in sha256_prefix)")
        return digits

    @field_validator("size")
    @classmethod
    def _positive(cls, size: int | None) -> int | None:
        if size is not None and size < 1:
            raise ValueError(f"must be a number of bytes >= 1, got {size}")
        return size

    @model_validator(mode="after")
    def _complete(self) -> Entry:
        # Both become paths in the cache (download.fetch, download.converted_dir): a name with a folder in it could
        # reach, overwrite or delete a file outside it.
        if not is_plain_name(self.name.replace("/", "--")):
            raise ValueError(f"name {self.name!r} is not a plain file name")
        if self.file_name is not None and not is_plain_name(self.file_name):
            raise ValueError(f"filename {self.file_name!r} is not a plain file name (no folder, no '..')")
        if not self.url and not self.hub_id and not self.filename:
            raise ValueError("give a url, a hub_id, or the filename that a mirror serves")
        if self.hub_id and self.format != "hf_xclip":
            raise ValueError("hub_id is for format hf_xclip (a transformers directory on the Hugging Face hub)")
        for key in _NEEDS.get(self.format, ()):
            if getattr(self, key) is None:
                raise ValueError(f"format {self.format} needs {key}")
        return self

    @property
    def source(self) -> str:
        return self._source

    @property
    def file_name(self) -> str | None:
        """The name of the downloaded file, which a mirror serves too."""
        if self.filename:
            return self.filename
        return Path(unquote(urlsplit(self.url[0]).path)).name if self.url else None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in {**self.model_dump(), "source": self.source}.items() if v not in (None, [], {})}


def _entry(raw: Any, where: str) -> Entry:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        where = f"{where} ({raw['name']})"
    try:
        return Entry.model_validate(raw)
    except ValidationError as error:
        raise CheckpointError(error_line(error, where, Entry)) from None


class _Alias(Exception):
    def __init__(self, event: yaml.AliasEvent):
        super().__init__(f"line {event.start_mark.line + 1}: *{event.anchor} is a YAML alias, which a model list does not take")


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.safe_load`` without aliases: each ``*name`` repeats a whole value, so that a few hundred bytes of them
    nested expand to gigabytes (460 bytes made `actionclip models --json` print 20 MB)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _Alias(self.peek_event())
        return super().compose_node(parent, index)


def read_list(path: str | Path, source: str | None = None) -> list[Entry]:
    """The entries of one YAML list (a list of mappings, or a mapping with a ``models`` list), without aliases."""
    path = Path(path)
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoAliasLoader)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read this model list ({error.strerror or error})") from None
    except _Alias as error:
        raise CheckpointError(f"{path}: {error}; write the value out") from None
    except yaml.YAMLError as error:
        raise CheckpointError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if isinstance(content, dict) and set(content) == {"models"}:
        content = content["models"]
    if not isinstance(content, list):
        raise CheckpointError(f"{path}: expected a list of models (name, url, sha256, format, ...)")
    entries = [_entry(raw, f"{path}: entry {index + 1}") for index, raw in enumerate(content)]
    for entry in entries:
        entry._source = source or str(path)
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
