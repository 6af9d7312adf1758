"""ONNX export: every visual prompt and X-CLIP against PyTorch, int8 against fp32, and the export directory's
config and label features."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import actionclip
from actionclip.cli.main import main
from actionclip.export.directory import export_model
from actionclip.export.graphs import attention_for_export, export_text_graph, export_video_graph
from actionclip.export.int8 import quantize_video_graph
from actionclip.onnx_runtime.runtime import ExportedModel
from conftest import EXPORT_LABELS, random_video, tiny_model

LABELS = EXPORT_LABELS
VARIANTS = [*actionclip.VISUAL_PROMPTS, "xclip"]


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


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("case", ["no mask", "additive mask", "boolean mask", "cross-attention"])
def test_attention_for_export_computes_the_modules_function_and_leaves_the_module_as_it_was(batch_first, case, monkeypatch):
    attention = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    x = torch.randn((2, 5, 32) if batch_first else (5, 2, 32))
    context = torch.randn(x.shape) if case == "cross-attention" else x
    mask = {"additive mask": torch.full((5, 5), float("-inf")).triu(1), "boolean mask": torch.ones(5, 5, dtype=torch.bool).triu(1)}.get(
        case
    )
    keys = set(attention.state_dict())
    with torch.no_grad():
        expected = attention(x, context, context, need_weights=False, attn_mask=mask)[0]
        calls = []
        own_forward = nn.MultiheadAttention.forward
        monkeypatch.setattr(nn.MultiheadAttention, "forward", lambda *a, **k: calls.append(1) or own_forward(*a, **k))
        with attention_for_export(attention):
            got = attention(x, context, context, need_weights=False, attn_mask=mask)[0]
    # Self-attention with no mask or an additive one takes the export's path; anything else the module's own.
    assert len(calls) == (case in ("boolean mask", "cross-attention"))
    assert (got - expected).abs().max() <= 1e-5
    assert "forward" not in vars(attention) and set(attention.state_dict()) == keys
    assert not hasattr(attention, "export_in_proj_weight")


def test_exported_attention_moves_the_heads_in_one_transpose_each_way_and_never_scales_q_or_k(tmp_path):
    model = tiny_model("MeanP")
    export_video_graph(model, tmp_path / "video.onnx")
    export_text_graph(model, tmp_path / "text.onnx")
    for file, patch_embedding_transposes in (("video.onnx", 1), ("text.onnx", 0)):
        nodes = onnx.load(tmp_path / file).graph.node
        producers = {output: node for node in nodes for output in node.output}
        softmaxes = [node for node in nodes if node.op_type == "Softmax"]
        assert softmaxes
        # The heads split (q, k and v at once), k read transposed by q @ k^T, the heads joined.
        assert sum(node.op_type == "Transpose" for node in nodes) <= 3 * len(softmaxes) + patch_embedding_transposes
        for softmax in softmaxes:
            scores = producers[softmax.input[0]]
            if scores.op_type == "Add":  # the text tower's causal mask
                scores = next(producers[i] for i in scores.input if i in producers and producers[i].op_type == "MatMul")
            assert scores.op_type == "MatMul"
            assert all(producers[i].op_type != "Mul" for i in scores.input if i in producers)


@pytest.fixture(params=["Transf", "xclip"])
def exported(request, tiny_export):
    return tiny_export(request.param)


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
    assert capsys.readouterr().err.strip() == (
        "error: this model takes exactly 8 frames (Joint's time embedding has one row per frame), not 4"
    )
