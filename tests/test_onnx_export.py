"""ONNX export: every visual prompt and X-CLIP against PyTorch, int8 against fp32, and the export directory's
config and label features."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import random_video

import actionclip
from actionclip.apps.cli import main
from actionclip.apps.export import export_model
from actionclip.apps.onnx_runtime import ExportedModel
from actionclip.models.onnx_export import export_video_graph
from actionclip.models.onnx_int8 import quantize_video_graph

LABELS = ["arm wrestling", "playing guitar", "swimming"]
VARIANTS = [*actionclip.VISUAL_PROMPTS, "xclip"]


def tiny_model(variant):
    if variant == "xclip":
        return actionclip.create_model("test-tiny", arch="xclip", seed=0).eval()
    return actionclip.create_model("test-tiny", visual_prompt=variant, seed=0).eval()


def torch_outputs(model, video):
    with torch.no_grad():
        outputs = model.video(video) if model.config.arch == "xclip" else (model.encode_video(video),)
    return [o.float().numpy() for o in outputs]


def cosines(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_video_graph_fp32_equals_torch_and_int8_keeps_the_direction(variant, tmp_path):
    model = tiny_model(variant)
    info = export_video_graph(model, tmp_path / "video.onnx")
    quantize_video_graph(tmp_path, info["num_frames"], model.config.clip["vision_cfg"]["image_size"])
    fp32 = ort.InferenceSession(str(tmp_path / "video.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(tmp_path / "video.int8.onnx"), providers=["CPUExecutionProvider"])
    # Another batch size than the export's example; another frame count where the model allows one.
    shapes = [(3, 8)] + ([(1, 4), (2, 11)] if info["dynamic_frames"] else [])
    assert info["dynamic_frames"] == (variant not in ("Joint", "Transf_cls", "xclip"))
    for batch, frames in shapes:
        video = random_video(batch, frames, seed=frames)
        expected = torch_outputs(model, video)
        got = fp32.run(None, {"frames": video.numpy()})
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            assert np.abs(g - e).max() <= 1e-4
        quantized = int8.run(None, {"frames": video.numpy()})[0]
        assert cosines(quantized, got[0]).min() >= 0.999
        assert np.abs(quantized - got[0]).max() > 1e-6  # int8 weights really ran


@pytest.fixture(scope="module", params=["Transf", "xclip"])
def exported(request, tmp_path_factory):
    model = tiny_model(request.param)
    directory = export_model(model, tmp_path_factory.mktemp(f"export_{request.param}"), "int8", labels=LABELS)
    return model, directory


def test_text_embeddings_and_classify_equal_torch(exported):
    model, directory = exported
    onnx = ExportedModel(directory, "fp32")
    texts = ["a", "a video of a person arm wrestling", "The woman is applying eye makeup in a long take"]
    tokens = model.tokenize(texts)
    with torch.no_grad():
        expected = model.encode_text(tokens).numpy()
    assert np.abs(onnx.encode_text(tokens.numpy()) - expected).max() <= 1e-4
    assert np.array_equal(onnx.tokenize(texts), tokens.numpy())
    video = random_video(3, 8, seed=1)
    for templates in (None, "actionclip", ["{}", "a clip of {}"]):
        probabilities = model.classify(video, LABELS, templates).numpy()
        features = onnx.class_text_features(LABELS, templates)
        assert np.abs(onnx.video_probabilities(video.numpy(), features) - probabilities).max() <= 1e-4
    # The stored label features are the model's.
    stored = json.loads((directory / "export.json").read_text())["label_features"]
    assert stored["labels"] == LABELS and stored["templates"] == onnx.templates()
    assert np.abs(np.load(directory / stored["file"]) - model.class_text_features(LABELS).numpy()).max() <= 1e-4


def test_int8_probabilities_stay_near_fp32(exported):
    model, directory = exported
    video = random_video(4, 8, seed=2).numpy()
    fp32, int8 = ExportedModel(directory, "fp32"), ExportedModel(directory)
    assert int8.precision == "int8"  # the export's default
    features = fp32.class_text_features(LABELS)
    assert cosines(int8.encode_video(video)[0], fp32.encode_video(video)[0]).min() >= 0.999
    assert np.abs(int8.video_probabilities(video, features) - fp32.video_probabilities(video, features)).max() < 0.05


def test_export_config_records_what_predict_needs(exported):
    model, directory = exported
    config = json.loads((directory / "export.json").read_text())
    assert config["arch"] == model.config.arch and config["image_size"] == 32 and config["num_frames"] == 8
    assert config["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert config["test"]["logit_scale"] == (None if model.config.arch == "xclip" else 100.0)
    assert set(config["files"]) == ({"video", "text", "video_int8"} | ({"prompts"} if model.config.arch == "xclip" else set()))
    assert all((directory / name).is_file() for name in config["files"].values())


def test_models_that_cannot_be_exported_say_why(tmp_path, capsys):
    unimodal = actionclip.create_model("test-tiny", arch="unimodal", num_classes=3, seed=0)
    with pytest.raises(ValueError, match="fixed set of classes"):
        export_model(unimodal, tmp_path / "u")
    checkpoint = actionclip.save(tiny_model("Joint"), tmp_path / "joint")
    code = main(["export", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "e"), "--frames", "4"])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("error: this model takes exactly 8 frames (Joint's time embedding has one "
                                               "row per frame), not 4")
