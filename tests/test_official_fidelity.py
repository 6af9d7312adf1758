"""Our model, loading checkpoints written by the official ActionCLIP code, reproduces its outputs.

The fixture was produced by running the official code (sallymmx/ActionCLIP at 31c34df) on CPU with small
random weights; see tests/fixtures/official/README.md for the exact recipe.
"""

from pathlib import Path

import pytest
import torch

import actionclip
from actionclip.losses import kl_contrastive_loss, kl_divergence_loss

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "official_actionclip.pt"
# Official sim_header names -> ours; shift_meanP is the official tsm=True with sim_header meanP.
PROMPTS = {"meanP": "MeanP", "Transf": "Transf", "LSTM": "LSTM", "Transf_cls": "Transf_cls", "shift_meanP": "Shift"}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


def _official_checkpoint(fixture, official_prompt, path):
    clip_key = "shift_model_state_dict" if official_prompt == "shift_meanP" else "model_state_dict"
    torch.save(
        {"epoch": 0, "model_state_dict": fixture[clip_key], "fusion_model_state_dict": fixture["fusion_model_state_dict"][official_prompt]},
        path,
    )
    return path


@pytest.mark.parametrize("official_prompt", list(PROMPTS))
def test_reproduces_official_outputs(fixture, official_prompt, tmp_path):
    path = _official_checkpoint(fixture, official_prompt, tmp_path / f"{official_prompt}.pt")
    model = actionclip.from_official_checkpoint(path, visual_prompt=PROMPTS[official_prompt], num_frames=8)
    expected = fixture["outputs"][official_prompt]
    video, tokens = fixture["video"], fixture["tokens"]
    with torch.no_grad():
        if official_prompt != "shift_meanP":
            frames = model.video.encode_frames(video)
            assert (frames - expected["frame_features"]).abs().max() <= TOLERANCE
        video_embeddings = model.encode_video(video)
        text_embeddings = model.encode_text(tokens)
        logits_per_video, logits_per_text = model(video, tokens)
        v = video_embeddings / video_embeddings.norm(dim=-1, keepdim=True)
        t = text_embeddings / text_embeddings.norm(dim=-1, keepdim=True)
        test_similarity = 100.0 * v @ t.T
    errors = {}
    for name, ours in [
        ("video_embeddings", video_embeddings),
        ("text_embeddings", text_embeddings),
        ("logits_per_video", logits_per_video),
        ("logits_per_text", logits_per_text),
        ("test_similarity", test_similarity),
    ]:
        errors[name] = error = (ours - expected[name]).abs().max().item()
        assert error <= TOLERANCE, f"{official_prompt} {name}: max abs error {error:.2e}"
    print(f"{official_prompt}: max abs error " + ", ".join(f"{name} {error:.1e}" for name, error in errors.items()))
    assert torch.allclose(model.logit_scale.exp(), expected["logit_scale"], atol=1e-6)


def test_reproduces_official_kl_loss(fixture):
    kl = fixture["kl_loss"]
    targets = kl["ground_truth"]
    assert torch.allclose(kl_divergence_loss(kl["logits_per_video"], targets), kl["loss_video"], atol=1e-6)
    assert torch.allclose(kl_divergence_loss(kl["logits_per_text"], targets), kl["loss_text"], atol=1e-6)
    loss = kl_contrastive_loss(kl["logits_per_video"], kl["logits_per_text"], torch.as_tensor(kl["labels"]))
    assert torch.allclose(loss, kl["loss"], atol=1e-6)


def test_official_architecture_is_inferred_from_shapes(fixture, tmp_path):
    path = _official_checkpoint(fixture, "Transf", tmp_path / "Transf.pt")
    config = actionclip.from_official_checkpoint(path, visual_prompt="Transf").config
    assert config.clip["vision_cfg"] == {"layers": 2, "width": 64, "patch_size": 16, "image_size": 32, "head_width": 64}
    assert config.clip["text_cfg"]["vocab_size"] == 1000 and config.clip["text_cfg"]["layers"] == 2
    assert config.clip["quick_gelu"] is True and config.max_frames == 77


def test_wrong_prompt_for_an_official_checkpoint_names_the_keys(fixture, tmp_path):
    path = _official_checkpoint(fixture, "Transf", tmp_path / "Transf.pt")
    with pytest.raises(
        actionclip.CheckpointError, match=r"unexpected keys: video\.temporal\.transformer\.resblocks\.0\.attn.*\(72 in all\)"
    ):
        actionclip.from_official_checkpoint(path, visual_prompt="MeanP")
