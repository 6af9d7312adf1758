"""The video-text contrastive loss of Eq. 4: symmetric KL divergence where every same-label pair is a positive."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_label_targets(labels: torch.Tensor) -> torch.Tensor:
    """``gt[i, j] = 1`` where samples i and j share a label (the official ``gen_label``)."""
    labels = torch.as_tensor(labels)
    return (labels[:, None] == labels[None, :]).float()


def kl_divergence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The official ``KLLoss``: ``KL(softmax(10 * gt) || softmax(logits))`` per row, summed over the row and
    averaged over rows (``batchmean``). The factor 10 turns the 0/1 matrix into a sharp distribution spread
    evenly over the positives, so one positive per row is cross-entropy up to a constant."""
    log_probs = F.log_softmax(logits, dim=1)
    target = F.softmax(10 * targets.to(logits.dtype), dim=1)
    return F.kl_div(log_probs, target, reduction="batchmean")


def kl_contrastive_loss(logits_per_video: torch.Tensor, logits_per_text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 4: the mean of the video->text and text->video KL losses over a batch of (video, label text) pairs."""
    targets = same_label_targets(labels.to(logits_per_video.device))
    return (kl_divergence_loss(logits_per_video, targets) + kl_divergence_loss(logits_per_text, targets)) / 2


class KLContrastiveLoss(nn.Module):
    def forward(self, logits_per_video, logits_per_text, labels):
        return kl_contrastive_loss(logits_per_video, logits_per_text, labels)
