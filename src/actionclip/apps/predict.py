"""Classify videos with any label list: ``actionclip predict`` and ``actionclip.predict``.

Every video gives one result dict, in input order: ``{"video": path, "labels": [...], "scores": [...]}`` with the
top-k labels best first and their probabilities (plus ``"warning": "only 1.2 s of 10.0 s could be decoded"`` for a
video much shorter than its header states: a truncated file, scored on what could be read), or
``{"video": path, "error": reason}`` for a video that cannot be read. Videos are decoded, sampled and transformed in
DataLoader workers while the model runs; the label texts are encoded once per call, not per video. Frames follow the
test protocol of ``actionclip eval``: centre sampling of T segments, the model's input size, one centre crop (1x1
views) or clips x three crops averaged (e.g. 10x3).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from actionclip.apps.text_cache import cached_class_text_features
from actionclip.data.annotations import Sample, read_text
from actionclip.data.bad_samples import BadSample, IndexedSamples, collate_skip_bad
from actionclip.data.build import parse_views
from actionclip.data.datasets import VideoDataset
from actionclip.data.decode import find_videos
from actionclip.data.transforms import TestTransform, ThreeCropTransform
from actionclip.engine.evaluate import multiview_probabilities
from actionclip.models.checkpoints import CONFIG_FILE, load_any
from actionclip.models.factory import create_model
from actionclip.models.precision import prepare_for_inference, resolve_precision
from actionclip.models.weight_files import CheckpointError
from actionclip.models.xclip_checkpoints import from_hf_xclip, from_videox_checkpoint

PathLike = str | os.PathLike


def parse_labels(text: str) -> list[str]:
    """"arm wrestling, playing guitar" -> ["arm wrestling", "playing guitar"]."""
    return [label.strip() for label in text.split(",") if label.strip()]


def read_labels(path: PathLike) -> list[str]:
    """One label per line (UTF-8, with or without a byte-order mark); blank lines and lines starting with '#' are
    skipped."""
    lines = read_text(path).splitlines()
    labels = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not labels:
        raise ValueError(f"{path}: no labels found")
    return labels


def check_labels(labels: Sequence[str]) -> list[str]:
    labels = parse_labels(labels) if isinstance(labels, str) else [str(label) for label in labels]
    if not labels:
        raise ValueError("no labels given")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ValueError(f"labels given more than once: {duplicates}")
    return labels


def collect_videos(inputs: PathLike | Sequence[PathLike]) -> list[str]:
    """Input paths with every folder replaced by the video files below it (recursive, sorted).

    Files are kept whatever their extension (the user named them) and missing ones are kept too, so that each
    gets its own error, as do broken symbolic links in folders. A folder without video files is kept as is: it is
    read as a folder of frames (``img_00001.jpg``, ... as in the official ActionCLIP data), or reported.
    """
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths.extend(find_videos(item) or [str(item)])
        else:
            paths.append(str(item))
    return paths


def _is_hf_xclip(path: Path) -> bool:
    try:
        return path.is_dir() and json.loads((path / CONFIG_FILE).read_text()).get("model_type") == "xclip"
    except (OSError, ValueError):
        return False


def load_model(
    checkpoint: PathLike | None = None,
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    visual_prompt: str = "Transf",
    num_frames: int = 8,
    arch: str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    runtime: str = "torch",
) -> nn.Module:
    """A video-text model in eval mode on ``device``, from ``checkpoint`` or from ``model_name`` + ``pretrained``.

    ``checkpoint``: our checkpoint directory or run directory, a ``transformers`` X-CLIP directory (recognised by
    its ``config.json``), an official ActionCLIP ``.pt`` (which does not record its ``visual_prompt``), or with
    ``arch="xclip"`` an original X-CLIP ``.pth``. ``model_name``: an open_clip name, ``pretrained`` an open_clip tag
    or weight file (None: random weights). ``arch`` None accepts what the checkpoint holds; otherwise it must match.
    ``precision``: fp32, bf16, fp16 or auto (see :mod:`actionclip.models.precision`).
    ``runtime="onnx"``, or an export directory as ``checkpoint``: a model run by ONNX Runtime with the methods the
    predict loop uses (:mod:`actionclip.apps.onnx_predict`; ``precision`` fp32, int8 or auto).
    """
    from actionclip.apps.onnx_predict import load_onnx_model, wants_onnx

    if wants_onnx(checkpoint, runtime):
        return load_onnx_model(checkpoint, model_name, pretrained, visual_prompt=visual_prompt, num_frames=num_frames,
                               arch=arch, device=device, precision=precision)
    model = read_model(checkpoint, model_name, pretrained, visual_prompt=visual_prompt, num_frames=num_frames, arch=arch)
    return prepare_for_inference(model.to(device).eval(), resolve_precision(precision, device))


def read_model(checkpoint: PathLike | None = None, model_name: str | None = None, pretrained: str | None = None, *,
               visual_prompt: str = "Transf", num_frames: int = 8, arch: str | None = None) -> nn.Module:
    """:func:`load_model`'s video-text model as read, in fp32 on the CPU, not prepared for inference."""
    if (checkpoint is None) == (model_name is None):
        raise ValueError("give a checkpoint or a model name (with pretrained weights), one of the two")
    if checkpoint is None:
        model = create_model(model_name, pretrained, visual_prompt, num_frames, arch=arch or "actionclip")
        source = model_name
    else:
        path = Path(checkpoint)
        if _is_hf_xclip(path):
            model = from_hf_xclip(path)
        elif arch == "xclip" and path.is_file():
            model = from_videox_checkpoint(path)
        else:
            model = load_any(path, visual_prompt, num_frames)
        source = str(path)
    if arch is not None and model.config.arch != arch:
        raise CheckpointError(f"{source}: holds an {model.config.arch!r} model, not {arch!r}")
    if not hasattr(model, "class_text_features"):
        raise ValueError(f"{source}: a {model.config.arch!r} model has a fixed set of classes; predict needs a video-text model")
    return model.eval()


