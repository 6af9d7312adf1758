"""One table from a checkpoint format to its reader, and the format of a local path. ``hub.py`` (published
checkpoints, whose format their registry entry names) and ``sources.py`` (any source) both read through it; a new
importer is one module beside this one and one row in ``READERS``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from torch import nn

from actionclip.checkpoints import ours
from actionclip.checkpoints.mmaction2 import from_mmaction2_checkpoint
from actionclip.checkpoints.official import from_official_checkpoint
from actionclip.checkpoints.vificlip import from_vificlip_checkpoint
from actionclip.checkpoints.xclip import from_hf_xclip, from_videox_checkpoint


def _official(path: Path, visual_prompt: str, num_frames: int, base: str) -> nn.Module:
    return from_official_checkpoint(path, visual_prompt, num_frames)


# format -> reader(path, visual_prompt, num_frames, base): the arguments only some formats need, since only they
# leave them unrecorded (an official .pt its visual prompt and frames, a ViFi-CLIP file its base CLIP)
READERS: dict[str, Callable[[Path, str, int, str], nn.Module]] = {
    "actionclip": lambda path, visual_prompt, num_frames, base: ours.load(path),
    "official": _official,
    "hf_xclip": lambda path, visual_prompt, num_frames, base: from_hf_xclip(path),
    "videox": lambda path, visual_prompt, num_frames, base: from_videox_checkpoint(path),
    "mmaction2": lambda path, visual_prompt, num_frames, base: from_mmaction2_checkpoint(path),
    "vificlip": lambda path, visual_prompt, num_frames, base: from_vificlip_checkpoint(path, base),
}


def read_format(format: str, path: Path, *, visual_prompt: str = "Transf", num_frames: int = 8, base: str = "openai") -> nn.Module:
    return READERS[format](Path(path), visual_prompt, num_frames, base)


def is_hf_xclip(path: Path) -> bool:
    """A ``transformers`` X-CLIP directory, recognised by its ``config.json``."""
    try:
        return path.is_dir() and json.loads((path / ours.CONFIG_FILE).read_text()).get("model_type") == "xclip"
    except (OSError, ValueError):
        return False


def local_format(path: Path, arch: str | None = None) -> tuple[str, Path]:
    """The format of a local checkpoint and the path to read: a ``transformers`` X-CLIP directory, our checkpoint
    directory (or a run directory's ``best``/``last``), an original X-CLIP ``.pth`` when ``arch`` is xclip, else an
    official ActionCLIP ``.pt``."""
    if is_hf_xclip(path):
        return "hf_xclip", path
    if arch == "xclip" and path.is_file():
        return "videox", path
    path = ours.resolve(path)
    return ("official" if path.is_file() else "actionclip"), path
