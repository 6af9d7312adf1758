"""Soft targets for cross-entropy recipes: label smoothing, and mixup / cutmix of whole clips (X-CLIP's recipe).

A batch is mixed with its own reverse (as timm's ``Mixup``): one coefficient per batch, and for cutmix one
box shared by every frame of a clip, so the pasted region is a consistent video, not per-frame noise.
"""

from __future__ import annotations

import torch


def smoothed_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot ``[B, C]`` with ``smoothing`` spread over all classes (PyTorch's ``label_smoothing`` convention)."""
    off = smoothing / num_classes
    targets = torch.full((len(labels), num_classes), off, device=labels.device)
    return targets.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def mix_clips(
    videos: torch.Tensor, targets: torch.Tensor, mixup_alpha: float, cutmix_alpha: float, switch_prob: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (``lam * a + (1 - lam) * b``) or cutmix (a box of b pasted into a) of ``[B, T, 3, H, W]`` clips with
    the batch reversed; targets mix with the same ``lam`` (for cutmix, the kept area). Uses torch's RNG."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return videos, targets
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(()).item() < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    reversed_videos = videos.flip(0)
    if use_cutmix:
        height, width = videos.shape[-2:]
        ratio = (1.0 - lam) ** 0.5
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = torch.randint(height, ()).item(), torch.randint(width, ()).item()
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        videos = videos.clone()
        videos[..., top:bottom, left:right] = reversed_videos[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    else:
        videos = lam * videos + (1.0 - lam) * reversed_videos
    return videos, lam * targets + (1.0 - lam) * targets.flip(0)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()
