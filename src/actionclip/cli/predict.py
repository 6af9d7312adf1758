"""``actionclip predict``: classify videos among the user's labels (``--window`` and ``--embeddings`` are declared
and run by :mod:`actionclip.cli.collections`)."""

from __future__ import annotations

import json
import sys

from actionclip.cli.collections import add_predict_collection_options
from actionclip.cli.model_options import add_build_options, add_model_source, labels_from_args, load_model_from_args, warn_if_random
from actionclip.cli.options import check_minimums, print_warning
from actionclip.host.files import TEXT_FEATURES, cache_root


def add_commands(sub) -> None:
    _add_predict(sub)


def _add_predict(sub) -> None:
    predict = sub.add_parser("predict", help="classify videos (files or folders) among your own labels")
    predict.add_argument("videos", nargs="*", help="video files, or folders (every video below them)")
    labels = predict.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help='comma-separated labels, e.g. "arm wrestling,playing guitar,swimming"')
    labels.add_argument("--labels-file", help="a text file with one label per line")
    add_model_source(predict, required=False)  # one of the two, unless --embeddings records the model
    add_build_options(predict)
    predict.add_argument("--frames", type=int, help="frames per clip (default: the model's, 8 for --model)")
    predict.add_argument("--views", default="1x1", help="CLIPSxCROPS, probabilities averaged over views, e.g. 10x3 (default: 1x1)")
    predict.add_argument("--top-k", type=int, default=5, help="labels shown per video (default: 5)")
    predict.add_argument(
        "--templates",
        help="actionclip (the official 16), label_only, or a file of templates (default: actionclip for ActionCLIP, label_only for X-CLIP)",
    )
    predict.add_argument("--json", action="store_true", help="one JSON object per video and line")
    predict.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    predict.add_argument(
        "--text-cache",
        default=str(cache_root() / TEXT_FEATURES),
        help="where label text features are kept between runs (default: %(default)s; env ACTIONCLIP_CACHE)",
    )
    predict.add_argument("--no-text-cache", action="store_true", help="always run the text encoder")
    predict.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16", "fp16", "int8"),
        help="weights' precision; auto = bf16 on GPUs and on CPUs with native bf16, else fp16/fp32; "
        "with --runtime onnx: fp32 or int8, auto = int8 on CPUs without native bf16 (default: auto)",
    )
    predict.add_argument(
        "--runtime",
        default="torch",
        choices=("torch", "onnx"),
        help="onnx: run with ONNX Runtime, exported on the fly into the cache (default: torch; an "
        "export directory as --checkpoint always runs with ONNX Runtime)",
    )
    predict.add_argument("--batch-size", type=int, default=8, help="videos per batch (default: 8)")
    predict.add_argument("--workers", type=int, default=2, help="decoding worker processes (default: 2; 0: none)")
    predict.add_argument(
        "--decode-short-side",
        type=int,
        help="scale larger frames down to this short side while "
        "decoding (e.g. 256; cheaper for HD sources, pixels differ slightly from `eval`; default: off)",
    )
    add_predict_collection_options(predict)
    predict.set_defaults(handler=_predict)


def _predict(args) -> int:
    import warnings

    from tqdm import tqdm

    from actionclip.host.distributed import parse_device
    from actionclip.inference.classify import format_result, iter_predictions
    from actionclip.weights.errors import CheckpointError

    try:
        check_minimums(args, {"--frames": 1, "--top-k": 1, "--batch-size": 1, "--workers": 0, "--decode-short-side": 1})
        device = parse_device(args.device, "--device")
        labels = labels_from_args(args)
        if args.stride is not None and args.window is None:
            raise ValueError("--stride needs --window SECONDS")
        if args.embeddings or args.window is not None:
            from actionclip.cli.collections import predict_collection

            return predict_collection(args, labels, device)
        if not args.videos or not (args.checkpoint or args.model):
            raise ValueError("give videos and --checkpoint or --model (or --embeddings DIR)")
        warn_if_random(args)
        model = load_model_from_args(args, device, runtime=args.runtime)
        failed = total = 0
        with warnings.catch_warnings():
            warnings.showwarning = print_warning
            for result in iter_predictions(
                model,
                args.videos,
                labels,
                num_frames=args.frames,
                views=args.views,
                top_k=args.top_k,
                templates=args.templates,
                batch_size=args.batch_size,
                workers=args.workers,
                progress=sys.stderr.isatty(),
                text_cache=None if args.no_text_cache else args.text_cache,
                decode_short_side=args.decode_short_side,
            ):
                total += 1
                failed += "error" in result
                if "warning" in result:
                    tqdm.write(f"warning: {result['video']}: {result['warning']}", file=sys.stderr)
                if args.json:
                    tqdm.write(json.dumps(result), file=sys.stdout)
                elif "error" in result:
                    tqdm.write(format_result(result), file=sys.stderr)
                else:
                    tqdm.write(format_result(result) + "\n", file=sys.stdout)
    except (CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if failed:
        print(f"{failed} of {total} videos could not be read", file=sys.stderr)
    return 1 if failed else 0
