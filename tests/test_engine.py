"""End-to-end engine tests on generated videos with a tiny backbone."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import actionclip
from actionclip.cli.main import main
from actionclip.data.build import build_dataset
from actionclip.data.transforms import normalize
from actionclip.engine.config import load_config
from actionclip.engine.evaluate import predict_dataset
from actionclip.engine.run import run_evaluation, run_training
from actionclip.engine.train import Trainer, TrainingDiverged
from actionclip.host import distributed
from forked import Forked
from run_helpers import losses as _losses
from run_helpers import overrides as _overrides
from run_helpers import write_config as _write_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def test_training_learns_and_writes_a_run(data_root, tmp_path):
    config = load_config(None, _overrides(data_root, tmp_path / "run", **{"optim.epochs": 8}))
    summary = run_training(config)
    losses = _losses(tmp_path / "run")
    assert len(losses) == 8 * (32 // 8)
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.3
    assert summary["top1"] >= 1.5 * 25.0  # 4 classes: chance is 25%
    eval_json = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert {"top1", "mean_class_acc"} <= set(eval_json) and eval_json["num_videos"] == 12
    assert "top5" not in eval_json  # 4 classes are all in every top 5
    assert (tmp_path / "run" / "per_class.csv").is_file() and (tmp_path / "run" / "confusion.png").is_file()
    model = actionclip.load(tmp_path / "run" / "last")
    assert model.config.visual_prompt == "Transf"
    again = run_evaluation(load_config(None, _overrides(data_root, tmp_path / "run")), checkpoint=str(tmp_path / "run"))
    assert again["top1"] == pytest.approx(json.loads((tmp_path / "run" / "eval.json").read_text())["top1"])
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(config)


def test_torchrun_two_processes_matches_one_process(data_root, tmp_path):
    # No train.gather_features: with several processes the default contrasts the whole global batch.
    common = {"optim.epochs": 2}
    single = load_config(None, _overrides(data_root, tmp_path / "single", **common, **{"data.batch_size": 8}))
    single_summary = run_training(single)
    config_file = _write_config(tmp_path / "ddp.yaml", _overrides(data_root, tmp_path / "ddp", **common, **{"data.batch_size": 4}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "actionclip",
            "train",
            str(config_file),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp_summary = json.loads((tmp_path / "ddp" / "eval.json").read_text())
    assert ddp_summary["num_videos"] == single_summary["num_videos"] == 12
    assert ddp_summary["top1"] == pytest.approx(single_summary["top1"])
    assert _losses(tmp_path / "ddp") == pytest.approx(_losses(tmp_path / "single"), abs=2e-3)


def test_resume_after_sigkill_gives_the_same_loss_curve(data_root, tmp_path):
    extra = {"optim.epochs": 3, "train.save_every_steps": 2, "train.keep_last": 10, "eval.batch_size": 12}
    run_training(load_config(None, _overrides(data_root, tmp_path / "whole", **extra)))
    config_file = _write_config(tmp_path / "killed.yaml", _overrides(data_root, tmp_path / "killed", **extra))
    process = Forked(main, ["train", str(config_file)], output=tmp_path / "killed-run")
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 300
    while not any(p.name.endswith("step00000006.pt") for p in checkpoints.glob("*.pt")) and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None  # it really is killed mid-run
    process.kill()
    assert main(["train", str(config_file), "--resume"]) == 0
    assert _losses(tmp_path / "killed") == pytest.approx(_losses(tmp_path / "whole"), abs=1e-6)


def test_multiview_is_thirty_forward_passes_averaged(data_root, tmp_path):
    config = load_config(None, _overrides(data_root, tmp_path / "mv"))
    build_dataset(config.data, "train", 4)
    dataset = build_dataset(config.data, "val", 4, views="10x3")
    video, _ = dataset[0]
    assert video.shape == (30, 4, 3, 32, 32)
    model = actionclip.create_model("actionclip-tiny-vit", visual_prompt="MeanP", num_frames=4, seed=0).eval()
    calls = []
    model.video.visual.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    subset = torch.utils.data.Subset(dataset, [0])
    result = predict_dataset(model, subset, dataset.classes, batch_size=1)
    assert sum(calls) == 30 * 4  # 30 views x 4 frames through the image encoder
    with torch.no_grad():
        per_view = model.classify(normalize(video), dataset.classes)  # the dataset's frames are uint8
    assert torch.allclose(result.probabilities[0], per_view.mean(0), atol=1e-5)


def test_text_features_are_computed_once_per_evaluation(data_root, tmp_path):
    config = load_config(None, _overrides(data_root, tmp_path / "tf"))
    build_dataset(config.data, "train", 4)
    dataset = build_dataset(config.data, "val", 4)
    model = actionclip.create_model("actionclip-tiny-vit", num_frames=4, seed=0)
    calls = []
    model.text.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    result = predict_dataset(model, dataset, dataset.classes, batch_size=2)
    assert len(result.targets) == 12  # 6 batches
    assert calls == [16 * 4]  # one call: 16 templates x 4 classes


class _NaNAfter(torch.utils.data.Dataset):
    classes = ["red thing", "blue thing"]

    def __init__(self, bad_index):
        self.bad_index = bad_index

    def __len__(self):
        return 32

    def __getitem__(self, index):
        video = torch.randn(4, 3, 32, 32)
        if index == self.bad_index:
            video[0, 0, 0, 0] = math.nan
        return video, index % 2


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    config = load_config(None, _overrides(tmp_path, tmp_path / "nan", **{"train.save_every_steps": 1}))
    model = actionclip.create_model("actionclip-tiny-vit", num_frames=4, seed=0)
    # The NaN video lands in the third batch of the first epoch.
    from actionclip.engine.train import EpochSampler

    order = [i for i, _ in EpochSampler(32, 8, config.train.seed, 0, distributed.DistInfo()).items]
    trainer = Trainer(config, model, _NaNAfter(order[17]), None, distributed.DistInfo())
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 0, step 2; the last good checkpoint is .*step00000002\.pt"):
        trainer.train()
    saved = torch.load(trainer.latest_checkpoint(), weights_only=True)
    assert saved["state"]["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def _ucf_layout(tmp_path):
    """Synthetic clips laid out as UCF-101 (``<Class>/<video>``) with three test splits of different videos."""
    from actionclip.data.synthetic import make_synthetic_dataset

    written = make_synthetic_dataset(
        tmp_path / "src", shapes=["circle", "square"], colours=["red"], motions=["left"], clips_per_class=3, num_frames=4
    )
    root, splits = tmp_path / "ucf", tmp_path / "splits"
    splits.mkdir()
    names = ["RedCircle", "RedSquare"]
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    for sample in written.samples:
        target = root / names[sample.label] / Path(sample.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(sample.path).read_bytes())
    videos = {n: sorted(p.name for p in (root / n).iterdir()) for n in names}
    for split in (1, 2, 3):
        chosen = [f"{n}/{videos[n][split - 1]}" for n in names]
        (splits / f"testlist0{split}.txt").write_text("\n".join(chosen) + "\n")
        (splits / f"trainlist0{split}.txt").write_text("".join(f"{c} {i + 1}\n" for i, c in enumerate(chosen)))
    return root, splits


def test_zero_shot_protocol_over_three_splits_reports_mean_and_std(tmp_path):
    root, splits = _ucf_layout(tmp_path)
    model = actionclip.create_model("actionclip-tiny-vit", visual_prompt="MeanP", num_frames=4, seed=0)
    actionclip.save(model, tmp_path / "model")
    config = load_config(
        None,
        [
            f"data.root={root}",
            "data.format=ucf101",
            f"data.options={{split_dir: {splits}}}",
            "data.image_size=32",
            "data.workers=0",
            "eval.splits=[1, 2, 3]",
            f"train.output={tmp_path / 'out'}",
            "model.num_frames=4",
        ],
    )
    summary = run_evaluation(config, checkpoint=str(tmp_path / "model"))
    parts = summary["parts"]
    assert list(parts) == ["split1", "split2", "split3"] and all(p["num_videos"] == 2 for p in parts.values())
    top1 = torch.tensor([p["top1"] for p in parts.values()], dtype=torch.float64)
    assert summary["top1_mean"] == pytest.approx(top1.mean().item())
    assert summary["top1_std"] == pytest.approx(top1.std(unbiased=False).item())
    assert (tmp_path / "out" / "eval" / "split2" / "eval.json").is_file()
    assert json.loads((tmp_path / "out" / "eval" / "eval.json").read_text())["top1_mean"] == summary["top1_mean"]


def test_zero_shot_protocol_over_disjoint_class_subsets(data_root, tmp_path):
    config = load_config(None, _overrides(data_root, tmp_path / "zs", **{"eval.class_subsets": {"size": 2, "count": 2, "seed": 0}}))
    build_dataset(config.data, "train", 4)
    model = actionclip.create_model("actionclip-tiny-vit", visual_prompt="MeanP", num_frames=4, seed=0)
    actionclip.save(model, tmp_path / "model")
    summary = run_evaluation(config, checkpoint=str(tmp_path / "model"))
    assert [p["num_videos"] for p in summary["parts"].values()] == [6, 6]  # 2 classes x 3 clips each
    assert "top5_mean" not in summary  # only 2 candidate classes per subset: both in every top 5


def test_xclip_recipe_trains_with_the_engine_and_beats_chance(data_root, tmp_path):
    config = load_config(
        None,
        _overrides(
            data_root,
            tmp_path / "xclip",
            **{
                "model.arch": "xclip",
                "model.freeze_text": True,
                "prompts.templates": "label_only",
                "optim.epochs": 8,
                "train.label_smoothing": 0.1,
                "train.mixup_alpha": 0.8,
                "train.cutmix_alpha": 1.0,
                "data.normalization": "imagenet",
            },
        ),
    )
    summary = run_training(config)
    losses = _losses(tmp_path / "xclip")
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8
    assert summary["top1"] >= 1.5 * 25.0  # 4 classes
    model = actionclip.load(tmp_path / "xclip" / "last")
    assert isinstance(model, actionclip.XCLIP)


def test_kinetics_configs_evaluate_in_low_precision_on_gpus():
    # ~19M frame forwards for K400 10x3: fp32 weights on a GPU would be the slow path.
    for path in sorted((REPO / "configs" / "k400").glob("*.yaml")):
        assert load_config(str(path), []).eval.precision == "auto", path


def test_evaluation_on_cuda_allows_tf32_matmuls():
    from actionclip.engine.run import allow_tf32

    # Saved and restored by hand: the CUDA build's cuBLAS module does not let pytest's monkeypatch restore them.
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    try:
        matmul.fp32_precision = conv.fp32_precision = "ieee"
        allow_tf32(torch.device("cpu"))
        assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        allow_tf32(torch.device("cuda"))  # sets the flags only: no GPU needed
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def test_an_epoch_is_saved_before_its_report_can_fail(data_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the confusion plot's import fails
    config = load_config(None, _overrides(data_root, tmp_path / "run", **{"optim.epochs": 1}))
    with pytest.raises(ImportError, match="matplotlib"):
        run_training(config)
    saved = torch.load(max((tmp_path / "run" / "checkpoints").glob("*.pt")), weights_only=True)
    assert saved["state"]["epoch"] == 1 and saved["state"]["global_step"] == 32 // 8
