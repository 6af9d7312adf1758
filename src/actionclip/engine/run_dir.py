"""A training run's directory: one run at a time, the configs it ran with, and checkpoints verified when read.

- ``RunLock``: an exclusive lock on ``<output>/.lock``. The kernel drops it when the process dies, so a killed
  run never leaves a stale lock behind.
- ``record_config``: ``config.yaml`` is the config of the latest start or resume; ``configs/`` keeps every one.
- ``resume_changes``: what changed since the run started that would break its schedule or its model.
- ``save_checkpoint`` / ``load_checkpoint``: torch payloads carrying a digest of their tensors, written under a
  unique temporary name, synced and renamed; a file that fails to load or to match its digest is named as corrupt.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Callable

import torch
import yaml

from actionclip.engine.config import Config, plain_dict, save_config
from actionclip.host.files import LockHeld, atomic_file, file_lock
from actionclip.weights.readers import tensor_digest

# Settings that change neither the model nor the optimisation: they may differ when a run is resumed (data moved
# to another disk, more workers, another evaluation protocol). Every other change is refused.
RESUMABLE = (
    "data.workers",
    "data.root",
    "data.options.train_root",
    "data.options.val_root",
    "data.options.split_dir",
    "data.max_bad_fraction",
    "train.output",
    "train.device",
    "train.log_every",
    "train.eval_every",
    "train.save_every_steps",
    "train.keep_last",
    "train.max_steps",
    "train.deterministic",
    "prompts.ensemble",
    "eval.",
    # The Trainer checks the global batch these make with the number of processes, which may change.
    "data.batch_size",
    "optim.accumulation_steps",
)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked: another run holds it, the config changed, nothing to resume."""


class CorruptCheckpoint(RuntimeError):
    pass


class RunLock:
    """``with RunLock(output):`` holds the run directory; a second run into it raises ``RunDirError`` at once."""

    def __init__(self, output: str | Path):
        self.path = Path(output) / ".lock"
        self._held = contextlib.ExitStack()

    def __enter__(self) -> RunLock:
        try:
            self._held.enter_context(file_lock(self.path, blocking=False))
        except LockHeld:
            holder = self.path.read_text().strip() or "a process that has not written its pid yet"
            raise RunDirError(
                f"{self.path.parent} is in use by another run ({holder}); wait for it to finish or choose another output"
            ) from None
        self.path.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        return self

    def __exit__(self, *exc) -> None:
        self._held.close()


def record_config(config: Config, output: Path, event: str) -> Path:
    """Write ``config.yaml`` and ``configs/NNN_<event>.yaml`` (``event``: start or resume)."""
    history = output / "configs"
    history.mkdir(parents=True, exist_ok=True)
    number = len(list(history.glob("*.yaml"))) + 1
    save_config(config, history / f"{number:03d}_{event}.yaml")
    save_config(config, output / "config.yaml")
    return output / "config.yaml"


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_changes(saved_config: Path, config: Config) -> list[str]:
    """``key: old -> new`` for every setting that differs from the run's ``config.yaml`` and may not change."""
    saved = _flatten(yaml.safe_load(saved_config.read_text()) or {})
    current = _flatten(plain_dict(config))
    return [
        f"{key}: {saved[key]!r} -> {current[key]!r}"
        for key in sorted(saved.keys() & current.keys())
        if saved[key] != current[key] and not key.startswith(RESUMABLE)
    ]


def save_checkpoint(payload: dict, path: Path) -> None:
    """Write ``payload`` and its digest to ``path`` atomically; on failure remove the partial file and say why."""
    payload = {**payload, "digest": tensor_digest(payload)}
    # Through a Python file, so that a failed write keeps its OSError (torch's own writer loses the errno).
    with atomic_file(path) as handle:
        torch.save(payload, handle)


def remove_partial_files(directory: Path) -> None:
    """Temporary files of runs that were killed while saving (call with the run's lock held)."""
    for partial in directory.glob(".*.tmp"):
        partial.unlink(missing_ok=True)


def load_checkpoint(path: Path, device: torch.device, keys: tuple[str, ...]) -> dict:
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CorruptCheckpoint(f"{path} is unreadable ({reason})") from None
    missing = [key for key in keys if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise CorruptCheckpoint(f"{path} is not a resumable checkpoint (no {', '.join(missing)})")
    digest = payload.pop("digest", None)
    if digest is not None and digest != tensor_digest(payload):
        raise CorruptCheckpoint(f"{path} is corrupt (its contents do not match the digest saved with them)")
    return payload


def newest_intact_checkpoint(
    paths: list[Path], device: torch.device, keys: tuple[str, ...], warn: Callable[[str], None]
) -> tuple[Path, dict]:
    """The newest of ``paths`` (sorted oldest first) that loads and matches its digest, warning about newer bad ones."""
    problems = []
    for path in reversed(paths):
        try:
            payload = load_checkpoint(path, device, keys)
        except CorruptCheckpoint as error:
            warn(f"warning: {error}")
            problems.append(path.name)
            continue
        if problems:
            warn(f"warning: resuming from {path}, the newest intact checkpoint")
        return path, payload
    raise RunDirError(f"--resume: no intact checkpoint among {', '.join(problems)} in {paths[0].parent}")
