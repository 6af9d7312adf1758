"""ONNX fp32 and int8 against PyTorch on the offline demo's evaluation sets, per variant.

Each video-text variant of ``actionclip demo`` is fine-tuned as the demo does it (same seed, videos and steps; the
pre-trained tiny CLIPs are taken from ``--demo DIR``, the output of ``actionclip demo --output DIR``, when there,
otherwise pre-trained here), exported with ``actionclip export``'s code, and its three evaluation sets (supervised,
zero-shot, generalised zero-shot) scored by PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8. Printed per
variant: top-1 agreement of ONNX fp32 with PyTorch and of int8 with ONNX fp32, the largest probability difference,
and the smallest cosine between int8 and fp32 video embeddings. The unimodal variant has no text tower and no export.
``--held-out N`` also scores N fresh clips of every class, drawn from another stream than the demo's sets, against
all classes (fp32 against int8 only), to see how much the figures on the demo's 384 videos owe to the draw.

    python benchmarks/onnx_demo_agreement.py [--demo DIR] [--workdir DIR] [--quick] [--variants a,b] [--held-out N]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from actionclip.data.synthetic import class_text
from actionclip.data.transforms import normalize
from actionclip.demo.recipes import MODEL_NAMES, VARIANTS, DemoConfig, build_variant, finetune, model_config, quick_config
from actionclip.demo.report import class_probabilities, pretrain_key
from actionclip.demo.run import pretrain_step
from actionclip.demo.world import all_classes, render_videos, splits
from actionclip.engine.pretrain import check_captions_fit
from actionclip.export.directory import export_model
from actionclip.models.backbone import register_model_config
from actionclip.onnx_runtime.runtime import ExportedModel
from actionclip.prompts import ACTIONCLIP_TEMPLATES, fill_templates

HELD_OUT_STREAM = 7  # the demo draws its training clips from stream 3 and its test clips from stream 4


def evaluation_sets(config: DemoConfig) -> dict:
    """The demo's evaluation sets (``run_variant``'s): seen classes, unseen ones, unseen against all classes."""
    train_classes, unseen_classes = splits()
    zero_shot = render_videos(unseen_classes, config.test_draws, config.seed, stream=4)
    classes = all_classes()
    return {
        "supervised": render_videos(train_classes, config.test_draws, config.seed, stream=4),
        "zero_shot": zero_shot,
        "generalized_zero_shot": replace(
            zero_shot, classes=classes, labels=torch.tensor([classes.index(unseen_classes[i]) for i in zero_shot.labels])
        ),
    }


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def compare(key: str, clip_path: Path, config: DemoConfig, sets: dict, workdir: Path, held_out) -> dict:
    variant = VARIANTS[key]
    train = render_videos(splits()[0], config.train_draws, config.seed, stream=3)
    model = build_variant(variant, clip_path, len(splits()[0]), config.seed)
    finetune(model, variant, train, config, config.seed)
    directory = export_model(model, workdir / key, "int8")
    fp32, int8 = ExportedModel(directory, "fp32"), ExportedModel(directory, "int8")
    row = {
        "videos": 0,
        "torch_vs_onnx_fp32_top1": 0,
        "onnx_fp32_vs_int8_top1": 0,
        "max_prob_diff_fp32": 0.0,
        "max_prob_diff_int8": 0.0,
        "min_cosine_int8": 1.0,
    }
    for videos in sets.values():
        reference = class_probabilities(model, variant, videos).numpy()
        frames = normalize(videos.frames).numpy()
        text = fp32.class_text_features(videos.names, variant.templates)
        full, low = fp32.video_probabilities(frames, text), int8.video_probabilities(frames, text)
        row["videos"] += len(frames)
        row["torch_vs_onnx_fp32_top1"] += int((reference.argmax(1) == full.argmax(1)).sum())
        row["onnx_fp32_vs_int8_top1"] += int((full.argmax(1) == low.argmax(1)).sum())
        row["max_prob_diff_fp32"] = max(row["max_prob_diff_fp32"], float(np.abs(reference - full).max()))
        row["max_prob_diff_int8"] = max(row["max_prob_diff_int8"], float(np.abs(full - low).max()))
        row["min_cosine_int8"] = min(
            row["min_cosine_int8"], float(cosines(int8.encode_video(frames)[0], fp32.encode_video(frames)[0]).min())
        )
    for name in ("torch_vs_onnx_fp32_top1", "onnx_fp32_vs_int8_top1"):
        row[name] /= row["videos"]
    if held_out is not None:
        frames = normalize(held_out.frames).numpy()
        text = fp32.class_text_features(held_out.names, variant.templates)
        full, low = fp32.video_probabilities(frames, text), int8.video_probabilities(frames, text)
        row["held_out"] = {
            "videos": len(frames),
            "onnx_fp32_vs_int8_top1": float((full.argmax(1) == low.argmax(1)).mean()),
            "min_cosine_int8": float(cosines(int8.encode_video(frames)[0], fp32.encode_video(frames)[0]).min()),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="an `actionclip demo --output` directory whose pre-trained CLIPs to use")
    parser.add_argument("--workdir", type=Path, default=Path("runs/onnx_demo_agreement"))
    parser.add_argument("--quick", action="store_true", help="the demo's --quick settings")
    parser.add_argument("--variants", help="comma-separated subset (default: every video-text variant)")
    parser.add_argument(
        "--held-out",
        type=int,
        default=0,
        metavar="N",
        help="also score N more clips of every class, from another stream, against all classes",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    config = quick_config() if args.quick else DemoConfig()
    keys = args.variants.split(",") if args.variants else [k for k in VARIANTS if VARIANTS[k].arch != "unimodal"]
    labels = [class_text(*c) for c in all_classes()]
    context_length = check_captions_fit(fill_templates(ACTIONCLIP_TEMPLATES, labels) + labels, 77)
    for tower, name in MODEL_NAMES.items():
        register_model_config(name, model_config(context_length, tower))
    torch.manual_seed(config.seed)
    clips = {}
    for tower in {VARIANTS[k].tower for k in keys}:
        existing = args.demo / pretrain_key(tower) / "clip.pt" if args.demo else None
        clips[tower] = existing if existing and existing.is_file() else pretrain_step(config, args.workdir, context_length, tower, print)[0]
    sets = evaluation_sets(config)
    held_out = render_videos(all_classes(), args.held_out, config.seed, stream=HELD_OUT_STREAM) if args.held_out else None
    results = {}
    for key in keys:
        start = time.perf_counter()
        results[key] = compare(key, clips[VARIANTS[key].tower], config, sets, args.workdir, held_out)
        print(f"{key}: {json.dumps(results[key])} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(
        "| variant | videos | ONNX fp32 = PyTorch top-1 | int8 = fp32 top-1 | max prob diff fp32 | max prob diff int8 | min cosine int8 |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, r in results.items():
        print(
            f"| {key} | {r['videos']} | {r['torch_vs_onnx_fp32_top1']:.2%} | {r['onnx_fp32_vs_int8_top1']:.2%} "
            f"| {r['max_prob_diff_fp32']:.1e} | {r['max_prob_diff_int8']:.3f} | {r['min_cosine_int8']:.5f} |"
        )
    if held_out is not None:
        print("| variant | held-out videos | int8 = fp32 top-1 | min cosine int8 |")
        print("|---|---|---|---|")
        for key, r in results.items():
            h = r["held_out"]
            print(f"| {key} | {h['videos']} | {h['onnx_fp32_vs_int8_top1']:.2%} | {h['min_cosine_int8']:.5f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
