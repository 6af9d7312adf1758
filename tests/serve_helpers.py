"""What the serve tests share: the tiny model, a test client of the app, uploads, and a real `actionclip serve`
process on 127.0.0.1 (the API and browser tests)."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import actionclip

SRC = Path(actionclip.__file__).resolve().parents[1]  # the server runs the package the tests import
PEER_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "peer_videos"
ARM_WRESTLING = PEER_VIDEOS / "mmaction2_demo_arm_wrestling.mp4"
EYE_MAKEUP = PEER_VIDEOS / "mmaction2_test_eye_makeup.avi"
needs_peer_videos = pytest.mark.skipif(not ARM_WRESTLING.is_file(), reason=f"no peer videos in {PEER_VIDEOS}")
LABELS = ["arm wrestling", "playing guitar", "swimming", "applying eye makeup"]


def tiny_model(tmp_path_factory):
    """The tests' tiny ActionCLIP (random weights) and its checkpoint folder (each test module's ``tiny`` fixture)."""
    model = actionclip.create_model("test-tiny", seed=0).eval()
    return model, actionclip.save(model, tmp_path_factory.mktemp("ckpt"))


def client_for(model, tmp_path, **settings):
    """A test client of the app serving ``model`` (default labels ``LABELS``, decoding in a thread) and its uploads' folder."""
    from fastapi.testclient import TestClient

    from actionclip.serve.app import ServeSettings, create_app

    uploads = tmp_path / "uploads"
    uploads.mkdir(exist_ok=True)
    app = create_app(model, ServeSettings(**{"default_labels": LABELS, "workers": 0, **settings}), upload_dir=uploads)
    return TestClient(app), uploads


def video_files(*paths, field="video"):
    return [(field, (Path(p).name, Path(p).read_bytes())) for p in paths]


def multipart_part(boundary: str) -> bytes:
    """The head of a file part in the field ``video``."""
    return (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="a.mp4"\r\nContent-Type: video/mp4\r\n\r\n').encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(checkpoint, tmpdir: Path, *args, timeout: float = 90):
    """``actionclip serve --checkpoint checkpoint ARGS`` with its temporary files in ``tmpdir``; yields its URL and
    its ``Popen``."""
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
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from /proc: children are listed under the thread that started them)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(child) for child in (task / "children").read_text().split()]
                found += children
                todo += children
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: only its parent's wait is missing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
