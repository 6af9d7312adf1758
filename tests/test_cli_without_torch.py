"""`actionclip --help`, every `actionclip COMMAND --help` and `actionclip models` run where torch cannot be imported:
the command line imports what a command needs only when that command runs."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from actionclip.cli.main import build_parser

SRC = Path(__file__).resolve().parents[1] / "src"

BLOCK_TORCH = """
import sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "open_clip"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, BlockTorch())
"""

RUN_ALL = """
import contextlib, io, json, sys
from actionclip.cli.main import main

codes = {}
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            codes[" ".join(argv)] = main(argv)
        except SystemExit as exit:
            codes[" ".join(argv)] = exit.code
    assert out.getvalue().strip(), argv
assert not any(name.split(".")[0] in ("torch", "open_clip") for name in sys.modules)
print(json.dumps(codes))
"""


COMMANDS = ("train", "eval", "plot", "pretrain", "data", "predict", "benchmark", "demo", "embed", "search", "export", "serve", "models")


def _commands() -> list[list[str]]:
    return [["--help"], ["models"], ["data", "check", "--help"]] + [[name, "--help"] for name in COMMANDS]


def test_the_list_names_every_command(capsys):
    try:
        build_parser().parse_args(["--help"])
    except SystemExit:
        pass
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ") and not line.startswith("     ")}
    assert listed == set(COMMANDS)


def test_help_and_models_import_no_torch(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(BLOCK_TORCH))
    commands = _commands()
    run = subprocess.run(
        [sys.executable, "-c", RUN_ALL, json.dumps(commands)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{tmp_path}:{SRC}", "PATH": "/usr/bin:/bin", "ACTIONCLIP_CACHE": str(tmp_path / "cache")},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    codes = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(codes.values()) == {0}, codes
