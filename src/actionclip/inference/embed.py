"""Video embeddings of a collection: ``actionclip embed`` and ``actionclip.embed``.

Every video gives one normalised embedding (its test clip, as ``actionclip eval`` samples it), or one per window with
``window``/``stride`` (seconds), written in shards with a manifest (see :mod:`actionclip.inference.collection_store`).
Running again skips what the manifest holds, so an interrupted run is resumed by running it again. Under ``torchrun``
rank 0 reads the manifest and every rank takes its share of what is left (rank ``r`` of ``n``: every ``n``-th video from
the ``r``-th), each writing its own shards; the manifest is shared.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from actionclip.data.transforms import frames_to_device
from actionclip.data.windows import CollectionClips, check_window
from actionclip.host import distributed
from actionclip.host.devices import DTYPES, resolve_precision
from actionclip.host.files import LockHeld, file_lock, write_atomically
from actionclip.inference import collection_store as store
from actionclip.inference.backends import load_model
from actionclip.inference.inputs import PathLike, check_at_least_one, collect_videos
from actionclip.inference.text_cache import text_weights_key
from actionclip.models.inputs import model_image_size, model_normalization
from actionclip.models.precision import prepare_for_inference
from actionclip.weights.readers import tensor_digest

# What must be the same for embeddings to sit in one collection; the model's source may move.
_SAME_FOR_ALL = ("weights", "frames", "window", "stride", "dtype", "dim", "decode_short_side")


@torch.inference_mode()
def iter_clip_outputs(
    model: nn.Module,
    paths: Sequence[str],
    compute: Callable[[torch.Tensor], torch.Tensor],
    *,
    num_frames: int,
    window: float | None = None,
    stride: float | None = None,
    batch_size: int = 8,
    workers: int = 2,
    decode_short_side: int | None = None,
    progress: bool = False,
    desc: str = "videos",
) -> Iterator[tuple[dict, list[tuple[float, float, torch.Tensor]]]]:
    """``(finished, rows)`` for each video as it is done (not in input order): ``finished`` as
    :class:`~actionclip.data.windows.CollectionClips` gives it, ``rows`` ``(start, end, compute(clip))`` of its
    clips in time order (none for a video that could not be read). ``compute`` takes a normalised batch of clips."""
    dataset = CollectionClips(
        paths, num_frames, model_image_size(model), window, stride, batch_size, decode_short_side, model_normalization(model)
    )
    device = model.logit_scale.device
    loader = DataLoader(dataset, batch_size=None, num_workers=min(workers, len(paths)), pin_memory=device.type == "cuda")
    pending: dict[int, list] = defaultdict(list)
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(paths), desc=desc, unit="video", disable=not progress) as bar:
            for frames, clips, finished in loader:
                if frames is not None:
                    outputs = compute(frames_to_device(frames, device, dataset.normalization)).float().cpu()
                    for (position, start, end), output in zip(clips, outputs):
                        pending[position].append((start, end, output))
                for done in finished:
                    rows = pending.pop(done["position"], [])
                    yield done, [] if "error" in done else rows
                    bar.update(1)
    finally:
        model.train(was_training)


def normalized_embeddings(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda clips: F.normalize(model.encode_video(clips), dim=-1)


def frame_precision(model: nn.Module) -> str:
    """fp32, bf16 or fp16: the dtype of the frame encoder's weights (what ``prepare_for_inference`` casts)."""
    dtype = next(model.video.parameters()).dtype
    return next((name for name, value in DTYPES.items() if value == dtype), "fp32")


def model_source(model, checkpoint, pretrained, visual_prompt: str, arch: str | None) -> dict | None:
    """How ``search`` and ``predict --embeddings`` load the model again (None for a model object)."""
    if checkpoint is not None:
        return {"checkpoint": os.path.abspath(checkpoint), "visual_prompt": visual_prompt, "arch": arch}
    if isinstance(model, str):
        return {"model": model, "pretrained": pretrained, "visual_prompt": visual_prompt, "arch": arch}
    return None


