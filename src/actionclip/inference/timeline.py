"""Timelines of long videos (``actionclip predict --window``) and labels for an embedded collection
(``actionclip predict --embeddings``).

A timeline is one dict per video: ``{"video", "windows": [{"start", "end", "labels", "scores"}], "segments":
[{"start", "end", "label", "score"}]}`` (times in seconds, from the stream's pts). Segments merge consecutive windows
with the same top label; each window stands for the stride around its centre, so a boundary falls half-way between
the centres of the last window of one label and the first of the next (the first segment starts with the video, the
last ends with it), and the score is the mean top score of its windows. With ``min_score``, windows whose top score is
lower are "no action": they are in no segment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from actionclip.data.windows import check_window
from actionclip.inference import collection_store as store
from actionclip.inference.embed import iter_clip_outputs
from actionclip.inference.inputs import PathLike, check_labels, collect_videos
from actionclip.inference.scoring import multiview_probabilities
from actionclip.inference.search import collection_model
from actionclip.inference.text_cache import cached_class_text_features
from actionclip.models.actionclip import ensemble_probabilities


def segments(
    windows: Sequence[dict],
    labels: Sequence[str],
    probabilities: torch.Tensor,
    video_start: float,
    video_end: float,
    min_score: float | None = None,
) -> list[dict]:
    """Merge consecutive ``windows`` (time order; ``probabilities`` ``[W, C]``) with the same top label."""
    scores, tops = probabilities.max(dim=1) if len(windows) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    top = [None if min_score is not None and s < min_score else int(t) for s, t in zip(scores.tolist(), tops.tolist())]
    centres = [(w["start"] + w["end"]) / 2 for w in windows]
    result, first = [], 0
    for i in range(1, len(windows) + 1):
        if i < len(windows) and top[i] == top[first]:
            continue
        if top[first] is not None:
            start = video_start if first == 0 else (centres[first - 1] + centres[first]) / 2
            end = video_end if i == len(windows) else (centres[i - 1] + centres[i]) / 2
            result.append(
                {"start": round(start, 6), "end": round(end, 6), "label": labels[top[first]], "score": float(scores[first:i].mean())}
            )
        first = i
    return result


def _ranked_window(start: float, end: float, row: torch.Tensor, labels: Sequence[str], top_k: int) -> dict:
    scores, order = row.topk(min(top_k, len(labels)))
    return {"start": start, "end": end, "labels": [labels[i] for i in order.tolist()], "scores": scores.tolist()}


def timeline(
    path: str,
    rows: Sequence[tuple[float, float, torch.Tensor]],
    labels: Sequence[str],
    start: float,
    end: float,
    top_k: int = 5,
    min_score: float | None = None,
) -> dict:
    """The timeline dict of one video from its windows' ``(start, end, probabilities)``."""
    windows = [_ranked_window(s, e, p, labels, top_k) for s, e, p in rows]
    probabilities = torch.stack([p for _, _, p in rows]) if rows else torch.zeros(0, len(labels))
    return {"video": path, "windows": windows, "segments": segments(windows, labels, probabilities, start, end, min_score)}


@torch.inference_mode()
def iter_timelines(
    model: nn.Module,
    videos: PathLike | Sequence[PathLike],
    labels: Sequence[str] | str,
    *,
    window: float,
    stride: float | None = None,
    num_frames: int | None = None,
    top_k: int = 5,
    min_score: float | None = None,
    templates=None,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = False,
    text_cache: str | Path | None = None,
    decode_short_side: int | None = None,
) -> Iterator[dict]:
    """Timeline dicts (see the module docstring) in input order, or ``{"video", "error"}``; every video is decoded in
    one pass. Arguments as in :func:`actionclip.inference.classify.iter_predictions`."""
    labels = check_labels(labels)
    window, stride = check_window(window, stride)
    if window is None:
        raise ValueError("a timeline needs a window (seconds)")
    paths = collect_videos(videos)
    if text_cache is None:
        text_features = model.class_text_features(labels, templates)
    else:
        text_features = cached_class_text_features(model, labels, templates, text_cache)
    done: dict[int, dict] = {}
    following = 0
    for finished, rows in iter_clip_outputs(
        model,
        paths,
        lambda clips: multiview_probabilities(model, clips, text_features, chunk=batch_size),
        num_frames=num_frames or model.config.num_frames,
        window=window,
        stride=stride,
        batch_size=batch_size,
        workers=workers,
        decode_short_side=decode_short_side,
        progress=progress,
        desc="timeline",
    ):
        position = finished["position"]
        if "error" in finished:
            done[position] = {"video": paths[position], "error": finished["error"]}
        else:
            done[position] = timeline(paths[position], rows, labels, finished["start"], finished["end"], top_k, min_score)
            if "warning" in finished:
                done[position]["warning"] = finished["warning"]
        while following in done:
            yield done.pop(following)
            following += 1


