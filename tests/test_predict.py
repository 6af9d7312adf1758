import errno
import json
import os
import warnings
from pathlib import Path

import av
import numpy as np
import open_clip
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import XCLIPConfig, XCLIPModel

import actionclip
from actionclip import data
from actionclip.cli.main import main
from actionclip.host import files
from actionclip.inference import text_cache
from actionclip.inference.classify import format_result, iter_predictions
from actionclip.inference.inputs import collect_videos
from actionclip.inference.text_cache import TextCacheWarning, cached_class_text_features

PEER_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "peer_videos"
ARM_WRESTLING = PEER_VIDEOS / "mmaction2_demo_arm_wrestling.mp4"
EYE_MAKEUP = PEER_VIDEOS / "mmaction2_test_eye_makeup.avi"
LABELS = ["arm wrestling", "playing guitar", "swimming", "applying eye makeup"]

needs_peer_videos = pytest.mark.skipif(not ARM_WRESTLING.is_file(), reason=f"no peer videos in {PEER_VIDEOS}")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = actionclip.create_model("test-tiny", seed=0).eval()
    return model, actionclip.save(model, tmp_path_factory.mktemp("ckpt"))


def synthetic_video(path: Path, seed: int, frames: int = 12) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    return data.write_video(path, rng.integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8), lossless=path.suffix == ".mp4")


def expected_probabilities(model, path, labels, views="1x1", templates=None, short_side=None):
    """What ``model.classify`` gives on the test frames, built here step by step from the data functions."""
    video = data.open_video(path, short_side=short_side)
    size = model.config.clip["vision_cfg"]["image_size"]
    frames = model.config.num_frames
    if views == "1x1":
        clips = [data.TestTransform(size)(video.read(data.sample_indices(video.num_frames, frames, "test")))]
    else:
        clips = [
            view for clip in data.sample_clips(video.num_frames, frames, 10) for view in data.ThreeCropTransform(size)(video.read(clip))
        ]
    return model.classify(data.normalize(torch.stack(clips)), labels, templates).mean(dim=0)


