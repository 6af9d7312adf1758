"""The ``actionclip`` command: one module per command group declares its sub-commands (``add_commands``) and runs
them by calling the modules that implement them, imported only when a command runs: ``--help`` imports no torch."""

from __future__ import annotations

import argparse
import sys

from actionclip.cli import benchmark, collections, demo, experiments, export, models, predict, serve
from actionclip.cli.options import check_finite


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actionclip", description="Video action recognition as video-text matching with CLIP.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (experiments, predict, benchmark, demo, collections, export, serve, models):
        group.add_commands(sub)
    return parser


def _exit_code(error: Exception) -> int | None:
    """The exit code for an error of the user's input or data rather than of the program (None: a bug, whose
    traceback is kept). ValueError and OSError are what the library raises for values and files it cannot use."""
    from actionclip.data.bad_samples import TooManyBadSamples
    from actionclip.engine.run_dir import RunDirError
    from actionclip.engine.signals import EXIT_INTERRUPTED, TrainingInterrupted
    from actionclip.engine.train import TrainingDiverged
    from actionclip.weights.errors import CheckpointError

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
        check_finite(args)
        return args.handler(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as error:
        code = _exit_code(error)
        if code is None:
            raise
        from actionclip.engine.signals import EXIT_INTERRUPTED

        # One write per line: print() writes the text and the newline separately, and the lines of ranks under
        # torchrun, which share one stderr, then run together.
        sys.stderr.write(f"{error}\n" if code == EXIT_INTERRUPTED else f"error: {error}\n")
        return code