@torch.inference_mode()
def embedding_predictions(
    directory: PathLike,
    labels: Sequence[str] | str,
    model: nn.Module | str | None = None,
    *,
    checkpoint: PathLike | None = None,
    pretrained: str | None = None,
    top_k: int = 5,
    min_score: float | None = None,
    templates=None,
    device: str | None = None,
    text_cache: str | Path | None = None,
) -> list[dict]:
    """``predict``'s results for the videos of an embedded collection, from their embeddings alone: per video
    ``{"video", "labels", "scores"}``, or a timeline dict for a collection embedded by windows, or its
    ``{"video", "error"}``; in the manifest's order. ActionCLIP's test arithmetic needs only the normalised video
    embedding; X-CLIP's class texts depend on each video's frames, so its collections are refused."""
    labels = check_labels(labels)
    info = store.read_info(directory)
    if info["arch"] == "xclip":
        raise ValueError(
            f"{directory}: embedded with X-CLIP, whose class texts depend on each video's frames (its "
            "video-specific prompts): label the videos with `actionclip predict VIDEOS` instead"
        )
    model = collection_model(directory, model, checkpoint=checkpoint, pretrained=pretrained, device=device)
    if text_cache is None:
        text_features = model.class_text_features(labels, templates)
    else:
        text_features = cached_class_text_features(model, labels, templates, text_cache)
    records = store.current_records(store.read_manifest(directory))
    rows, matrix = store.load_embeddings(directory, records)
    probabilities = (
        torch.cat(
            [
                ensemble_probabilities(torch.from_numpy(np.asarray(matrix[i : i + 65536])).float(), text_features.float().cpu())
                for i in range(0, len(matrix), 65536)
            ]
        )
        if len(matrix)
        else torch.zeros(0, len(labels))
    )
    # One result per video file (the standing records of a file share its first name and are all rows or one error).
    by_video: dict[str, list] = {}
    for record in records:
        by_video.setdefault(store.identity(record)[0], [])
    for record, row in zip(rows, probabilities):
        by_video[store.identity(record)[0]].append((record, row))
    errors = {store.identity(r)[0]: r for r in records if "error" in r}
    results = []
    for key, items in by_video.items():
        if key in errors:
            results.append({"video": errors[key]["video"], "error": errors[key]["error"]})
        elif info["window"] is None:
            record, row = items[0]
            scores, order = row.topk(min(top_k, len(labels)))
            results.append({"video": record["video"], "labels": [labels[i] for i in order.tolist()], "scores": scores.tolist()})
        else:
            items.sort(key=lambda item: item[0]["start"])
            first = items[0][0]
            results.append(
                timeline(
                    first["video"],
                    [(r["start"], r["end"], p) for r, p in items],
                    labels,
                    first["start"],
                    first["start"] + first["duration"],
                    top_k,
                    min_score,
                )
            )
    return results


def format_timeline(result: dict) -> str:
    """The text ``actionclip predict --window`` prints: the path, then one line per segment."""
    if "error" in result:
        return f"{result['video']}: error: {result['error']}"
    lines = [result["video"]]
    lines += [f"  {s['start']:9.2f} - {s['end']:9.2f} s  {100 * s['score']:6.2f}%  {s['label']}" for s in result["segments"]]
    return "\n".join(lines)


def plot_timeline(result: dict, path: PathLike, rows: int = 8) -> Path:
    """A PNG of a timeline: its segments, labelled, over a heat strip of the scores of the labels that lead a window
    (at most ``rows``; a label outside a window's top-k counts 0 there), time in seconds on x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = result["windows"]
    shown = list(dict.fromkeys(w["labels"][0] for w in windows))[:rows]
    centres = [(w["start"] + w["end"]) / 2 for w in windows]
    start = result["segments"][0]["start"] if result["segments"] else windows[0]["start"]
    end = max(w["end"] for w in windows)
    edges = [start] + [(a + b) / 2 for a, b in zip(centres, centres[1:])] + [end]
    heat = np.array([[dict(zip(w["labels"], w["scores"])).get(label, 0.0) for w in windows] for label in shown])
    figure, (top, strip) = plt.subplots(
        2, 1, figsize=(10, 1.6 + 0.3 * len(shown)), sharex=True, gridspec_kw={"height_ratios": [1, max(1, len(shown)) * 0.45]}
    )
    colours = plt.get_cmap("tab10")
    for segment in result["segments"]:
        colour = colours(shown.index(segment["label"]) % 10) if segment["label"] in shown else "grey"
        top.broken_barh([(segment["start"], segment["end"] - segment["start"])], (0, 1), color=colour)
        top.text((segment["start"] + segment["end"]) / 2, 0.5, segment["label"], ha="center", va="center", fontsize=8, clip_on=True)
    top.set_yticks([])
    top.set_title(Path(result["video"]).name, fontsize=9)
    mesh = strip.pcolormesh(edges, np.arange(len(shown) + 1), heat, vmin=0, vmax=1, cmap="viridis")
    strip.set_yticks(np.arange(len(shown)) + 0.5, shown, fontsize=8)
    strip.invert_yaxis()
    strip.set_xlabel("time (s)")
    figure.colorbar(mesh, ax=[top, strip], label="score", fraction=0.03)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)
    return path
