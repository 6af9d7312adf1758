"""Collections: videos/s of ``actionclip embed`` beside ``actionclip predict`` on the same videos in the same run, and
the latency of ``actionclip search`` over random rows, exact and with faiss.

The videos are generated shape videos (``data/synthetic.py``): ``--videos`` clips of ``--seconds`` seconds, 224x224 at
25 fps, H.264 with x264's defaults. Both commands run the same model (an open_clip ``--model`` with random weights in
the OpenAI architecture: the same arithmetic as the trained one; ``--precision`` auto) with ``--workers`` decoding
workers, one after the other, ``--repeats`` times; the best of each is kept. The largest difference between the
probabilities ``predict --embeddings`` gives from the (fp16) embeddings and those ``predict`` gives on the videos
(its top 5 of 10 labels) is printed with them. Search: ``--rows`` random unit vectors of
512 dimensions stored as fp16 shards, as ``embed`` writes them; the latency of one text-free query (the query vector
is given) is the median of ``--queries``; the faiss index's build time and its recall@10 against the exact top 10 are
printed with it (for an inverted-file index at 32 and 128 lists visited). Random rows are the hard case for an
inverted-file index: they have no clusters.

    python benchmarks/collection.py [--videos 200] [--seconds 10] [--workers 2] [--rows 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import actionclip
from actionclip.data.synthetic import COLOURS, MOTIONS, SHAPES, draw_clip, write_video
from actionclip.inference import collection_store as store
from actionclip.inference import search
from actionclip.inference.backends import load_model
from actionclip.inference.classify import iter_predictions
from actionclip.inference.embed import embed
from actionclip.inference.timeline import embedding_predictions


def make_videos(folder: Path, count: int, seconds: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"video_{i:04d}.mp4"
        if not path.is_file():
            rng = np.random.default_rng(i)
            clip = draw_clip(SHAPES[i % 3], list(COLOURS)[i % 7], MOTIONS[i % 6], 224, 25 * seconds, rng)
            write_video(path, clip, fps=25)
        paths.append(path)
    return paths


def time_videos(args, videos: list[Path], workdir: Path) -> dict:
    model = load_model(model_name=args.model, num_frames=8, precision=args.precision)
    labels = [f"label {i}" for i in range(10)]
    best = {"predict": float("inf"), "embed": float("inf")}
    for repeat in range(args.repeats):
        start = time.perf_counter()
        results = list(iter_predictions(model, videos, labels, workers=args.workers, batch_size=8, text_cache=None))
        best["predict"] = min(best["predict"], time.perf_counter() - start)
        assert all("scores" in r for r in results)
        start = time.perf_counter()
        summary = embed(videos, workdir / f"embeddings_{repeat}", model, workers=args.workers, batch_size=8)
        best["embed"] = min(best["embed"], time.perf_counter() - start)
        assert summary["rows"] == len(videos), summary
    # predict --embeddings on the fp16 rows against predict's scores on the videos (same model, same precision).
    from_embeddings = {
        r["video"]: dict(zip(r["labels"], r["scores"]))
        for r in embedding_predictions(workdir / "embeddings_0", labels, model, top_k=len(labels))
    }
    gap = max(
        abs(from_embeddings[want["video"]][label] - score) for want in results for label, score in zip(want["labels"], want["scores"])
    )
    rates = {name: len(videos) / seconds for name, seconds in best.items()}
    return {
        "videos": len(videos),
        "seconds": args.seconds,
        "model": args.model,
        "precision": args.precision,
        "workers": args.workers,
        "predict_videos_per_s": round(rates["predict"], 2),
        "embed_videos_per_s": round(rates["embed"], 2),
        "embed_over_predict": round(rates["embed"] / rates["predict"], 3),
        "fp16_embeddings_max_probability_gap": float(f"{gap:.3g}"),
    }


def fake_collection(directory: Path, rows: int, dim: int = 512) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    info = {"format": 1, "source": None, "arch": "actionclip", "precision": "fp32", "weights": "", "text_weights": "", "frames": 8}
    info.update(window=None, stride=None, dtype="fp16", dim=dim, decode_short_side=None)
    store.write_atomically(directory / store.INFO, json.dumps(info).encode())
    rng = np.random.default_rng(0)
    for first in range(0, rows, 100_000):
        part = rng.standard_normal((min(100_000, rows - first), dim), dtype=np.float32)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
        name = store.write_shard(directory, 0, part.astype(np.float16))
        store.append_manifest(
            directory,
            [
                {"video": f"v{first + j}.mp4", "duration": 10.0, "start": 0.0, "end": 10.0, "shard": name, "row": j}
                for j in range(len(part))
            ],
        )


def time_search(rows: int, queries: int, workdir: Path) -> dict:
    directory = workdir / f"rows_{rows}"
    fake_collection(directory, rows)
    start = time.perf_counter()
    _, matrix = store.load_embeddings(directory)
    load = time.perf_counter() - start
    vectors = torch.nn.functional.normalize(torch.randn(queries, matrix.shape[1], generator=torch.Generator().manual_seed(1)), dim=-1)
    exact, exact_times = [], []
    for vector in vectors:
        start = time.perf_counter()
        exact.append(search.exact_top_k(matrix, vector, 10)[1])
        exact_times.append(time.perf_counter() - start)
    result = {"rows": rows, "load_s": round(load, 2), "exact_ms": round(1000 * float(np.median(exact_times)), 2)}
    try:
        import faiss  # noqa: F401
    except ImportError:
        return result
    start = time.perf_counter()
    index = search.faiss_index(directory, matrix)
    result["faiss_build_s"] = round(time.perf_counter() - start, 2)
    result["faiss_kind"] = json.loads((directory / store.INDEX_INFO).read_text())["kind"]
    for nprobe in (32, 128) if result["faiss_kind"] == "ivf" else (32,):
        found, faiss_times = [], []
        for vector in vectors:
            start = time.perf_counter()
            found.append(search.faiss_top_k(index, vector, 10, nprobe)[1])
            faiss_times.append(time.perf_counter() - start)
        suffix = f"_nprobe{nprobe}" if result["faiss_kind"] == "ivf" else ""
        result[f"faiss_ms{suffix}"] = round(1000 * float(np.median(faiss_times)), 2)
        result[f"faiss_recall_at_10{suffix}"] = round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--workdir", help="keep the generated videos here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        print(
            json.dumps(
                {
                    "machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "actionclip": actionclip.__version__,
                }
            ),
            flush=True,
        )
        if args.videos:
            start = time.perf_counter()
            videos = make_videos(workdir / "videos", args.videos, args.seconds)
            print(json.dumps({"generated_videos_s": round(time.perf_counter() - start, 1)}), flush=True)
            print(json.dumps(time_videos(args, videos, workdir)), flush=True)
        for rows in (int(r) for r in args.rows.split(",") if r):
            print(json.dumps(time_search(rows, args.queries, workdir / "search")), flush=True)


if __name__ == "__main__":
    main()
