"""What a DataLoader worker leaves to the process that forked it."""

from __future__ import annotations

from actionclip.engine.signals import ignore_stop_signals
from actionclip.host.memory import release_freed_memory


def init_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader: stop signals are the main process's to handle (engine/signals.py), and
    malloc's default trimming comes back, or each of the many workers of an 8-GPU run would keep up to 1 GiB of freed
    memory that :func:`~actionclip.host.memory.retain_freed_memory` kept for the main process's activations."""
    ignore_stop_signals(worker_id)
    release_freed_memory()
