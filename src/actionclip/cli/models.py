"""``actionclip models``: the published checkpoints that a name loads, and ``--hub-mirror`` for the commands that
load them (``predict``, ``eval``, ``export``, ``serve``, ``embed``, ``search``)."""

from __future__ import annotations

import json
import os
import sys

# Spelled out rather than imported: building the parser must not import torch.
_MIRROR_HELP = "fetch published checkpoints from this mirror, which serves the same file names (env ACTIONCLIP_HUB_MIRROR)"


def add_commands(sub) -> None:
    """The ``models`` command, and ``--hub-mirror`` on every command that loads a model by name."""
    models = sub.add_parser("models", help="list the published checkpoints that load by name (and ACTIONCLIP_MODELS lists)")
    models.add_argument("--json", action="store_true", help="one JSON list with every field of every entry")
    models.add_argument("--hub-mirror", help=_MIRROR_HELP)
    models.set_defaults(handler=_with_mirror(_models))
    for name in ("predict", "eval", "export", "serve", "embed", "search"):
        parser = sub.choices[name]
        parser.add_argument("--hub-mirror", help=_MIRROR_HELP)
        parser.set_defaults(handler=_with_mirror(parser.get_default("handler")))


def _with_mirror(handler):
    def run(args) -> int:
        from actionclip.checkpoints.download import MIRROR_ENV

        if not args.hub_mirror:
            return handler(args)
        previous = os.environ.get(MIRROR_ENV)
        os.environ[MIRROR_ENV] = args.hub_mirror
        try:
            return handler(args)
        finally:
            if previous is None:
                os.environ.pop(MIRROR_ENV, None)
            else:
                os.environ[MIRROR_ENV] = previous

    return run


def _accuracy(entry) -> str:
    accuracy = entry.accuracy or {}
    top1 = accuracy.get("top1")
    if top1 is None:
        return ""
    values = "/".join(str(v) for v in top1) if isinstance(top1, list) else str(top1)
    return f"{values} {accuracy.get('dataset', '')}".strip()


def _models(args) -> int:
    from actionclip.checkpoints.download import converted_dir
    from actionclip.checkpoints.registry import entries

    found = list(entries().values())
    cached = {entry.name: (converted_dir(entry.name) / "config.json").is_file() for entry in found}
    if args.json:
        print(json.dumps([{**entry.to_dict(), "cached": cached[entry.name]} for entry in found], indent=1))
        return 0
    rows = [("NAME", "FORMAT", "ARCH", "FRAMES", "TOP-1 (REPORTED)", "STATE")]
    for entry in found:
        if cached[entry.name]:
            state = "cached"
        elif entry.url or entry.hub_id:
            state = "download"
        else:
            state = "mirror or file only"
        rows.append((entry.name, entry.format, entry.architecture or "", str(entry.num_frames or ""), _accuracy(entry), state))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
    print(f"{len(found)} checkpoints; `actionclip models --json` gives URLs, checksums and sources", file=sys.stderr)
    return 0
