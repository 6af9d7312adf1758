"""Text-to-video search over an embedded collection: ``actionclip search`` and ``actionclip.search``.

A text query is encoded by the collection's model with its templates (the mean of the normalised template
embeddings, normalised: the prompt ensemble of CLIP's zero-shot classifiers); ``like`` ranks by similarity to a video
instead, embedded as the collection's videos were. Scores are cosine similarities. The exact search is a matrix
product over the rows, a chunk at a time; ``index="faiss"`` builds a faiss index once (exact inner product up to
``IVF_FROM`` rows, an inverted-file index of ``sqrt(N)`` lists beyond) and keeps it beside the shards, built again only
when the rows' vectors have changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from actionclip.host.distributed import parse_device
from actionclip.host.files import temporary_path, write_atomically
from actionclip.inference import collection_store as store
from actionclip.inference.backends import load_model
from actionclip.inference.embed import iter_clip_outputs, normalized_embeddings
from actionclip.inference.inputs import PathLike
from actionclip.inference.text_cache import text_weights_key
from actionclip.weights.readers import tensor_digest

IVF_FROM = 50_000  # below this, a flat (exact) faiss index is as fast as an approximate one
CHUNK_ROWS = 262_144


def collection_model(
    directory: PathLike,
    model: nn.Module | str | None = None,
    *,
    checkpoint: PathLike | None = None,
    pretrained: str | None = None,
    device: str | torch.device | None = None,
    check: str = "text_weights",
) -> nn.Module:
    """The model of the collection in ``directory``: ``model`` (an object, or an open_clip name with ``pretrained``) or
    ``checkpoint`` if given, else the one its ``collection.json`` records, loaded in the frame precision it was embedded
    with. ``check``: "text_weights" (text queries) or "weights" (the whole model, for videos) must be those the
    collection was made with, else a ValueError: scores against another model's embeddings mean nothing."""
    info = store.read_info(directory)
    device = parse_device(None if device is None else str(device), "--device")
    source = info.get("source") or {}
    if not isinstance(model, nn.Module):
        if model is None and checkpoint is None:
            if not source:
                raise ValueError(f"{directory}: embedded with a model object, which it cannot load again; give a checkpoint or model name")
            checkpoint, model, pretrained = source.get("checkpoint"), source.get("model"), source.get("pretrained")
        model = load_model(
            checkpoint,
            model,
            pretrained,
            visual_prompt=source.get("visual_prompt") or "Transf",
            num_frames=info["frames"],
            arch=info["arch"],
            device=device,
            precision=info["precision"],
        )
    digest = text_weights_key(model) if check == "text_weights" else tensor_digest(model.state_dict())
    if digest != info[check]:
        what = "text encoder differs" if check == "text_weights" else "weights differ, at the same precision"
        raise ValueError(f"{directory}: embedded with another model than this one (its {what})")
    return model


def text_query_embedding(model: nn.Module, query: str, templates=None) -> torch.Tensor:
    """``[D]``: the normalised mean of the query's normalised template embeddings."""
    if model.video_specific_text:
        raise ValueError(
            "X-CLIP's text embeddings depend on each video's frames (its video-specific prompts): an "
            "embedded collection cannot be searched by text with it; search with like=VIDEO instead"
        )
    features = F.normalize(model.class_text_features([query], templates).float(), dim=-1)
    return F.normalize(features.mean(dim=0)[0], dim=-1).cpu()


def video_query_embedding(model: nn.Module, video: PathLike, info: dict) -> torch.Tensor:
    """``[D]``: ``video`` embedded as the collection's videos were (its test clip; the whole video, not windows)."""
    ((done, rows),) = list(
        iter_clip_outputs(
            model,
            [str(video)],
            normalized_embeddings(model),
            num_frames=info["frames"],
            workers=0,
            decode_short_side=info["decode_short_side"],
        )
    )
    if "error" in done:
        raise ValueError(f"{video}: {done['error']}")
    return rows[0][2]


def exact_top_k(matrix: np.ndarray, query: torch.Tensor, k: int) -> tuple[list[float], list[int]]:
    """The ``k`` rows of ``matrix`` with the largest inner product with ``query``, best first."""
    if len(matrix) == 0:
        return [], []
    scores = torch.cat(
        [torch.from_numpy(np.asarray(matrix[i : i + CHUNK_ROWS])).float() @ query.float() for i in range(0, len(matrix), CHUNK_ROWS)]
    )
    values, order = scores.topk(min(k, len(scores)))
    return values.tolist(), order.tolist()


