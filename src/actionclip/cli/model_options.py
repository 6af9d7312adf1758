"""The options that choose a model, the same in every command that loads one (predict, export, serve, embed,
search), and the warning for a model built without weights."""

from __future__ import annotations

import argparse
import sys

CHECKPOINT_HELP = (
    "our checkpoint or run directory, an export directory, an official ActionCLIP .pt, an mmaction2 or "
    "ViFi-CLIP file, or an X-CLIP checkpoint (a transformers directory, or with --arch xclip an original "
    ".pth)"
)
MODEL_HELP = "open_clip model name, e.g. ViT-B-16 (with --pretrained), or a published checkpoint's name (see `actionclip models`)"


def add_model_source(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--checkpoint`` or ``--model`` (with ``--pretrained``)."""
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    source.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--pretrained", help="open_clip tag (e.g. openai, downloaded when online) or weight file for --model")


def add_build_options(parser: argparse.ArgumentParser) -> None:
    """What a checkpoint does not record, or a model built from ``--model`` needs."""
    parser.add_argument("--arch", choices=("actionclip", "xclip"), help="model kind to build with --model or to expect in --checkpoint")
    parser.add_argument("--visual-prompt", default="Transf", help="for --model and official .pt files (default: Transf)")


def warn_if_random(args: argparse.Namespace, outputs: str = "scores") -> None:
    """One warning line for ``--model`` without ``--pretrained`` (not a published name, which has its weights)."""
    from actionclip.checkpoints.hub import is_published

    if args.model and not args.pretrained and not is_published(args.model):
        print(f"warning: {args.model} has random weights (no --pretrained): its {outputs} mean nothing", file=sys.stderr)


def load_model_from_args(args: argparse.Namespace, device, **options):
    """The inference model the source options name (``inference.backends.load_model``), on ``device`` in
    ``--precision``; ``options`` (e.g. ``runtime``) go to it as well."""
    from actionclip.inference.backends import load_model

    return load_model(
        args.checkpoint,
        args.model,
        args.pretrained,
        visual_prompt=args.visual_prompt,
        num_frames=args.frames or 8,
        arch=args.arch,
        device=device,
        precision=args.precision,
        **options,
    )


def labels_from_args(args: argparse.Namespace) -> list[str] | None:
    """``--labels-file`` or ``--labels`` (None when neither is given)."""
    from actionclip.inference.inputs import parse_labels, read_labels

    if args.labels_file:
        return read_labels(args.labels_file)
    return parse_labels(args.labels) if args.labels else None
