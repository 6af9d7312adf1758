import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from actionclip.cli.main import main
from actionclip.engine.config import load_config
from actionclip.engine.plots import shots_of

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_config_loads_and_says_what_it_reproduces(path):
    config = load_config(path)
    header = path.read_text().split("\n", 1)[0]
    assert header.startswith("#")
    if path.parent.name in ("k400", "ablations", "charades", "xclip"):
        assert "Table" in path.read_text().split("model:")[0] or "X-CLIP paper:" in path.read_text()
    assert config.optim.weight_decay > 0


def _fake_run(run, k, top1):
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump({"data": {"format": "list", "root": "data/ucf101/videos", "train": f"x/train1_few_shot_{k}.txt"}})
    )
    (run / "eval.json").write_text(json.dumps({"top1": top1}))
    lines = [{"step": s, "epoch": 0, "loss": 2.0 / s, "lr": 1e-3} for s in range(1, 6)] + [{"step": 5, "epoch": 0, "val_top1": top1}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_plot_commands_write_pngs(tmp_path, capsys):
    for k, top1 in [(2, 40.0), (4, 55.0), (8, 70.0)]:
        _fake_run(tmp_path / f"k{k}", k, top1)
    assert shots_of(tmp_path / "k4") == 4
    assert main(["plot", str(tmp_path / "k2")]) == 0
    assert Image.open(tmp_path / "k2" / "training.png").size[0] > 500
    assert main(["plot", "--few-shot", *(str(tmp_path / f"k{k}") for k in (2, 4, 8)), "--output", str(tmp_path / "fs.png")]) == 0
    assert Image.open(tmp_path / "fs.png").size[0] > 300
    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 2  # a folder that is not a run: one line
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "no metrics.jsonl" in error and error.count("\n") == 1
