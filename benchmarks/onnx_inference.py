"""The four CPU paths in one run on the same weights: torch fp32, torch bf16, ONNX Runtime fp32, ONNX Runtime int8.

ViT-B/32, Transf, 8 frames, batch 8 by default, random weights (nothing is downloaded; each path builds the model
from the same seed). Model only (``encode_video`` on random normalised frames, what ``actionclip benchmark``
measures), each against its own same-process matmul peak: torch's dense matmul in fp32 or bf16, ONNX Runtime's MatMul
in fp32 or its dynamically quantised int8 MatMul (see :mod:`actionclip.apps.onnx_benchmark`). Prints the CPU model,
its matrix-relevant flags and the threads, then a table, and which path is fastest.

    python benchmarks/onnx_inference.py [--model ViT-B-32] [--iterations 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import onnxruntime as ort
import torch

from actionclip.apps.benchmark import benchmark
from actionclip.apps.onnx_benchmark import cpu_model, onnx_benchmark

FLAGS = re.compile(r"^(avx2|fma|avx512f|avx512_vnni|avx_vnni|avx512_bf16|amx_bf16|amx_int8|amx_tile)$")


def cpu_flags() -> list[str]:
    """The CPU flags that decide which matmul kernels run (AVX2/FMA, AVX-512, VNNI for int8, BF16 and AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return sorted({flag for flag in line.split(":", 1)[-1].split() if FLAGS.match(flag)})


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
    print(f"{args.model}, {args.visual_prompt}, {args.frames} frames, batch {args.batch_size}, random weights; "
          f"CPU: {cpu_model()}, flags: {' '.join(cpu_flags())}; torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), ONNX Runtime {ort.__version__}")
    print("| path | videos/s | x torch fp32 | achieved GFLOP/s | peak GFLOP/s (same-process matmul, same dtype) | share of peak |")
    print("|---|---|---|---|---|---|")
    base = results["torch fp32"]["videos_per_s"]
    for name, r in results.items():
        print(f"| {name} | {r['videos_per_s']:.2f} | {r['videos_per_s'] / base:.2f}x | {r['achieved_gflops']:.0f} "
              f"| {r['peak_gflops']:.0f} | {r['achieved_gflops'] / r['peak_gflops']:.0%} |")
    fastest = max(results, key=lambda name: results[name]["videos_per_s"])
    print(f"fastest: {fastest}, {results[fastest]['videos_per_s'] / base:.2f}x torch fp32")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "flags": cpu_flags(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