def run_cli(capsys, *args):
    # fp32, so that scores can be compared with model.classify to 1e-5 (bf16 is tested in test_precision.py).
    code = main(["predict", "--precision", "fp32", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def assert_ranked(result, probabilities, labels, top_k):
    order = probabilities.argsort(descending=True)[:top_k].tolist()
    assert result["labels"] == [labels[i] for i in order]
    assert result["scores"] == pytest.approx(probabilities[order].tolist(), abs=1e-5)


@needs_peer_videos
def test_ranked_output_equals_classify_on_the_same_frames(checkpoint, capsys):
    model, directory = checkpoint
    code, out, err = run_cli(
        capsys, ARM_WRESTLING, EYE_MAKEUP, "--labels", ",".join(LABELS), "--checkpoint", directory, "--json", "--workers", "0"
    )
    assert code == 0 and err == ""
    results = json_lines(out)
    assert [r["video"] for r in results] == [str(ARM_WRESTLING), str(EYE_MAKEUP)]
    for result in results:
        assert set(result) == {"video", "labels", "scores"}
        assert_ranked(result, expected_probabilities(model, result["video"], LABELS), LABELS, top_k=4)
        assert result["scores"] == sorted(result["scores"], reverse=True)
        assert sum(result["scores"]) == pytest.approx(1.0, abs=1e-5)
    # Two random-weight videos differ: the order or the values would show a mix-up of the two.
    assert results[0]["scores"] != pytest.approx(results[1]["scores"], abs=1e-4)


@needs_peer_videos
def test_table_and_top_k(checkpoint, capsys):
    model, directory = checkpoint
    code, out, _ = run_cli(capsys, ARM_WRESTLING, "--labels", ",".join(LABELS), "--checkpoint", directory, "--top-k", "2")
    probabilities = expected_probabilities(model, ARM_WRESTLING, LABELS)
    order = probabilities.argsort(descending=True).tolist()
    lines = out.strip().splitlines()
    assert code == 0 and lines[0] == str(ARM_WRESTLING) and len(lines) == 3
    for rank, (line, index) in enumerate(zip(lines[1:], order), 1):
        assert line.split(maxsplit=2) == [str(rank), f"{100 * probabilities[index]:.2f}%", LABELS[index]]


@needs_peer_videos
def test_ten_clips_by_three_crops_average_thirty_views(checkpoint):
    model, directory = checkpoint
    result = actionclip.predict(ARM_WRESTLING, LABELS, checkpoint=directory, views="10x3", workers=0, device="cpu", precision="fp32")[0]
    multiview = expected_probabilities(model, ARM_WRESTLING, LABELS, views="10x3")
    assert_ranked(result, multiview, LABELS, top_k=4)
    # The 30 views move the scores well beyond the tolerance: 1x1 would not pass the check above.
    assert (multiview - expected_probabilities(model, ARM_WRESTLING, LABELS)).abs().max() > 1e-3


@needs_peer_videos
def test_text_encoder_runs_once_for_many_videos(checkpoint):
    model, _ = checkpoint
    calls = []
    handle = model.text.register_forward_hook(lambda *_: calls.append(1))
    try:
        results = actionclip.predict([ARM_WRESTLING, EYE_MAKEUP] * 3, LABELS, model, batch_size=2, workers=2)
    finally:
        handle.remove()
    assert len(calls) == 1  # 16 templates x 4 labels, one chunk
    assert len(results) == 6 and all("scores" in r for r in results)
    assert [r["video"] for r in results] == [str(ARM_WRESTLING), str(EYE_MAKEUP)] * 3  # input order with 2 workers
    assert results[0] == results[2] == results[4] and results[1] == results[3]


def test_folder_is_searched_recursively_for_videos(checkpoint, tmp_path, capsys):
    model, directory = checkpoint
    videos = [synthetic_video(tmp_path / "b" / "deep" / "two.avi", 2), synthetic_video(tmp_path / "a_one.mp4", 1)]
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "b" / "frames.jpg").write_bytes(b"not a video either")
    assert collect_videos(tmp_path) == [str(tmp_path / "a_one.mp4"), str(tmp_path / "b" / "deep" / "two.avi")]
    code, out, _ = run_cli(capsys, tmp_path, "--labels", ",".join(LABELS), "--checkpoint", directory, "--json", "--top-k", "3")
    results = json_lines(out)
    assert code == 0 and [r["video"] for r in results] == sorted(str(v) for v in videos)
    for result in results:
        assert_ranked(result, expected_probabilities(model, result["video"], LABELS), LABELS, top_k=3)


@needs_peer_videos
def test_missing_and_corrupt_files_are_reported_and_the_others_classified(checkpoint, tmp_path, capsys):
    _, directory = checkpoint
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(ARM_WRESTLING.read_bytes()[:20000])  # the moov atom is at the end: no index
    missing = tmp_path / "missing.mp4"
    inputs = [ARM_WRESTLING, missing, corrupt, truncated, EYE_MAKEUP]
    code, out, err = run_cli(capsys, *inputs, "--labels", ",".join(LABELS), "--checkpoint", directory, "--json")
    results = json_lines(out)
    assert code == 1
    assert [r["video"] for r in results] == [str(p) for p in inputs]
    assert "scores" in results[0] and "scores" in results[4]
    assert results[1] == {"video": str(missing), "error": "file not found"}
    for bad in results[2:4]:
        assert set(bad) == {"video", "error"} and "cannot open as a video" in bad["error"]
    assert err.strip() == "3 of 5 videos could not be read"

    code, out, err = run_cli(capsys, ARM_WRESTLING, missing, "--labels", ",".join(LABELS), "--checkpoint", directory)
    assert code == 1 and out.startswith(str(ARM_WRESTLING))
    assert f"{missing}: error: file not found" in err.splitlines()
    assert "Traceback" not in err


def test_folder_without_videos_is_an_error(checkpoint, tmp_path):
    model, _ = checkpoint
    (tmp_path / "empty").mkdir()
    result = actionclip.predict(tmp_path / "empty", LABELS, model, workers=0)
    assert [set(r) for r in result] == [{"video", "error"}] and result[0]["video"] == str(tmp_path / "empty")
    assert result[0]["error"].startswith("no video files in this folder, and not a frame folder: no frames named like")


def tiny_hf_xclip_dir(directory: Path) -> Path:
    torch.manual_seed(0)
    config = XCLIPConfig(
        text_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2,
            "patch_size": 16, "image_size": 32, "num_frames": 8, "mit_hidden_size": 64, "mit_intermediate_size": 256,
            "mit_num_hidden_layers": 1, "mit_num_attention_heads": 2,
        },
        projection_dim=64, prompt_layers=1, prompt_num_attention_heads=2, prompt_alpha=1.0,
    )  # fmt: skip
    XCLIPModel(config).save_pretrained(directory)
    return directory


