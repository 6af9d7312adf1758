"""Stopping a training run cleanly on SIGTERM, SIGINT or SIGUSR1 (what SLURM sends before preemption).

The handler only records the signal. The training loop finishes the optimizer step it is in and the next (the ranks'
agreement on a step is read one step later, engine/steps.py), agrees with the other ranks to stop at the same step, saves a resumable checkpoint and raises ``TrainingInterrupted``; the command line
then exits with ``EXIT_INTERRUPTED``. Repeated signals are ignored: under torchrun a terminal's Ctrl-C reaches each
rank once from the terminal and once more from the launcher, and the save must not be cut short by the second.
"""

from __future__ import annotations

import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
EXIT_INTERRUPTED = 75  # sysexits' EX_TEMPFAIL: a temporary failure, to be retried (with --resume)


class TrainingInterrupted(Exception):
    def __init__(self, signal_name: str, checkpoint):
        self.signal_name, self.checkpoint = signal_name, checkpoint
        super().__init__(f"stopped by {signal_name}; resumable checkpoint {checkpoint} (continue with --resume)")


class StopSignals:
    """``with StopSignals() as stop:`` ... ``stop.received`` is the name of the first stop signal, or None."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python handles signals only there
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(number).name
            print(f"{self.received}: finishing this step, then saving a checkpoint", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of DataLoaders: workers leave stop signals to the main process. A worker killed by a
    terminal's Ctrl-C or a process group's SIGTERM would otherwise abort the step the main process is finishing."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
