"""``actionclip train``, ``eval``, ``plot``, ``pretrain`` and ``data check``: the commands of experiments and their
data, each configured by a YAML experiment config or by its files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_commands(sub) -> None:
    for add in (_add_train, _add_eval, _add_plot, _add_pretrain, _add_data):
        add(sub)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML experiment config (see configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-5 (repeatable)",
    )
    parser.add_argument("--output", help="run directory (overrides train.output)")


def _config(args):
    """The experiment config with the command line's overrides, or None after printing what is wrong with it."""
    from actionclip.engine.config import load_config

    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"train.output={args.output}")
    for option in ("views", "precision"):  # eval's options, checked like the config's values
        if getattr(args, option, None):
            overrides.append(f"eval.{option}={getattr(args, option)}")
    try:
        return load_config(args.config, overrides)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a model from a YAML config (torchrun for several processes)")
    _add_config_arguments(train)
    train.add_argument("--resume", action="store_true", help="continue the run in the output directory from its newest checkpoint")
    train.set_defaults(handler=_train)


def _train(args) -> int:
    from actionclip.engine.run import run_training

    config = _config(args)
    if config is None:
        return 2
    summary = run_training(config, resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "unreadable"}))
    return 0


def _add_eval(sub) -> None:
    evaluate = sub.add_parser("eval", help="evaluate a checkpoint on the config's validation data")
    _add_config_arguments(evaluate)
    evaluate.add_argument(
        "--checkpoint",
        help="our checkpoint or run directory, an official ActionCLIP .pt, an export "
        "directory, or a published checkpoint's name (see `actionclip models`)",
    )
    evaluate.add_argument("--views", help="CLIPSxCROPS for multi-view testing, e.g. 10x3 (default: eval.views)")
    evaluate.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16", "int8"),
        help="weights' precision (default: eval.precision); ONNX Runtime: fp32, int8 or auto (default: an export directory's own)",
    )
    evaluate.add_argument(
        "--runtime",
        default="torch",
        choices=("torch", "onnx"),
        help="onnx: run with ONNX Runtime, exported "
        "on the fly into the cache (default: torch; an export directory as --checkpoint always runs with ONNX Runtime)",
    )
    evaluate.set_defaults(handler=_eval)


def _eval(args) -> int:
    from actionclip.engine.onnx_eval import onnx_evaluation_model
    from actionclip.engine.run import run_evaluation

    config = _config(args)
    if config is None:
        return 2
    model = onnx_evaluation_model(config, args.checkpoint, args.runtime, args.precision)
    summary = run_evaluation(config, args.checkpoint, args.output, model=model)
    # The warnings were logged (stderr) when they arose.
    print(json.dumps({k: v for k, v in summary.items() if k not in ("unreadable", "parts", "warnings")}))
    for item in summary["unreadable"]:
        print(f"unreadable: {item['path']}: {item['reason']}", file=sys.stderr)
    return 1 if summary["unreadable"] else 0


def _add_plot(sub) -> None:
    plot = sub.add_parser("plot", help="training curves of run directories, or accuracy against K of few-shot runs")
    plot.add_argument("runs", nargs="+", help="run directories")
    plot.add_argument("--few-shot", action="store_true", help="one figure: final top-1 of each run against its K")
    plot.add_argument("--output", help="PNG path (default: <run>/training.png, or few_shot.png)")
    plot.set_defaults(handler=_plot)


def _plot(args) -> int:
    from actionclip.engine.plots import plot_few_shot, plot_training

    if args.few_shot:
        print(plot_few_shot(args.runs, args.output or "few_shot.png"))
        return 0
    for run in args.runs:
        print(plot_training(run, args.output if len(args.runs) == 1 else None))
    return 0


def _add_pretrain(sub) -> None:
    pretrain = sub.add_parser(
        "pretrain", help="contrastive CLIP pre-training on image-caption pairs (CSV path,caption or folder of image + .txt)"
    )
    pretrain.add_argument("data", help="CSV with a path,caption header, or a folder of images each with a same-named .txt caption")
    pretrain.add_argument("--model", required=True, help="open_clip model name, or the name to register --model-config under")
    pretrain.add_argument("--model-config", help="JSON open_clip model config (embed_dim, vision_cfg, text_cfg) for a custom architecture")
    pretrain.add_argument("--output", required=True, help="directory for clip.pt (open_clip state dict), model_config.json, pretrain.json")
    pretrain.add_argument("--steps", type=int, default=1000)
    pretrain.add_argument("--batch-size", type=int, default=128)
    pretrain.add_argument("--lr", type=float, default=2e-3)
    pretrain.add_argument("--weight-decay", type=float, default=0.1)
    pretrain.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps")
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    pretrain.set_defaults(handler=_pretrain)


def _pretrain(args) -> int:
    from actionclip.engine.pretrain import PretrainConfig, pretrain_from_files
    from actionclip.models.backbone import register_model_config

    if args.model_config:
        try:
            register_model_config(args.model, json.loads(Path(args.model_config).read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            raise ValueError(f"{args.model_config}: not valid JSON ({error})") from None
    config = PretrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, seed=args.seed
    )
    print(pretrain_from_files(args.data, args.model, args.output, config, workers=args.workers))
    return 0


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="dataset tools: `actionclip data check CONFIG_OR_LIST_OR_DIR`")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    check = data_sub.add_parser("check", help="decode every video of a list file or directory and report bad ones")
    check.add_argument(
        "list_or_dir", help="experiment config (.yaml), list file (official or '<video> <label>' format), or a directory of videos"
    )
    check.add_argument("--root", help="folder that relative paths in the list start from (default: the list's folder)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores; 0: none)")
    check.add_argument("--min-frames", type=int, default=1, help="report videos with fewer frames (default: 1)")
    check.set_defaults(handler=_data_check)


def _data_check(args) -> int:
    import time

    from actionclip.data.check import check_videos, config_targets, targets_of
    from actionclip.engine.config import load_config

    path = Path(args.list_or_dir)
    try:
        if path.suffix in (".yaml", ".yml") and path.is_file():
            targets = config_targets(load_config(path).data)
        else:
            targets = targets_of(path, args.root)
        if not targets:  # an empty folder or list checks nothing: a wrong path, not a clean dataset
            by_extension = " (by extension: .mp4, .avi, .mkv, ...)" if path.is_dir() else ""
            raise ValueError(f"{path}: no videos found{by_extension}")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = check_videos(targets, args.min_frames, args.workers, progress=not args.json and sys.stderr.isatty())
    seconds = time.perf_counter() - start
    bad = [r for r in results if r.problem]
    if args.json:
        print(
            json.dumps(
                {
                    "checked": len(results),
                    "ok": len(results) - len(bad),
                    "seconds": round(seconds, 3),
                    "bad": [r.to_dict() for r in bad],
                    "videos": [r.to_dict() for r in results],
                },
                indent=1,
            )
        )
    else:
        for r in bad:
            print(f"BAD  {r.path}: {r.problem}")
        print(f"checked {len(results)} videos in {seconds:.1f} s: {len(results) - len(bad)} ok, {len(bad)} bad")
    return 1 if bad else 0
