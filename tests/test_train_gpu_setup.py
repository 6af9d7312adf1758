"""The training loop's setup for many processes and GPUs, checked on CPUs: gloo processes with torchrun's environment stand in
for GPUs, and what only a GPU shows (pinned memory, deterministic kernels) is checked on the settings made."""

import json
import math
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import pytest
import tomllib
import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

import actionclip
from actionclip.engine import run
from actionclip.engine.config import load_config
from actionclip.engine.evaluate import predict_dataset
from actionclip.engine.objectives import create_objective
from actionclip.engine.train import EpochSampler, Trainer, TrainingDiverged
from actionclip.host import distributed
from actionclip.models.precision import prepare_for_inference
from forked import Forked, run_ranks, start_ranks
from run_helpers import overrides

REPO = Path(__file__).resolve().parents[1]


# A rank of a run of 2 gloo processes on 32 random videos. "hooks": each rank records, at every gradient all-reduce,
# how many training forwards had run, and the seed of each forward; "nan": one video that only rank 1 loads is NaN.
def _rank(mode, output):
    info = distributed.init("cpu")
    accumulation = 2 if mode == "hooks" else 1
    config = load_config(
        None,
        [f"train.output={output}", "train.seed=0", "data.batch_size=4", "optim.epochs=1", "optim.warmup_epochs=0.25"]
        + ["model.num_frames=4", "train.log_every=1", "data.workers=0", f"optim.accumulation_steps={accumulation}"],
    )
    nan_index = EpochSampler(32, 8, 0, 0, distributed.DistInfo(1, 2)).items[8][0]  # rank 1's third step's first video

    class Videos(torch.utils.data.Dataset):
        classes = ["red thing", "blue thing"]

        def __len__(self):
            return 32

        def __getitem__(self, index):
            video = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(index))
            if mode == "nan" and index == nan_index:
                video[0, 0, 0, 0] = math.nan
            return video, index % 2

    model = actionclip.create_model("actionclip-tiny-vit", num_frames=4, seed=0)
    trainer = Trainer(config, model, Videos(), None, info)
    forwards, reduces, seeds = [0], [], []

    def count(module, inputs):
        if module.training:
            forwards[0] += 1
            seeds.append(torch.initial_seed())

    model.register_forward_pre_hook(count)

    def hook(state, bucket):
        reduces.append(forwards[0])
        return allreduce_hook(None, bucket)

    trainer.ddp.register_comm_hook(None, hook)
    try:
        trainer.train()
    except TrainingDiverged as error:
        print(f"rank {info.rank}: {error}", file=sys.stderr)
        return 3
    finally:
        distributed.cleanup()
    with open(os.path.join(output, f"rank{info.rank}.json"), "w") as handle:
        json.dump({"reduces": reduces, "seeds": seeds}, handle)


def test_accumulation_all_reduces_once_per_step_and_ranks_draw_their_own_randomness(tmp_path):
    run_ranks(_rank, "hooks", str(tmp_path / "run"), output=tmp_path / "hooks")
    ranks = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        # 2 optimizer steps of 2 micro-steps: gradients are reduced after the 2nd and 4th forward only.
        assert rank["reduces"] and sorted(set(rank["reduces"])) == [2, 4]
        assert len(set(rank["seeds"])) == 4  # a seed per micro-step
    # Dropout and mixing draws differ between the ranks at every micro-step.
    assert all(a != b for a, b in zip(ranks[0]["seeds"], ranks[1]["seeds"]))


def test_a_nan_on_one_rank_stops_every_rank_with_the_same_message(tmp_path):
    started = time.time()
    ranks = start_ranks(_rank, "nan", str(tmp_path / "run"), output=tmp_path / "nan")
    assert [rank.wait(timeout=120) for rank in ranks] == [3, 3]
    assert time.time() - started < 60
    stderr = "".join(rank.stderr for rank in ranks)
    # A progress bar may share the line: the messages are found wherever they are.
    messages = dict(re.findall(r"rank (\d): (loss is [^\n]*)", stderr))
    assert sorted(messages) == ["0", "1"], stderr[-3000:]
    assert messages["0"] == messages["1"]
    assert messages["0"].startswith("loss is nan at epoch 0, step 2; the last good checkpoint is ")


