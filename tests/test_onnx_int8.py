"""The int8 video graph (actionclip.export.int8): the arithmetic it promises, per row, against numpy; a video's
embedding independent of its batch; per-frame and per-video matmuls left in fp32."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from actionclip.export.int8 import per_token_matmuls, quantize_matmuls, weight_matmuls
from actionclip.onnx_runtime.runtime import ExportedModel
from conftest import random_video

K, HIDDEN, OUT = 24, 40, 8


def session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def layer_norm_mlp(rng):
    """x [B, N, K] -> LayerNorm -> transpose to [N, B, K] -> @ W1 + b1 -> Relu -> Gemm(W2^T, b2) on the rows."""
    weights = {
        "gamma": rng.uniform(0.5, 2, K),
        "beta": rng.normal(0, 3, K),
        "w1": rng.normal(0, 1, (K, HIDDEN)),
        "b1": rng.normal(0, 1, HIDDEN),
        "w2t": rng.normal(0, 1, (OUT, HIDDEN)),
        "b2": rng.normal(0, 1, OUT),
    }
    weights = {name: value.astype(np.float32) for name, value in weights.items()}
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("Transpose", ["ln"], ["ln_t"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["ln_t", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("Reshape", ["h", "rows"], ["h_rows"]),
        helper.make_node("Gemm", ["h_rows", "w2t", "b2"], ["y"], transB=1),
    ]
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([-1, HIDDEN], np.int64), "rows"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), weights


def int8_rows(x, weight):
    """The promised arithmetic: rows at max|row| / 127, weights per output channel at max|column| / 127."""
    row_scale = np.abs(x).max(axis=-1, keepdims=True) / 127
    weight_scale = np.abs(weight).max(axis=0) / 127
    q_x = np.round(x / row_scale)
    q_w = np.round(weight / weight_scale)
    return (q_x @ q_w) * row_scale * weight_scale


def test_each_row_is_quantised_on_its_own_and_a_layer_norms_offset_moves_into_the_bias():
    rng = np.random.default_rng(0)
    model, w = layer_norm_mlp(rng)
    x = rng.normal(0, 1, (3, 5, K)).astype(np.float32) * rng.uniform(0.1, 10, (3, 5, 1)).astype(np.float32)
    quantized, count = quantize_matmuls(model)
    assert count == 2
    # The LayerNorm now stops at x_hat * gamma: its beta was moved into the first matmul's bias.
    layer_norm = next(n for n in quantized.graph.node if n.op_type == "LayerNormalization")
    assert list(layer_norm.input) == ["x", "gamma"]
    # One addition per matmul: the moved beta, the graph's b1 after the first matmul and the Gemm's b2 each join a bias.
    assert sum(n.op_type == "Add" for n in quantized.graph.node) == 2

    normalised = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w["gamma"]
    hidden = np.maximum(int8_rows(normalised.transpose(1, 0, 2), w["w1"]) + w["beta"] @ w["w1"] + w["b1"], 0)
    expected = int8_rows(hidden.reshape(-1, HIDDEN), w["w2t"].T) + w["b2"]
    got = session(quantized).run(None, {"x": x})[0]
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()  # per-tensor or a kept beta: ~1e-2
    # And it is near the fp32 graph, which a wrong offset or scale would not be.
    full = session(model).run(None, {"x": x})[0]
    assert np.abs(got - full).max() <= 0.02 * np.abs(full).max()


def test_a_layer_norm_read_elsewhere_keeps_its_offset():
    rng = np.random.default_rng(1)
    model, _ = layer_norm_mlp(rng)
    model.graph.output.append(helper.make_tensor_value_info("ln", TensorProto.FLOAT, None))
    quantized, _ = quantize_matmuls(model)
    layer_norm = next(n for n in quantized.graph.node if n.op_type == "LayerNormalization")
    assert list(layer_norm.input) == ["x", "gamma", "beta"]
    x = rng.normal(0, 1, (2, 3, K)).astype(np.float32)
    got, full = session(quantized).run(None, {"x": x}), session(model).run(None, {"x": x})
    assert np.abs(got[1] - full[1]).max() <= 1e-5  # the LayerNorm output itself is unchanged
    assert np.abs(got[0] - full[0]).max() <= 0.02 * np.abs(full[0]).max()


@pytest.fixture(params=["Transf", "xclip"])
def exported(request, tiny_export):
    return tiny_export(request.param)[1]


def test_a_videos_int8_embedding_does_not_depend_on_the_rest_of_its_batch(exported):
    int8 = ExportedModel(exported, "int8")
    video = random_video(1, 8, seed=3).numpy()
    others = 5 * random_video(3, 8, seed=4).numpy()  # larger values than the video's, as a per-batch range would see
    alone = int8.encode_video(video)[0]
    together = int8.encode_video(np.concatenate([others[:1], video, others[1:]]))[0]
    assert np.abs(together[1] - alone[0]).max() <= 1e-6


def test_only_per_token_matmuls_run_in_int8(exported):
    config = json.loads((exported / "export.json").read_text())
    fp32, int8 = onnx.load(exported / config["files"]["video"]), onnx.load(exported / config["files"]["video_int8"])
    per_token = per_token_matmuls(fp32, (8, 3, 32, 32))
    left = weight_matmuls(int8)
    # The image tower's projections are int8; the temporal module's (or X-CLIP's per-frame layers) and the final
    # projection are still fp32 matmuls, and none of those left runs per token.
    assert config["int8"]["int8_matmuls"] == len(per_token) > 0
    assert config["int8"]["fp32_weight_matmuls"] == len(left) == len(weight_matmuls(fp32)) - len(per_token) > 0
    assert not per_token_matmuls(int8, (8, 3, 32, 32))
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in int8.graph.node) == len(per_token)
