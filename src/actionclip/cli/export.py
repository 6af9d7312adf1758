"""``actionclip export``: a model as an export directory (:mod:`actionclip.export.directory`)."""

from __future__ import annotations

import sys

from actionclip.cli.model_options import add_build_options, add_model_source, labels_from_args, warn_if_random
from actionclip.cli.options import check_minimums
from actionclip.onnx_runtime.export_config import ONNX_PRECISIONS


def add_commands(sub) -> None:
    export = sub.add_parser("export", help="export a model to ONNX (video and text encoders) for ONNX Runtime")
    add_model_source(export)
    add_build_options(export)
    export.add_argument("--output", required=True, help="the export directory")
    export.add_argument(
        "--precision",
        default="fp32",
        choices=ONNX_PRECISIONS,
        help="int8: also a video graph whose per-token matmuls run in int8, the default at run time (default: fp32)",
    )
    export.add_argument("--frames", type=int, help="frames per clip (default: the model's; some models take only theirs)")
    labels = export.add_mutually_exclusive_group()
    labels.add_argument("--labels", help="comma-separated labels whose text features are stored (no text tower needed for them)")
    labels.add_argument("--labels-file", help="a text file with one label per line, as --labels")
    export.add_argument("--templates", help="templates of the stored label features (default: the model's)")
    export.set_defaults(handler=_export)


def _export(args) -> int:
    from actionclip.checkpoints.sources import read_model
    from actionclip.export.directory import check_export_target, export_model

    check_minimums(args, {"--frames": 1})
    check_export_target(args.output)  # before the model is loaded: a folder of the user's is refused at once
    labels = labels_from_args(args)
    warn_if_random(args)
    model = read_model(
        args.checkpoint, args.model, args.pretrained, visual_prompt=args.visual_prompt, num_frames=args.frames or 8, arch=args.arch
    )
    output = export_model(model, args.output, args.precision, args.frames, labels, args.templates)
    print(f"exported to {output}", file=sys.stderr)
    return 0
