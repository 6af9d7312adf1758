"""GFLOPs of X-CLIP (default: X-CLIP-B/32, 8 frames at 224 px, batch 1), built with random weights (no download).

GFLOPs here are multiply-accumulates, the convention of fvcore and of the X-CLIP paper (39 GFLOPs for B/32 8f):
torch.utils.flop_counter.FlopCounterMode counts a multiply-add as 2 FLOPs, so its total is halved. Like fvcore it
counts matmuls, linears, convolutions and attention, not normalisations or activations. Two figures:

- the video encoder alone (cross-frame ViT, MIT, projection of the patch tokens for the prompt generator);
- the whole test-time path for ``--classes`` classes from cached class text features (video encoder, prompt generator
  and logits): X-CLIP encodes the class texts once per class list, so the text encoder is not part of a video's cost.

    PYTHONPATH=src python benchmarks/xclip_flops.py [--model ViT-B-32] [--frames 8] [--classes 400]
"""

from __future__ import annotations

import argparse

import torch

import actionclip
from actionclip.benchmark.throughput import count_gmacs

PAPER_GFLOPS = {("ViT-B-32", 8): 39, ("ViT-B-32", 16): 75, ("ViT-B-16", 8): 145, ("ViT-B-16", 16): 287}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--classes", type=int, default=400)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = actionclip.create_model(args.model, arch="xclip", num_frames=args.frames, quick_gelu=True).eval()
    size = model.config.clip["vision_cfg"]["image_size"]
    video = torch.randn(1, args.frames, 3, size, size)
    text_features = torch.randn(args.classes, model.config.clip["embed_dim"])
    video_only = count_gmacs(lambda: model.encode_video(video))
    with_prompts = count_gmacs(lambda: model.logits_from_text_features(video, text_features))

    print(f"X-CLIP {args.model}, {args.frames} frames at {size}px, batch 1")
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M")
    print(f"video encoder: {video_only:.2f} GFLOPs")
    print(f"video encoder + prompt generator + logits for {args.classes} classes: {with_prompts:.2f} GFLOPs")
    paper = PAPER_GFLOPS.get((args.model, args.frames))
    if paper:
        print(f"paper: {paper} GFLOPs -> {100 * (video_only / paper - 1):+.1f}% / {100 * (with_prompts / paper - 1):+.1f}%")


if __name__ == "__main__":
    main()
