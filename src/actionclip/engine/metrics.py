"""Recognition metrics: top-k accuracy, mean class accuracy, confusion matrix, mAP (multi-label)."""

from __future__ import annotations

import torch


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, scores.shape[1])
    hits = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return hits.float().mean().item() * 100


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``matrix[true, predicted]`` counts."""
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Accuracy of each class with at least one sample (NaN for classes without samples)."""
    totals = matrix.sum(dim=1).double()
    return torch.where(totals > 0, matrix.diagonal().double() / totals.clamp(min=1) * 100, torch.nan)


def mean_class_accuracy(matrix: torch.Tensor) -> float:
    return per_class_accuracy(matrix).nanmean().item()


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class average precision (the area under the step precision-recall curve, as scikit-learn's
    ``average_precision_score``); NaN for classes with no positive sample. Tied scores count as one threshold."""
    scores, targets = scores.double(), targets.double()
    aps = torch.full((scores.shape[1],), torch.nan, dtype=torch.float64)
    for c in range(scores.shape[1]):
        positives = targets[:, c].sum()
        if positives == 0:
            continue
        order = scores[:, c].argsort(descending=True, stable=True)
        sorted_scores, sorted_targets = scores[order, c], targets[order, c]
        # The last index of each block of tied scores is one threshold of the PR curve.
        last_of_tie = torch.ones_like(sorted_scores, dtype=torch.bool)
        last_of_tie[:-1] = sorted_scores[1:] != sorted_scores[:-1]
        true_positives = sorted_targets.cumsum(0)[last_of_tie]
        predicted = (torch.arange(len(sorted_scores), dtype=torch.float64) + 1)[last_of_tie]
        precision = true_positives / predicted
        recall = true_positives / positives
        recall_steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
        aps[c] = (recall_steps * precision).sum()
    return aps


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro mAP over classes that have at least one positive, in percent."""
    return average_precision(scores, targets).nanmean().item() * 100
