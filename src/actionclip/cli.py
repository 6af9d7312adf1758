"""The ``actionclip`` command. Each sub-command calls into the module that implements it."""
from __future__ import annotations

import argparse
import json
import sys


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML experiment config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-5 (repeatable)")
    parser.add_argument("--output", help="run directory (overrides train.output)")


def _config(args):
    from actionclip.config import load_config

    overrides = list(args.overrides)
    if args.output:
        overrides.append(f"train.output={args.output}")
    return load_config(args.config, overrides)


def _train(args) -> int:
    from actionclip.engine.run import run_training

    summary = run_training(_config(args), resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "unreadable"}))
    return 0


def _eval(args) -> int:
    from actionclip.engine.run import run_evaluation

    config = _config(args)
    if args.views:
        config.eval.views = args.views
    summary = run_evaluation(config, args.checkpoint, args.output)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("unreadable", "parts")}))
    for item in summary["unreadable"]:
        print(f"unreadable: {item['path']}: {item['reason']}", file=sys.stderr)
    return 1 if summary["unreadable"] else 0


def _plot(args) -> int:
    from actionclip.plots import plot_few_shot, plot_training

    if args.few_shot:
        print(plot_few_shot(args.runs, args.output or "few_shot.png"))
        return 0
    for run in args.runs:
        print(plot_training(run, args.output if len(args.runs) == 1 else None))
    return 0


def _demo(args) -> int:
    from actionclip.demo import DemoConfig, quick_config, run_demo

    config = quick_config(args.seed, args.threads) if args.quick else DemoConfig(seed=args.seed, threads=args.threads)
    if args.variants:
        config.variants = tuple(args.variants.split(","))
    run_demo(args.output, config)
    return 0


def _pretrain(args) -> int:
    from actionclip.models.backbone import register_model_config
    from actionclip.pretrain import PretrainConfig, pretrain_from_files

    if args.model_config:
        with open(args.model_config) as handle:
            register_model_config(args.model, json.load(handle))
    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                            warmup=args.warmup, seed=args.seed)
    print(pretrain_from_files(args.data, args.model, args.output, config, workers=args.workers))
    return 0


def _add_demo_and_pretrain(sub) -> None:
    demo = sub.add_parser("demo", help="pre-train, prompt, fine-tune on generated videos, offline on a CPU (about 3 minutes)")
    demo.add_argument("--output", required=True, help="directory for results.json, results.png and the pre-trained CLIP")
    demo.add_argument("--quick", action="store_true", help="a reduced run of about a minute (CI)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=2, help="variants fine-tuned at once, one single-threaded process each (results do not depend on it)")
    demo.add_argument("--variants", help="comma-separated subset of actionclip_transf,actionclip_meanp,unimodal,random_init,label_only")
    demo.set_defaults(handler=_demo)

    pretrain = sub.add_parser("pretrain", help="contrastive CLIP pre-training on image-caption pairs (CSV path,caption or folder of image + .txt)")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "data":
        from actionclip.data.cli import main as data_main

        return data_main(argv[1:])
    parser = argparse.ArgumentParser(prog="actionclip", description="Video action recognition as video-text matching with CLIP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("data", help="dataset tools: `actionclip data check LIST_OR_DIR`", add_help=False)

    train = sub.add_parser("train", help="train a model from a YAML config (torchrun for several processes)")
    _add_config_arguments(train)
    train.add_argument("--resume", action="store_true", help="continue the run in the output directory from its newest checkpoint")
    train.set_defaults(handler=_train)

    evaluate = sub.add_parser("eval", help="evaluate a checkpoint on the config's validation data")
    _add_config_arguments(evaluate)
    evaluate.add_argument("--checkpoint", help="our checkpoint or run directory, or an official ActionCLIP .pt")
    evaluate.add_argument("--views", help="CLIPSxCROPS for multi-view testing, e.g. 10x3 (default: eval.views)")
    evaluate.set_defaults(handler=_eval)

    plot = sub.add_parser("plot", help="training curves of run directories, or accuracy against K of few-shot runs")
    plot.add_argument("runs", nargs="+", help="run directories")
    plot.add_argument("--few-shot", action="store_true", help="one figure: final top-1 of each run against its K")
    plot.add_argument("--output", help="PNG path (default: <run>/training.png, or few_shot.png)")
    plot.set_defaults(handler=_plot)

    _add_demo_and_pretrain(sub)

    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(args)
