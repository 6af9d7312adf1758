"""Under torchrun (its environment, in forked ranks), rank 0 alone reads the annotations and the other ranks receive
the datasets from it."""

import datetime
import json
import os
import time

import pytest
import torch.distributed as dist

import actionclip.data.build as build
import actionclip.engine.run as run
from actionclip.engine.config import load_config
from actionclip.engine.run import run_evaluation, run_training
from forked import run_ranks
from run_helpers import losses, overrides, write_config


# Each rank counts the calls of the function that reads annotations (for synthetic data: writes or finds the generated
# videos). With "datasets", the default group's collectives time out after 3 s (NCCL's 10 minutes, scaled down), rank 0
# takes 6 s to read, and the trainer only reports the datasets it was given.
def _rank(config_file, out, mode):
    calls, read = [], build.dataset_samples

    def counted(config, subset):
        calls.append(subset)
        if mode == "datasets" and os.environ["RANK"] == "0" and subset == "train":
            time.sleep(6)
        return read(config, subset)

    build.dataset_samples = counted

    class Datasets:
        def __init__(self, config, model, train_set, val_set, info):
            self.sets = {"train": train_set, "val": val_set}

        def train(self, resume):
            return {name: [[s.path, s.label] for s in dataset.samples] + dataset.classes for name, dataset in self.sets.items()}

    def init_then_shorten_the_timeout(*args, init=dist.init_process_group, **kwargs):
        init(*args, **kwargs)  # joining keeps the default timeout: on a busy machine one rank may start seconds late
        dist.set_timeout(datetime.timedelta(seconds=3))

    if mode == "datasets":
        dist.init_process_group = init_then_shorten_the_timeout
        run.Trainer = Datasets
    result = run.run_evaluation(load_config(config_file)) if mode == "eval" else run.run_training(load_config(config_file))
    with open(f"{out}.rank{os.environ['RANK']}.json", "w") as file:
        json.dump({"calls": calls, "result": result}, file)


def _torchrun(tmp_path, config_file, mode):
    run_ranks(_rank, config_file, tmp_path / mode, mode, output=tmp_path / mode)
    return [json.loads((tmp_path / f"{mode}.rank{rank}.json").read_text()) for rank in (0, 1)]


def test_only_rank_0_reads_the_annotations_and_training_is_unchanged(tmp_path):
    common = {"optim.epochs": 1, "train.gather_features": True}
    single = run_training(load_config(None, overrides(tmp_path / "data", tmp_path / "single", **common)))
    config_file = write_config(tmp_path / "ddp.yaml", overrides(tmp_path / "data", tmp_path / "ddp", **common, **{"data.batch_size": 4}))
    ranks = _torchrun(tmp_path, config_file, "train")
    assert [rank["calls"] for rank in ranks] == [["train", "val"], []]
    assert json.loads((tmp_path / "ddp" / "eval.json").read_text())["top1"] == pytest.approx(single["top1"])
    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), abs=2e-3)


def test_the_other_ranks_wait_for_rank_0_past_the_default_timeout(tmp_path):
    config_file = write_config(tmp_path / "ddp.yaml", overrides(tmp_path / "data", tmp_path / "ddp"))
    rank0, rank1 = _torchrun(tmp_path, config_file, "datasets")
    assert (rank0["calls"], rank1["calls"]) == (["train", "val"], [])
    assert rank1["result"] == rank0["result"] and len(rank0["result"]["train"]) == 32 + 4  # 32 videos, 4 classes


def test_evaluation_reads_the_annotations_on_rank_0_only_and_scores_as_one_process(tmp_path):
    single = run_evaluation(load_config(None, overrides(tmp_path / "data", tmp_path / "single")))
    config_file = write_config(tmp_path / "ddp.yaml", overrides(tmp_path / "data", tmp_path / "ddp"))
    rank0, rank1 = _torchrun(tmp_path, config_file, "eval")
    assert (rank0["calls"], rank1["calls"]) == (["val"], [])
    assert rank0["result"]["top1"] == rank1["result"]["top1"] == pytest.approx(single["top1"])
    assert rank0["result"]["num_videos"] == single["num_videos"] == 12
