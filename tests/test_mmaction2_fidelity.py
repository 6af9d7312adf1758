"""Our import of mmaction2's ActionCLIP checkpoints reproduces mmaction2's own outputs.

The fixture was produced by running mmaction2's projects/actionclip (open-mmlab/mmaction2 v1.2.0) on CPU with tiny
random weights; see tests/fixtures/mmaction2/README.md for the recipe.
"""

from pathlib import Path

import pytest
import torch

import actionclip
from actionclip import CheckpointError

FIXTURE = Path(__file__).parent / "fixtures" / "mmaction2" / "mmaction2_tiny_io.pt"
TOLERANCE = 1e-4


def token_embedding() -> torch.Tensor:
    """The tiny CLIP's token embedding, by the formula of make_fixture.py."""
    rows = torch.arange(49408, dtype=torch.float64)[:, None]
    columns = torch.arange(64, dtype=torch.float64)[None, :]
    return (0.02 * torch.cos(0.29 * rows + 0.7 * columns + 0.05 * rows * columns / 64)).float()


@pytest.fixture(scope="module")
def io():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def checkpoint(io, tmp_path_factory):
    """The checkpoint as mmengine saved it: the stored state dict plus the token embedding made by formula."""
    path = tmp_path_factory.mktemp("mmaction2") / "actionclip_tiny.pth"
    torch.save({"meta": io["meta"], "state_dict": {**io["state_dict"], "clip.token_embedding.weight": token_embedding()}}, path)
    return path


def test_reproduces_mmaction2_features_and_test_scores(io, checkpoint):
    model = actionclip.from_mmaction2_checkpoint(checkpoint)
    assert (model.config.num_frames, model.config.temporal_layers, model.config.max_frames) == (4, 2, 4)
    tokens = model.tokenize(actionclip.prompts.fill_templates(actionclip.ACTIONCLIP_TEMPLATES, io["classes"]))
    assert torch.equal(tokens, io["prompt"])  # the same 16 templates, in the same order
    inputs = io["inputs"]
    with torch.no_grad():
        video_error = (model.encode_video(inputs) - io["video_features"]).abs().max().item()
        text_error = (model.encode_text(tokens) - io["text_features"]).abs().max().item()
        views = inputs.view(2, 2, *inputs.shape[1:])  # sample-major views, as mmaction2's test loop batches them
        scores = torch.stack([model.classify(views[:, v], io["classes"]) for v in range(2)], 1).mean(1)
    score_error = (scores - io["test_scores"]).abs().max().item()
    print(f"mmaction2 fidelity: video {video_error:.1e}, text {text_error:.1e}, test scores {score_error:.1e}")
    assert video_error <= TOLERANCE and text_error <= TOLERANCE and score_error <= TOLERANCE


def test_the_layer_norm_epsilon_is_mmaction2s_not_the_officials(io, checkpoint, tmp_path):
    model = actionclip.from_mmaction2_checkpoint(checkpoint)
    actionclip.save(model, tmp_path / "copy")
    copy = actionclip.load(tmp_path / "copy")
    assert model.config.temporal_ln_eps == copy.config.temporal_ln_eps == 1e-5
    official_eps = actionclip.build_model(actionclip.ActionCLIPConfig(**{**model.config.to_dict(), "temporal_ln_eps": 1e-12}))
    official_eps.load_state_dict(model.state_dict())
    small = io["small_frame_features"]  # features of small variance, where the epsilon shows
    with torch.no_grad():
        assert (copy.video.temporal(small) - io["small_adapter_output"]).abs().max() <= TOLERANCE
        assert (official_eps.video.temporal(small) - io["small_adapter_output"]).abs().max() > 10 * TOLERANCE


def test_other_files_are_refused_by_name(tmp_path):
    torch.save({"meta": {}, "state_dict": {"clip.visual.proj": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an mmaction2 ActionCLIP checkpoint"):
        actionclip.from_mmaction2_checkpoint(tmp_path / "other.pth")