@pytest.mark.parametrize("layout", ["transformers", "actionclip"])
def test_xclip_checkpoints(layout, tmp_path, capsys):
    video = synthetic_video(tmp_path / "clip.mp4", 3, frames=20)
    if layout == "transformers":
        directory = tiny_hf_xclip_dir(tmp_path / "hf")
        model = actionclip.from_hf_xclip(directory)
    else:
        model = actionclip.create_model("test-tiny", arch="xclip", seed=0).eval()
        directory = actionclip.save(model, tmp_path / "ours")
    code, out, _ = run_cli(capsys, video, "--labels", ",".join(LABELS), "--checkpoint", directory, "--arch", "xclip", "--json")
    (result,) = json_lines(out)
    # X-CLIP's default is the label alone, ActionCLIP's the 16 templates: the expected value follows the model.
    assert code == 0
    assert_ranked(result, expected_probabilities(model, video, LABELS, templates="label_only"), LABELS, top_k=4)


def test_templates_option(checkpoint, tmp_path, capsys):
    model, directory = checkpoint
    video = synthetic_video(tmp_path / "clip.mp4", 4)
    templates = tmp_path / "templates.txt"
    templates.write_text("a video of a person {}\n{}, in a video\n")
    _, out, _ = run_cli(capsys, video, "--labels", ",".join(LABELS), "--checkpoint", directory, "--json", "--templates", templates)
    expected = expected_probabilities(model, video, LABELS, templates=["a video of a person {}", "{}, in a video"])
    assert_ranked(json_lines(out)[0], expected, LABELS, top_k=4)
    assert (expected - expected_probabilities(model, video, LABELS)).abs().max() > 1e-3


def test_labels_file(checkpoint, tmp_path, capsys):
    model, directory = checkpoint
    video = synthetic_video(tmp_path / "clip.mp4", 5)
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# my classes\narm wrestling\n\nplaying guitar, badly\n")
    _, out, _ = run_cli(capsys, video, "--labels-file", labels_file, "--checkpoint", directory, "--json")
    labels = ["arm wrestling", "playing guitar, badly"]
    assert_ranked(json_lines(out)[0], expected_probabilities(model, video, labels), labels, top_k=2)


def test_bad_arguments_are_clear_errors(checkpoint, tmp_path, capsys):
    _, directory = checkpoint
    video = synthetic_video(tmp_path / "clip.mp4", 6)
    unimodal = actionclip.save(actionclip.create_model("test-tiny", arch="unimodal", num_classes=3), tmp_path / "unimodal")
    cases = [
        (["--labels", "a,b,a", "--checkpoint", directory], "error: labels given more than once: ['a']"),
        (["--labels", "a,b", "--checkpoint", tmp_path / "nowhere"], "no actionclip checkpoint here"),
        (["--labels", "a,b", "--checkpoint", directory, "--arch", "xclip"], "holds an 'actionclip' model, not 'xclip'"),
        (["--labels", "a,b", "--checkpoint", unimodal], "has a fixed set of classes"),
        (["--labels", "a,b", "--checkpoint", directory, "--views", "10x2"], "crops 1 or 3"),
    ]
    for args, message in cases:
        code, out, err = run_cli(capsys, video, *args)
        assert code == 2 and out == "" and message in err and "Traceback" not in err, (args, err)


