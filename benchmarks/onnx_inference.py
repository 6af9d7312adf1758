"""The four CPU paths in one run on the same weights: torch fp32, torch bf16, ONNX Runtime fp32, ONNX Runtime int8.

ViT-B/32, Transf, 8 frames, batch 8 by default, random weights (nothing is downloaded; each path builds the model
from the same seed). Model only (``encode_video`` on random normalised frames, what ``actionclip benchmark``
measures), each against its own same-process matmul peak: torch's dense matmul in fp32 or bf16, ONNX Runtime's MatMul
in fp32 or in int8 as the video graph's matmuls (see :mod:`actionclip.benchmark.onnx_throughput`). Prints the CPU model,
its matrix-relevant flags and the threads, then a table, which path is fastest and, on a CPU without native bf16,
whether that path reaches issue 17's goal of 1.8x torch fp32.

Then the int8 scheme against ONNX Runtime's ``quantize_dynamic`` (one activation scale per call, the scheme before
:mod:`actionclip.export.int8`) on the same fp32 graph and frames, the two sessions taking turns: videos/s and the
smallest cosine of each to fp32, and whether a video's embedding changes when the rest of its batch does.

    python benchmarks/onnx_inference.py [--model ViT-B-32] [--iterations 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from actionclip.benchmark.onnx_throughput import cpu_model, onnx_benchmark
from actionclip.benchmark.throughput import benchmark, build_random_model
from actionclip.export.directory import export_model
from actionclip.host.devices import cpu_has_native_bf16

GOAL_WITHOUT_NATIVE_BF16 = 1.8  # issue 17: the fastest path against torch fp32 on a CPU without native bf16
FLAGS = re.compile(r"^(avx2|fma|avx512f|avx512_vnni|avx_vnni|avx512_bf16|amx_bf16|amx_int8|amx_tile)$")


def cpu_flags() -> list[str]:
    """The CPU flags that decide which matmul kernels run (AVX2/FMA, AVX-512, VNNI for int8, BF16 and AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return sorted({flag for flag in line.split(":", 1)[-1].split() if FLAGS.match(flag)})


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def int8_schemes(model_name: str, visual_prompt: str, frames: int, batch_size: int, rounds: int) -> dict:
    """Our int8 video graph against ``quantize_dynamic``'s on the same export, timed in turns over ``rounds``."""
    with tempfile.TemporaryDirectory(prefix="actionclip-int8-") as workdir:
        torch.manual_seed(0)
        directory = export_model(build_random_model(model_name, visual_prompt, frames, "actionclip"), Path(workdir), "int8")
        logging.getLogger().setLevel(logging.ERROR)  # the quantiser's advice to pre-process the graph
        quantize_dynamic(
            directory / "video.onnx",
            directory / "per_tensor.onnx",
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            extra_options={"MatMulConstBOnly": True},
        )
        sessions = {
            name: ort.InferenceSession(str(directory / file), providers=["CPUExecutionProvider"])
            for name, file in (
                ("fp32", "video.onnx"),
                ("int8, per-row (export)", "video.int8.onnx"),
                ("int8, per-tensor (quantize_dynamic)", "per_tensor.onnx"),
            )
        }
        size = json.loads((directory / "export.json").read_text())["image_size"]
        video = np.random.default_rng(0).standard_normal((batch_size, frames, 3, size, size), dtype=np.float32)
        other = 3 * np.random.default_rng(1).standard_normal(video.shape, dtype=np.float32)
        reference = sessions["fp32"].run(None, {"frames": video})[0]
        results = {}
        for name, session in sessions.items():
            first = session.run(None, {"frames": video})[0]
            mixed = session.run(None, {"frames": np.concatenate([video[:1], other[1:]])})[0]
            results[name] = {
                "min_cosine_to_fp32": float(cosines(first, reference).min()),
                "batch_dependence": float(np.abs(mixed[0] - first[0]).max()),
                "seconds": [],
            }
        for _ in range(rounds):
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"frames": video})
                results[name]["seconds"].append(time.perf_counter() - start)
    for result in results.values():
        result["videos_per_s"] = batch_size / statistics.median(result.pop("seconds"))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--visual-prompt", default="Transf")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5, help="timed batches per path, after warm-up (default: 5)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    config = (args.model, args.visual_prompt, args.frames, args.batch_size)
    results = {}
    for runtime, precision in (("torch", "fp32"), ("torch", "bf16"), ("onnx", "fp32"), ("onnx", "int8")):
        torch.manual_seed(0)  # the same random weights for every path
        if runtime == "torch":
            results[f"{runtime} {precision}"] = benchmark(*config, device="cpu", iterations=args.iterations, precision=precision)
        else:
            results[f"{runtime} {precision}"] = onnx_benchmark(*config, iterations=args.iterations, precision=precision)
    print(
        f"{args.model}, {args.visual_prompt}, {args.frames} frames, batch {args.batch_size}, random weights; "
        f"CPU: {cpu_model()}, flags: {' '.join(cpu_flags())}; torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), ONNX Runtime {ort.__version__}"
    )
    print("| path | videos/s | x torch fp32 | achieved GFLOP/s | peak GFLOP/s (same-process matmul, same dtype) | share of peak |")
    print("|---|---|---|---|---|---|")
    base = results["torch fp32"]["videos_per_s"]
    for name, r in results.items():
        print(
            f"| {name} | {r['videos_per_s']:.2f} | {r['videos_per_s'] / base:.2f}x | {r['achieved_gflops']:.0f} "
            f"| {r['peak_gflops']:.0f} | {r['achieved_gflops'] / r['peak_gflops']:.0%} |"
        )
    fastest = max(results, key=lambda name: results[name]["videos_per_s"])
    speedup = results[fastest]["videos_per_s"] / base
    print(f"fastest: {fastest}, {speedup:.2f}x torch fp32")
    if cpu_has_native_bf16():
        print(f"this CPU has native bf16; the goal of >= {GOAL_WITHOUT_NATIVE_BF16}x torch fp32 is for CPUs without it")
    else:
        verdict = "met" if speedup >= GOAL_WITHOUT_NATIVE_BF16 else "not met"
        print(f"no native bf16: goal of >= {GOAL_WITHOUT_NATIVE_BF16}x torch fp32 {verdict} ({speedup:.2f}x)")
    schemes = int8_schemes(*config, rounds=args.iterations)
    print("| ONNX Runtime graph | videos/s | smallest cosine to fp32 | largest change of video 1 when videos 2.. change |")
    print("|---|---|---|---|")
    for name, r in schemes.items():
        print(f"| {name} | {r['videos_per_s']:.2f} | {r['min_cosine_to_fp32']:.6f} | {r['batch_dependence']:.1e} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_model(),
                    "flags": cpu_flags(),
                    "native_bf16": cpu_has_native_bf16(),
                    "fastest": fastest,
                    "fastest_x_torch_fp32": speedup,
                    "results": results,
                    "int8_schemes": schemes,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
