"""What every command checks of its options before anything slow starts."""

from __future__ import annotations

import argparse
import math
import sys


def check_minimums(args: argparse.Namespace, minimums: dict[str, int]) -> None:
    """ValueError naming the first option given a value below its minimum (options left out are None)."""
    for option, minimum in minimums.items():
        value = getattr(args, option[2:].replace("-", "_"))
        if value is not None and value < minimum:
            raise ValueError(f"{option} must be >= {minimum}, got {value}")


def print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the command line: one ``warning: ...`` line, no source location."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def check_finite(args: argparse.Namespace) -> None:
    """ValueError naming the first option given inf or nan: Python's float() takes them, and no option means them
    (``--max-wait-ms inf`` stalled serve's batching, ``--window inf`` ended in a worker's traceback)."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