def test_offline_download_fails_with_a_clear_message(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai'")

    monkeypatch.setattr(open_clip, "create_model", offline)
    video = synthetic_video(tmp_path / "clip.mp4", 7)
    code, out, err = run_cli(capsys, video, "--labels", "a,b", "--model", "ViT-B-16", "--pretrained", "openai")
    assert code == 2 and out == ""
    assert err.startswith("error: could not fetch open_clip weights ViT-B-16/openai (offline?)")


def test_python_api_with_a_model_name_and_a_generator(tmp_path):
    video = synthetic_video(tmp_path / "clip.mp4", 8)
    torch.manual_seed(0)
    (result,) = actionclip.predict(str(video), "arm wrestling, swimming", "test-tiny", workers=0, device="cpu", precision="fp32")
    assert set(result["labels"]) == {"arm wrestling", "swimming"} and result["scores"] == sorted(result["scores"], reverse=True)
    torch.manual_seed(0)
    model = actionclip.create_model("test-tiny")
    # The same function: predict's model is prepared for inference (QuickGELU folded), this one is not.
    (again,) = iter_predictions(model, video, ["arm wrestling", "swimming"], workers=0)
    assert again["labels"] == result["labels"] and again["scores"] == pytest.approx(result["scores"], abs=1e-5)
    assert format_result({"video": "x.mp4", "error": "file not found"}) == "x.mp4: error: file not found"


def official_checkpoint(model, path: Path) -> Path:
    """``model`` in the layout of the official ActionCLIP ``.pt`` files (DataParallel prefixes included)."""
    clip, fusion = {}, {}
    for key, value in model.state_dict().items():
        if key.startswith("video.temporal."):
            fusion["module." + key[len("video.temporal.") :]] = value
        else:
            clip["module." + key.removeprefix("video.").removeprefix("text.")] = value
    torch.save({"epoch": 1, "model_state_dict": clip, "fusion_model_state_dict": fusion}, path)
    return path


@pytest.mark.parametrize("layout", ["run directory", "official .pt"])
def test_other_checkpoint_layouts(layout, checkpoint, tmp_path, capsys):
    model, directory = checkpoint
    video = synthetic_video(tmp_path / "clip.mp4", 9)
    if layout == "run directory":
        source = tmp_path / "run"
        actionclip.save(model, source / "best")
    else:
        source = official_checkpoint(model, tmp_path / "official.pt")
    code, out, _ = run_cli(capsys, video, "--labels", ",".join(LABELS), "--checkpoint", source, "--visual-prompt", "Transf", "--json")
    assert code == 0
    assert_ranked(json_lines(out)[0], expected_probabilities(model, video, LABELS), LABELS, top_k=4)


def test_decode_short_side_scales_frames_while_decoding(checkpoint, capsys, tmp_path):
    model, directory = checkpoint
    video = synthetic_video(tmp_path / "clip.mp4", 5)  # 48 x 64
    code, out, _ = run_cli(
        capsys, video, "--labels", ",".join(LABELS), "--checkpoint", directory, "--json", "--workers", "0", "--decode-short-side", "40"
    )
    assert code == 0
    result = json_lines(out)[0]
    scaled = expected_probabilities(model, video, LABELS, short_side=40)
    assert_ranked(result, scaled, LABELS, top_k=len(LABELS))
    assert not torch.allclose(scaled, expected_probabilities(model, video, LABELS), atol=1e-5)


def truncated_mp4(path: Path, seconds: int = 4, fps: int = 25, keep: float = 0.3) -> Path:
    """An mp4 with its index first (``faststart``, as streamed web videos are) cut short: its header still states
    ``seconds`` seconds, of which only about ``keep`` are there."""
    frames = np.random.default_rng(0).integers(0, 256, (seconds * fps, 48, 64, 3), dtype=np.uint8)
    whole = path.with_suffix(".whole.mp4")
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    whole.unlink()
    return path


def test_a_truncated_video_is_scored_with_one_warning_saying_how_much_was_read(checkpoint, tmp_path, capsys):
    model, directory = checkpoint
    truncated = truncated_mp4(tmp_path / "cut.mp4")
    intact = synthetic_video(tmp_path / "whole.mp4", 14)
    readable = data.VideoFile(truncated).num_frames
    assert 0 < readable < 50
    code, out, err = run_cli(
        capsys, truncated, intact, "--labels", ",".join(LABELS), "--checkpoint", directory, "--json", "--workers", "2", "--batch-size", "2"
    )
    cut, whole = json_lines(out)
    warning = f"only {readable / 25:.1f} s of 4.0 s could be decoded"
    assert code == 0 and err.splitlines() == [f"warning: {truncated}: {warning}"]
    assert cut["warning"] == warning and "warning" not in whole
    assert_ranked(cut, expected_probabilities(model, truncated, LABELS), LABELS, top_k=4)
    code, out, err = run_cli(capsys, truncated, "--labels", ",".join(LABELS), "--checkpoint", directory)
    assert code == 0 and out.startswith(str(truncated)) and err.splitlines() == [f"warning: {truncated}: {warning}"]


# ---------------------------------------------------------------- the text-feature cache is only an optimisation


def cache_warnings(recorded) -> list[str]:
    return [str(w.message) for w in recorded if issubclass(w.category, TextCacheWarning)]


def tampered_files(model, labels, path):
    """Cache files that load but must not be used for ``labels``, each written by a callable."""
    good = load_file(str(path))["features"]
    metadata = safe_open(str(path), "pt").metadata()
    other = model.class_text_features(labels[::-1])
    return {
        "wrong shape": lambda: save_file({"features": good[:, :1].contiguous()}, str(path), metadata),
        "other labels": lambda: save_file({"features": other}, str(path), {**metadata, "labels": json.dumps(labels[::-1])}),
        "swapped rows": lambda: save_file({"features": good[:, [1, 0, 2, 3]].contiguous()}, str(path), metadata),
        "no metadata": lambda: save_file({"features": good}, str(path)),
    }


def test_untrustworthy_cache_files_are_recomputed_with_one_warning(checkpoint, tmp_path):
    model, _ = checkpoint
    expected = model.class_text_features(LABELS)
    cached_class_text_features(model, LABELS, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    calls = []
    handle = model.text.register_forward_hook(lambda *_: calls.append(1))
    try:
        for name, tamper in tampered_files(model, LABELS, path).items():
            tamper()
            with warnings.catch_warnings(record=True) as recorded:
                warnings.simplefilter("always")
                features = cached_class_text_features(model, LABELS, cache_dir=tmp_path)
                assert torch.equal(features, expected), name
                (message,) = cache_warnings(recorded)
                assert message.startswith(f"text feature cache: {path}: ") and "the text encoder ran instead" in message
                calls.clear()  # the file was rewritten: the next call reads it, silently
                assert torch.equal(cached_class_text_features(model, LABELS, cache_dir=tmp_path), expected), name
                assert calls == [] and len(cache_warnings(recorded)) == 1, name
    finally:
        handle.remove()


def test_a_cache_that_cannot_be_written_warns_once_and_predicts(checkpoint, tmp_path, monkeypatch, capsys):
    model, directory = checkpoint
    expected = model.class_text_features(LABELS)
    (tmp_path / "a file").write_text("")
    for cache_dir, failure in (
        (tmp_path / "a file" / "cache", None),  # as read-only for root too: no folder here
        (tmp_path / "full", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))),
    ):
        with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            if failure:

                def fail(*args, error=failure):
                    raise error

                patch.setattr(files, "open", fail, raising=False)
            assert torch.equal(cached_class_text_features(model, LABELS, cache_dir=cache_dir), expected)
        (message,) = cache_warnings(recorded)
        assert message.startswith(f"text feature cache: cannot write {cache_dir}")
        if failure:
            assert "no space left on device" in message.lower() and list(cache_dir.iterdir()) == []  # no partial file left
    video = synthetic_video(tmp_path / "clip.mp4", 10)
    code, out, err = run_cli(
        capsys, video, "--labels", ",".join(LABELS), "--checkpoint", directory, "--json", "--text-cache", tmp_path / "a file" / "cache"
    )
    assert code == 0 and "scores" in json_lines(out)[0]
    (line,) = err.splitlines()
    assert line.startswith(f"warning: text feature cache: cannot write {tmp_path / 'a file' / 'cache'}{os.sep}")
    assert line.endswith("; the text encoder ran instead")