def model_image_size(model: nn.Module) -> int:
    """The side of the square frames the model takes (its CLIP's ``vision_cfg.image_size``)."""
    size = model.config.clip["vision_cfg"]["image_size"]
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f"the model's input is not square ({size}); predict crops square frames")
        size = size[0]
    return int(size)


def model_normalization(model: nn.Module) -> str:
    """The input mean/std of the model's frames: its source's for an imported model (ViFi-CLIP: ImageNet's), else
    CLIP's."""
    return getattr(model.config, "normalization", None) or "clip"


def video_clips(paths: Sequence[str], num_frames: int, size: int, views: str = "1x1",
                decode_short_side: int | None = None, normalization: str = "clip") -> IndexedSamples:
    """Item ``i``: ``(frames, 0, i)`` with ``frames`` ``[T, 3, S, S]`` or ``[V, T, 3, S, S]`` (V = clips x crops),
    or a ``BadSample``. The clips are those ``actionclip eval`` scores (``VideoDataset``'s test mode); the label is
    unused. A truncated video's item is a ``PartlyRead``. ``normalization``: the mean/std, clip or imagenet."""
    clips, crops = parse_views(views)
    transform = (ThreeCropTransform if crops == 3 else TestTransform)(size=size, normalization=normalization)
    dataset = VideoDataset([Sample(path, 0) for path in paths], ["unused"], num_frames, "test", transform, clips,
                           decode_short_side=decode_short_side, mark_partly_read=True)
    return IndexedSamples(dataset)


def _error(bad: BadSample) -> dict:
    reason = bad.reason
    if os.path.isdir(bad.path):  # collect_videos kept a folder without videos: a frame folder, or a mistake
        reason = f"no video files in this folder, and not a frame folder: {reason}"
    return {"video": bad.path, "error": reason}


def _check_numbers(num_frames: int | None, top_k: int, decode_short_side: int | None) -> None:
    # 0 would otherwise pass for "not given" (num_frames or ...), and a negative size fails every video's decoding.
    for name, value in (("num_frames", num_frames), ("top_k", top_k), ("decode_short_side", decode_short_side)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def ranked(path: str, probabilities: torch.Tensor, labels: Sequence[str], top_k: int) -> dict:
    scores, order = probabilities.topk(min(top_k, len(labels)))
    return {"video": path, "labels": [labels[i] for i in order.tolist()], "scores": scores.tolist()}


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
    _check_numbers(num_frames, top_k, decode_short_side)
    paths = collect_videos(videos)
    num_frames = model.config.num_frames if num_frames is None else num_frames
    dataset = video_clips(paths, num_frames, model_image_size(model), views, decode_short_side, model_normalization(model))
    device = model.logit_scale.device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=min(workers, len(dataset)),
                        collate_fn=collate_skip_bad, pin_memory=device.type == "cuda")
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
                    probabilities = multiview_probabilities(model, frames, text_features, chunk=batch_size,
                                                            normalization=dataset.dataset.normalization)
                    for index, row in zip(batch.indices.tolist(), probabilities.cpu()):
                        results[index] = ranked(paths[index], row, labels, top_k)
                    for note in batch.partly_read:
                        results[note.index]["warning"] = note.reason
                for index in sorted(results):
                    yield results[index]
                bar.update(len(results))
    finally:
        model.train(was_training)


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
    :mod:`actionclip.apps.timeline`; ``min_score``: lower windows are no action).

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
    _check_numbers(num_frames, top_k, decode_short_side)  # before a model is loaded
    if isinstance(model, nn.Module):
        if checkpoint is not None:
            raise ValueError("give a model object or a checkpoint, not both")
        if device is not None:
            model.to(device)
        if precision is not None:
            prepare_for_inference(model, resolve_precision(precision, model.logit_scale.device))
    else:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(checkpoint, model, pretrained, visual_prompt=visual_prompt,
                           num_frames=8 if num_frames is None else num_frames,
                           arch=arch, device=device, precision=precision or "auto")
    if window is not None:
        from actionclip.apps.timeline import iter_timelines

        return list(iter_timelines(model, videos, labels, window=window, stride=stride, num_frames=num_frames,
                                   top_k=top_k, min_score=min_score, templates=templates, batch_size=batch_size,
                                   workers=workers, progress=progress, text_cache=text_cache,
                                   decode_short_side=decode_short_side))
    return list(iter_predictions(model, videos, labels, num_frames=num_frames, views=views, top_k=top_k,
                                 templates=templates, batch_size=batch_size, workers=workers, progress=progress,
                                 text_cache=text_cache, decode_short_side=decode_short_side))


def format_result(result: dict) -> str:
    """A result dict as the text ``actionclip predict`` prints: the path, then rank, probability and label."""
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"
    lines = [result["video"]]
    lines += [f"  {rank:>2}  {100 * score:6.2f}%  {label}" for rank, (label, score) in enumerate(zip(result["labels"], result["scores"]), 1)]
    return "\n".join(lines)
