"""Under torchrun, rank 0 alone reads the annotations and the other ranks receive the datasets from it."""
import json
import os
import subprocess
import sys

import pytest
from run_helpers import losses, overrides, write_config

from actionclip.engine.config import load_config
from actionclip.engine.run import run_training

# Counts, per rank, the calls of the function that reads annotations (here: writes or finds the generated videos).
SCRIPT = """
import json, os, sys
import actionclip.data.build as build
from actionclip.engine.config import load_config
from actionclip.engine.run import run_training

calls, read = [], build.dataset_samples
def counted(config, subset):
    calls.append(subset)
    return read(config, subset)
build.dataset_samples = counted
run_training(load_config(sys.argv[1]))
with open(f"{sys.argv[2]}.rank{os.environ['RANK']}.json", "w") as file:
    json.dump(calls, file)
"""


def test_only_rank_0_reads_the_annotations_and_training_is_unchanged(tmp_path):
    common = {"optim.epochs": 1, "train.gather_features": True}
    single = run_training(load_config(None, overrides(tmp_path / "data", tmp_path / "single", **common)))
    config_file = write_config(tmp_path / "ddp.yaml", overrides(tmp_path / "data", tmp_path / "ddp", **common, **{"data.batch_size": 4}))
    (tmp_path / "train.py").write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "train.py"), str(config_file), str(tmp_path / "calls")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    calls = [json.loads((tmp_path / f"calls.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert calls == [["train", "val"], []]
    assert json.loads((tmp_path / "ddp" / "eval.json").read_text())["top1"] == pytest.approx(single["top1"])
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), abs=2e-3)
