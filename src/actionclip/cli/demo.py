"""``actionclip demo``: the paper's paradigm end to end on generated videos, offline on a CPU."""

from __future__ import annotations


def add_commands(sub) -> None:
    _add_demo(sub)


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="pre-train, prompt, fine-tune and evaluate on generated videos, offline on a CPU")
    demo.add_argument("--output", required=True, help="directory for results.json, results.png and the pre-trained CLIPs")
    demo.add_argument("--quick", action="store_true", help="a shorter run, fewer steps and videos, every variant (the CI test)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--threads", type=int, default=2, help="variants fine-tuned at once, one single-threaded process each (results do not depend on it)"
    )
    demo.add_argument("--variants", help="comma-separated subset of the variants that results.json lists (default: all)")
    demo.set_defaults(handler=_demo)


def _demo(args) -> int:
    from actionclip.demo.recipes import DemoConfig, quick_config
    from actionclip.demo.run import run_demo

    config = quick_config(args.seed, args.threads) if args.quick else DemoConfig(seed=args.seed, threads=args.threads)
    if args.variants:
        config.variants = tuple(args.variants.split(","))
    run_demo(args.output, config)
    return 0
