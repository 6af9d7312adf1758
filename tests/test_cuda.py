"""Checks that need a CUDA GPU; ``benchmarks/gpu_check.py`` runs them (``pytest -m cuda``). Without a GPU they are
skipped. Models are built with random weights; nothing is downloaded."""

import json
import subprocess
import sys

import pytest
import torch

import actionclip
from actionclip.benchmark.throughput import timed
from actionclip.data import make_synthetic_dataset
from actionclip.engine.config import load_config
from actionclip.engine.run import run_evaluation, run_training
from run_helpers import losses, overrides, write_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
GIB = 2**30


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def _saved_state(run_dir):
    return torch.load(max((run_dir / "checkpoints").glob("*.pt")), weights_only=True)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_training_steps(precision, data_root, tmp_path):
    config = load_config(
        None, overrides(data_root, tmp_path / "run", **{"optim.epochs": 1, "train.device": "cuda", "train.precision": precision})
    )
    summary = run_training(config)
    steps = losses(tmp_path / "run")
    assert len(steps) == 4 and all(torch.isfinite(torch.tensor(steps))) and summary["num_videos"] == 12
    scaler = _saved_state(tmp_path / "run")["scaler"]
    # fp16 gradients are scaled (GradScaler on); bf16 has fp32's range and needs no scaler.
    assert (scaler.get("scale", 0) > 0) if precision == "fp16" else scaler == {}


# torchrun with one process: the NCCL group is joined and used here, since one process does not need one.
NCCL_SCRIPT = """
import sys
import torch
import torch.distributed as dist
from actionclip.engine.config import load_config
from actionclip.engine.run import run_training

torch.cuda.set_device(0)
dist.init_process_group("nccl")
value = torch.ones(1, device="cuda")
dist.all_reduce(value)
holder = [{"rank": dist.get_rank()} if dist.get_rank() == 0 else None]
dist.broadcast_object_list(holder, src=0)
assert value.item() == 1 and holder == [{"rank": 0}], (value, holder)
run_training(load_config(sys.argv[1]))
"""


def test_torchrun_with_one_nccl_process(data_root, tmp_path):
    config_file = write_config(tmp_path / "run.yaml", overrides(data_root, tmp_path / "run", **{"optim.epochs": 1, "train.device": "cuda"}))
    (tmp_path / "train.py").write_text(NCCL_SCRIPT)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "1",
            str(tmp_path / "train.py"),
            str(config_file),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(losses(tmp_path / "run")) == 4 and json.loads((tmp_path / "run" / "eval.json").read_text())["num_videos"] == 12


# ViT-B/32 with 10x3 views: about 0.5 GB of weights (the frame encoder in 16 bits, the text tower and Transf in fp32),
# 0.3 GB of frames for 2 videos x 30 views x 8 frames at 224 px, and the activations of one block at a time.
PEAK_PREDICT_GIB = 1.5
# evaluate scores eval.batch_size x 30 views at once (2 x 30 x 8 = 480 frames): the frames in fp32 and bf16 and a block's
# activations (about 0.4 GB for its MLP) on top of the weights.
PEAK_EVAL_GIB = 3.0


def test_predict_10x3_on_cuda_within_memory(data_root, tmp_path):
    written = make_synthetic_dataset(tmp_path / "videos", shapes=["circle"], colours=["red"], motions=["left"], clips_per_class=2)
    videos = [sample.path for sample in written.samples]
    model = actionclip.create_model("ViT-B-32", pretrained=None, num_frames=8)
    torch.cuda.reset_peak_memory_stats()
    results = actionclip.predict(videos, ["a", "b", "c"], model, device="cuda", precision="fp16", views="10x3", batch_size=2, workers=0)
    peak = torch.cuda.max_memory_allocated() / GIB
    assert all(abs(sum(r["scores"]) - 1) < 1e-3 for r in results) and len(results) == 2
    assert peak < PEAK_PREDICT_GIB, f"{peak:.2f} GiB"


def test_10x3_evaluation_on_cuda_within_memory(data_root, tmp_path):
    config = load_config(
        None,
        overrides(
            data_root,
            tmp_path / "run",
            **{
                "model.name": "ViT-B-32",
                "data.image_size": 224,
                "eval.views": "10x3",
                "eval.batch_size": 2,
                "eval.precision": "bf16",
                "train.device": "cuda",
            },
        ),
    )
    torch.cuda.reset_peak_memory_stats()
    summary = run_evaluation(config, output=str(tmp_path / "eval"))
    peak = torch.cuda.max_memory_allocated() / GIB
    assert summary["num_videos"] == 12 and summary["views"] == "10x3"
    assert peak < PEAK_EVAL_GIB, f"{peak:.2f} GiB"


@pytest.mark.parametrize("arch, prompt", [("actionclip", "Shift"), ("xclip", "Transf")])
def test_grad_checkpointing_keeps_less_for_backward(arch, prompt):
    model = actionclip.create_model("ViT-B-32", pretrained=None, visual_prompt=prompt, arch=arch, num_frames=8).cuda()
    video = torch.randn(2, 8, 3, 224, 224, device="cuda")
    kept = []
    for checkpointing in (False, True):
        model.video.visual.set_grad_checkpointing(checkpointing)
        before = torch.cuda.memory_allocated()
        features = model.encode_video(video)
        kept.append(torch.cuda.memory_allocated() - before)  # what the forward pass keeps for backward
        features.sum().backward()
        model.zero_grad(set_to_none=True)
        del features
    assert kept[1] < 0.3 * kept[0], kept


def test_benchmark_cpu_time_leaves_out_waiting_for_the_gpu():
    a = torch.randn(8192, 8192, device="cuda")

    def queue_work():
        for _ in range(40):  # about 1 s of fp32 matmuls, queued in microseconds
            a @ a

    timed(queue_work, torch.device("cuda"))  # warm-up (cuBLAS initialisation)
    wall, cpu = timed(queue_work, torch.device("cuda"))
    assert cpu < 0.25 * wall, (wall, cpu)
