"""``actionclip benchmark --runtime onnx``: the figures of :mod:`actionclip.benchmark.throughput` for the exported video
graph run by ONNX Runtime on the CPU, fp32 or int8.

The same random-weight model is exported (into a temporary directory) and timed as the torch path is: batches of
random normalised frames, in alternation with the peak, after warm-up. The peak is that of ONNX Runtime itself in the
same dtype, in the same process: a graph of one dense ``PEAK_SIZE`` x ``PEAK_SIZE`` MatMul against a weight, run as is for fp32, and
for int8 quantised the way the video graph is (:mod:`actionclip.export.int8`: each row quantised to uint8 per
call, ``MatMulIntegerToFloat`` against int8 weights, the row scales applied). Its
FLOP/s count two per multiply-add, as the torch peak's do, so ``achieved_gflops / peak_gflops`` says how near the
model runs to what ONNX Runtime's int8 (or fp32) matmul reaches on this machine.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from actionclip.benchmark import throughput as benchmark
from actionclip.export.directory import export_model
from actionclip.export.int8 import quantize_matmuls
from actionclip.inference.onnx_backend import OnnxPredictModel, resolve_onnx_precision
from actionclip.models.inputs import model_image_size
from actionclip.onnx_runtime.runtime import ExportedModel

PEAK_SIZE = 2048
CPU = torch.device("cpu")


def matmul_peak_model(precision: str, size: int = PEAK_SIZE) -> onnx.ModelProto:
    """The graph ``x [size, size] @ w [size, size]`` (``w`` a weight), fp32 or in int8 as the video graph's
    per-token matmuls are."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((size, size), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "peak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return quantize_matmuls(model)[0] if precision == "int8" else model


def onnx_benchmark(
    model_name: str,
    visual_prompt: str = "Transf",
    frames: int = 8,
    batch_size: int = 8,
    arch: str = "actionclip",
    iterations: int = 10,
    precision: str = "auto",
    video=None,
    workers: int = 2,
    peak_matmuls: int = 4,
) -> dict:
    """:func:`actionclip.benchmark.throughput.benchmark`'s dict for the ONNX Runtime video graph in ``precision`` (fp32,
    int8, auto: see :func:`actionclip.inference.onnx_backend.resolve_onnx_precision`)."""
    precision = resolve_onnx_precision(precision, "cpu")
    shapes = benchmark.build_random_model(model_name, visual_prompt, frames, arch, "meta")
    result = {
        "model": model_name,
        "arch": arch,
        "visual_prompt": shapes.config.visual_prompt if shapes.uses_visual_prompt else None,
        "frames": frames,
        "image_size": model_image_size(shapes),
        "batch_size": batch_size,
        "device": "cpu",
        "runtime": "onnx",
        "onnxruntime": ort.__version__,
        **benchmark.count_parameters(shapes),
        "gflops_per_video": benchmark.count_video_gmacs(shapes, frames),
        "precision": precision,
    }
    with tempfile.TemporaryDirectory(prefix="actionclip-bench-") as workdir:
        model = benchmark.build_random_model(model_name, visual_prompt, frames, arch)
        export_model(model, Path(workdir) / "export", precision, frames)
        exported = ExportedModel(Path(workdir) / "export", precision)
        peak = ort.InferenceSession(matmul_peak_model(precision, PEAK_SIZE).SerializeToString(), providers=["CPUExecutionProvider"])
        result["device_name"] = f"{cpu_model()}, ONNX Runtime {ort.__version__} ({ort.get_device()})"
        size = result["image_size"]
        frames_in = np.random.default_rng(0).standard_normal((batch_size, frames, 3, size, size), dtype=np.float32)
        x = np.random.default_rng(1).standard_normal((PEAK_SIZE, PEAK_SIZE), dtype=np.float32)

        def model_step() -> None:
            exported.encode_video(frames_in)

        def peak_step() -> None:
            for _ in range(peak_matmuls):
                peak.run(None, {"x": x})

        for _ in range(benchmark.WARMUP_ITERATIONS):
            model_step()
            peak_step()
        model_seconds = model_cpu = peak_seconds = 0.0
        for _ in range(iterations):
            wall, cpu = benchmark.timed(model_step, CPU)
            model_seconds, model_cpu = model_seconds + wall, model_cpu + cpu
            peak_seconds += benchmark.timed(peak_step, CPU)[0]
        videos = batch_size * iterations
        result["videos_per_s"] = videos / model_seconds
        result["cpu_s_per_video"] = model_cpu / videos
        result["peak_gflops"] = 2 * PEAK_SIZE**3 * peak_matmuls * iterations / peak_seconds / 1e9
        result["achieved_gflops"] = 2 * result["gflops_per_video"] * result["videos_per_s"]
        if video is not None:
            result["videos_per_s_end_to_end"] = benchmark.end_to_end_throughput(
                OnnxPredictModel(exported), video, batch_size, frames, iterations, workers
            )
            result["workers"] = workers
    result["iterations"] = iterations
    return result


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
