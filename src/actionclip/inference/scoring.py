"""The scoring step shared by predict, serve, timelines and evaluation: class probabilities of a batch of videos,
averaged over their views."""

from __future__ import annotations

import torch

from actionclip.data.transforms import frames_to_device


def multiview_probabilities(
    model,
    videos: torch.Tensor,
    text_features: torch.Tensor | None,
    ensemble: str = "softmax",
    chunk: int | None = None,
    normalization: str = "clip",
) -> torch.Tensor:
    """Class probabilities ``[B, C]`` for ``[B, V, T, 3, H, W]`` videos, averaged over the V views (``[B, T, 3, H, W]``:
    one view). With ``chunk`` the model sees at most that many clips at a time, so 10x3 views do not need 30 times the
    memory of one. uint8 videos are normalised (``normalization``) a chunk at a time, where they are, so that the
    float frames of a whole batch never exist at once; float videos are taken as normalised."""
    if videos.ndim == 5:
        videos = videos[:, None]
    b, v = videos.shape[:2]
    clips = videos.flatten(0, 1)
    parts = clips.split(chunk) if chunk else [clips]
    probabilities = torch.cat(
        [model.video_probabilities(frames_to_device(part, part.device, normalization), text_features, ensemble) for part in parts]
    )
    return probabilities.float().view(b, v, -1).mean(dim=1)
