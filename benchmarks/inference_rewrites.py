"""What two of ``prepare_for_inference``'s rewrites buy, each timed against the code it replaces, in fp32 and bf16.

- BatchNorm folded into the convolutions of a ResNet (RN50, MeanP, 8 frames, batch 4, random weights): the video
  encoder prepared as usual, and prepared with the folding left out.
- A ViT's patch embedding as one matmul over the unfolded patches (``PatchEmbeddingMatmul``) against the strided
  convolution it replaces: ViT-B/32's, over the 64 frames of a batch of 8 videos of 8 frames, on one thread.

The two sides run in alternation, ``--rounds`` times each, so that both see the same machine; the script prints the
median seconds of each and their ratio.

    python benchmarks/inference_rewrites.py [--rounds 5] [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from unittest import mock

import torch
import torch.nn.functional as F

from actionclip.benchmark.throughput import build_random_model
from actionclip.host.devices import cpu_has_native_bf16
from actionclip.models import precision


def alternate(first, second, rounds: int) -> tuple[float, float]:
    """Median seconds of ``first()`` and of ``second()``, called in turn ``rounds`` times after one warm-up each."""
    times = ([], [])
    for call in (first, second):
        call()
    for _ in range(rounds):
        for call, spent in zip((first, second), times):
            start = time.perf_counter()
            call()
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


@torch.inference_mode()
def batch_norm_folding(precision_name: str, rounds: int) -> tuple[float, float]:
    model = build_random_model("RN50", "MeanP", 8)
    unfolded = copy.deepcopy(model)
    precision.prepare_for_inference(model, precision_name)
    with mock.patch.object(precision, "fold_batch_norms", lambda module: module):
        precision.prepare_for_inference(unfolded, precision_name)
    video = torch.randn(4, 8, 3, 224, 224)
    return alternate(lambda: model.encode_video(video), lambda: unfolded.encode_video(video), rounds)


@torch.inference_mode()
def patch_embedding(precision_name: str, rounds: int) -> tuple[float, float]:
    conv = build_random_model("ViT-B-32", "MeanP", 8).video.visual.conv1.to(precision.DTYPES[precision_name])
    matmul = copy.deepcopy(conv)
    matmul.__class__ = precision.PatchEmbeddingMatmul
    frames = torch.randn(64, 3, 224, 224, dtype=conv.weight.dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return alternate(lambda: matmul(frames), lambda: F.conv2d(frames, conv.weight, conv.bias, conv.stride), rounds)
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}")
    for name in args.precisions.split(","):
        folded, unfolded = batch_norm_folding(name, args.rounds)
        print(
            f"{name} RN50 video encoder, batch 4 x 8 frames: BatchNorm folded {folded:.3f} s, unfolded {unfolded:.3f} s "
            f"({unfolded / folded:.2f}x)"
        )
        as_matmul, as_conv = patch_embedding(name, args.rounds)
        print(
            f"{name} ViT-B/32 patch embedding, 64 frames, 1 thread: matmul {1000 * as_matmul:.1f} ms, convolution "
            f"{1000 * as_conv:.1f} ms ({as_conv / as_matmul:.2f}x)"
        )


if __name__ == "__main__":
    main()
