"""Memory at Kinetics scale: a 240,000-entry, 400-class video list, DataLoader workers, and 10x3 evaluation.

1. Dataset build time for a Kinetics-sized list (``<video> <label>`` lines, Kinetics-style paths) whose entries
   point at a few hundred short generated videos.
2. The private memory (USS: Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup) of every DataLoader worker
   after a shuffled pass of a few hundred training batches: what each forked worker copied of the parent.
3. Peak RSS of a 10 clips x 3 crops, 32-frame evaluation of a tiny model (``actionclip-tiny-vit``, 32 px) at
   several eval batch sizes, each in a fresh process (the high-water mark only grows; ``VmHWM``, which, unlike
   ``ru_maxrss``, does not inherit the parent's peak across fork + exec), DataLoader in-process.

It uses only APIs that older versions have too, so "before" figures come from the same script run against an
older source tree:

    python benchmarks/scale.py [--entries 240000] [--classes 400] [--videos 300] [--batches 300] [--workers 2]
    git archive <commit> src | tar -x -C /tmp/old && PYTHONPATH=/tmp/old/src python benchmarks/scale.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from actionclip.data import ThreeCropTransform, TrainTransform, VideoDataset, collate_skip_bad, write_video
from actionclip.data.annotations import video_list_dataset

FRAMES, SIZE = 32, 32


def write_videos(root: Path, count: int, classes: int) -> list[str]:
    """``count`` lossless 32-frame 48x64 videos under Kinetics-style names; their paths relative to ``root``."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        youtube_id = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"), 11))
        relative = f"train/class_{i % classes:03d}_name/{youtube_id}_{i:06d}_{i + 10:06d}.mp4"
        if not (root / relative).exists():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            write_video(root / relative, rng.integers(0, 256, (FRAMES, 48, 64, 3), dtype=np.uint8), lossless=True)
        paths.append(relative)
    return paths


def write_list(root: Path, paths: list[str], entries: int, classes: int) -> tuple[Path, Path]:
    list_file, classes_file = root / f"train_{entries}.txt", root / f"classes_{classes}.txt"
    list_file.write_text("".join(f"{paths[i % len(paths)]} {i % classes}\n" for i in range(entries)))
    classes_file.write_text("".join(f"class {c} name\n" for c in range(classes)))
    return list_file, classes_file


def uss_kb(pid: int) -> int:
    """Private (unique) memory of a process: what it does not share with its parent or anyone else."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    return int(fields["Private_Clean"].split()[0]) + int(fields["Private_Dirty"].split()[0])


def children() -> list[int]:
    return [int(pid) for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()]


def peak_rss_kb() -> int:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmHWM"].split()[0])


def worker_memory(root: Path, list_file: Path, classes_file: Path, batches: int, batch_size: int, workers: int) -> dict:
    started = time.perf_counter()
    samples, names = video_list_dataset(list_file, classes_file, root)
    dataset = VideoDataset(samples, names, num_frames=8, mode="train", transform=TrainTransform(size=SIZE), seed=0)
    del samples
    build_s = time.perf_counter() - started
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        generator=torch.Generator().manual_seed(0),
    )
    batch_iterator = iter(loader)
    started = time.perf_counter()
    for _ in range(batches):
        batch = next(batch_iterator)
    pass_s = time.perf_counter() - started
    worker_uss = sorted(uss_kb(pid) for pid in children())
    return {
        "entries": len(dataset),
        "build_s": round(build_s, 2),
        "pass_s": round(pass_s, 1),
        "batch_dtype": str(batch.frames.dtype),
        "batch_mb": round(batch.frames.numel() * batch.frames.element_size() / 2**20, 2),
        "worker_uss_mb": [round(kb / 1024, 1) for kb in worker_uss],
    }


def evaluation_peak(root: Path, paths: list[str], batch_size: int) -> dict:
    """Run in a fresh process: peak RSS of a 10x3 evaluation of ``batch_size`` videos a batch (two batches)."""
    from actionclip import create_model
    from actionclip.data import Sample
    from actionclip.engine.evaluate import predict_dataset

    model = create_model("actionclip-tiny-vit", visual_prompt="MeanP", num_frames=FRAMES, seed=0).eval()
    samples = [Sample(str(root / paths[i % len(paths)]), i % 4) for i in range(2 * batch_size)]
    dataset = VideoDataset(
        samples, ["a", "b", "c", "d"], num_frames=FRAMES, mode="test", num_clips=10, transform=ThreeCropTransform(size=SIZE)
    )
    before = peak_rss_kb()
    started = time.perf_counter()
    predict_dataset(model, dataset, dataset.classes, batch_size=batch_size, workers=0, progress=False)
    peak = peak_rss_kb()
    return {
        "eval_batch": batch_size,
        "videos": len(dataset),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_before_mb": round(before / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=240_000)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--eval-batches", default="1,4,16", help="eval batch sizes, comma-separated")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "actionclip_scale")
    parser.add_argument("--eval-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = write_videos(args.workdir, args.videos, args.classes)
    if args.eval_child:
        print(json.dumps(evaluation_peak(args.workdir, paths, args.eval_child)))
        return
    torch.set_num_threads(1)
    list_file, classes_file = write_list(args.workdir, paths, args.entries, args.classes)
    print(json.dumps(worker_memory(args.workdir, list_file, classes_file, args.batches, args.batch_size, args.workers)))
    for batch_size in (int(b) for b in args.eval_batches.split(",")):
        command = [
            sys.executable,
            __file__,
            "--eval-child",
            str(batch_size),
            "--videos",
            str(args.videos),
            "--classes",
            str(args.classes),
            "--workdir",
            str(args.workdir),
        ]
        print(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
