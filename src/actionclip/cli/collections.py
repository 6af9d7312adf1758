"""The command-line side of collections: ``actionclip embed``, ``actionclip search``, and ``actionclip predict``'s
``--window``/``--embeddings`` options (declared here, run by :mod:`actionclip.inference.timeline`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from actionclip.cli.model_options import add_build_options, add_model_source, load_model_from_args, warn_if_random
from actionclip.cli.options import check_minimums


def _add_model_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    add_model_source(parser, required)
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def add_commands(sub) -> None:
    _add_embed(sub)
    _add_search(sub)


def _add_embed(sub) -> None:
    embed = sub.add_parser(
        "embed", help="normalised video embeddings of a collection, in shards with a manifest (resumable; torchrun for several processes)"
    )
    embed.add_argument("inputs", nargs="+", help="video files, or folders (every video below them)")
    embed.add_argument("--output", required=True, help="collection folder: collection.json, manifest.jsonl, shard-*.npy")
    _add_model_arguments(embed, required=True)
    add_build_options(embed)
    embed.add_argument("--frames", type=int, help="frames per clip (default: the model's, 8 for --model)")
    embed.add_argument("--window", type=float, help="one embedding per window of this many seconds (default: one per video)")
    embed.add_argument("--stride", type=float, help="seconds between window starts (default: the window)")
    embed.add_argument("--dtype", default="fp16", choices=("fp16", "fp32"), help="stored embeddings (default: fp16)")
    embed.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="weights' precision (default: auto)")
    embed.add_argument("--batch-size", type=int, default=8, help="clips per batch (default: 8)")
    embed.add_argument("--workers", type=int, default=2, help="decoding worker processes per rank (default: 2)")
    embed.add_argument("--shard-size", type=int, default=1024, help="rows per shard; a crash loses at most this many (default: 1024)")
    embed.add_argument("--decode-short-side", type=int, help="scale larger frames down to this short side while decoding")
    embed.add_argument("--retry-errors", action="store_true", help="try again the videos an earlier run could not read")
    embed.set_defaults(handler=_embed)


def _embed(args) -> int:
    from actionclip.host import distributed
    from actionclip.inference.embed import embed

    check_minimums(args, {"--frames": 1, "--batch-size": 1, "--workers": 0, "--shard-size": 1, "--decode-short-side": 1})
    distributed.parse_device(args.device, "--device")
    warn_if_random(args, "embeddings")
    try:
        summary = embed(
            args.inputs,
            args.output,
            args.model,
            checkpoint=args.checkpoint,
            pretrained=args.pretrained,
            visual_prompt=args.visual_prompt,
            arch=args.arch,
            num_frames=args.frames,
            window=args.window,
            stride=args.stride,
            dtype=args.dtype,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            workers=args.workers,
            shard_size=args.shard_size,
            decode_short_side=args.decode_short_side,
            retry_errors=args.retry_errors,
            progress=sys.stderr.isatty(),
        )
    finally:
        distributed.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
        if summary["failed"]:
            print(f"{summary['failed']} videos could not be read: their errors are in {args.output}/manifest.jsonl", file=sys.stderr)
        if summary["failed_before"]:
            print(
                f"{summary['failed_before']} videos could not be read by an earlier run (their errors are in "
                f"{args.output}/manifest.jsonl): --retry-errors tries them again",
                file=sys.stderr,
            )
    # 1 as for predict: done, but some videos of the collection could not be read
    return 1 if summary["failed"] or summary["failed_before"] else 0


def _add_search(sub) -> None:
    search = sub.add_parser("search", help="rank the videos (or windows) of an embedded collection against a text or a video")
    search.add_argument("collection", help="folder written by `actionclip embed`")
    search.add_argument("query", nargs="?", help='text, e.g. "someone playing guitar"')
    search.add_argument("--like", help="a video: rank by similarity to it instead of a text")
    search.add_argument("--top-k", type=int, default=10, help="results (default: 10)")
    search.add_argument(
        "--index",
        default="exact",
        choices=("exact", "faiss"),
        help="exact matrix product, or a faiss "
        "index built once and kept beside the shards (pip install 'actionclip[index]') (default: exact)",
    )
    search.add_argument("--nprobe", type=int, default=32, help="inverted lists visited by a large faiss index (default: 32)")
    search.add_argument("--templates", help="actionclip (the official 16), label_only, or a file of templates (default: the model's)")
    search.add_argument("--json", action="store_true", help='one JSON object {"query", "results": [...]}')
    _add_model_arguments(search, required=False)
    search.set_defaults(handler=_search)


def _search(args) -> int:
    from actionclip.inference.search import format_results, search

    check_minimums(args, {"--top-k": 1, "--nprobe": 1})
    answer = search(
        args.collection,
        args.query,
        like=args.like,
        top_k=args.top_k,
        model=args.model,
        checkpoint=args.checkpoint,
        pretrained=args.pretrained,
        templates=args.templates,
        index=args.index,
        nprobe=args.nprobe,
        device=args.device,
    )
    print(json.dumps(answer) if args.json else format_results(answer))
    return 0


def add_predict_collection_options(predict: argparse.ArgumentParser) -> None:
    """``actionclip predict``'s timeline and collection options."""
    predict.add_argument(
        "--window",
        type=float,
        help="a timeline: classify every window of this many seconds (the video decoded once) and merge them into segments",
    )
    predict.add_argument("--stride", type=float, help="seconds between window starts (default: the window)")
    predict.add_argument("--min-score", type=float, help="windows whose top score is lower are no action (in no segment)")
    predict.add_argument("--timeline", help="draw each timeline into this PNG (several videos: NAME_<video>.png)")
    predict.add_argument(
        "--embeddings",
        help="label the collection `actionclip embed` wrote in this folder, without "
        "decoding again (the model it records unless --checkpoint/--model)",
    )


