"""Exported models at run time: the BPE tokenizer and frame reading without torch, `predict` with an export directory
or `--runtime onnx`, and classification in a process where torch cannot be imported."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort
import open_clip
import pytest
from PIL import Image

import actionclip
from actionclip import data
from actionclip.benchmark.onnx_throughput import matmul_peak_model
from actionclip.cli.main import main
from actionclip.export import graphs
from actionclip.export.directory import export_model, write_export
from actionclip.inference import onnx_backend as onnx_predict
from actionclip.onnx_runtime.bpe import BPETokenizer
from actionclip.onnx_runtime.runtime import ExportedModel, centre_crop_frames, classify_videos, read_clip
from conftest import EXPORT_LABELS, assert_one_line_error
from test_predict import ARM_WRESTLING, EYE_MAKEUP, LABELS, json_lines, needs_peer_videos, run_cli

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_export):
    """A tiny model's checkpoint and its export (int8 graphs too, label features of LABELS)."""
    assert LABELS == EXPORT_LABELS
    model, directory = tiny_export()
    return actionclip.save(model, tmp_path_factory.mktemp("ckpt")), directory


def test_bpe_tokenizer_equals_open_clips():
    texts = [
        "a video of a person arm wrestling.",
        "Playing GUITAR!!",
        "café naïve — “quotes” &amp; 123 4.5",
        "日本語のテキスト",
        "  lots   of\tspace ",
        "it's they'll we've I'd",
        "x" * 300,
        "",
        "emoji 🎸🏊",
        "applying_eye_makeup",
        "Can you recognize the action of {}?",
        "don't" * 40,
    ]
    ours = BPETokenizer(open_clip.tokenizer.default_bpe())(texts)
    assert ours.dtype == np.int64
    assert np.array_equal(ours, open_clip.SimpleTokenizer()(texts).numpy())


@needs_peer_videos
@pytest.mark.parametrize("size", [32, 224])
def test_frames_read_without_torch_are_those_of_predict(size):
    for path in (ARM_WRESTLING, EYE_MAKEUP):
        clip = read_clip(path, 8)
        frames, _ = data.VideoDataset([data.Sample(str(path), 0)], ["x"], 8, "test", data.TestTransform(size))[0]
        expected = data.normalize(frames).numpy()
        got = centre_crop_frames(clip, size, data.CLIP_MEAN, data.CLIP_STD)
        # PIL rounds to uint8 after each axis, torchvision's tensor resize once: a few values land a level or two away.
        levels = np.abs(got - expected) * np.asarray(data.CLIP_STD).reshape(1, 3, 1, 1) * 255
        assert levels.max() <= 2.01 and (levels > 0.01).mean() < 0.005


@needs_peer_videos
def test_read_clip_scales_down_while_decoding_as_predict_does():
    video = data.open_video(ARM_WRESTLING, short_side=64)
    expected = video.read(data.sample_indices(video.num_frames, 4, "test"))
    assert expected.shape[1:] == (64, 85, 3)
    assert np.array_equal(read_clip(ARM_WRESTLING, 4, decode_short_side=64), expected)


