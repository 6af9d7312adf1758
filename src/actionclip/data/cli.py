"""``actionclip data ...`` sub-commands."""
from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="actionclip data")
    parser.add_subparsers(dest="data_command", required=True)
    parser.parse_args(argv)
    return 0
