"""``actionclip.predict``: classify videos with any label list, one result per video (:mod:`classify
<actionclip.inference.classify>`), or a timeline of windows per video (:mod:`timeline <actionclip.inference.timeline>`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from actionclip.host.devices import resolve_precision
from actionclip.inference.backends import load_model
from actionclip.inference.classify import iter_predictions
from actionclip.inference.inputs import PathLike, check_at_least_one
from actionclip.inference.timeline import iter_timelines
from actionclip.models.precision import prepare_for_inference


def predict(
    videos: PathLike | Sequence[PathLike],
    labels: Sequence[str] | str,
    model: nn.Module | str | None = None,
    *,
    checkpoint: PathLike | None = None,
    pretrained: str | None = None,
    visual_prompt: str = "Transf",
    arch: str | None = None,
    num_frames: int | None = None,
    views: str = "1x1",
    top_k: int = 5,
    templates=None,
    device: str | torch.device | None = None,
    precision: str | None = None,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = False,
    text_cache: str | Path | None = None,
    decode_short_side: int | None = None,
    window: float | None = None,
    stride: float | None = None,
    min_score: float | None = None,
) -> list[dict]:
    """Classify ``videos`` (files or folders) among ``labels``; one result dict per video, in input order.
    With ``window`` (seconds; every ``stride`` seconds, default the window), a timeline per video instead (see
    :mod:`actionclip.inference.timeline`; ``min_score``: lower windows are no action).

    ``model``: a model object (moved to ``device`` if one is given), an open_clip model name built with
    ``pretrained`` weights, or None with ``checkpoint`` (see :func:`load_model`). ``device`` None: CUDA when
    available for a model loaded here, the model's own device for a model object. ``precision`` (fp32, bf16,
    fp16, auto): None means auto for a model loaded here and leaves a model object as it is; given with a model
    object, it prepares that object for inference in place (:func:`actionclip.models.precision.prepare_for_inference`:
    no training or saving it afterwards). Other arguments as in
    :func:`iter_predictions`::

        actionclip.predict("clip.mp4", ["arm wrestling", "swimming"], checkpoint="runs/k400")
        # [{"video": "clip.mp4", "labels": ["arm wrestling", "swimming"], "scores": [0.93, 0.07]}]
    """
    check_at_least_one(num_frames=num_frames, top_k=top_k, decode_short_side=decode_short_side)  # before a model is loaded
    if isinstance(model, nn.Module):
        if checkpoint is not None:
            raise ValueError("give a model object or a checkpoint, not both")
        if device is not None:
            model.to(device)
        if precision is not None:
            prepare_for_inference(model, resolve_precision(precision, model.logit_scale.device))
    else:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(
            checkpoint,
            model,
            pretrained,
            visual_prompt=visual_prompt,
            num_frames=8 if num_frames is None else num_frames,
            arch=arch,
            device=device,
            precision=precision or "auto",
        )
    if window is not None:
        return list(
            iter_timelines(
                model,
                videos,
                labels,
                window=window,
                stride=stride,
                num_frames=num_frames,
                top_k=top_k,
                min_score=min_score,
                templates=templates,
                batch_size=batch_size,
                workers=workers,
                progress=progress,
                text_cache=text_cache,
                decode_short_side=decode_short_side,
            )
        )
    return list(
        iter_predictions(
            model,
            videos,
            labels,
            num_frames=num_frames,
            views=views,
            top_k=top_k,
            templates=templates,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            text_cache=text_cache,
            decode_short_side=decode_short_side,
        )
    )