def test_read_clip_reads_frame_folders(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (10, 12, 16, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / data.FRAME_TEMPLATE.format(i + data.FRAME_OFFSET), quality=100)
    expected = data.read_frames(tmp_path, data.sample_indices(10, 4, "test"))
    assert np.array_equal(read_clip(tmp_path, 4), expected)


READ_A_CLIP = """
import sys
from actionclip.onnx_runtime.runtime import centre_crop_frames, read_clip
centre_crop_frames(read_clip(sys.argv[1], 8), 224, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
assert "torch" not in sys.modules
# VmHWM: this process's own peak resident memory (ru_maxrss keeps the parent's from before exec).
print(int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024)
"""


def write_long_video(path: Path, frames: int, width: int = 320, height: int = 240) -> Path:
    """A scrolling grey ramp, written by x264 as YUV frames, so that writing converts nothing to or from RGB."""
    ramp = np.tile((np.arange(width) * 255 // width).astype(np.uint8), (height, 1))
    chroma = np.full((height // 2, width), 128, np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = np.concatenate([np.roll(ramp, i, axis=1), chroma])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="yuv420p")))
        container.mux(stream.encode())
    return path


def test_reading_a_clip_takes_memory_independent_of_the_videos_length(tmp_path):
    """Only the sampled frames are converted to RGB: 4000 frames of 320x240 would be 879 MiB of RGB, a quarter of
    them 220 MiB; the reading process's peak stays below either and the same for both."""
    peaks = []
    for frames in (1000, 4000):
        video = write_long_video(tmp_path / f"{frames}.mp4", frames)
        run = subprocess.run(
            [sys.executable, "-c", READ_A_CLIP, str(video)],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        )
        assert run.returncode == 0, run.stderr
        peaks.append(int(run.stdout))
    assert max(peaks) < 150 and abs(peaks[1] - peaks[0]) < 20, f"peak resident MiB at 1000 and 4000 frames: {peaks}"


@needs_peer_videos
def test_predict_with_an_export_directory_gives_the_same_json(exported, capsys):
    checkpoint, directory = exported
    arguments = [ARM_WRESTLING, EYE_MAKEUP, "--labels", ",".join(LABELS), "--json", "--workers", "0"]
    code, out, err = run_cli(capsys, *arguments, "--checkpoint", checkpoint)
    assert code == 0 and err == ""
    expected = json_lines(out)
    code, out, err = run_cli(capsys, *arguments, "--checkpoint", directory)  # run_cli asks for fp32
    assert code == 0 and err == ""
    for result, reference in zip(json_lines(out), expected, strict=True):
        assert result.keys() == reference.keys() and result["labels"] == reference["labels"]
        assert result["scores"] == pytest.approx(reference["scores"], abs=1e-4)


@needs_peer_videos
def test_an_imported_models_test_settings_travel_with_its_export(tmp_path):
    """An imported model's normalisation and test scale (ViFi-CLIP's: ImageNet's mean/std, its own logit scale) are
    those of its export, with the torch runtime and without it."""
    model = actionclip.create_model("test-tiny", seed=0).eval()
    model.config.normalization, model.config.test_logit_scale = "imagenet", 7.5
    directory = export_model(model, tmp_path / "export", "fp32")
    expected = actionclip.predict([ARM_WRESTLING], LABELS, model, workers=0, top_k=len(LABELS))[0]
    for result in (
        actionclip.predict([ARM_WRESTLING], LABELS, checkpoint=directory, workers=0, top_k=len(LABELS))[0],
        classify_videos(directory, [ARM_WRESTLING], LABELS)[0],
    ):
        assert result["labels"] == expected["labels"]
        assert result["scores"] == pytest.approx(expected["scores"], abs=1e-4)


@needs_peer_videos
def test_runtime_onnx_exports_into_the_cache_once(exported, capsys, tmp_path, monkeypatch):
    checkpoint, _ = exported
    monkeypatch.setenv("ACTIONCLIP_CACHE", str(tmp_path))
    exports = []
    monkeypatch.setattr(onnx_predict, "write_export", lambda *a, **k: exports.append(a) or write_export(*a, **k))
    arguments = [ARM_WRESTLING, "--labels", ",".join(LABELS), "--json", "--workers", "0", "--checkpoint", checkpoint]
    code, out, _ = run_cli(capsys, *arguments)
    torch_result = json_lines(out)[0]
    results = []
    for _ in range(2):
        code, out, _ = run_cli(capsys, *arguments, "--runtime", "onnx", "--precision", "int8")  # the last --precision counts
        assert code == 0
        results.append(json_lines(out)[0])
    assert len(exports) == 1 and len(list((tmp_path / "onnx").iterdir())) == 1
    assert results[0] == results[1]
    assert results[0]["scores"] != pytest.approx(torch_result["scores"], abs=1e-7)  # int8, not the torch model
    assert sorted(results[0]["scores"]) == pytest.approx(sorted(torch_result["scores"]), abs=0.02)


def test_auto_precision_is_int8_on_cpus_without_native_bf16(monkeypatch):
    monkeypatch.setattr(onnx_predict, "cpu_has_native_bf16", lambda: False)
    assert onnx_predict.resolve_onnx_precision("auto", "cpu") == "int8"
    monkeypatch.setattr(onnx_predict, "cpu_has_native_bf16", lambda: True)
    assert onnx_predict.resolve_onnx_precision("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="fp32, int8 or auto"):
        onnx_predict.resolve_onnx_precision("bf16", "cpu")


BLOCK_TORCH = """
import sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "open_clip"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, BlockTorch())
"""

CLASSIFY = """
import json, sys
try:
    import torch
    sys.exit("torch could be imported")
except ImportError:
    pass
from actionclip.onnx_runtime.runtime import classify_videos
directory, videos, stored, other = json.loads(sys.argv[1])
results = classify_videos(directory, videos, stored) + classify_videos(directory, videos, other, precision="int8")
assert not any(name.split(".")[0] in ("torch", "open_clip") for name in sys.modules)
print(json.dumps(results))
"""


@needs_peer_videos
def test_an_export_classifies_the_shared_clips_without_torch(exported, tmp_path):
    checkpoint, directory = exported
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(BLOCK_TORCH))
    videos = [str(ARM_WRESTLING), str(EYE_MAKEUP), str(tmp_path / "missing.mp4")]
    other = ["swimming", "applying eye makeup", "playing guitar", "juggling"]
    run = subprocess.run(
        [sys.executable, "-c", CLASSIFY, json.dumps([str(directory), videos, LABELS, other])],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{tmp_path}:{SRC}", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert [r["video"] for r in results] == videos * 2
    assert "error" in results[2] and "error" in results[5]
    expected = actionclip.predict(videos[:2], LABELS, checkpoint=checkpoint, workers=0, device="cpu", precision="fp32")
    for result, reference in zip(results[:2], expected):
        assert result["labels"] == reference["labels"]
        # Frames within 2 levels of predict's on 0.2% of the values move the 32-pixel model's scores by ~2e-3.
        assert result["scores"] == pytest.approx(reference["scores"], abs=5e-3)
    int8 = actionclip.predict(videos[:2], other, checkpoint=directory, workers=0, device="cpu", precision="int8")
    for result, reference in zip(results[3:5], int8):
        assert result["scores"] == pytest.approx(reference["scores"], abs=5e-3)


@needs_peer_videos
def test_an_exports_text_features_are_cached_between_predict_calls(exported, tmp_path, monkeypatch):
    """As for torch models: the second call with the same labels reads them back instead of running text.onnx, and
    the torch model's entry for the same weights is not taken for the export's."""
    checkpoint, directory = exported
    other = ["swimming", "applying eye makeup", "juggling"]  # not the labels stored in the export
    calls = []
    encode_text = ExportedModel.encode_text
    monkeypatch.setattr(ExportedModel, "encode_text", lambda self, *a, **k: calls.append(1) or encode_text(self, *a, **k))
    arguments = dict(checkpoint=directory, workers=0, device="cpu", precision="fp32", text_cache=tmp_path)
    first = actionclip.predict([str(ARM_WRESTLING)], other, **arguments)
    assert len(calls) == 1 and len(list(tmp_path.glob("*.safetensors"))) == 1
    second = actionclip.predict([str(ARM_WRESTLING)], other, **arguments)
    assert len(calls) == 1 and second == first
    actionclip.predict([str(ARM_WRESTLING)], other, checkpoint=checkpoint, workers=0, device="cpu", precision="fp32", text_cache=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


# `actionclip predict ARGUMENTS` for each list of arguments in argv[1] (JSON): prints [exit code, stdout, stderr] of each.
PREDICT_TWICE = """
import contextlib, io, json, sys
from actionclip.cli.main import main
runs = []
for arguments in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["predict", *arguments])
    runs.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(runs))
"""


@needs_peer_videos
def test_without_the_onnx_extra_torch_models_still_predict_and_an_export_is_one_line(exported, tmp_path):
    """ONNX Runtime and onnx are an optional extra: without them, predict runs torch checkpoints, and an export
    directory gets one line saying what to install."""
    checkpoint, directory = exported
    # Packages of those names that fail as missing ones do (torch probes for them with find_spec, so no meta-path block).
    for package in ("onnxruntime", "onnx"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{package}'\")\n")
    environment = {"PYTHONPATH": f"{tmp_path}:{SRC}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    arguments = [str(ARM_WRESTLING), "--labels", ",".join(LABELS), "--json", "--workers", "0", "--checkpoint"]
    # One interpreter for both commands: importing torch takes most of the time.
    run = subprocess.run(
        [sys.executable, "-c", PREDICT_TWICE, json.dumps([arguments + [str(checkpoint)], arguments + [str(directory)]])],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert run.returncode == 0, run.stderr
    (torch_code, torch_out, torch_err), (onnx_code, onnx_out, onnx_err) = json.loads(run.stdout)
    assert torch_code == 0, torch_err
    assert json.loads(torch_out)["video"] == str(ARM_WRESTLING)
    assert (onnx_code, onnx_out) == (2, "")
    assert onnx_err == "error: running an ONNX export needs ONNX Runtime: pip install 'actionclip[onnx]'\n"


def test_benchmark_runtime_onnx_reports_against_onnx_runtimes_own_int8_peak(capsys, tmp_path):
    code = actionclip.cli.main.main(
        [
            "benchmark",
            "--model",
            "test-tiny",
            "--runtime",
            "onnx",
            "--precision",
            "int8",
            "--iterations",
            "1",
            "--batch-size",
            "2",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["runtime"] == "onnx" and result["precision"] == "int8"
    assert result["videos_per_s"] > 0 and result["peak_gflops"] > 0
    assert result["achieved_gflops"] == pytest.approx(2 * result["gflops_per_video"] * result["videos_per_s"])
    peak = matmul_peak_model("int8", size=64)
    assert {"QuantizeLinear", "MatMulIntegerToFloat"} <= {n.op_type for n in peak.graph.node}
    session = ort.InferenceSession(peak.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones((64, 64), np.float32)})[0].shape == (64, 64)


def test_the_lazy_public_api_keeps_every_name():
    names = [
        "ACTIONCLIP_TEMPLATES",
        "ActionCLIP",
        "ActionCLIPConfig",
        "CheckpointError",
        "UnimodalClassifier",
        "VISUAL_PROMPTS",
        "XCLIP",
        "build_model",
        "clean_class_name",
        "create_model",
        "embed",
        "from_hf_xclip",
        "from_mmaction2_checkpoint",
        "from_official_checkpoint",
        "from_videox_checkpoint",
        "from_vificlip_checkpoint",
        "load",
        "losses",
        "predict",
        "read_videox_checkpoint",
        "register_model_config",
        "save",
        "search",
    ]
    assert sorted(actionclip.__all__) == names
    assert actionclip.create_model is actionclip.checkpoints.sources.create_model
    assert actionclip.losses.__name__ == "actionclip.losses" and callable(actionclip.predict)
    assert all(getattr(actionclip, name) is not None for name in names) and set(names) <= set(dir(actionclip))
    with pytest.raises(AttributeError):
        actionclip.not_a_name


def _edit_config(**changes):
    """An edit of export.json: ``key=value``, ``a__b=value`` for a nested key, "-" to remove one."""

    def edit(directory):
        config = json.loads((directory / "export.json").read_text())
        for key, value in changes.items():
            *parents, last = key.split("__")
            section = config
            for parent in parents:
                section = section[parent]
            if value == "-":
                del section[last]
            else:
                section[last] = value
        (directory / "export.json").write_text(json.dumps(config))

    return edit


HOSTILE_EXPORTS = {
    "a graph outside the folder": (_edit_config(files__video="../other/video.onnx"), "files.video: must be a plain file name"),
    "a tokenizer outside the folder": (_edit_config(tokenizer="/etc/passwd"), "tokenizer: must be a plain file name"),
    "label features outside": (_edit_config(label_features__file="../other/label_features.npy"), "label_features.file: must be a plain"),
    "a 417 GB image": (_edit_config(image_size=100000), "image_size: must be an integer from 1 to 1024, got 100000"),
    "1e9 frames": (_edit_config(num_frames=1e9), "num_frames: must be an integer from 1 to 1024, got 1000000000.0"),
    "a context of 1e9": (_edit_config(context_length=1e9), "context_length: must be an integer from 2 to 1024"),
    "no files": (_edit_config(files="-"), "export.json: files: missing"),
    "an unknown normalization": (_edit_config(normalization="sepia"), "normalization: must be one of clip, imagenet, got 'sepia'"),
    "a string logit_scale": (_edit_config(test__logit_scale="100"), 'test.logit_scale: must be a finite number > 0, got "100"'),
    "an empty graph": (lambda d: (d / "video.onnx").write_bytes(b""), "video.onnx: not an ONNX graph that ONNX Runtime loads"),
    "a garbage graph": (lambda d: (d / "video.onnx").write_bytes(b"\x08garbage" * 99), "video.onnx: not an ONNX graph that ONNX"),
    "a missing graph": (lambda d: (d / "video.onnx").unlink(), "video.onnx: missing (export.json names it)"),
    "a graph of another export": (_edit_config(weights_digest="0" * 32), "video.onnx: exported from other weights than"),
    "label features of another shape": (
        lambda d: np.save(d / "label_features.npy", np.zeros((1, 2, 3), np.float32)),
        "label_features.npy: holds float32 (1, 2, 3), not float32 [16x4x64]",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_EXPORTS)
def test_an_export_directory_edited_by_hand_is_one_line_and_never_read_outside_itself(case, exported, tmp_path, capsys):
    edit, message = HOSTILE_EXPORTS[case]
    shutil.copytree(exported[1], tmp_path / "other")
    directory = shutil.copytree(exported[1], tmp_path / "export")
    edit(directory)
    video = data.write_video(tmp_path / "v.mp4", np.zeros((8, 32, 32, 3), np.uint8), lossless=True)
    # Without the text cache, which an earlier test may have filled with these labels' features: the stored ones are read.
    arguments = ["--labels", ",".join(LABELS), "--precision", "fp32", "--no-text-cache"]
    code = main(["predict", str(video), "--checkpoint", str(directory), *arguments])
    out, err = capsys.readouterr()
    assert_one_line_error(code, out, err, message)


def test_export_never_overwrites_a_users_files(exported, tmp_path, capsys):
    checkpoint, export = exported
    users = tmp_path / "mine"
    users.mkdir()
    (users / "video.onnx").write_text("the user's")
    code = main(["export", "--checkpoint", str(checkpoint), "--output", str(users)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"error: {users}: not empty and not an export directory (no export.json); export into a new or empty folder"
    ]
    # An export directory with a file of the user's in it is not replaced either.
    directory = shutil.copytree(export, tmp_path / "export")
    (directory / "notes.txt").write_text("the user's")
    assert main(["export", "--checkpoint", str(checkpoint), "--output", str(directory)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {directory}: holds notes.txt, which no export wrote; export into a new or empty folder"
    ]
    assert (users / "video.onnx").read_text() == (directory / "notes.txt").read_text() == "the user's"


def test_an_interrupted_re_export_leaves_the_old_export_whole(exported, tmp_path, monkeypatch):
    """The graphs were written in place: a re-export killed after its video graph left the new video.onnx beside the
    old export.json, text graph and label features, and that mix predicted with exit code 0."""
    directory = shutil.copytree(exported[1], tmp_path / "export")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(graphs, "export_text_graph", killed)
    with pytest.raises(KeyboardInterrupt):
        export_model(actionclip.create_model("test-tiny", seed=1).eval(), directory, "int8", labels=LABELS)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left
    ExportedModel(directory, "fp32").class_text_features(LABELS)
