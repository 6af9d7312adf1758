"""Timelines (``predict --window``) on a generated long video of distinct actions with known boundaries, its
variable-frame-rate copy starting at 2 s, and ``predict --embeddings`` against ``predict`` on the videos."""

import json

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import actionclip
import actionclip.inference.timeline
from actionclip import data
from actionclip.cli.main import main
from actionclip.data.synthetic import draw_clip
from actionclip.data.transforms import NORMALIZATIONS
from actionclip.data.windows import plan_windows
from actionclip.video import decode
from test_collection_embed import make_videos

# Three actions of 6 s each: the colour names the action.
ACTIONS = [("circle", "red", "right"), ("square", "blue", "grow"), ("triangle", "green", "down")]
LABELS = ["red", "green", "blue"]
SECONDS = 6


def long_video(path, timestamps_ms):
    """The three actions one after the other; a frame belongs to the action of its own timestamp."""
    phases = [min(int((t - timestamps_ms[0]) / 1000 // SECONDS), len(ACTIONS) - 1) for t in timestamps_ms]
    rng = np.random.default_rng(0)
    frames = np.concatenate(
        [draw_clip(shape, colour, motion, 32, phases.count(k), rng) for k, (shape, colour, motion) in enumerate(ACTIONS)]
    )
    return data.write_video(path, frames, fps=10, timestamps_ms=timestamps_ms, lossless=True)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    constant = long_video(root / "constant.mp4", [100 * i for i in range(180)])
    gaps = [60, 140, 100]  # variable frame rate, 10 frames/s on average, starting at 2 s
    variable = long_video(root / "variable.mkv", [2000 + sum(gaps[i % 3] for i in range(k)) for k in range(180)])
    return {"constant": (constant, 0.0), "variable": (variable, 2.0)}


@pytest.fixture
def colour_model():
    """A tiny ActionCLIP whose video embedding is the clip's mean chroma (RGB minus grey) and whose class texts are the
    colour axes: its scores are known to separate the actions, with no training."""
    model = actionclip.create_model("test-tiny", seed=0).eval()
    mean, std = (torch.tensor(v).view(1, 1, 3, 1, 1) for v in NORMALIZATIONS["clip"])

    def encode_video(video):
        rgb = (video * std + mean).mean(dim=(1, 3, 4))
        return F.pad(rgb - rgb.mean(dim=1, keepdim=True), (0, 61))

    def class_text_features(labels, templates=None):
        axes = {"red": 0, "green": 1, "blue": 2}
        return F.one_hot(torch.tensor([axes[label] for label in labels]), 64).float()[None]

    model.encode_video, model.class_text_features = encode_video, class_text_features
    return model


def decoded_times(path):
    with av.open(str(path)) as container:
        return [frame.time for frame in container.decode(video=0)]


@pytest.mark.parametrize("kind", ["constant", "variable"])
def test_segments_recover_the_boundaries_and_windows_follow_the_pts(kind, videos, colour_model, monkeypatch):
    path, start = videos[kind]
    passes = []
    real_decode = decode.decode_frames
    monkeypatch.setattr(decode, "decode_frames", lambda *a, **k: passes.append(1) or real_decode(*a, **k))
    (result,) = actionclip.predict(path, LABELS, colour_model, window=2, stride=1, workers=0, top_k=3)
    assert len(passes) == 1  # one decoding pass for the 17 or 18 windows
    times = decoded_times(path)
    assert data.VideoFile(path).frame_times == pytest.approx(times, abs=1e-9) and times[0] == pytest.approx(start)
    planned = plan_windows(times, 8, 2.0, 1.0)
    assert [(w["start"], w["end"]) for w in result["windows"]] == [(w.start, w.end) for w in planned]
    assert result["windows"][0]["start"] == pytest.approx(start) and len(planned) >= 17
    for window in planned:  # the sampled frames lie in their window, as the test protocol spreads them over it
        assert all(window.start <= times[i] < window.end for i in window.indices)
    segments = result["segments"]
    assert [s["label"] for s in segments] == ["red", "blue", "green"]
    assert segments[0]["start"] == pytest.approx(start) and segments[-1]["end"] == pytest.approx(2 * times[-1] - times[-2])
    for segment, boundary in zip(segments, (SECONDS, 2 * SECONDS)):
        assert abs(segment["end"] - (start + boundary)) <= 1.0  # within one stride
    assert all(s["score"] > 0.9 for s in segments)


def test_min_score_leaves_uncertain_windows_out_of_every_segment(videos, colour_model):
    path, _ = videos["constant"]
    (result,) = actionclip.predict(path, LABELS, colour_model, window=2, stride=1, workers=0)
    lowest = min(w["scores"][0] for w in result["windows"])
    (strict,) = actionclip.predict(path, LABELS, colour_model, window=2, stride=1, workers=0, min_score=lowest + 1e-6)
    assert strict["windows"] == result["windows"]
    uncertain = [w for w in strict["windows"] if w["scores"][0] <= lowest]
    assert uncertain and not any(s["start"] <= (w["start"] + w["end"]) / 2 <= s["end"] for w in uncertain for s in strict["segments"])


def test_timeline_command_prints_json_and_draws_the_picture(videos, tmp_path, capsys):
    directory = actionclip.save(actionclip.create_model("test-tiny", seed=0), tmp_path / "ckpt")
    path, _ = videos["variable"]
    picture = tmp_path / "timeline.png"
    code = main(
        [
            "predict",
            str(path),
            "--labels",
            ",".join(LABELS),
            "--checkpoint",
            str(directory),
            "--window",
            "4",
            "--stride",
            "2",
            "--json",
            "--timeline",
            str(picture),
            "--precision",
            "fp32",
        ]
    )
    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert code == 0 and set(result) == {"video", "windows", "segments"} and len(result["windows"]) == 9  # 2.0 to 20.04 s
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code = main(["predict", str(path), "--labels", "a,b", "--checkpoint", str(directory), "--window", "0"])
    assert code == 2 and capsys.readouterr().err.splitlines() == ["error: window and stride must be > 0 seconds, got 0.0 and 0.0"]


@pytest.mark.parametrize("dtype, bound", [("fp32", 1e-5), ("fp16", 2e-3)])
def test_embeddings_give_the_scores_of_predict_on_the_videos(dtype, bound, tmp_path, capsys):
    model = actionclip.create_model("test-tiny", seed=0).eval()
    directory = actionclip.save(model, tmp_path / "ckpt")
    videos = make_videos(tmp_path / "videos", 4)
    labels = ["arm wrestling", "playing guitar", "swimming"]
    actionclip.embed(videos, tmp_path / "emb", checkpoint=directory, precision="fp32", dtype=dtype, device="cpu", workers=0)
    expected = actionclip.predict(videos, labels, checkpoint=directory, precision="fp32", device="cpu", workers=0)
    code = main(["predict", "--embeddings", str(tmp_path / "emb"), "--labels", ",".join(labels), "--json", "--no-text-cache"])
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [r["video"] for r in results] == [r["video"] for r in expected]
    gaps = []
    for got, want in zip(results, expected):
        scores = dict(zip(got["labels"], got["scores"]))
        gaps += [abs(scores[label] - score) for label, score in zip(want["labels"], want["scores"])]
    assert max(gaps) <= bound, max(gaps)
    if dtype == "fp16":
        assert max(gaps) > 1e-7  # fp16 rounding shows, so the bound is a real one


def test_an_xclip_collection_is_refused_for_labels(tmp_path, capsys):
    model = actionclip.create_model("test-tiny", arch="xclip", seed=0).eval()
    directory = actionclip.save(model, tmp_path / "ckpt")
    videos = make_videos(tmp_path / "videos", 1)
    actionclip.embed(videos, tmp_path / "emb", checkpoint=directory, arch="xclip", device="cpu", workers=0)
    code = main(["predict", "--embeddings", str(tmp_path / "emb"), "--labels", "a,b"])
    assert code == 2 and capsys.readouterr().err.splitlines() == [
        f"error: {tmp_path / 'emb'}: embedded with X-CLIP, whose class texts depend on each video's frames (its "
        "video-specific prompts): label the videos with `actionclip predict VIDEOS` instead"
    ]


@pytest.mark.parametrize("kind", ["constant", "variable"])
def test_the_one_pass_gives_the_pixels_of_a_sparse_read(kind, videos):
    from actionclip.data.windows import window_frames

    path, _ = videos[kind]
    video = data.VideoFile(path)
    windows = plan_windows(video.frame_times, 8, 2.0, 1.0)
    streamed = list(window_frames(video, windows))
    assert [w for w, _ in streamed] == windows
    for window, frames in streamed:
        assert np.array_equal(frames, data.VideoFile(path).read(window.indices))


def test_embedded_windows_label_like_the_timeline_of_the_video(videos, tmp_path, capsys):
    path, _ = videos["variable"]
    directory = actionclip.save(actionclip.create_model("test-tiny", seed=0), tmp_path / "ckpt")
    labels = ["arm wrestling", "playing guitar", "swimming"]
    code = main(
        [
            "embed",
            str(path),
            "--output",
            str(tmp_path / "emb"),
            "--checkpoint",
            str(directory),
            "--window",
            "2",
            "--stride",
            "1",
            "--dtype",
            "fp32",
            "--precision",
            "fp32",
            "--workers",
            "0",
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["rows"] == 18
    (expected,) = actionclip.predict(
        path, labels, checkpoint=directory, window=2, stride=1, precision="fp32", device="cpu", workers=0, top_k=3
    )
    (got,) = actionclip.inference.timeline.embedding_predictions(tmp_path / "emb", labels, top_k=3)
    assert [(w["start"], w["end"], w["labels"]) for w in got["windows"]] == [
        (w["start"], w["end"], w["labels"]) for w in expected["windows"]
    ]
    for a, b in zip(got["windows"], expected["windows"]):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    assert [(s["start"], s["end"], s["label"]) for s in got["segments"]] == [
        (s["start"], s["end"], s["label"]) for s in expected["segments"]
    ]


def test_a_matroska_stream_starting_late_is_not_reported_truncated(videos):
    path, start = videos["variable"]  # Matroska states 20.0 s from 0; the stream runs from 2.0 s to 20.04 s
    video = data.VideoFile(path)
    assert start == 2.0 and video.shortfall is None and video.header_frames == 180


def test_predict_without_videos_or_with_both_sources_is_one_line(tmp_path, capsys):
    for args, message in (
        (["--labels", "a,b", "--checkpoint", str(tmp_path)], "give videos and --checkpoint or --model (or --embeddings DIR)"),
        (["clip.mp4", "--labels", "a,b"], "give videos and --checkpoint or --model (or --embeddings DIR)"),
        (
            ["clip.mp4", "--labels", "a,b", "--embeddings", str(tmp_path)],
            "--embeddings labels the collection's own videos or windows: give no videos and no --window",
        ),
    ):
        code = main(["predict", *args])
        out, err = capsys.readouterr()
        assert (code, out, err.splitlines()) == (2, "", [f"error: {message}"]), args


def test_timeline_text_output_lists_the_segments(videos, tmp_path, capsys):
    directory = actionclip.save(actionclip.create_model("test-tiny", seed=0), tmp_path / "ckpt")
    path, _ = videos["constant"]
    assert main(["predict", str(path), "--labels", "a,b", "--checkpoint", str(directory), "--window", "6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(path) and 1 <= len(lines) - 1 <= 3
    assert all(line.split()[1] == "-" and line.split()[3] == "s" and line.split()[-1] in ("a", "b") for line in lines[1:])


def test_an_avi_file_is_timed_by_its_frame_rate(colour_model, tmp_path):
    """AVI timestamps cannot identify frames: its frames are counted and timed by the stated rate (10 frames/s)."""
    rng = np.random.default_rng(0)
    frames = np.concatenate([draw_clip(shape, colour, motion, 32, 60, rng) for shape, colour, motion in ACTIONS])
    path = data.write_video(tmp_path / "three.avi", frames, fps=10)
    assert data.VideoFile(path).frame_times is None
    (result,) = actionclip.predict(path, LABELS, colour_model, window=2, stride=1, workers=0)
    assert [(w["start"], w["end"]) for w in result["windows"][:2]] == [(0.0, 2.0), (1.0, 3.0)]
    assert [s["label"] for s in result["segments"]] == ["red", "blue", "green"]
    assert all(abs(s["end"] - b) <= 1.0 for s, b in zip(result["segments"], (6, 12)))
    assert result["segments"][-1]["end"] == pytest.approx(18.0)


def test_every_command_that_scores_labels_runs_with_the_text_cache_on(tmp_path, capsys, monkeypatch):
    """The cache is on by default; `predict --embeddings` crashed with it (a model loaded under inference_mode has
    tensors without a version counter) and only --no-text-cache was tested. The first `predict` runs the text
    encoder and writes the one cache file; the same `predict` again, `--window` and `--embeddings` read it. (`search`,
    `eval` and `serve` keep no text features on disk.)"""
    directory = actionclip.save(actionclip.create_model("test-tiny", seed=0), tmp_path / "ckpt")
    videos = [str(v) for v in make_videos(tmp_path / "videos", 2)]
    embedded = tmp_path / "emb"
    actionclip.embed(videos, embedded, checkpoint=directory, precision="fp32", dtype="fp32", device="cpu", workers=0)
    encoded = []
    real = actionclip.ActionCLIP.class_text_features
    monkeypatch.setattr(actionclip.ActionCLIP, "class_text_features", lambda *a, **k: encoded.append(1) or real(*a, **k))
    common = ["--labels", "arm wrestling,swimming", "--json", "--text-cache", str(tmp_path / "text"), "--workers", "0", "--device", "cpu"]
    from_videos = [*videos, "--checkpoint", str(directory), "--precision", "fp32"]
    outputs = []
    for args in (from_videos, from_videos, [*from_videos, "--window", "0.5"], ["--embeddings", str(embedded)]):
        assert main(["predict", *args, *common]) == 0, args
        out, err = capsys.readouterr()
        assert err == "" and len(out.splitlines()) == 2, args
        outputs.append([json.loads(line) for line in out.splitlines()])
    assert outputs[1] == outputs[0] and [r["labels"] for r in outputs[3]] == [r["labels"] for r in outputs[0]]
    assert len(encoded) == 1 and len(list((tmp_path / "text").glob("*.safetensors"))) == 1


def test_a_stride_that_gives_too_many_windows_is_one_line_per_video_in_predict_and_embed(videos, tmp_path, capsys):
    """--window 1 --stride 0.0000001 planned windows without end (memory grew by 55 MB/s, with no output)."""
    path, _ = videos["constant"]
    directory = actionclip.save(actionclip.create_model("test-tiny", seed=0), tmp_path / "ckpt")
    message = "--window 1.0 with --stride 1e-07 gives 170000001 windows over its 18.0 s, more than 100000 per video: give a longer --stride"
    code = main(["predict", str(path), "--labels", "a,b", "--checkpoint", str(directory), "--window", "1", "--stride", "0.0000001"])
    assert code == 1 and capsys.readouterr().err.splitlines() == [f"{path}: error: {message}", "1 of 1 videos could not be read"]
    summary = actionclip.embed([path], tmp_path / "emb", checkpoint=directory, window=1, stride=1e-7, device="cpu", workers=0)
    assert summary["failed"] == 1
    (record,) = [json.loads(line) for line in (tmp_path / "emb" / "manifest.jsonl").read_text().splitlines()]
    assert record["error"] == message


def test_a_stride_without_a_window_is_refused(tmp_path, capsys):
    code = main(["predict", "clip.mp4", "--labels", "a,b", "--checkpoint", str(tmp_path), "--stride", "2"])
    assert (code, capsys.readouterr().err.splitlines()) == (2, ["error: --stride needs --window SECONDS"])
