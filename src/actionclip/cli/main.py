"""The ``actionclip`` command: ``_add_<command>`` declares each sub-command's arguments, ``_<command>`` runs it by
calling the module that implements it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from actionclip.cli.options import check_minimums


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML experiment config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-5 (repeatable)")
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
    evaluate.add_argument("--checkpoint", help="our checkpoint or run directory, an official ActionCLIP .pt, an export "
                          "directory, or a published checkpoint's name (see `actionclip models`)")
    evaluate.add_argument("--views", help="CLIPSxCROPS for multi-view testing, e.g. 10x3 (default: eval.views)")
    evaluate.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                          help="weights' precision (default: eval.precision); ONNX Runtime: fp32, int8 or auto (default: an export directory's own)")
    evaluate.add_argument("--runtime", default="torch", choices=("torch", "onnx"), help="onnx: run with ONNX Runtime, exported "
                          "on the fly into the cache (default: torch; an export directory as --checkpoint always runs with ONNX Runtime)")
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


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the command line: one ``warning: ...`` line, no source location."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def _add_predict(sub) -> None:
    from actionclip.cli.collections import add_predict_collection_options
    from actionclip.cli.model_options import add_build_options, add_model_source
    from actionclip.inference.text_cache import default_cache_dir

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
    predict.add_argument("--templates", help="actionclip (the official 16), label_only, or a file of templates "
                         "(default: actionclip for ActionCLIP, label_only for X-CLIP)")
    predict.add_argument("--json", action="store_true", help="one JSON object per video and line")
    predict.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    predict.add_argument("--text-cache", default=str(default_cache_dir()), help="where label text features are kept between runs (default: %(default)s; env ACTIONCLIP_CACHE)")
    predict.add_argument("--no-text-cache", action="store_true", help="always run the text encoder")
    predict.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                         help="weights' precision; auto = bf16 on GPUs and on CPUs with native bf16, else fp16/fp32; "
                         "with --runtime onnx: fp32 or int8, auto = int8 on CPUs without native bf16 (default: auto)")
    predict.add_argument("--runtime", default="torch", choices=("torch", "onnx"),
                         help="onnx: run with ONNX Runtime, exported on the fly into the cache (default: torch; an "
                         "export directory as --checkpoint always runs with ONNX Runtime)")
    predict.add_argument("--batch-size", type=int, default=8, help="videos per batch (default: 8)")
    predict.add_argument("--workers", type=int, default=2, help="decoding worker processes (default: 2; 0: none)")
    predict.add_argument("--decode-short-side", type=int, help="scale larger frames down to this short side while "
                         "decoding (e.g. 256; cheaper for HD sources, pixels differ slightly from `eval`; default: off)")
    add_predict_collection_options(predict)
    predict.set_defaults(handler=_predict)


def _predict(args) -> int:
    import warnings

    from tqdm import tqdm

    from actionclip.cli.model_options import warn_if_random
    from actionclip.host.distributed import parse_device
    from actionclip.inference.backends import load_model
    from actionclip.inference.classify import format_result, iter_predictions
    from actionclip.inference.inputs import parse_labels, read_labels
    from actionclip.weights.readers import CheckpointError

    try:
        check_minimums(args, {"--frames": 1, "--top-k": 1, "--batch-size": 1, "--workers": 0, "--decode-short-side": 1})
        device = parse_device(args.device, "--device")
        labels = read_labels(args.labels_file) if args.labels_file else parse_labels(args.labels)
        if args.embeddings or args.window is not None:
            from actionclip.cli.collections import predict_collection

            return predict_collection(args, labels, device)
        if not args.videos or not (args.checkpoint or args.model):
            raise ValueError("give videos and --checkpoint or --model (or --embeddings DIR)")
        warn_if_random(args)
        model = load_model(args.checkpoint, args.model, args.pretrained, visual_prompt=args.visual_prompt,
                           num_frames=args.frames or 8, arch=args.arch, device=device, precision=args.precision,
                           runtime=args.runtime)
        failed = total = 0
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            for result in iter_predictions(model, args.videos, labels, num_frames=args.frames, views=args.views,
                                           top_k=args.top_k, templates=args.templates, batch_size=args.batch_size,
                                           workers=args.workers, progress=sys.stderr.isatty(),
                                           text_cache=None if args.no_text_cache else args.text_cache,
                                           decode_short_side=args.decode_short_side):
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


def _add_benchmark(sub) -> None:
    bench = sub.add_parser("benchmark", help="parameters, GFLOPs per video and videos/s of a configuration (the paper's Table 7)")
    bench.add_argument("--model", default="ViT-B-32", help="open_clip model name, built with random weights in the OpenAI architecture (default: ViT-B-32)")
    bench.add_argument("--visual-prompt", default="Transf", help="ActionCLIP's temporal module (default: Transf)")
    bench.add_argument("--arch", choices=("actionclip", "xclip"), default="actionclip")
    bench.add_argument("--frames", type=int, default=8, help="frames per video (default: 8)")
    bench.add_argument("--batch-size", type=int, default=8, help="videos per batch for the timings (default: 8)")
    bench.add_argument("--iterations", type=int, default=10, help="timed batches, after warm-up (default: 10)")
    bench.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    bench.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16", "int8"),
                       help="weights' precision; int8 with --runtime onnx (default: fp32)")
    bench.add_argument("--runtime", default="torch", choices=("torch", "onnx"), help="onnx: the exported video graph in ONNX Runtime (default: torch)")
    bench.add_argument("--video", action="append", help="video file or folder: also time decode + transform + model (repeatable)")
    bench.add_argument("--workers", type=int, default=2, help="decoding worker processes for --video (default: 2)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(handler=_benchmark)


def _benchmark(args) -> int:
    from actionclip.benchmark.throughput import benchmark, format_benchmark
    from actionclip.host.distributed import parse_device

    try:
        check_minimums(args, {"--frames": 1, "--batch-size": 1, "--iterations": 1, "--workers": 0})
        if args.runtime == "onnx":
            from actionclip.benchmark.onnx_throughput import onnx_benchmark

            result = onnx_benchmark(args.model, args.visual_prompt, args.frames, args.batch_size, args.arch, args.iterations,
                                    args.precision, args.video, args.workers)
        else:
            result = benchmark(args.model, args.visual_prompt, args.frames, args.batch_size, args.arch,
                               parse_device(args.device, "--device"), args.iterations, args.video, args.workers, args.precision)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else format_benchmark(result))
    return 0


def _add_demo(sub) -> None:
    from actionclip.demo.recipes import VARIANTS

    demo = sub.add_parser("demo", help="pre-train, prompt, fine-tune and evaluate on generated videos, offline on a CPU")
    demo.add_argument("--output", required=True, help="directory for results.json, results.png and the pre-trained CLIPs")
    demo.add_argument("--quick", action="store_true", help="a shorter run, fewer steps and videos, every variant (the CI test)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=2, help="variants fine-tuned at once, one single-threaded process each (results do not depend on it)")
    demo.add_argument("--variants", help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)")
    demo.set_defaults(handler=_demo)


def _demo(args) -> int:
    from actionclip.demo.recipes import DemoConfig, quick_config
    from actionclip.demo.run import run_demo

    config = quick_config(args.seed, args.threads) if args.quick else DemoConfig(seed=args.seed, threads=args.threads)
    if args.variants:
        config.variants = tuple(args.variants.split(","))
    run_demo(args.output, config)
    return 0


def _add_pretrain(sub) -> None:
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


def _pretrain(args) -> int:
    from actionclip.engine.pretrain import PretrainConfig, pretrain_from_files
    from actionclip.models.backbone import register_model_config

    if args.model_config:
        try:
            register_model_config(args.model, json.loads(Path(args.model_config).read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            raise ValueError(f"{args.model_config}: not valid JSON ({error})") from None
    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                            warmup=args.warmup, seed=args.seed)
    print(pretrain_from_files(args.data, args.model, args.output, config, workers=args.workers))
    return 0


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="dataset tools: `actionclip data check CONFIG_OR_LIST_OR_DIR`")
    data_sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    check = data_sub.add_parser("check", help="decode every video of a list file or directory and report bad ones")
    check.add_argument("list_or_dir", help="experiment config (.yaml), list file (official or '<video> <label>' format), or a directory of videos")
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
        print(json.dumps({"checked": len(results), "ok": len(results) - len(bad), "seconds": round(seconds, 3),
                          "bad": [r.to_dict() for r in bad], "videos": [r.to_dict() for r in results]}, indent=1))
    else:
        for r in bad:
            print(f"BAD  {r.path}: {r.problem}")
        print(f"checked {len(results)} videos in {seconds:.1f} s: {len(results) - len(bad)} ok, {len(bad)} bad")
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    from actionclip.cli.collections import add_embed_command, add_search_command
    from actionclip.cli.export import add_export_command
    from actionclip.cli.models_command import add_hub_commands
    from actionclip.cli.serve import add_serve_command

    parser = argparse.ArgumentParser(prog="actionclip", description="Video action recognition as video-text matching with CLIP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train, _add_eval, _add_plot, _add_predict, _add_benchmark, _add_demo, _add_pretrain, _add_data,
                add_embed_command, add_export_command, add_search_command, add_serve_command):
        add(sub)
    add_hub_commands(sub)
    return parser


def _exit_code(error: Exception) -> int | None:
    """The exit code for an error of the user's input or data rather than of the program (None: a bug, whose
    traceback is kept). ValueError and OSError are what the library raises for values and files it cannot use."""
    from actionclip.data.bad_samples import TooManyBadSamples
    from actionclip.engine.run_dir import RunDirError
    from actionclip.engine.signals import EXIT_INTERRUPTED, TrainingInterrupted
    from actionclip.engine.train import TrainingDiverged
    from actionclip.weights.readers import CheckpointError

    if isinstance(error, TrainingInterrupted):
        return EXIT_INTERRUPTED
    if isinstance(error, (TooManyBadSamples, TrainingDiverged)):
        return 1
    if isinstance(error, (ValueError, OSError, CheckpointError, RunDirError)):
        return 2
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        code = _exit_code(error)
        if code is None:
            raise
        from actionclip.engine.signals import EXIT_INTERRUPTED

        print(error if code == EXIT_INTERRUPTED else f"error: {error}", file=sys.stderr)
        return code
