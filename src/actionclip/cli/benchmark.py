"""``actionclip benchmark``: parameters, MACs and videos/s of a configuration (the paper's Table 7)."""

from __future__ import annotations

import json
import sys

from actionclip.cli.options import check_minimums


def add_commands(sub) -> None:
    _add_benchmark(sub)


def _add_benchmark(sub) -> None:
    bench = sub.add_parser("benchmark", help="parameters, GFLOPs per video and videos/s of a configuration (the paper's Table 7)")
    bench.add_argument(
        "--model", default="ViT-B-32", help="open_clip model name, built with random weights in the OpenAI architecture (default: ViT-B-32)"
    )
    bench.add_argument("--visual-prompt", default="Transf", help="ActionCLIP's temporal module (default: Transf)")
    bench.add_argument("--arch", choices=("actionclip", "xclip"), default="actionclip")
    bench.add_argument("--frames", type=int, default=8, help="frames per video (default: 8)")
    bench.add_argument("--batch-size", type=int, default=8, help="videos per batch for the timings (default: 8)")
    bench.add_argument("--iterations", type=int, default=10, help="timed batches, after warm-up (default: 10)")
    bench.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    bench.add_argument(
        "--precision",
        default="fp32",
        choices=("auto", "fp32", "bf16", "fp16", "int8"),
        help="weights' precision; int8 with --runtime onnx (default: fp32)",
    )
    bench.add_argument(
        "--runtime", default="torch", choices=("torch", "onnx"), help="onnx: the exported video graph in ONNX Runtime (default: torch)"
    )
    bench.add_argument("--video", action="append", help="video file or folder: also time decode + transform + model (repeatable)")
    bench.add_argument("--workers", type=int, default=2, help="decoding worker processes for --video (default: 2)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=_benchmark)


def _benchmark(args) -> int:
    from actionclip.benchmark.throughput import benchmark, format_benchmark
    from actionclip.host.distributed import parse_device

    try:
        check_minimums(args, {"--frames": 1, "--batch-size": 1, "--iterations": 1, "--workers": 0})
        if args.runtime == "onnx":
            from actionclip.benchmark.onnx_throughput import onnx_benchmark

            result = onnx_benchmark(
                args.model,
                args.visual_prompt,
                args.frames,
                args.batch_size,
                args.arch,
                args.iterations,
                args.precision,
                args.video,
                args.workers,
            )
        else:
            result = benchmark(
                args.model,
                args.visual_prompt,
                args.frames,
                args.batch_size,
                args.arch,
                parse_device(args.device, "--device"),
                args.iterations,
                args.video,
                args.workers,
                args.precision,
            )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_benchmark(result))
    return 0