def _weight_changes(model) -> dict:
    """Ways the text tower's weights change, each a callable; the last puts the original weights back."""
    original = {name: tensor.clone() for name, tensor in model.text.state_dict().items()}
    weight = model.text.ln_final.weight

    def optimizer_step():
        weight.grad = torch.ones_like(weight)
        torch.optim.SGD([weight], lr=0.5).step()

    def in_place():
        with torch.no_grad():
            weight.mul_(2)

    def new_tensor():
        weight.data = weight.data * 0.5

    return {
        "optimizer step": optimizer_step,
        "in place": in_place,
        "new tensor": new_tensor,
        "dtype": lambda: model.text.double(),
        "loaded back": lambda: model.text.float().load_state_dict(original),
    }


def test_a_loaded_model_is_hashed_once_and_a_model_object_at_every_call(checkpoint, tmp_path, monkeypatch):
    """A model from load_model carries the hash of its text weights, taken when it was loaded: no call hashes it
    again (reading its tensors' private version counters, as before, crashed on a model loaded under inference_mode).
    A model object that never went through load_model is hashed at every call, so that every change of its weights
    is seen, ``.data`` included; after changing a loaded model's weights, remember_text_weights hashes them again."""
    from actionclip.inference.backends import load_model

    _, directory = checkpoint
    hashed = []
    digest = text_cache.text_weights_digest
    monkeypatch.setattr(text_cache, "text_weights_digest", lambda m: hashed.append(1) or digest(m))
    with torch.inference_mode():
        loaded = load_model(directory, precision="fp32")
    first = cached_class_text_features(loaded, LABELS, cache_dir=tmp_path)
    assert torch.equal(cached_class_text_features(loaded, LABELS, cache_dir=tmp_path), first) and len(hashed) == 1
    with torch.inference_mode():  # where its tensors were made
        loaded.text.ln_final.weight.mul_(2)
    assert len(text_cache.remember_text_weights(loaded).text_features_digest) == 32
    assert torch.equal(cached_class_text_features(loaded, LABELS, cache_dir=tmp_path), loaded.class_text_features(LABELS))
    model = actionclip.create_model("test-tiny", seed=0).eval()
    for name, change in _weight_changes(model).items():
        change()
        hashed.clear()
        expected = model.class_text_features(LABELS)
        for _ in range(2):
            assert torch.equal(cached_class_text_features(model, LABELS, cache_dir=tmp_path), expected), name
        assert len(hashed) == 2, name
    torch.testing.assert_close(expected, first)  # the weights loaded back; prepare_for_inference rounds differently