def _rows_key(matrix: np.ndarray) -> str:
    """A digest of the vectors in their order: an index built for other vectors (a collection made again under the
    same shard names) is never taken for theirs."""
    digest = hashlib.sha256(f"{matrix.dtype.str} {matrix.shape}".encode())
    digest.update(np.ascontiguousarray(matrix).data)
    return digest.hexdigest()


def faiss_index(directory: PathLike, matrix: np.ndarray):
    """The faiss index of the collection: read from ``index.faiss`` when it was built for these vectors, else built
    and written there."""
    try:
        import faiss
    except ImportError:
        raise ValueError("faiss is not installed: pip install 'actionclip[index]' (faiss-cpu), or search without --index faiss") from None
    directory = Path(directory)
    key = _rows_key(matrix)
    path, info_path = directory / store.INDEX, directory / store.INDEX_INFO
    if path.is_file() and info_path.is_file():
        try:
            if json.loads(info_path.read_text())["rows_key"] == key:
                return faiss.read_index(str(path))
        except (ValueError, KeyError, RuntimeError):
            pass  # unreadable: built again below
    dim = matrix.shape[1]
    if len(matrix) < IVF_FROM:
        index, kind = faiss.IndexFlatIP(dim), "flat"
    else:
        lists = int(math.sqrt(len(matrix)))
        index, kind = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT), "ivf"
        sample = np.random.default_rng(0).choice(len(matrix), min(len(matrix), 64 * lists), replace=False)
        index.train(np.ascontiguousarray(matrix[np.sort(sample)], dtype=np.float32))
    for i in range(0, len(matrix), CHUNK_ROWS):
        index.add(np.ascontiguousarray(matrix[i : i + CHUNK_ROWS], dtype=np.float32))
    tmp = temporary_path(path)
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
    write_atomically(info_path, json.dumps({"rows_key": key, "kind": kind, "rows": len(matrix)}).encode())
    return index


def faiss_top_k(index, query: torch.Tensor, k: int, nprobe: int = 32) -> tuple[list[float], list[int]]:
    if hasattr(index, "nprobe"):
        index.nprobe = min(nprobe, index.nlist)
    scores, order = index.search(query.float().numpy()[None], min(k, index.ntotal))
    kept = order[0] >= 0
    return scores[0][kept].tolist(), order[0][kept].tolist()


def search(
    directory: PathLike,
    query: str | None = None,
    *,
    like: PathLike | None = None,
    top_k: int = 10,
    model: nn.Module | str | None = None,
    checkpoint: PathLike | None = None,
    pretrained: str | None = None,
    templates=None,
    index: str = "exact",
    nprobe: int = 32,
    device: str | torch.device | None = None,
) -> dict:
    """The ``top_k`` videos (or windows) of the collection in ``directory`` closest to the text ``query`` or to the
    video ``like``: ``{"query", "results": [{"video", "start", "end", "score"}]}``, best first. The model is the one
    the collection records unless ``model`` or ``checkpoint`` is given (the same weights, moved); ``templates`` as in
    :func:`actionclip.predict`; ``index`` "exact" or "faiss"::

        actionclip.search("emb/", "someone playing guitar", top_k=5)
    """
    if (query is None) == (like is None):
        raise ValueError("give a text query or a video to search like, one of the two")
    if not str(query if like is None else like).strip():
        raise ValueError("the query is empty: give a text to search for, or a video with --like")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if index not in ("exact", "faiss"):
        raise ValueError(f"index must be 'exact' or 'faiss', got {index!r}")
    info = store.read_info(directory)
    rows, matrix = store.load_embeddings(directory)
    with torch.inference_mode():
        model = collection_model(
            directory,
            model,
            checkpoint=checkpoint,
            pretrained=pretrained,
            device=device,
            check="text_weights" if like is None else "weights",
        )
        vector = text_query_embedding(model, query, templates) if like is None else video_query_embedding(model, like, info)
    if index == "faiss":
        scores, order = faiss_top_k(faiss_index(directory, matrix), vector, top_k, nprobe)
    else:
        scores, order = exact_top_k(matrix, vector, top_k)
    results = [
        {"video": rows[i]["video"], "start": rows[i]["start"], "end": rows[i]["end"], "score": score} for score, i in zip(scores, order)
    ]
    return {"query": query if like is None else str(like), "results": results}


def format_results(answer: dict) -> str:
    lines = [answer["query"]]
    for rank, result in enumerate(answer["results"], 1):
        span = "" if result["start"] is None else f"  {result['start']:.2f}-{result['end']:.2f} s"
        lines.append(f"  {rank:>3}  {result['score']:.4f}  {result['video']}{span}")
    return "\n".join(lines)
