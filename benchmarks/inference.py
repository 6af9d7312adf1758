"""Inference speed in both precisions, model only and end to end from files, each as a share of this machine's limit.

For fp32 and bf16 weights: ``actionclip benchmark``'s figures for ViT-B/32, Transf, 8 frames, batch 8 (random
weights), with the end-to-end run over a folder of generated 10-second 340x256 30 fps H.264 videos (x264 defaults,
GOP 250; the scene of ``benchmarks/data_loader.py``) decoded in ``--workers`` DataLoader processes, as
``actionclip predict`` does. The videos are written once into ``--workdir`` and reused.

    python benchmarks/inference.py [--videos 32] [--workers 2] [--iterations 8] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_loader import FPS, scene
from tqdm import tqdm

from actionclip.benchmark import benchmark
from actionclip.data import write_video


def make_videos(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(count), desc="writing videos"):
        path = folder / f"video_{i:03d}.mp4"
        if not path.exists():
            write_video(path.with_suffix(".tmp.mp4"), scene(seed=i), fps=FPS).rename(path)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=8, help="timed batches of 8 videos (default: 8)")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_inference"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    folder = make_videos(args.workdir / "videos", args.videos)
    results = {}
    for precision in args.precisions.split(","):
        results[precision] = benchmark(args.model, "Transf", 8, 8, device="cpu", iterations=args.iterations,
                                       video=folder, workers=args.workers, precision=precision)
    print(f"{args.model}, Transf, 8 frames, batch 8, {next(iter(results.values()))['device_name']}; end to end: "
          f"{args.videos} files, {args.workers} workers")
    print("| weights | model-only videos/s | end-to-end videos/s | end to end / model only | achieved GFLOP/s "
          "| peak GFLOP/s (dense matmul) | share of peak |")
    print("|---|---|---|---|---|---|---|")
    for precision, r in results.items():
        print(f"| {precision} | {r['videos_per_s']:.2f} | {r['videos_per_s_end_to_end']:.2f} "
              f"| {r['videos_per_s_end_to_end'] / r['videos_per_s']:.0%} | {r['achieved_gflops']:.0f} "
              f"| {r['peak_gflops']:.0f} | {r['achieved_gflops'] / r['peak_gflops']:.0%} |")
    if {"fp32", "bf16"} <= results.keys():
        print(f"bf16 / fp32, model only: {results['bf16']['videos_per_s'] / results['fp32']['videos_per_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
