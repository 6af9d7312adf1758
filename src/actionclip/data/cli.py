"""``actionclip data ...`` sub-commands."""
from __future__ import annotations

import argparse
import json
import sys
import time

from .check import check_videos, targets_of


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="actionclip data")
    sub = parser.add_subparsers(dest="data_command", required=True)
    check = sub.add_parser("check", help="decode every video of a list file or directory and report bad ones")
    check.add_argument("list_or_dir", help="experiment config (.yaml), list file (official or '<video> <label>' format), or a directory of videos")
    check.add_argument("--root", help="folder that relative paths in the list start from (default: the list's folder)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores; 0: none)")
    check.add_argument("--min-frames", type=int, default=1, help="report videos with fewer frames (default: 1)")
    args = parser.parse_args(argv)
    return _check(args)


def _check(args: argparse.Namespace) -> int:
    try:
        targets = targets_of(args.list_or_dir, args.root)
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
