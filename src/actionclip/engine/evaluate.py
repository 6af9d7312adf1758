"""Evaluation: every video scored once (no ``drop_last``), text features computed once, single or multi-view.

A dataset item is ``(video, target)``; ``video`` is ``[T, 3, H, W]`` (one view) or ``[V, T, 3, H, W]``
(V = clips x crops, whose class probabilities are averaged, as the paper averages the scores of all views),
uint8 (normalised on the device with the dataset's ``normalization``) or float (already normalised);
``target`` is a class index, or a multi-hot vector for multi-label data (Charades: reported as mAP).

Memory is bounded whatever the views and the batch size: the model sees at most ``FRAMES_PER_FORWARD`` frames at
a time (10x3 views of 32 frames for 16 videos would be 15,360 frames, ~37 GB of ViT-B/16 activations in fp32).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from actionclip.data.bad_samples import IndexedSamples, collate_skip_bad
from actionclip.engine.metrics import confusion_matrix, mean_average_precision, mean_class_accuracy, per_class_accuracy, topk_accuracy
from actionclip.engine.workers import init_worker
from actionclip.host import distributed
from actionclip.host.distributed import DistInfo
from actionclip.inference.scoring import multiview_probabilities

# ViT-B/16 activations for 512 frames are ~1.2 GB in fp32; larger forwards gain next to nothing on a GPU.
FRAMES_PER_FORWARD = 512


def _normalization(dataset: Dataset) -> str:
    """The statistics of a ``VideoDataset``, also inside a ``Subset`` or ``IndexedSamples``; CLIP's otherwise."""
    while not hasattr(dataset, "normalization") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return getattr(dataset, "normalization", "clip")


class EvalResult(NamedTuple):
    probabilities: torch.Tensor  # [N, C] for the readable videos, in dataset order
    targets: torch.Tensor
    indices: torch.Tensor  # their dataset indices
    unreadable: list[tuple[str, str]]  # (path, reason) of the videos that could not be scored


def evaluation_loader(dataset: Dataset, batch_size: int, workers: int, info: DistInfo, persistent: bool = False) -> DataLoader:
    """This rank's share of ``dataset`` in order. ``persistent``: the workers outlive a pass, for a training run that
    evaluates every epoch; they leave stop signals to the main process (engine/workers.py)."""
    mine = IndexedSamples(dataset, range(info.rank, len(dataset), info.world_size))
    return DataLoader(
        mine,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        worker_init_fn=init_worker,
        pin_memory=info.device.type == "cuda",
        persistent_workers=persistent and workers > 0,
    )


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
    progress: bool = True,
    frames_per_forward: int = FRAMES_PER_FORWARD,
    loader: DataLoader | None = None,
    normalization: str | None = None,
) -> EvalResult:
    """Probabilities ``[N, C]`` and targets of every readable item of ``dataset``, in dataset order, on every
    rank, and the list of unreadable ones; a progress bar on the main rank unless ``progress`` is False.
    ``batch_size`` videos are decoded together; their clips go through the model in chunks of at most
    ``frames_per_forward`` frames (at least one clip). ``loader``: one made by ``evaluation_loader`` for this
    dataset, kept by a caller that evaluates it again (its workers stay up). ``normalization``: the frames' mean/std
    (None: the dataset's)."""
    was_training = model.training
    model.eval()
    text_features = model.class_text_features(class_names, templates) if hasattr(model, "class_text_features") else None
    loader = loader or evaluation_loader(dataset, batch_size, workers, info)
    normalization = normalization or _normalization(dataset)
    probabilities, targets, scored, bad = [], [], [], []
    for batch in tqdm(loader, desc="eval", disable=not (progress and info.is_main), leave=False):
        bad.extend(batch.bad)
        if batch.frames is None:
            continue
        videos = batch.frames.to(info.device, non_blocking=True)  # uint8: normalised chunk by chunk
        chunk = max(1, frames_per_forward // videos.shape[-4])
        with torch.autocast(info.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            probabilities.append(multiview_probabilities(model, videos, text_features, ensemble, chunk, normalization).cpu())
        targets.append(batch.labels)
        scored.append(batch.indices)
    model.train(was_training)
    parts = distributed.gather_objects((scored, probabilities, targets, bad), info)
    scored = torch.cat([t for p in parts for t in p[0]]) if any(p[0] for p in parts) else torch.zeros(0, dtype=torch.long)
    if len(scored) == 0:
        raise RuntimeError(f"no readable video to evaluate among {len(dataset)}")
    order = scored.argsort()
    return EvalResult(
        torch.cat([t for p in parts for t in p[1]])[order],
        torch.cat([t for p in parts for t in p[2]])[order],
        scored[order],
        sorted((b.path, b.reason) for p in parts for b in p[3]),
    )


def summarize(result: EvalResult) -> dict:
    """top1, top5 (with more than 5 classes) and mean class accuracy for single-label targets, mAP for multi-hot
    targets, and the count of videos that could not be read (listed in ``unreadable``)."""
    probabilities, targets = result.probabilities, result.targets
    if targets.ndim == 2:
        summary = {"mAP": mean_average_precision(probabilities, targets)}
    else:
        matrix = confusion_matrix(probabilities.argmax(dim=1), targets, probabilities.shape[1])
        summary = {"top1": topk_accuracy(probabilities, targets, 1)}
        if probabilities.shape[1] > 5:  # among 5 classes or fewer every class is in the top 5: 100% says nothing
            summary["top5"] = topk_accuracy(probabilities, targets, 5)
        summary["mean_class_acc"] = mean_class_accuracy(matrix)
    summary["num_videos"] = len(targets)
    summary["unreadable"] = [{"path": path, "reason": reason} for path, reason in result.unreadable]
    return summary


def write_report(output: str | Path, summary: dict, result: EvalResult, class_names: Sequence[str]) -> None:
    """``eval.json``, and for single-label data ``per_class.csv`` and ``confusion.png``."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "eval.json").write_text(json.dumps(summary, indent=2))
    if result.targets.ndim == 2:
        return
    matrix = confusion_matrix(result.probabilities.argmax(dim=1), result.targets, len(class_names))
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
