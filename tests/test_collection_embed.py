"""``actionclip embed``: shards and manifest, resumed after kill -9, sharded over torchrun processes, bad videos listed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import actionclip
from actionclip import data
from actionclip.cli.main import main
from actionclip.inference import collection_store as store

SRC = str(Path(__file__).resolve().parents[1] / "src")


def make_videos(folder: Path, count: int, frames: int = 12) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        data.write_video(
            folder / f"v{i:02d}.mp4", np.random.default_rng(i).integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8), lossless=True
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = actionclip.create_model("test-tiny", seed=0).eval()
    return model, actionclip.save(model, tmp_path_factory.mktemp("ckpt"))


def rows_by_clip(directory) -> dict:
    """(video, start, end) -> embedding, with a check that no clip is there twice."""
    rows, matrix = store.load_embeddings(directory)
    keys = [(r["video"], r["start"], r["end"]) for r in rows]
    assert len(set(keys)) == len(keys), "a clip embedded twice"
    return dict(zip(keys, matrix.astype(np.float32)))


def assert_same_rows(a, b, atol=1e-6):
    a, b = rows_by_clip(a), rows_by_clip(b)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=atol, err_msg=str(key))


def embed_command(videos, output, checkpoint, *extra):
    return [
        sys.executable,
        "-m",
        "actionclip",
        "embed",
        *map(str, videos),
        "--output",
        str(output),
        "--checkpoint",
        str(checkpoint),
        "--precision",
        "fp32",
        "--dtype",
        "fp32",
        "--device",
        "cpu",
        *map(str, extra),
    ]


def environment():
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def test_rows_are_the_normalised_embeddings_of_the_test_clips(checkpoint, tmp_path, capsys):
    model, directory = checkpoint
    videos = make_videos(tmp_path / "videos", 3)
    code = main(
        [
            "embed",
            str(tmp_path / "videos"),
            "--output",
            str(tmp_path / "emb"),
            "--checkpoint",
            str(directory),
            "--precision",
            "fp32",
            "--dtype",
            "fp32",
            "--workers",
            "0",
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out) == {"videos": 3, "skipped": 0, "embedded": 3, "failed": 0, "rows": 3}
    rows, matrix = store.load_embeddings(tmp_path / "emb")
    assert [r["video"] for r in rows] == [str(v) for v in videos]
    info = store.read_info(tmp_path / "emb")
    for record, row, video in zip(rows, matrix, videos):
        clip = data.TestTransform(32)(data.open_video(video).read(data.sample_indices(12, 8, "test")))
        expected = torch.nn.functional.normalize(model.encode_video(data.normalize(clip)[None]), dim=-1)[0]
        np.testing.assert_allclose(row, expected.detach().numpy(), atol=1e-5)
        assert record == {
            "video": str(video),
            "duration": 0.48,
            "start": 0.0,
            "end": 0.48,
            "model": "test-tiny",
            "weights": info["weights"],
            "shard": "shard-r000-00000.npy",
            "row": record["row"],
        }
    assert matrix.dtype == np.float32 and info["source"]["checkpoint"] == str(directory)
    # The default, fp16 rows, are within fp16's rounding of the fp32 ones (2^-11 relative, entries below 1).
    actionclip.embed(videos, tmp_path / "emb16", checkpoint=directory, precision="fp32", workers=0, device="cpu")
    half = store.load_embeddings(tmp_path / "emb16")[1]
    assert half.dtype == np.float16 and np.abs(half.astype(np.float32) - matrix).max() < 1e-3


def test_kill_9_then_resume_equals_an_uninterrupted_run(checkpoint, tmp_path):
    _, directory = checkpoint
    videos = make_videos(tmp_path / "videos", 16, frames=32)
    args = ("--workers", "0", "--batch-size", "1", "--shard-size", "1")
    actionclip.embed(
        videos,
        tmp_path / "whole",
        checkpoint=directory,
        precision="fp32",
        dtype="fp32",
        device="cpu",
        workers=0,
        batch_size=1,
        shard_size=1,
    )
    process = subprocess.Popen(
        embed_command(videos, tmp_path / "killed", directory, *args),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = tmp_path / "killed" / store.MANIFEST
    deadline = time.monotonic() + 120
    while not (manifest.is_file() and manifest.read_text().count("\n") >= 3) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(store.read_manifest(tmp_path / "killed"))
    assert 3 <= done_before < len(videos), "the run was not killed part-way"
    resumed = subprocess.run(
        embed_command(videos, tmp_path / "killed", directory, *args), env=environment(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] == done_before and summary["embedded"] == len(videos) - done_before
    assert_same_rows(tmp_path / "killed", tmp_path / "whole")
    listed = {r["shard"] for r in store.read_manifest(tmp_path / "killed")}
    assert {p.name for p in (tmp_path / "killed").glob("shard-*")} == listed  # nothing unlisted left behind


def test_a_crash_between_shard_and_manifest_leaves_nothing_trusted(checkpoint, tmp_path, monkeypatch):
    model, _ = checkpoint
    videos = make_videos(tmp_path / "videos", 4)
    actionclip.embed(videos, tmp_path / "whole", model, workers=0, batch_size=1, shard_size=1, dtype="fp32")

    def crash(*args):
        raise KeyboardInterrupt  # the process dies after its second shard is on disk, before the manifest names it

    real_append, appended = store.append_manifest, []
    monkeypatch.setattr(store, "append_manifest", lambda *a: crash() if appended else appended.append(real_append(*a)))
    with pytest.raises(KeyboardInterrupt):
        actionclip.embed(videos, tmp_path / "crashed", model, workers=0, batch_size=1, shard_size=1, dtype="fp32")
    assert len(list((tmp_path / "crashed").glob("shard-*"))) == 2 and len(store.read_manifest(tmp_path / "crashed")) == 1
    with open(tmp_path / "crashed" / store.MANIFEST, "a") as file:
        file.write('{"video": "half a line')  # and a line cut short
    monkeypatch.setattr(store, "append_manifest", real_append)
    summary = actionclip.embed(videos, tmp_path / "crashed", model, workers=0, batch_size=1, shard_size=1, dtype="fp32")
    assert summary == {"videos": 4, "skipped": 1, "embedded": 3, "failed": 0, "rows": 3}
    assert_same_rows(tmp_path / "crashed", tmp_path / "whole")


def test_unreadable_videos_are_listed_with_their_error_and_not_retried(checkpoint, tmp_path, capsys):
    _, directory = checkpoint
    videos = make_videos(tmp_path / "videos", 2)
    corrupt = tmp_path / "videos" / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    missing = tmp_path / "missing.mp4"
    args = [
        "embed",
        str(tmp_path / "videos"),
        str(missing),
        "--output",
        str(tmp_path / "emb"),
        "--checkpoint",
        str(directory),
        "--workers",
        "2",
        "--batch-size",
        "2",
    ]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 1 and json.loads(out) == {"videos": 4, "skipped": 0, "embedded": 2, "failed": 2, "rows": 2}
    assert err.strip().endswith(f"2 videos could not be read: their errors are in {tmp_path / 'emb'}/manifest.jsonl")
    errors = {r["video"]: r["error"] for r in store.read_manifest(tmp_path / "emb") if "error" in r}
    assert errors[str(missing)] == "file not found" and "cannot open as a video" in errors[str(corrupt)]
    assert main(args) == 0 and json.loads(capsys.readouterr().out)["skipped"] == 4
    assert sorted(r["video"] for r in store.load_embeddings(tmp_path / "emb")[0]) == sorted(map(str, videos))


def test_another_model_or_settings_in_the_same_folder_is_one_clear_error(checkpoint, tmp_path, capsys):
    _, directory = checkpoint
    videos = make_videos(tmp_path / "videos", 1)
    assert main(["embed", str(videos[0]), "--output", str(tmp_path / "emb"), "--checkpoint", str(directory)]) == 0
    capsys.readouterr()
    code = main(["embed", str(videos[0]), "--output", str(tmp_path / "emb"), "--checkpoint", str(directory), "--dtype", "fp32"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {tmp_path / 'emb'}: holds embeddings made otherwise (dtype 'fp16' there, 'fp32' now); embed into another folder"
    ]


def test_torchrun_two_processes_give_the_rows_of_one(checkpoint, tmp_path):
    _, directory = checkpoint
    videos = make_videos(tmp_path / "videos", 7)
    one = subprocess.run(
        embed_command(videos, tmp_path / "one", directory, "--workers", "0"), env=environment(), capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "actionclip",
        *embed_command(videos, tmp_path / "two", directory, "--workers", "1")[3:],
    ]
    two = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert json.loads(two.stdout) == {"videos": 7, "skipped": 0, "embedded": 7, "failed": 0, "rows": 7}
    assert_same_rows(tmp_path / "two", tmp_path / "one", atol=1e-5)
    shards = {r["shard"]: r["video"] for r in store.read_manifest(tmp_path / "two")}
    assert {name[:10] for name in shards} == {"shard-r000", "shard-r001"}  # each rank wrote its own


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "tpu"], "--device tpu: not a device name (cpu, cuda, cuda:1, mps, ...)"),
        (["--shard-size", "0"], "--shard-size must be >= 1, got 0"),
        (["--window", "-1"], "window and stride must be > 0 seconds, got -1.0 and -1.0"),
    ],
)
def test_bad_options_are_one_line(args, message, checkpoint, tmp_path, capsys):
    _, directory = checkpoint
    videos = make_videos(tmp_path / "videos", 1)
    code = main(["embed", str(videos[0]), "--output", str(tmp_path / "emb"), "--checkpoint", str(directory), *args])
    out, err = capsys.readouterr()
    assert (code, out, err.splitlines()) == (2, "", [f"error: {message}"])
    assert not (tmp_path / "emb").exists()  # nothing written


def test_rows_use_the_models_own_normalisation(tmp_path):
    """An imported model normalises frames as its source did (ViFi-CLIP: ImageNet's mean and std); embed does too."""
    model = actionclip.create_model("test-tiny", seed=0).eval()
    model.config.normalization = "imagenet"
    directory = actionclip.save(model, tmp_path / "ckpt")
    (video,) = make_videos(tmp_path / "videos", 1)
    actionclip.embed([video], tmp_path / "emb", checkpoint=directory, precision="fp32", dtype="fp32", workers=0, device="cpu")
    clip = data.TestTransform(32)(data.open_video(video).read(data.sample_indices(12, 8, "test")))
    expected = torch.nn.functional.normalize(model.encode_video(data.normalize(clip, "imagenet")[None]), dim=-1)[0]
    np.testing.assert_allclose(store.load_embeddings(tmp_path / "emb")[1][0], expected.detach().numpy(), atol=1e-5)
