"""`actionclip eval` against a model that does not fit the data: refused in one line, or evaluated with a warning."""

import json
import logging

import pytest
import torch

import actionclip
from actionclip.cli.main import main
from actionclip.engine.config import load_config, save_config
from actionclip.engine.eval_checks import EvaluationMismatch
from actionclip.engine.evaluate import EvalResult, summarize
from actionclip.engine.run import run_evaluation

DATA = {
    "shapes": ["circle", "square"],
    "colours": ["red", "blue"],
    "motions": ["left"],
    "clips_per_class": 1,
    "size": 32,
    "num_frames": 8,
}  # 4 classes


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def _config(data_root, output, **extra):
    values = {
        "model.name": "test-tiny",
        "model.pretrained": None,
        "model.num_frames": 4,
        "data.format": "synthetic",
        "data.root": str(data_root),
        "data.image_size": 32,
        "data.workers": 0,
        "data.options": DATA,
        "train.output": str(output),
        "eval.batch_size": 8,
        "prompts.templates": "label_only",
    }
    values.update(extra)
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in values.items()])


def _checkpoint(path, **kwargs):
    actionclip.save(actionclip.create_model("test-tiny", seed=0, **kwargs), path)
    return str(path)


def _eval_cli(config, tmp_path, capsys, checkpoint=None):
    save_config(config, tmp_path / "config.yaml")
    code = main(["eval", str(tmp_path / "config.yaml")] + (["--checkpoint", checkpoint] if checkpoint else []))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(code, out, err, *phrases):
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for phrase in phrases:
        assert phrase in err


@pytest.mark.parametrize("class_ids", [None, [0, 1, 2]])
def test_a_classifier_head_on_data_with_other_classes_is_refused(data_root, tmp_path, capsys, class_ids):
    checkpoint = _checkpoint(tmp_path / "head7", arch="unimodal", num_classes=7, visual_prompt="MeanP", num_frames=4)
    config = _config(data_root, tmp_path / "out", **{"data.options": {**DATA, "class_ids": class_ids}})
    classes = len(class_ids or range(4))
    _refused(*_eval_cli(config, tmp_path, capsys, checkpoint), "7-class head", f"has {classes} classes")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_the_refusal_is_an_evaluation_mismatch(data_root, tmp_path):
    checkpoint = _checkpoint(tmp_path / "head7", arch="unimodal", num_classes=7, visual_prompt="MeanP", num_frames=4)
    with pytest.raises(EvaluationMismatch, match="7-class head"):
        run_evaluation(_config(data_root, tmp_path / "out"), checkpoint=checkpoint)
    assert issubclass(EvaluationMismatch, ValueError)


@pytest.mark.parametrize(
    "model", [{"visual_prompt": "Transf"}, {"visual_prompt": "Transf_cls"}, {"visual_prompt": "Joint"}, {"arch": "xclip"}]
)
def test_learned_frame_positions_refuse_another_frame_count(data_root, tmp_path, capsys, model):
    checkpoint = _checkpoint(tmp_path / "eight", num_frames=8, **model)
    config = _config(data_root, tmp_path / "out")
    _refused(*_eval_cli(config, tmp_path, capsys, checkpoint), "trained on 8 frames", "set model.num_frames=8")


@pytest.mark.parametrize("prompt", ["MeanP", "Shift", "Conv1D", "LSTM"])
def test_frame_count_free_prompts_evaluate_another_frame_count_with_one_warning(data_root, tmp_path, caplog, prompt):
    checkpoint = _checkpoint(tmp_path / "eight", visual_prompt=prompt, num_frames=8)
    with caplog.at_level(logging.WARNING, logger="actionclip.engine"):
        summary = run_evaluation(_config(data_root, tmp_path / "out"), checkpoint=checkpoint)
    warnings = [r.getMessage() for r in caplog.records if r.name == "actionclip.engine"]
    assert len(warnings) == 1 and "trained on 8 frames" in warnings[0] and "model.num_frames=4" in warnings[0]
    assert summary["num_videos"] == 4 and summary["warnings"] == warnings
    assert json.loads((tmp_path / "out" / "eval" / "eval.json").read_text())["warnings"] == warnings


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_another_image_size_is_refused(data_root, tmp_path, capsys, with_checkpoint):
    checkpoint = _checkpoint(tmp_path / "model", visual_prompt="MeanP", num_frames=4) if with_checkpoint else None
    config = _config(data_root, tmp_path / "out", **{"data.image_size": 64, "model.visual_prompt": "MeanP"})
    _refused(*_eval_cli(config, tmp_path, capsys, checkpoint), "32x32 images", "data.image_size is 64", "set data.image_size=32")


def test_other_errors_keep_their_traceback(data_root, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("actionclip.engine.run.run_evaluation", broken)
    save_config(_config(data_root, tmp_path / "out"), tmp_path / "config.yaml")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["eval", str(tmp_path / "config.yaml")])


@pytest.mark.parametrize("num_classes, has_top5", [(2, False), (5, False), (6, True)])
def test_top5_is_reported_only_with_more_than_five_classes(num_classes, has_top5):
    probabilities = torch.rand(8, num_classes).softmax(dim=1)
    targets = torch.arange(8) % num_classes
    summary = summarize(EvalResult(probabilities, targets, torch.arange(8), []))
    assert ("top5" in summary) == has_top5 and "top1" in summary
