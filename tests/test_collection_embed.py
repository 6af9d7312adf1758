"""``actionclip embed``: shards and manifest, resumed after kill -9, sharded over torchrun processes, bad videos listed."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import actionclip
from actionclip import data
from actionclip.cli.main import main
from actionclip.inference import collection_store as store
from forked import Forked, run_ranks


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


def embed_argv(videos, output, checkpoint, *extra):
    return [
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
    assert code == 0 and json.loads(capsys.readouterr().out) == {
        "videos": 3,
        "skipped": 0,
        "embedded": 3,
        "failed": 0,
        "rows": 3,
        "failed_before": 0,
    }
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
            "path": str(video.resolve()),
            "size": video.stat().st_size,
            "mtime_ns": video.stat().st_mtime_ns,
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
    process = Forked(main, embed_argv(videos, tmp_path / "killed", directory, *args), output=tmp_path / "killed-run")
    manifest = tmp_path / "killed" / store.MANIFEST
    deadline = time.monotonic() + 120
    while not (manifest.is_file() and manifest.read_text().count("\n") >= 3) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.kill()
    done_before = len(store.read_manifest(tmp_path / "killed"))
    assert 3 <= done_before < len(videos), "the run was not killed part-way"
    resumed = Forked(main, embed_argv(videos, tmp_path / "killed", directory, *args), output=tmp_path / "resumed")
    assert resumed.wait() == 0, resumed.stderr
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
    assert summary == {"videos": 4, "skipped": 1, "embedded": 3, "failed": 0, "rows": 3, "failed_before": 0}
    assert_same_rows(tmp_path / "crashed", tmp_path / "whole")


def test_unreadable_videos_are_listed_said_again_by_a_rerun_and_retried_on_request(checkpoint, tmp_path, capsys):
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
    assert code == 1 and json.loads(out) == {"videos": 4, "skipped": 0, "embedded": 2, "failed": 2, "rows": 2, "failed_before": 0}
    assert err.strip().endswith(f"2 videos could not be read: their errors are in {tmp_path / 'emb'}/manifest.jsonl")
    errors = {r["video"]: r["error"] for r in store.read_manifest(tmp_path / "emb") if "error" in r}
    assert errors[str(missing)] == "file not found" and "cannot open as a video" in errors[str(corrupt)]
    # A rerun skips them and says so, with exit code 1 (it exited 0, as if the collection were whole).
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 1 and json.loads(out) == {"videos": 4, "skipped": 4, "embedded": 0, "failed": 0, "rows": 0, "failed_before": 2}
    assert err.strip().endswith(
        "2 videos could not be read by an earlier run (their errors are in "
        f"{tmp_path / 'emb'}/manifest.jsonl): --retry-errors tries them again"
    )
    assert main([*args, "--retry-errors"]) == 1
    assert json.loads(capsys.readouterr().out) == {"videos": 4, "skipped": 2, "embedded": 0, "failed": 2, "rows": 0, "failed_before": 0}
    # A file that appears (or changes) since its error is another file: tried again without being asked.
    missing.write_bytes(videos[0].read_bytes())
    assert main(args) == 1
    assert json.loads(capsys.readouterr().out) == {"videos": 4, "skipped": 3, "embedded": 1, "failed": 0, "rows": 1, "failed_before": 1}
    records = store.current_records(store.read_manifest(tmp_path / "emb"))
    assert sorted(r["video"] for r in records if "error" not in r) == sorted(map(str, [*videos, missing]))
    assert [r["video"] for r in records if "error" in r] == [str(corrupt)]


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
    one = Forked(main, embed_argv(videos, tmp_path / "one", directory, "--workers", "0"), output=tmp_path / "one-run")
    assert one.wait() == 0, one.stderr
    two = run_ranks(main, embed_argv(videos, tmp_path / "two", directory, "--workers", "1"), output=tmp_path / "two-run")
    assert json.loads(two[0].stdout) == {"videos": 7, "skipped": 0, "embedded": 7, "failed": 0, "rows": 7, "failed_before": 0}
    assert two[1].stdout == ""  # the summary is rank 0's
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


def test_embed_writes_only_into_a_new_or_empty_folder_or_a_collection(checkpoint, tmp_path, capsys):
    """It used to write into any folder, deleting a user's ``*.tmp`` files and files named like shards."""
    model, directory = checkpoint
    videos = make_videos(tmp_path / "videos", 1)
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("notes.tmp", "shard-r000-00000.npy"):
        (mine / name).write_text("the user's")
    code = main(["embed", str(videos[0]), "--output", str(mine), "--checkpoint", str(directory)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {mine}: not empty and not a collection (no collection.json; it holds notes.tmp); embed into a new or empty folder"
    ]
    assert sorted(p.name for p in mine.iterdir()) == ["notes.tmp", "shard-r000-00000.npy"]
    assert all(p.read_text() == "the user's" for p in mine.iterdir())
    # In a collection of ours, only what a killed write of ours leaves is removed.
    (tmp_path / "empty").mkdir()
    actionclip.embed(videos, tmp_path / "empty", model, workers=0)
    (tmp_path / "empty" / "notes.tmp").write_text("the user's")
    (tmp_path / "empty" / ".shard-r000-00007.npy.123.0badcafe.tmp").write_text("a killed write")
    actionclip.embed(videos, tmp_path / "empty", model, workers=0)
    assert sorted(p.name for p in (tmp_path / "empty").iterdir() if not p.name.startswith("shard")) == [
        ".lock",
        "collection.json",
        "manifest.jsonl",
        "notes.tmp",
    ]


def test_a_video_named_two_ways_is_embedded_once_and_a_changed_file_again(checkpoint, tmp_path, monkeypatch):
    model, _ = checkpoint
    monkeypatch.chdir(tmp_path)
    first, second = make_videos(tmp_path / "coll", 2)
    names = ["coll/v00.mp4", str(first), "coll//v01.mp4", "coll/../coll/v01.mp4"]
    summary = actionclip.embed(names, "emb", model, workers=0, dtype="fp32")
    assert (summary["videos"], summary["embedded"]) == (2, 2)
    assert [r["video"] for r in store.load_embeddings("emb")[0]] == ["coll/v00.mp4", "coll/v01.mp4"]
    assert actionclip.embed([first, second], "emb", model, workers=0, dtype="fp32")["skipped"] == 2
    # A line repeated by hand gives no second row (nor a second result).
    with open("emb/manifest.jsonl", "a") as manifest:
        manifest.write(open("emb/manifest.jsonl").readline())
    assert len(store.load_embeddings("emb")[0]) == 2
    # The second file replaced by another video: embedded again, its new row replaces the old one.
    make_videos(tmp_path / "other", 3)[2].replace(second)
    os.utime(second, ns=(second.stat().st_atime_ns, second.stat().st_mtime_ns + 10**9))
    assert actionclip.embed(names, "emb", model, workers=0, dtype="fp32")["embedded"] == 1
    actionclip.embed([first, second], "fresh", model, workers=0, dtype="fp32")
    rows, matrix = store.load_embeddings("emb")
    assert [r["video"] for r in rows] == ["coll/v00.mp4", "coll/v01.mp4"]
    np.testing.assert_allclose(matrix, store.load_embeddings("fresh")[1], atol=1e-6)
