"""Classify videos with any label list, a result dict per video in input order.

Every video gives ``{"video": path, "labels": [...], "scores": [...]}`` with the top-k labels best first and their
probabilities (plus ``"warning": "only 1.2 s of 10.0 s could be decoded"`` for a video much shorter than its header
states: a truncated file, scored on what could be read), or ``{"video": path, "error": reason}`` for a video that
cannot be read. Videos are decoded, sampled and transformed in DataLoader workers while the model runs; the label
texts are encoded once per call, not per video. Frames follow the test protocol of ``actionclip eval``: centre
sampling of T segments, the model's input size, one centre crop (1x1 views) or clips x three crops averaged (e.g.
10x3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from actionclip.data.bad_samples import BadSample, collate_skip_bad
from actionclip.inference.inputs import PathLike, check_at_least_one, check_labels, collect_videos, ranked, video_clips
from actionclip.inference.scoring import multiview_probabilities
from actionclip.inference.text_cache import cached_class_text_features
from actionclip.models.inputs import model_image_size, model_normalization


def _error(bad: BadSample) -> dict:
    reason = bad.reason
    if os.path.isdir(bad.path):  # collect_videos kept a folder without videos: a frame folder, or a mistake
        reason = f"no video files in this folder, and not a frame folder: {reason}"
    return {"video": bad.path, "error": reason}


@torch.inference_mode()
def iter_predictions(
    model: nn.Module,
    videos: PathLike | Sequence[PathLike],
    labels: Sequence[str] | str,
    *,
    num_frames: int | None = None,
    views: str = "1x1",
    top_k: int = 5,
    templates=None,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = False,
    text_cache: str | Path | None = None,
    decode_short_side: int | None = None,
) -> Iterator[dict]:
    """Result dicts (see the module docstring) as the videos are scored, in input order.

    ``num_frames`` None: the frames the model was built for. ``templates``: None (the model's default: the official
    16 for ActionCLIP, the label alone for X-CLIP), "actionclip", "label_only", a template file or a list.
    ``text_cache``: a directory where the labels' text features are kept between calls (None: no cache).
    ``decode_short_side``: frames with a longer short side are scaled down to it while decoding (None: never).
    """
    labels = check_labels(labels)
    check_at_least_one(num_frames=num_frames, top_k=top_k, decode_short_side=decode_short_side)
    paths = collect_videos(videos)
    num_frames = model.config.num_frames if num_frames is None else num_frames
    dataset = video_clips(paths, num_frames, model_image_size(model), views, decode_short_side, model_normalization(model))
    device = model.logit_scale.device
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=min(workers, len(dataset)),
        collate_fn=collate_skip_bad,
        pin_memory=device.type == "cuda",
    )
    was_training = model.training
    model.eval()
    try:
        if text_cache is None:
            text_features = model.class_text_features(labels, templates)
        else:
            text_features = cached_class_text_features(model, labels, templates, text_cache)
        with tqdm(total=len(dataset), desc="predict", unit="video", disable=not progress) as bar:
            for batch in loader:
                results = {b.index: _error(b) for b in batch.bad}
                if batch.frames is not None:
                    frames = batch.frames.to(device, non_blocking=True)  # uint8: normalised chunk by chunk
                    probabilities = multiview_probabilities(
                        model, frames, text_features, chunk=batch_size, normalization=dataset.dataset.normalization
                    )
                    for index, row in zip(batch.indices.tolist(), probabilities.cpu()):
                        results[index] = ranked(paths[index], row, labels, top_k)
                    for note in batch.partly_read:
                        results[note.index]["warning"] = note.reason
                for index in sorted(results):
                    yield results[index]
                bar.update(len(results))
    finally:
        model.train(was_training)


def format_result(result: dict) -> str:
    """A result dict as the text ``actionclip predict`` prints: the path, then rank, probability and label."""
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"
    lines = [result["video"]]
    lines += [
        f"  {rank:>2}  {100 * score:6.2f}%  {label}" for rank, (label, score) in enumerate(zip(result["labels"], result["scores"]), 1)
    ]
    return "\n".join(lines)
