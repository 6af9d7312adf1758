"""A real `actionclip serve` process on 127.0.0.1, shared by the API and browser tests."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import actionclip

SRC = Path(actionclip.__file__).resolve().parents[1]  # the server runs the package the tests import


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(checkpoint, tmpdir: Path, *args, timeout: float = 90):
    """``actionclip serve --checkpoint checkpoint ARGS`` with its temporary files in ``tmpdir``; yields its URL."""
    port = free_port()
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    log = open(tmpdir.parent / f"serve-{port}.log", "w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actionclip",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--port",
            str(port),
            "--precision",
            "fp32",
            *map(str, args),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"actionclip serve exited with {process.returncode}: {Path(log.name).read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"actionclip serve did not start in {timeout} s: {Path(log.name).read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
