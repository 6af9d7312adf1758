"""Inference speed in both precisions, model only and end to end from files, each as a share of this machine's limit.

For fp32 and bf16 weights: ``actionclip benchmark``'s figures for ViT-B/32, Transf, 8 frames, batch 8 (random
weights), with the end-to-end run over a folder of generated 10-second 340x256 30 fps H.264 videos (x264 defaults,
GOP 250, or a key frame every ``--gop`` frames; the scene of ``benchmarks/data_loader.py``) decoded in ``--workers``
DataLoader processes, as ``actionclip predict`` does. The videos are written once into ``--workdir`` and reused.

On a CPU, decoding cannot hide behind the model: both want the same cores. So the script also prints the CPU
time per video of each: the model's (all its threads, from ``actionclip benchmark``) and the loader's (decode,
sample, transform, measured in this process on one thread as a DataLoader worker runs).

    python benchmarks/inference.py [--videos 32] [--gop N] [--workers 2] [--iterations 8] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from actionclip.benchmark.throughput import benchmark
from actionclip.data import write_video
from actionclip.inference.inputs import collect_videos, video_clips
from data_loader import FPS, scene


def make_videos(folder: Path, count: int, gop: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(count), desc="writing videos"):
        path = folder / f"video_{i:03d}.mp4"
        if not path.exists():
            write_video(path.with_suffix(".tmp.mp4"), scene(seed=i), fps=FPS, gop=gop).rename(path)
    return folder


def loader_cpu_s_per_video(folder: Path, frames: int = 8, size: int = 224) -> float:
    """CPU seconds to decode, sample and transform one video, as a DataLoader worker does (one thread)."""
    dataset = video_clips(collect_videos(folder), frames, size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.process_time()
    for index in tqdm(range(len(dataset)), desc="loader CPU time"):
        dataset[index]
    torch.set_num_threads(threads)
    return (time.process_time() - start) / len(dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--gop", type=int, help="key-frame interval of the generated videos (default: x264's, 250)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=8, help="timed batches of 8 videos (default: 8)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_inference"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    folder = make_videos(args.workdir / (f"videos_gop{args.gop}" if args.gop else "videos"), args.videos, args.gop)
    loader_cpu = loader_cpu_s_per_video(folder)
    results = {}
    for precision in args.precisions.split(","):
        results[precision] = benchmark(
            args.model, "Transf", 8, 8, device="cpu", iterations=args.iterations, video=folder, workers=args.workers, precision=precision
        )
        results[precision]["loader_cpu_s_per_video"] = loader_cpu
    print(
        f"{args.model}, Transf, 8 frames, batch 8, {next(iter(results.values()))['device_name']}; end to end: "
        f"{args.videos} files, GOP {args.gop or 250}, {args.workers} workers; loader {1000 * loader_cpu:.0f} ms CPU per video"
    )
    print(
        "| weights | model-only videos/s | achieved GFLOP/s | peak GFLOP/s (dense matmul) | share of peak "
        "| model CPU ms per video | end-to-end videos/s | end to end / model only |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for precision, r in results.items():
        print(
            f"| {precision} | {r['videos_per_s']:.2f} | {r['achieved_gflops']:.0f} | {r['peak_gflops']:.0f} "
            f"| {r['achieved_gflops'] / r['peak_gflops']:.0%} | {1000 * r['cpu_s_per_video']:.0f} "
            f"| {r['videos_per_s_end_to_end']:.2f} | {r['videos_per_s_end_to_end'] / r['videos_per_s']:.0%} |"
        )
    if {"fp32", "bf16"} <= results.keys():
        print(f"bf16 / fp32, model only: {results['bf16']['videos_per_s'] / results['fp32']['videos_per_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