# ---------------------------------------------------------------- a user's mistake is one line


def test_labels_file_with_a_byte_order_mark_or_not_utf8(checkpoint, tmp_path, capsys):
    _, directory = checkpoint
    video = synthetic_video(tmp_path / "clip.mp4", 11)
    labels_file = tmp_path / "labels.txt"
    labels_file.write_bytes("arm wrestling\r\nplaying guitar\r\n".encode("utf-8-sig"))  # as Notepad saves it
    code, out, _ = run_cli(capsys, video, "--labels-file", labels_file, "--checkpoint", directory, "--json")
    assert code == 0 and sorted(json_lines(out)[0]["labels"]) == ["arm wrestling", "playing guitar"]
    labels_file.write_bytes("arm wrestling\nfu\xdfball\n".encode("latin-1"))
    code, out, err = run_cli(capsys, video, "--labels-file", labels_file, "--checkpoint", directory)
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"error: {labels_file}: not UTF-8 text (byte 0xdf at offset 16); save it as UTF-8"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frames", "0"], "--frames must be >= 1, got 0"),
        (["--decode-short-side", "-5"], "--decode-short-side must be >= 1, got -5"),
        (["--top-k", "0"], "--top-k must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--workers", "-1"], "--workers must be >= 0, got -1"),
        (["--device", "tpu"], "--device tpu: not a device name (cpu, cuda, cuda:1, mps, ...)"),
        (["--device", "meta"], "--device meta: not available here"),
        (["--window", "inf"], "--window must be a finite number, got inf"),
        (["--window", "1", "--stride", "nan"], "--stride must be a finite number, got nan"),
    ],
)
def test_bad_numbers_and_devices_are_one_line(args, message, checkpoint, tmp_path, capsys):
    _, directory = checkpoint
    video = synthetic_video(tmp_path / "clip.mp4", 12)
    code, out, err = run_cli(capsys, video, "--labels", "a,b", "--checkpoint", directory, *args)
    assert (code, out, err.splitlines()) == (2, "", [f"error: {message}"])


def test_python_api_refuses_zero_frames(checkpoint, tmp_path):
    model, directory = checkpoint
    video = synthetic_video(tmp_path / "clip.mp4", 13)
    with pytest.raises(ValueError, match="num_frames must be >= 1, got 0"):
        actionclip.predict(video, LABELS, checkpoint=directory, num_frames=0, device="cpu")
    with pytest.raises(ValueError, match="decode_short_side must be >= 1, got -5"):
        actionclip.predict(video, LABELS, model, decode_short_side=-5)


def test_a_broken_symbolic_link_in_a_folder_is_reported(checkpoint, tmp_path):
    model, _ = checkpoint
    synthetic_video(tmp_path / "videos" / "a.mp4", 15)
    (tmp_path / "videos" / "b.mp4").symlink_to(tmp_path / "deleted.mp4")
    good, broken = actionclip.predict(tmp_path / "videos", LABELS, model, workers=0)
    assert "scores" in good
    assert broken == {"video": str(tmp_path / "videos" / "b.mp4"), "error": f"broken symbolic link (to {tmp_path / 'deleted.mp4'})"}
