"""Our import of ViFi-CLIP checkpoints reproduces ViFi-CLIP's own outputs.

The fixture was produced by running ViFi-CLIP's code (muzairkhattak/ViFi-CLIP at e2d1948) on CPU with tiny random
weights; see tests/fixtures/vificlip/README.md for the recipe.
"""

import math
import pickle
from pathlib import Path

import pytest
import torch

import actionclip
from actionclip import CheckpointError
from actionclip.models.backbone import build_clip

FIXTURES = Path(__file__).parent / "fixtures" / "vificlip"
TOLERANCE = 1e-4
BASE = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


def base_token_embedding(shift: float = 0.0) -> torch.Tensor:
    """The token embedding of the fixture's base CLIP, by the formula of make_fixture.py."""
    rows = torch.arange(49408, dtype=torch.float64)[:, None]
    columns = torch.arange(64, dtype=torch.float64)[None, :]
    return (0.02 * torch.sin(0.37 * rows + 1.3 * columns + 0.1 * rows * columns / 64 + shift)).half().float()


def write_base(path: Path, shift: float = 0.0) -> Path:
    """A CLIP state dict (OpenAI layout) whose token embedding is the base's; ViFi-CLIP reads nothing else from it."""
    state = build_clip(BASE).state_dict()
    state["token_embedding.weight"] = base_token_embedding(shift)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def io():
    return torch.load(FIXTURES / "vificlip_tiny_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base = write_base(tmp_path_factory.mktemp("base") / "ViT-B-16.pt")
    return actionclip.from_vificlip_checkpoint(FIXTURES / "vificlip_tiny.pth", base)


def _views(io):
    videos = io["videos"]
    return videos.view(videos.shape[0], 2, 4, *videos.shape[2:]).unbind(1)


def test_reproduces_vificlip_features_and_test_scores(model, io):
    first = _views(io)[0]
    classes = io["test_classes"]
    tokens = model.tokenize([f"a photo of a {name}." for name in classes])
    assert torch.equal(tokens, io["tokenized_prompts"])
    with torch.no_grad():
        video_error = (model.encode_video(first) - io["video_features"]).abs().max().item()
        text_error = (model.encode_text(tokens) - io["text_features"]).abs().max().item()
        text_features = model.class_text_features(classes)  # the remembered template, "a photo of a {}."
        scores = sum(model.video_probabilities(view, text_features) for view in _views(io))  # validate() sums views
    score_error = (scores - io["test_scores"]).abs().max().item()
    print(f"ViFi-CLIP fidelity: video {video_error:.1e}, text {text_error:.1e}, test scores {score_error:.1e}")
    assert video_error <= TOLERANCE and text_error <= TOLERANCE and score_error <= TOLERANCE


def test_the_test_time_settings_travel_with_the_model(model, io, tmp_path):
    config = model.config
    assert config.visual_prompt == "MeanP" and config.num_frames == 4 and config.normalization == "imagenet"
    assert config.templates == ["a photo of a {}."]
    assert math.isclose(config.test_logit_scale, io["logit_scale"].exp().item(), rel_tol=1e-7)
    assert config.test_logit_scale != 100.0
    first = _views(io)[0]
    classify = model.classify(first, io["test_classes"])
    expected = (io["logits"][:, 0]).softmax(dim=-1)  # ViFi-CLIP's scores of one view
    assert (classify - expected).abs().max() <= TOLERANCE
    actionclip.save(model, tmp_path / "copy")
    copy = actionclip.load(tmp_path / "copy")
    assert copy.config == config
    assert (copy.classify(first, io["test_classes"]) - expected).abs().max() <= TOLERANCE


def test_a_wrong_base_is_named(tmp_path):
    base = write_base(tmp_path / "other.pt", shift=0.5)
    with pytest.raises(CheckpointError, match=r"base '.*other\.pt' is not the CLIP this file was fine-tuned from"):
        actionclip.from_vificlip_checkpoint(FIXTURES / "vificlip_tiny.pth", base)


def test_the_file_is_read_without_unpickling_anything_but_weights_and_its_config():
    checkpoint = actionclip.read_videox_checkpoint(FIXTURES / "vificlip_tiny.pth")  # yacs is not installed here
    assert checkpoint["config"]["TRAINER"]["ViFi_CLIP"]["CTX_INIT"] == "a photo of a" and checkpoint["epoch"] == 29
    with pytest.raises(pickle.UnpicklingError, match="yacs.config.CfgNode"):
        torch.load(FIXTURES / "vificlip_tiny.pth", weights_only=True)  # plain weights_only refuses the yacs config


def test_predict_normalises_frames_as_vificlip_did(model, tmp_path):
    import numpy as np

    from actionclip import data

    rng = np.random.default_rng(0)
    path = data.write_video(tmp_path / "clip.mp4", rng.integers(0, 256, (12, 48, 64, 3), dtype=np.uint8), lossless=True)
    labels = ["arm wrestling", "playing guitar", "swimming"]
    [result] = actionclip.predict(path, labels, model, workers=0, top_k=3)
    video = data.open_video(path)
    frames = data.TestTransform(32)(video.read(data.sample_indices(video.num_frames, 4, "test")))
    for statistics, matches in (("imagenet", True), ("clip", False)):
        expected = model.classify(data.normalize(frames[None], statistics), labels)[0]
        ours = torch.tensor([result["scores"][result["labels"].index(label)] for label in labels])
        assert torch.allclose(ours, expected, atol=1e-5) == matches


def test_eval_by_name_uses_the_remembered_templates_and_normalisation(tmp_path, monkeypatch, capsys):
    import hashlib
    import json

    import yaml

    from actionclip.cli.main import main
    from actionclip.engine import run
    from run_helpers import overrides, write_config

    base = write_base(tmp_path / "base.pt")
    data = (FIXTURES / "vificlip_tiny.pth").read_bytes()
    (tmp_path / "models.yaml").write_text(yaml.safe_dump([{
        "name": "team-vifi", "url": (FIXTURES / "vificlip_tiny.pth").as_uri(), "sha256": hashlib.sha256(data).hexdigest(),
        "format": "vificlip", "base": str(base)}]))  # fmt: skip
    monkeypatch.setenv("ACTIONCLIP_MODELS", str(tmp_path / "models.yaml"))
    monkeypatch.setenv("ACTIONCLIP_CACHE", str(tmp_path / "cache"))
    seen = []
    real = run.predict_dataset

    def spy(*args, **kwargs):
        seen.append((kwargs["templates"], kwargs["normalization"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "predict_dataset", spy)
    config = write_config(tmp_path / "eval.yaml", overrides(tmp_path / "data", tmp_path / "out"))
    assert main(["eval", str(config), "--checkpoint", "team-vifi"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["checkpoint"] == "team-vifi"
    assert seen == [(["a photo of a {}."], "imagenet")]
    explicit = write_config(
        tmp_path / "explicit.yaml", overrides(tmp_path / "data", tmp_path / "out", **{"prompts.templates": "label_only"})
    )
    assert main(["eval", str(explicit), "--checkpoint", "team-vifi"]) == 0
    assert seen[-1] == ("label_only", "imagenet")  # a setting the config gives explicitly wins
