"""Evaluation: every video scored once (no ``drop_last``), text features computed once, single or multi-view.

A dataset item is ``(video, target)``; ``video`` is ``[T, 3, H, W]`` (one view) or ``[V, T, 3, H, W]``
(V = clips x crops, whose class probabilities are averaged, as the paper averages the scores of all views);
``target`` is a class index, or a multi-hot vector for multi-label data (Charades: reported as mAP).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from actionclip.engine import distributed
from actionclip.engine.distributed import DistInfo
from actionclip.engine.metrics import (
    confusion_matrix,
    mean_average_precision,
    mean_class_accuracy,
    per_class_accuracy,
    topk_accuracy,
)
from actionclip.models.actionclip import ActionCLIP, ensemble_probabilities


def video_probabilities(model, videos: torch.Tensor, text_features: torch.Tensor | None, ensemble: str) -> torch.Tensor:
    """Class probabilities ``[B, C]`` for ``[B, V, T, 3, H, W]`` videos, averaged over the V views."""
    b, v = videos.shape[:2]
    flat = videos.flatten(0, 1)
    if isinstance(model, ActionCLIP):
        features = F.normalize(model.encode_video(flat), dim=-1)
        probs = ensemble_probabilities(features, text_features, ensemble)
    else:
        probs = model(flat).softmax(dim=-1)
    return probs.float().view(b, v, -1).mean(dim=1)


@torch.no_grad()
def predict_dataset(
    model,
    dataset: Dataset,
    class_names: Sequence[str],
    *,
    templates=None,
    ensemble: str = "softmax",
    batch_size: int = 16,
    workers: int = 0,
    info: DistInfo = DistInfo(),
    autocast_dtype: torch.dtype | None = None,
    collate_fn=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities ``[N, C]`` and targets for every item of ``dataset``, in dataset order, on every rank."""
    was_training = model.training
    model.eval()
    text_features = model.class_text_features(class_names, templates) if isinstance(model, ActionCLIP) else None
    indices = list(range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=workers, collate_fn=collate_fn)
    probabilities, targets = [], []
    for videos, target in tqdm(loader, desc="eval", disable=not info.is_main, leave=False):
        videos = videos.to(info.device, non_blocking=True)
        if videos.ndim == 5:
            videos = videos[:, None]
        with torch.autocast(info.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            probabilities.append(video_probabilities(model, videos, text_features, ensemble).cpu())
        targets.append(torch.as_tensor(target))
    model.train(was_training)
    local = (torch.tensor(indices, dtype=torch.long), torch.cat(probabilities), torch.cat(targets))
    parts = distributed.gather_objects(local, info)
    order = torch.cat([p[0] for p in parts]).argsort()
    return torch.cat([p[1] for p in parts])[order], torch.cat([p[2] for p in parts])[order]


def summarize(probabilities: torch.Tensor, targets: torch.Tensor) -> dict:
    """top1/top5/mean class accuracy for single-label targets, mAP for multi-hot targets."""
    if targets.ndim == 2:
        return {"mAP": mean_average_precision(probabilities, targets), "num_videos": len(targets)}
    matrix = confusion_matrix(probabilities.argmax(dim=1), targets, probabilities.shape[1])
    return {
        "top1": topk_accuracy(probabilities, targets, 1),
        "top5": topk_accuracy(probabilities, targets, 5),
        "mean_class_acc": mean_class_accuracy(matrix),
        "num_videos": len(targets),
    }


def write_report(output: str | Path, summary: dict, probabilities: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]) -> None:
    """``eval.json``, and for single-label data ``per_class.csv`` and ``confusion.png``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "eval.json").write_text(json.dumps(summary, indent=2))
    if targets.ndim == 2:
        return
    matrix = confusion_matrix(probabilities.argmax(dim=1), targets, len(class_names))
    accuracy = per_class_accuracy(matrix)
    with open(output / "per_class.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "videos", "top1"])
        for name, count, acc in zip(class_names, matrix.sum(dim=1).tolist(), accuracy.tolist()):
            writer.writerow([name, count, f"{acc:.2f}"])
    _plot_confusion(matrix, class_names, output / "confusion.png")


def _plot_confusion(matrix: torch.Tensor, class_names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = min(4 + 0.25 * len(class_names), 40)
    fig, ax = plt.subplots(figsize=(size, size))
    normalized = matrix.double() / matrix.sum(dim=1, keepdim=True).clamp(min=1)
    ax.imshow(normalized.numpy(), cmap="Blues", vmin=0, vmax=1)
    if len(class_names) <= 60:
        ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
