"""The demo's evaluation and report: accuracy over held-out videos, the pre-training check, bf16 agreement, the
printed table and ``results.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from actionclip.data.synthetic import SHAPES, class_text
from actionclip.data.transforms import normalize
from actionclip.demo.recipes import MODEL_NAMES, VARIANTS, Variant
from actionclip.demo.world import COLOURS, Videos, all_classes, check_images
from actionclip.engine.evaluate import predict_dataset
from actionclip.models.text import make_tokenizer


class _Items(Dataset):
    """(uint8 video, label) items for ``predict_dataset``, which normalises them with CLIP's statistics."""

    def __init__(self, videos: Videos):
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos.labels)

    def __getitem__(self, i: int):
        return self.videos.frames[i], int(self.videos.labels[i])


def class_probabilities(model, variant: Variant, videos: Videos) -> torch.Tensor:
    """``[N, len(videos.classes)]``: each video's probabilities over the classes."""
    return predict_dataset(model, _Items(videos), videos.names, templates=variant.templates, batch_size=64, progress=False).probabilities


def scores(predicted: torch.Tensor, videos: Videos) -> dict:
    """top-1 over ``videos.classes``, and how often the predicted class has the right colour and shape
    ("appearance") and the right motion."""
    pairs = [(videos.classes[p], videos.classes[t]) for p, t in zip(predicted.tolist(), videos.labels.tolist())]
    return {
        "top1": predicted.eq(videos.labels).float().mean().item(),
        "appearance": float(np.mean([p[:2] == t[:2] for p, t in pairs])),
        "motion": float(np.mean([p[2] == t[2] for p, t in pairs])),
    }


def bf16_agreement(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """Over (fp32, bf16) probability pairs ``[N, C]`` (C may differ between pairs): how often bf16 picks fp32's
    top-1 class, and the largest fp32 margin (top-1 minus top-2 probability) among the videos where it does not,
    i.e. how near to a tie a video must be for bf16 rounding to flip it."""
    flips, margins = [], []
    for full, low in pairs:
        flipped = full.argmax(dim=1) != low.argmax(dim=1)
        top2 = full.topk(2, dim=1).values
        flips.append(flipped)
        margins += (top2[:, 0] - top2[:, 1])[flipped].tolist()
    return 1 - torch.cat(flips).float().mean().item(), max(margins, default=0.0)


def single_image_accuracy(clip, images: torch.Tensor, targets: torch.Tensor, texts: list[str], tokenize) -> float:
    with torch.no_grad():
        image_features = clip.encode_image(normalize(images), normalize=True)
        text_features = clip.encode_text(tokenize(texts), normalize=True)
    return (image_features @ text_features.t()).argmax(dim=1).eq(targets).float().mean().item()


def check_pretrained(clip: nn.Module, clip_config: dict, per_pair: int, seed: int) -> dict:
    """Zero-shot accuracy of a pre-trained tiny CLIP on fresh still frames over every colour x shape, and on fresh
    motion trails over every class, with the chance levels."""
    stills, still_targets, trails, trail_targets = check_images(per_pair, seed)
    tokenize = make_tokenizer(clip_config)
    pairs = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    classes = [class_text(*c) for c in all_classes()]
    return {
        "single_image_zero_shot_top1": single_image_accuracy(clip, stills, still_targets, pairs, tokenize),
        "single_image_chance": 1 / len(pairs),
        "motion_trail_zero_shot_top1": single_image_accuracy(clip, trails, trail_targets, classes, tokenize),
        "motion_trail_chance": 1 / len(classes),
    }


def pretrain_key(tower: str) -> str:
    """The folder of a tower's pre-trained CLIP in the output, and its key in results.json."""
    return "pretrain" if tower == "resnet" else f"pretrain_{tower}"


def format_table(results: dict) -> str:
    """The printed table: one row per variant, chance levels in the header."""
    keys = [k for k in VARIANTS if k in results]
    any_row = results[keys[0]]
    sup_chance, zs_chance = any_row["chance"]["supervised_top1"], any_row["chance"]["zero_shot_top1"]
    run = results["run"]
    header = (
        f"| variant | what it tests | supervised top-1 ({run['classes']['train']}-way, chance {sup_chance:.1%}) | motion correct "
        f"| zero-shot top-1 on unseen ({run['classes']['unseen']}-way, chance {zs_chance:.1%}) | train+eval s |"
    )
    lines = [
        f"pre-trained tiny CLIP ({tower}), single-image zero-shot colour x shape: {pretrain['single_image_zero_shot_top1']:.1%} "
        f"(chance {pretrain['single_image_chance']:.1%})"
        for tower in MODEL_NAMES
        if (pretrain := results.get(pretrain_key(tower)))
    ]
    lines += [header, "|---|---|---|---|---|---|"]
    for key in keys:
        row = results[key]
        zero_shot = "n/a (no text)" if row["zero_shot_top1"] is None else f"{row['zero_shot_top1']:.1%}"
        lines.append(
            f"| {key} | {row['paper']} | {row['supervised_top1']:.1%} | {row['supervised_motion']:.1%} | {zero_shot} | {row['wall_s']:.0f} |"
        )
    agreement = [results[key]["bf16_top1_agreement"] for key in keys]
    margin = max(results[key]["bf16_largest_flipped_margin"] for key in keys)
    lines.append(
        f"bf16 weights (as predict --precision bf16) give fp32's top-1 class on {min(agreement):.1%} to "
        f"{max(agreement):.1%} of the evaluation videos, by variant; where they differ, fp32's top two "
        f"classes were at most {margin:.3f} apart in probability"
    )
    lines.append(
        f"total {run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} s CPU; {run['machine']}; load average {run['loadavg_start']} -> {run['loadavg_end']}"
    )
    return "\n".join(lines)


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in VARIANTS if k in results]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(1.6 * len(keys) + 2, 4))
    supervised = [100 * results[k]["supervised_top1"] for k in keys]
    zero_shot = [100 * (results[k]["zero_shot_top1"] or 0) for k in keys]
    ax.bar(x - 0.2, supervised, 0.4, label="supervised (held-out videos)")
    ax.bar(x + 0.2, zero_shot, 0.4, label="zero-shot (unseen compositions)")
    chance = results[keys[0]]["chance"]
    ax.axhline(100 * chance["supervised_top1"], color="C0", ls=":", label="chance, supervised")
    ax.axhline(100 * chance["zero_shot_top1"], color="C1", ls=":", label="chance, zero-shot")
    for i, k in enumerate(keys):
        if results[k]["zero_shot_top1"] is None:
            ax.text(x[i] + 0.2, 1, "n/a", ha="center", fontsize=8)
    ax.set_xticks(x, keys, rotation=15)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
