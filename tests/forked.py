"""A command's process, or torchrun's ranks, forked from a server that has imported torch and open_clip.

A fresh interpreter spends about 6 s of CPU importing them, most of what a small training run costs. The test process
itself cannot be forked: once it has run a backward pass, autograd refuses to run in its forked children. So each test
worker starts multiprocessing's fork server once, which imports the engine and never trains; its children run
``main(argv)`` (or any module-level function) with the test's environment, torchrun's where asked, their standard
streams in files, and exit with the function's result as a command exits with its code. `tests/test_engine.py` keeps
one launch through torchrun and the console script themselves, so the real entry points stay covered.
"""

import multiprocessing
import os
import signal
import socket
import sys
import traceback
from pathlib import Path

_SERVER = multiprocessing.get_context("forkserver")
_SERVER.set_forkserver_preload(["actionclip.engine.run", "actionclip.inference.embed", "actionclip.inference.predict"])


class Forked:
    """``function(*args)`` in a child of the fork server, driven like ``subprocess.Popen``: ``poll``, ``wait``,
    ``send_signal``, ``kill``, ``returncode`` (the function's int result, 0 for None, 1 after an exception, minus the
    signal when killed by one), and the child's ``stdout`` and ``stderr`` as text."""

    def __init__(self, function, *args, output: Path, env: dict | None = None, new_session: bool = False):
        self._streams = {name: Path(f"{output}.{name}") for name in ("stdout", "stderr")}
        for stream in self._streams.values():
            stream.write_text("")  # here, so that reading them never races the child's start
        environment = {**os.environ, **(env or {})}
        self._process = _SERVER.Process(target=_run_child, args=(function, args, self._streams, environment, new_session))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self):
        return self._process.exitcode

    def poll(self):
        return self._process.exitcode

    def wait(self, timeout: float = 300) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            self.kill()
            raise TimeoutError(f"forked process {self.pid} still ran after {timeout} s:\n{self.stderr[-3000:]}")
        return self._process.exitcode

    def send_signal(self, signal_number: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signal_number)

    def kill(self) -> None:
        self._process.kill()
        self._process.join()

    @property
    def stdout(self) -> str:
        return self._streams["stdout"].read_text()

    @property
    def stderr(self) -> str:
        return self._streams["stderr"].read_text()


def _run_child(function, args, streams, environment, new_session):
    code = 1
    try:
        if new_session:
            os.setsid()
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(streams[name], os.O_WRONLY), fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for number in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(number, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(environment)
        result = function(*args)
        code = 0 if result is None else int(result)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never the test process's atexit handlers, nor multiprocessing's


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ranks(function, *args, output: Path, nproc: int = 2) -> list[Forked]:
    """``function(*args)`` in ``nproc`` forked ranks with the environment torchrun gives them on one node."""
    port = free_port()
    return [
        Forked(
            function,
            *args,
            output=Path(f"{output}.rank{rank}"),
            env={
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "WORLD_SIZE": str(nproc),
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": str(nproc),
                "GROUP_RANK": "0",
            },
        )
        for rank in range(nproc)
    ]


def run_ranks(function, *args, output: Path, nproc: int = 2, timeout: float = 300) -> list[Forked]:
    """`start_ranks`, waited for: every rank must exit 0."""
    ranks = start_ranks(function, *args, output=output, nproc=nproc)
    try:
        for rank in ranks:
            rank.wait(timeout)
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
    failed = [(number, rank) for number, rank in enumerate(ranks) if rank.returncode != 0]
    assert not failed, "\n".join(f"rank {number} exited {rank.returncode}:\n{rank.stderr[-3000:]}" for number, rank in failed)
    return ranks
