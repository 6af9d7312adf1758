"""The int8 video graph: the fp32 graph of :mod:`actionclip.export.graphs` with its heavy matmuls in int8.

**What is quantised.** Every MatMul or Gemm whose second operand is a weight and that runs once per token of every
frame: the image tower's attention and MLP projections (and, for a ResNet tower, its attention pool's key and value
projections). Weight matmuls that run once per frame or per video (the final projection, the temporal module,
X-CLIP's cross-frame and MIT layers) are a sliver of the work and stay fp32, as do the patch-embedding convolution,
LayerNorm, softmax, the activations, attention's two activation x activation products, and the text and prompt
graphs (they run once per label set). Which matmuls run per token is read from one fp32 run of one video.

**How.** Weights: int8, symmetric, one scale per output channel. Activations: one scale per row (a token's
features), ``max |row| / 127``, computed on every call; the row is quantised to uint8 around 128 (QuantizeLinear), the
product accumulated in int32 by ONNX Runtime's ``MatMulIntegerToFloat`` (uint8 x int8, its VNNI kernel), then scaled
back per row and its bias (with a bias addition that followed the matmul) added in one pass. ONNX Runtime's
``quantize_dynamic`` instead gives a whole tensor, a whole batch of videos, one scale: a video's scores then depended
on the other videos of its batch (in ``serve``, other clients' videos), and on the demo's evaluation sets int8 lost
more top-1s than the per-row scales do (docs/performance.md).

**LayerNorm inputs.** A LayerNorm's output ``x_hat * gamma + beta`` carries ``beta``, the same offset in every row,
on which a symmetric row range spends its levels. Where a LayerNorm feeds one quantised matmul (through transposes
that keep the feature axis last), its ``beta`` moves into that matmul's bias as ``beta @ W``, exact in real
arithmetic, and the row quantised is ``x_hat * gamma``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INT8_VERSION = 2  # 1 was quantize_dynamic's per-tensor activations; exports cached under 1 are remade


def _weight_operand(node: onnx.NodeProto, initializers: dict) -> tuple[bool, str | None] | None:
    """``(transposed, bias initializer or None)`` when ``node`` is ``x @ W (+ bias)`` with W the weight
    ``node.input[1]`` (stored ``[N, K]`` when transposed), else None. Reads no tensor data."""
    if node.op_type == "MatMul" and node.input[1] in initializers and len(initializers[node.input[1]].dims) == 2:
        return False, None
    if node.op_type == "Gemm" and node.input[1] in initializers:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if (
            attributes.get("transA", 0)
            or attributes.get("alpha", 1.0) != 1.0
            or attributes.get("beta", 1.0) != 1.0
            or (bias is not None and bias not in initializers)
        ):
            return None
        return bool(attributes.get("transB", 0)), bias
    return None


def _weight(node: onnx.NodeProto, initializers: dict) -> tuple[np.ndarray, str | None] | None:
    """``(W [K, N], bias initializer or None)`` when ``node`` is ``x @ W (+ bias)`` with W a weight, else None."""
    operand = _weight_operand(node, initializers)
    if operand is None:
        return None
    transposed, bias = operand
    weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
    return (weight.T if transposed else weight), bias


def weight_matmuls(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    initializers = {i.name: i for i in model.graph.initializer}
    return [node for node in model.graph.node if _weight_operand(node, initializers) is not None]


def per_token_matmuls(model: onnx.ModelProto, video_shape: tuple[int, ...]) -> set[str]:
    """The outputs of the weight matmuls that see more rows than frames when one video of ``video_shape``
    ``(T, 3, H, W)`` goes through the graph: those that run per token of every frame."""
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    matmuls = weight_matmuls(model)
    for node in matmuls:
        probe.graph.output.append(helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = session.run([node.input[0] for node in matmuls], {"frames": np.zeros((1, *video_shape), np.float32)})
    return {node.output[0] for node, x in zip(matmuls, inputs) if np.prod(x.shape[:-1]) > video_shape[0]}


def _layer_norm_beta(name: str, producers: dict, consumers: dict, initializers: dict, graph_outputs: set) -> onnx.NodeProto | None:
    """The LayerNormalization whose output reaches ``name`` through transposes that keep the last axis last, each
    step read by nothing else, with a weight as bias over the last axis; None when there is none."""
    while True:
        node = producers.get(name)
        if node is None or len(consumers.get(name, ())) != 1 or name in graph_outputs:
            return None
        if node.op_type == "LayerNormalization":
            axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
            has_beta = len(node.input) > 2 and node.input[2] in initializers and len(consumers[node.input[2]]) == 1
            return node if has_beta and axis == -1 else None
        if node.op_type != "Transpose":
            return None
        perm = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), None)
        if perm is None or perm[-1] != len(perm) - 1:
            return None
        name = node.input[0]


def _bias_addition(name: str, consumers: dict, initializers: dict, graph_outputs: set, n: int) -> tuple | None:
    """``(Add node, bias initializer)`` when ``name`` is read only by an addition of a weight of shape ``[n]``."""
    readers = consumers.get(name, ())
    if len(readers) != 1 or readers[0].op_type != "Add" or name in graph_outputs:
        return None
    other = next((i for i in readers[0].input if i != name), None)
    if other is None or other not in initializers or tuple(initializers[other].dims) != (n,):
        return None
    return readers[0], other


def quantize_matmuls(model: onnx.ModelProto, outputs: set[str] | None = None) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with its weight matmuls (those whose output is in ``outputs``; None: all) in int8 as the
    module docstring says; returns it and how many were quantised."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    initializers = {i.name: i for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    constants = []
    nodes: list[onnx.NodeProto] = []

    def constant(name: str, value) -> str:
        constants.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def add(op: str, inputs: list[str], output: str, **attributes) -> str:
        domain = "com.microsoft" if op == "MatMulIntegerToFloat" else ""
        nodes.append(helper.make_node(op, inputs, [output], domain=domain, **attributes))
        return output

    opset = next(o.version for o in model_copy.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 15:
        raise ValueError(f"int8 quantisation needs an ONNX graph of opset 15 or later, not {opset}")

    def row_reduce(op: str, rows: str, output: str) -> str:  # the axes became an input in opset 18
        if opset >= 18:
            return add(op, [rows, constant(output + "_axes", np.array([-1], np.int64))], output, keepdims=0)
        return add(op, [rows], output, axes=[-1], keepdims=0)

    tiny = constant("int8_tiny", np.float32(1e-12))
    inv127, one = constant("int8_inv127", np.float32(1 / 127)), constant("int8_one", np.float32(1.0))
    zero_point, ones = constant("int8_zero_point", np.uint8(128)), constant("int8_one_row", np.array([1], np.int64))
    moved_betas: set[str] = set()
    absorbed: set[str] = set()  # outputs of bias additions made part of a quantised matmul's own
    count = 0
    for node in graph.node:
        if node.output[0] in absorbed:
            continue
        found = _weight(node, initializers)
        if found is None or (outputs is not None and node.output[0] not in outputs):
            nodes.append(node)
            continue
        weight, bias = found
        p = f"int8_{count}_"
        count += 1
        k, n = weight.shape
        bias_value = numpy_helper.to_array(initializers[bias]).astype(np.float64) if bias else np.zeros(n)
        output = node.output[0]
        bias_add = _bias_addition(output, consumers, initializers, graph_outputs, n)
        if bias_add is not None:  # one addition of both biases instead of two passes over the output
            bias_value = bias_value + numpy_helper.to_array(initializers[bias_add[1]]).astype(np.float64)
            output = bias_add[0].output[0]
            absorbed.add(output)
        layer_norm = _layer_norm_beta(node.input[0], producers, consumers, initializers, graph_outputs)
        if layer_norm is not None and tuple(initializers[layer_norm.input[2]].dims) == (k,):
            beta = numpy_helper.to_array(initializers[layer_norm.input[2]]).astype(np.float64)
            bias_value = bias_value + beta @ weight.astype(np.float64)
            moved_betas.add(layer_norm.input[2])
        scale_w = np.maximum(np.abs(weight).max(axis=0), 1e-12) / 127
        weight_q = np.clip(np.round(weight / scale_w), -127, 127).astype(np.int8)

        x = node.input[0]
        rows = add("Reshape", [x, constant(p + "rows_shape", np.array([-1, k], np.int64))], p + "rows")
        high = row_reduce("ReduceMax", rows, p + "max")
        low = add("Neg", [row_reduce("ReduceMin", rows, p + "min")], p + "neg_min")
        amax = add("Max", [add("Max", [high, low], p + "absmax"), tiny], p + "absmax_safe")
        scale = add("Mul", [amax, inv127], p + "scale")
        row_zero_points = add(
            "ConstantOfShape",
            [add("Shape", [scale], p + "count")],
            p + "zero_points",
            value=numpy_helper.from_array(np.array([128], np.uint8)),
        )
        quantized = add("QuantizeLinear", [rows, scale, row_zero_points], p + "quantized", axis=0)
        product = add(
            "MatMulIntegerToFloat",
            [quantized, constant(p + "weight", weight_q), one, constant(p + "weight_scale", scale_w.astype(np.float32)), zero_point],
            p + "product",
        )
        leading = add("Shape", [x], p + "leading", end=-1)
        shaped = add(
            "Reshape",
            [product, add("Concat", [leading, constant(p + "n", np.array([n], np.int64))], p + "out_shape", axis=0)],
            p + "shaped",
        )
        row_scale = add("Reshape", [scale, add("Concat", [leading, ones], p + "scale_shape", axis=0)], p + "row_scale")
        if not np.any(bias_value):
            add("Mul", [shaped, row_scale], output)
        else:
            scaled = add("Mul", [shaped, row_scale], p + "scaled")
            add("Add", [scaled, constant(p + "bias", bias_value.astype(np.float32))], output)

    for node in nodes:  # the moved betas: their LayerNorms now end at x_hat * gamma
        if node.op_type == "LayerNormalization" and len(node.input) > 2 and node.input[2] in moved_betas:
            del node.input[2]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model_copy.opset_import):
        model_copy.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model_copy, count


def quantize_video_graph(
    directory: str | Path, frames: int, image_size: int, source: str = "video.onnx", target: str = "video.int8.onnx"
) -> dict:
    """Write ``target`` beside the fp32 video graph ``source`` in ``directory``: its per-token matmuls in int8.
    Returns what the export config records: the file and the matmuls quantised and kept in fp32."""
    directory = Path(directory)
    model = onnx.load(directory / source)
    per_token = per_token_matmuls(model, (frames, 3, image_size, image_size))
    quantized, count = quantize_matmuls(model, per_token)
    onnx.save(quantized, directory / target)
    return {"file": target, "version": INT8_VERSION, "int8_matmuls": count, "fp32_weight_matmuls": len(weight_matmuls(model)) - count}