def test_features_are_gathered_by_default_with_several_processes_and_false_still_means_local():
    model = actionclip.create_model("actionclip-tiny-vit", num_frames=4, seed=0)
    two = distributed.DistInfo(rank=0, world_size=2)
    classes = ["red thing", "blue thing"]
    assert create_objective(model, classes, info=two).gather_features
    assert not create_objective(model, classes, gather_features=False, info=two).gather_features
    assert not create_objective(model, classes, info=distributed.DistInfo()).gather_features
    assert load_config(None, []).train.gather_features is None


class _Pids(torch.utils.data.Dataset):
    """Random videos that append the id of the process loading each one to a file."""

    classes = ("red thing", "blue thing")

    def __init__(self, log):
        self.log = log

    def __len__(self):
        return 16

    def __getitem__(self, index):
        with open(self.log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return torch.randn(4, 3, 32, 32), index % 2


def test_the_training_loader_keeps_its_workers_across_epochs_and_pins_batches_for_a_gpu(tmp_path):
    config = load_config(None, overrides(tmp_path, tmp_path / "run", **{"optim.epochs": 3, "data.workers": 1}))
    model = actionclip.create_model("actionclip-tiny-vit", num_frames=4, seed=0)
    log = tmp_path / "pids"
    Trainer(config, model, _Pids(log), _Pids(tmp_path / "val_pids"), distributed.DistInfo()).train()
    pids = log.read_text().split()
    assert len(pids) == 3 * 16 and len(set(pids)) == 1  # one worker for 3 epochs
    val_pids = (tmp_path / "val_pids").read_text().split()
    assert len(val_pids) == 3 * 16 and len(set(val_pids)) == 1  # and one for their 3 evaluations
    from actionclip.engine.steps import train_loader

    sampler = EpochSampler(16, 8, 0, 0, distributed.DistInfo())
    assert train_loader(_Pids(log), sampler, 8, 2, torch.device("cuda", 0)).pin_memory
    assert not train_loader(_Pids(log), sampler, 8, 2, torch.device("cpu")).pin_memory


class _Faults(torch.utils.data.Dataset):
    """One item, whose loading prints the page faults of its last rounds of allocating and filling 64 MiB."""

    classes = ["red thing", "blue thing"]

    def __len__(self):
        return 1

    def __getitem__(self, index):
        faults = []
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(max(faults[-2:]), flush=True)
        return torch.zeros(4, 3, 32, 32), 0


def _load_in_a_worker():
    model = actionclip.create_model("actionclip-tiny-vit", num_frames=4, seed=0)
    prepare_for_inference(model, "fp32")  # keeps freed memory in this process, as `actionclip eval` does
    predict_dataset(model, _Faults(), _Faults.classes, workers=1, progress=False)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_dataloader_workers_hand_freed_memory_back(tmp_path):
    process = Forked(_load_in_a_worker, output=tmp_path / "eval")
    assert process.wait() == 0, process.stderr
    assert int(process.stdout) >= 16384  # each 64 MiB block is a fresh mapping again: its 4 KiB pages fault in


def test_deterministic_option_sets_torch_and_cublas(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode: calls.append(mode))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    run._start_process(load_config(None, ["train.deterministic=true", "train.device=cpu"]))
    assert calls == [True] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.benchmark is False
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    run._start_process(load_config(None, ["train.device=cpu"]))
    assert calls == [True] and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_matplotlib_comes_with_a_plain_install():
    # Every evaluation during training writes confusion.png.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(requirement.startswith("matplotlib") for requirement in project["dependencies"])


def test_the_text_tower_never_reads_a_device_tensor_and_training_trims_tokens_on_the_host():
    model = actionclip.create_model("actionclip-tiny-vit", num_frames=4, seed=0)
    tokens = model.tokenize(["a photo of a red thing", "a blue thing"])
    lengths = []
    model.text.register_forward_pre_hook(lambda module, inputs: lengths.append(inputs[0].shape[1]))
    objective = create_objective(model, ["red thing", "blue thing"])
    objective(model, torch.randn(2, 4, 3, 32, 32), torch.tensor([0, 1]), seeds=torch.tensor([0, 1]))
    assert lengths == [int(tokens.argmax(dim=-1).max()) + 1] and lengths[0] < 77  # cut before leaving the CPU
    # On the meta device, as on a GPU, reading the tokens' length would fail (there: wait for the GPU).
    with torch.device("meta"):
        meta = actionclip.create_model("actionclip-tiny-vit", num_frames=4)
    assert meta.text(tokens.to("meta")).shape == (2, 64)
