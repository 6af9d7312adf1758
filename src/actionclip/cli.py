"""The ``actionclip`` command. Each sub-command lives in the module that implements it."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="actionclip", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("data", help="dataset tools (`actionclip data check LIST_OR_DIR`)", add_help=False)
    if argv and argv[0] == "data":
        from actionclip.data.cli import main as data_main

        return data_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0