def _prepare(directory: Path, info: dict, paths: list[str], retry_errors: bool) -> dict:
    """Rank 0: check or write the collection's settings, delete what a crash left, and list the videos still to do
    with their identity (``todo``), how many there are, and how many are skipped, failed before and not retried."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / store.INFO).is_file():
        known = store.read_info(directory)
        different = [key for key in _SAME_FOR_ALL if known.get(key) != info[key]]
        if different:
            details = ", ".join(f"{key} {known.get(key)!r} there, {info[key]!r} now" for key in different)
            raise ValueError(f"{directory}: holds embeddings made otherwise ({details}); embed into another folder")
    else:
        write_atomically(directory / store.INFO, (json.dumps(info, indent=1) + "\n").encode())
    records = store.read_manifest(directory)
    store.remove_unlisted_shards(directory, records)
    standing = {store.identity(r): "error" in r for r in store.current_records(records)}
    videos: dict[str, tuple[str, dict]] = {}
    for path in paths:  # one video named two ways is embedded once, under the first name
        identity = store.video_identity(path)
        videos.setdefault(identity["path"], (path, identity))
    todo, failed_before = [], 0
    for path, identity in videos.values():
        failed = standing.get(store.identity(identity))
        if failed is None or (failed and retry_errors):
            todo.append((path, identity))
        elif failed:
            failed_before += 1
    return {"todo": todo, "videos": len(videos), "skipped": len(videos) - len(todo), "failed_before": failed_before}


@contextlib.contextmanager
def _lock(directory: Path):
    """Hold ``.lock`` in ``directory`` for this run: a second run writing there at the same time would delete the
    shards the first has not listed yet."""
    try:
        with file_lock(directory / ".lock", blocking=False):
            yield
    except LockHeld:
        raise ValueError(f"{directory}: another `actionclip embed` is writing there") from None


def embed(
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    model: nn.Module | str | None = None,
    *,
    checkpoint: PathLike | None = None,
    pretrained: str | None = None,
    visual_prompt: str = "Transf",
    arch: str | None = None,
    num_frames: int | None = None,
    window: float | None = None,
    stride: float | None = None,
    dtype: str = "fp16",
    device: str | None = None,
    precision: str | None = None,
    batch_size: int = 8,
    workers: int = 2,
    shard_size: int = 1024,
    decode_short_side: int | None = None,
    retry_errors: bool = False,
    progress: bool = False,
) -> dict:
    """Embed the videos of ``inputs`` (files or folders) into the collection folder ``output`` (new, empty, or a
    collection); returns ``{"videos", "skipped", "embedded", "failed", "rows", "failed_before"}`` (this run, all
    ranks; ``failed_before``: skipped videos that an earlier run could not read, tried again with ``retry_errors``).
    ``model``, ``checkpoint`` and the other model arguments as in :func:`actionclip.predict`; ``dtype`` fp16 or fp32
    for the stored rows; a shard is written every ``shard_size`` rows (a crash loses at most that much work)::

        actionclip.embed("videos/", "emb/", checkpoint="runs/k400", window=4, stride=2)
    """
    window, stride = check_window(window, stride)
    if dtype not in store.DTYPES:
        raise ValueError(f"dtype must be one of {sorted(store.DTYPES)}, got {dtype!r}")
    check_at_least_one(num_frames=num_frames, batch_size=batch_size, shard_size=shard_size, decode_short_side=decode_short_side)
    distributed.parse_device(device, "device")  # named as the caller knows it, before init names it otherwise
    info_dist = distributed.init(device)
    source = model_source(model, checkpoint, pretrained, visual_prompt, arch)
    if isinstance(model, nn.Module):
        model.to(info_dist.device)
        if precision is not None:
            prepare_for_inference(model, resolve_precision(precision, info_dist.device))
    else:
        model = load_model(
            checkpoint,
            model,
            pretrained,
            visual_prompt=visual_prompt,
            arch=arch,
            num_frames=8 if num_frames is None else num_frames,
            device=info_dist.device,
            precision=precision or "auto",
        )
    num_frames = num_frames or model.config.num_frames
    directory = Path(output)
    distributed.made_on_main(lambda: store.check_output(directory), info_dist)  # before the lock writes into it
    with _lock(directory) if info_dist.is_main else contextlib.nullcontext():
        info = {
            "format": 1,
            "source": source,
            "arch": model.config.arch,
            "model_name": model.config.model_name,
            "weights": tensor_digest(model.state_dict()),
            "text_weights": text_weights_key(model),
            "precision": frame_precision(model),
            "frames": num_frames,
            "window": window,
            "stride": stride,
            "dtype": dtype,
            "dim": model.config.clip["embed_dim"],
            "decode_short_side": decode_short_side,
        }
        paths = collect_videos(inputs)
        plan = distributed.made_on_main(lambda: _prepare(directory, info, paths, retry_errors), info_dist)
        mine = plan["todo"][info_dist.rank :: info_dist.world_size]
        counts = _embed_videos(
            model,
            mine,
            directory,
            info,
            info_dist.rank,
            batch_size=batch_size,
            workers=workers,
            shard_size=shard_size,
            progress=progress and info_dist.is_main,
        )
        totals = [sum(c[key] for c in distributed.gather_objects(counts, info_dist)) for key in ("embedded", "failed", "rows")]
        distributed.barrier(info_dist)
    return {
        "videos": plan["videos"],
        "skipped": plan["skipped"],
        "embedded": totals[0],
        "failed": totals[1],
        "rows": totals[2],
        "failed_before": plan["failed_before"],
    }


def _embed_videos(
    model,
    videos: list[tuple[str, dict]],
    directory: Path,
    info: dict,
    rank: int,
    *,
    batch_size: int,
    workers: int,
    shard_size: int,
    progress: bool,
) -> dict:
    rows: list[np.ndarray] = []
    records: list[dict] = []
    counts = {"embedded": 0, "failed": 0, "rows": 0}
    stamp = {"model": info["model_name"], "weights": info["weights"]}

    def flush():
        if rows:
            name = store.write_shard(directory, rank, np.stack(rows).astype(store.DTYPES[info["dtype"]]))
            row = 0
            for record in records:
                if "error" not in record:
                    record.update(shard=name, row=row)
                    row += 1
        store.append_manifest(directory, records)  # after the shard is on disk
        counts["rows"] += len(rows)
        rows.clear()
        records.clear()

    for done, clips in iter_clip_outputs(
        model,
        [path for path, _ in videos],
        normalized_embeddings(model),
        num_frames=info["frames"],
        window=info["window"],
        stride=info["stride"],
        batch_size=batch_size,
        workers=workers,
        decode_short_side=info["decode_short_side"],
        progress=progress,
        desc="embed",
    ):
        path, identity = videos[done["position"]]
        if "error" in done:
            records.append({"video": path, "error": done["error"], **identity, **stamp})
            counts["failed"] += 1
            continue
        duration = None if done["end"] is None else round(done["end"] - done["start"], 6)
        for start, end, embedding in clips:
            record = {"video": path, "duration": duration, "start": start, "end": end, **identity, **stamp}
            if "warning" in done:
                record["warning"] = done["warning"]
            records.append(record)
            rows.append(embedding.numpy())
        counts["embedded"] += 1
        if len(rows) >= shard_size:
            flush()
    flush()
    return counts