def _timeline_path(pattern: str, video: str, count: int) -> Path:
    path = Path(pattern)
    return path if count == 1 else path.with_name(f"{path.stem}_{Path(video).stem}{path.suffix or '.png'}")


def predict_collection(args, labels: list[str], device) -> int:
    """``actionclip predict`` with ``--window`` (timelines) or ``--embeddings`` (an embedded collection)."""
    from tqdm import tqdm

    from actionclip.inference.classify import format_result
    from actionclip.inference.timeline import embedding_predictions, format_timeline, iter_timelines, plot_timeline

    text_cache = None if args.no_text_cache else args.text_cache
    if args.embeddings:
        if args.videos or args.window is not None:
            raise ValueError("--embeddings labels the collection's own videos or windows: give no videos and no --window")
        results = embedding_predictions(
            args.embeddings,
            labels,
            args.model,
            checkpoint=args.checkpoint,
            pretrained=args.pretrained,
            top_k=args.top_k,
            min_score=args.min_score,
            templates=args.templates,
            device=device,
            text_cache=text_cache,
        )
    else:
        if not args.videos or not (args.checkpoint or args.model):
            raise ValueError("give videos and --checkpoint or --model")
        if args.views != "1x1":
            raise ValueError("--window classifies one clip per window: --views is for whole videos")
        check_minimums(args, {"--top-k": 1, "--batch-size": 1, "--workers": 0})
        model = load_model_from_args(args, device)
        results = iter_timelines(
            model,
            args.videos,
            labels,
            window=args.window,
            stride=args.stride,
            num_frames=args.frames,
            top_k=args.top_k,
            min_score=args.min_score,
            templates=args.templates,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=sys.stderr.isatty(),
            text_cache=text_cache,
            decode_short_side=args.decode_short_side,
        )
    failed = total = 0
    for result in results:
        total += 1
        failed += "error" in result
        timeline = "windows" in result
        if args.json:
            tqdm.write(json.dumps(result), file=sys.stdout)
        elif "error" in result:
            tqdm.write(format_result(result), file=sys.stderr)
        else:
            tqdm.write((format_timeline(result) if timeline else format_result(result)) + "\n", file=sys.stdout)
        if args.timeline and timeline and result["windows"]:
            plot_timeline(result, _timeline_path(args.timeline, result["video"], len(args.videos or [None, None])))
    if failed:
        print(f"{failed} of {total} videos could not be read", file=sys.stderr)
    return 1 if failed else 0
