"""Videos/s of the train-time pipeline (decode + TSN sampling + TrainTransform) against a naive decoder.

The clips are 10-second 340x256 30 fps H.264 videos (a panning textured background, moving blobs and
sensor-like noise), written once with x264's default settings (GOP 250) and once with a 1-second GOP.
"sparse" is ``VideoDataset`` as shipped; "naive" is the same dataset whose reader decodes every frame
to RGB and then picks the sampled ones (what ``torchvision.io.read_video`` or a plain PyAV loop does).

    python benchmarks/data_loader.py [--videos 6] [--repeats 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader

from actionclip.data import Sample, VideoDataset, collate_skip_bad, write_video

WIDTH, HEIGHT, FPS, SECONDS = 340, 256, 30, 10


def scene(seed: int, n: int = FPS * SECONDS) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    big_h, big_w = HEIGHT + 64, WIDTH + 320
    y, x = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
    background = 110 + rng.normal(0, 6, (big_h, big_w, 3)).astype(np.float32)
    for c in range(3):
        for _ in range(4):
            fx, fy, phase = rng.uniform(0.005, 0.05), rng.uniform(0.005, 0.05), rng.uniform(0, 2 * np.pi)
            background[..., c] += 30 * np.sin(fx * x + fy * y + phase)
    blobs = [
        (rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(-4, 4), rng.uniform(-3, 3), rng.uniform(10, 40), rng.uniform(0, 255, 3))
        for _ in range(5)
    ]
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for i in range(n):
        ox, oy = i % 320, int(32 + 24 * np.sin(i / 25))
        image = background[oy : oy + HEIGHT, ox : ox + WIDTH].copy()
        for bx, by, vx, vy, r, colour in blobs:
            cx, cy = (bx + vx * i) % WIDTH, (by + vy * i) % HEIGHT
            image[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = colour
        image += rng.normal(0, 3, image.shape)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


class NaiveVideoDataset(VideoDataset):
    """Decodes every frame of the video to RGB, then samples."""

    def _read(self, sample, rng):
        with av.open(sample.path) as container:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        return [frames[clip] for clip in self._indices(len(frames), rng)]


def videos_per_second(dataset: VideoDataset, workers: int) -> float:
    loader = DataLoader(dataset, batch_size=2, num_workers=workers, collate_fn=collate_skip_bad)
    batches = iter(loader)
    first = next(batches)  # exclude worker start-up
    start = time.perf_counter()
    count = 0
    for batch in batches:
        assert not batch.bad
        count += len(batch.frames)
    assert not first.bad
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6, help="clips per GOP setting")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the clips per measurement")
    parser.add_argument("--workdir", help="where to write the clips (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per loading process, as in a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        variants = {"x264 default (GOP 250)": None, "GOP 30": 30}
        clips = {}
        for name, gop in variants.items():
            clips[name] = []
            for i in range(args.videos):
                path = root / f"clip{i}_gop{gop or 'default'}.mp4"
                if not path.exists():
                    write_video(path, scene(i), fps=FPS, gop=gop)
                clips[name].append(Sample(str(path), 0))
        print(
            f"{args.videos} clips per setting, {SECONDS} s, {WIDTH}x{HEIGHT}, {FPS} fps; "
            f"train pipeline: decode + TSN sampling + TrainTransform(224); videos/s"
        )
        print(f"{'encoding':<24}{'T':>4}{'workers':>9}{'sparse':>10}{'naive':>10}{'speedup':>9}")
        for name, samples in clips.items():
            for T in (8, 32):
                for workers in (0, 2):
                    rates = []
                    for cls in (VideoDataset, NaiveVideoDataset):
                        dataset = cls(samples * args.repeats, ["a"], num_frames=T, mode="train", seed=0)
                        rates.append(videos_per_second(dataset, workers))
                    print(f"{name:<24}{T:>4}{workers:>9}{rates[0]:>10.1f}{rates[1]:>10.1f}{rates[0] / rates[1]:>8.1f}x", flush=True)


if __name__ == "__main__":
    main()
