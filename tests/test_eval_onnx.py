"""`actionclip eval` with ONNX Runtime: an export directory as the checkpoint, or `--runtime onnx`, gives the metrics
of the torch checkpoint it was exported from; what it cannot run is refused in one line."""

import json

import pytest
import torch

import actionclip
from actionclip.cli.main import main
from actionclip.engine import run
from actionclip.engine.config import load_config, save_config
from actionclip.export.directory import export_model
from forked import run_ranks

DATA = {
    "shapes": ["circle", "square", "triangle"],
    "colours": ["red", "blue"],
    "motions": ["left"],
    "clips_per_class": 2,
    "size": 32,
    "num_frames": 8,
}  # 6 classes (top-5 is reported), 12 videos


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A tiny model's checkpoint and its fp32 export."""
    model = _model(False)
    return str(actionclip.save(model, tmp_path_factory.mktemp("checkpoint"))), str(export_model(model, tmp_path_factory.mktemp("export")))


def _eval(data_root, tmp_path, monkeypatch, capsys, *arguments, **extra):
    """Exit code, stdout, stderr and the EvalResult of ``actionclip eval`` on the tiny data."""
    values = {
        "model.name": "test-tiny",
        "model.pretrained": None,
        "model.num_frames": 4,
        "data.format": "synthetic",
        "data.root": str(data_root),
        "data.image_size": 32,
        "data.workers": 0,
        "data.options": DATA,
        "train.output": str(tmp_path / "out"),
        "eval.batch_size": 5,
        "eval.views": "2x1",
        **extra,
    }
    save_config(load_config(None, [f"{k}={json.dumps(v)}" for k, v in values.items()]), tmp_path / "config.yaml")
    results = []
    predict_dataset = run.predict_dataset
    monkeypatch.setattr(run, "predict_dataset", lambda *a, **k: results.append(predict_dataset(*a, **k)) or results[-1])
    code = main(["eval", str(tmp_path / "config.yaml"), *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, results[0] if results else None


def _model(imported: bool):
    model = actionclip.create_model("test-tiny", seed=0, num_frames=4).eval()
    if imported:  # an imported model's test settings (ViFi-CLIP's kind): they travel with its export
        model.config.normalization, model.config.test_logit_scale = "imagenet", 7.5
        model.config.templates = ["a photo of a {}."]
    return model


def _same_evaluation(onnx, torch_run):
    (code, out, err, result), (torch_code, torch_out, _, expected) = onnx, torch_run
    assert code == torch_code == 0 and "error" not in err
    summary, torch_summary = json.loads(out), json.loads(torch_out)
    summary.pop("checkpoint"), torch_summary.pop("checkpoint")
    assert summary == torch_summary and {"top1", "top5", "mean_class_acc"} <= set(summary)
    assert summary["num_videos"] == 12
    assert torch.equal(result.indices, expected.indices) and torch.equal(result.targets, expected.targets)
    assert (result.probabilities - expected.probabilities).abs().max() < 1e-4


@pytest.mark.parametrize("imported", [False, True])
def test_eval_on_an_export_directory_gives_the_torch_checkpoints_metrics(data_root, plain, tmp_path, monkeypatch, capsys, imported):
    if imported:
        model = _model(imported)
        checkpoint, directory = str(actionclip.save(model, tmp_path / "checkpoint")), str(export_model(model, tmp_path / "export"))
    else:
        checkpoint, directory = plain
    torch_run = _eval(data_root, tmp_path, monkeypatch, capsys, "--checkpoint", checkpoint)
    _same_evaluation(_eval(data_root, tmp_path, monkeypatch, capsys, "--checkpoint", directory), torch_run)
    assert json.loads((tmp_path / "out" / "eval" / "eval.json").read_text())["checkpoint"] == directory


def test_runtime_onnx_exports_the_checkpoint_into_the_cache(data_root, plain, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACTIONCLIP_CACHE", str(tmp_path / "cache"))
    checkpoint = plain[0]
    torch_run = _eval(data_root, tmp_path, monkeypatch, capsys, "--checkpoint", checkpoint)
    onnx_run = _eval(data_root, tmp_path, monkeypatch, capsys, "--checkpoint", checkpoint, "--runtime", "onnx")
    assert json.loads(torch_run[1])["checkpoint"] == json.loads(onnx_run[1])["checkpoint"] == checkpoint
    _same_evaluation(onnx_run, torch_run)
    assert len(list((tmp_path / "cache" / "onnx").iterdir())) == 1


def test_torchrun_processes_each_run_a_session_and_score_as_one(data_root, plain, tmp_path, monkeypatch, capsys):
    code, out, _, _ = _eval(data_root, tmp_path, monkeypatch, capsys, "--checkpoint", plain[1])
    argv = ["eval", str(tmp_path / "config.yaml"), "--checkpoint", plain[1], "--output", str(tmp_path / "ddp")]
    ranks = run_ranks(main, argv, output=tmp_path / "ddp-run")
    assert code == 0
    assert [json.loads(rank.stdout) for rank in ranks] == [json.loads(out)] * 2  # each rank prints it
    assert (tmp_path / "ddp" / "per_class.csv").read_text() == (tmp_path / "out" / "eval" / "per_class.csv").read_text()


def _refused(code, out, err, result, *phrases):
    assert code == 2 and out == "" and result is None
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for phrase in phrases:
        assert phrase in err


def test_a_fixed_frame_export_on_another_frame_count_is_refused(data_root, tmp_path, monkeypatch, capsys):
    model = actionclip.create_model("test-tiny", seed=0, visual_prompt="Joint", num_frames=8).eval()
    directory = str(export_model(model, tmp_path / "export"))
    _refused(*_eval(data_root, tmp_path, monkeypatch, capsys, "--checkpoint", directory), "trained on 8 frames", "set model.num_frames=8")


@pytest.mark.parametrize(
    "source, arguments, phrases",
    [
        ("export", ["--set", "train.device=cuda"], ["runs with ONNX Runtime on the CPU", "set train.device=cpu"]),
        ("export", ["--precision", "int8"], ["exported without int8 graphs"]),
        ("export", ["--precision", "bf16"], ["fp32, int8 or auto"]),
        ("checkpoint", ["--precision", "int8"], ["--precision int8 is ONNX Runtime's", "--runtime onnx"]),
    ],
)
def test_what_onnx_runtime_cannot_run_is_refused_in_one_line(data_root, plain, tmp_path, monkeypatch, capsys, source, arguments, phrases):
    checkpoint = plain[1] if source == "export" else plain[0]
    _refused(*_eval(data_root, tmp_path, monkeypatch, capsys, "--checkpoint", checkpoint, *arguments), *phrases)
    assert not (tmp_path / "out").exists()
