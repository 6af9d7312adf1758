import open_clip
import pytest
import torch
import torch.nn.functional as F

import actionclip
from actionclip.losses import kl_contrastive_loss
from actionclip.models.actionclip import ensemble_probabilities
from actionclip.models.temporal import Conv1D
from actionclip.models.video import temporal_shift
from actionclip.prompts import ACTIONCLIP_TEMPLATES, fill_templates
from conftest import random_video

LABELS = ["arm wrestling", "playing guitar", "swimming"]


@pytest.mark.parametrize("prompt", actionclip.VISUAL_PROMPTS)
@pytest.mark.parametrize("frames", [1, 3, 8])
def test_every_prompt_gives_one_embedding_per_video(prompt, frames):
    model = actionclip.create_model("test-tiny", visual_prompt=prompt, num_frames=frames, seed=0)
    out = model.encode_video(random_video(batch=2, frames=frames))
    assert out.shape == (2, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("prompt", actionclip.VISUAL_PROMPTS)
def test_gradients_reach_every_trainable_parameter(prompt):
    model = actionclip.create_model("test-tiny", visual_prompt=prompt, num_frames=3, seed=0)
    tokens = model.tokenize(["a video of arm wrestling", "a video of swimming", "a video of arm wrestling"])
    logits_v, logits_t = model(random_video(batch=3, frames=3), tokens)
    kl_contrastive_loss(logits_v, logits_t, torch.tensor([0, 1, 0])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []


@pytest.mark.parametrize("tower", ["vision", "text"])
def test_frozen_tower_gets_no_gradient(tower):
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", num_frames=3, seed=0, **{f"freeze_{tower}": True})
    logits_v, logits_t = model(random_video(batch=2, frames=3), model.tokenize(["a", "b"]))
    kl_contrastive_loss(logits_v, logits_t, torch.tensor([0, 1])).backward()
    frozen = model.video.visual if tower == "vision" else model.text
    trained = model.text if tower == "vision" else model.video.visual
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    assert all(p.grad is not None for p in trained.parameters() if p.requires_grad)
    assert model.video.temporal.frame_position_embeddings.weight.grad is not None


def test_meanp_ignores_frame_order_and_transf_does_not():
    video = random_video(batch=2, frames=8)
    reversed_video = video.flip(1)
    meanp = actionclip.create_model("test-tiny", visual_prompt="MeanP", seed=0).eval()
    assert torch.allclose(meanp.encode_video(video), meanp.encode_video(reversed_video), atol=1e-5)
    for prompt in ("Transf", "Conv1D", "LSTM", "Transf_cls", "Joint"):
        model = actionclip.create_model("test-tiny", visual_prompt=prompt, seed=0).eval()
        difference = (model.encode_video(video) - model.encode_video(reversed_video)).abs().max()
        assert difference > 1e-4, prompt


def test_conv1d_convolves_over_time():
    conv = Conv1D(8)
    x = torch.randn(2, 5, 8)
    # Official init: channels 0-1 read frame t-1, 2-5 frame t, 6-7 frame t+1 (zero padding), plus the residual.
    previous = F.pad(x, (0, 0, 1, 0))[:, :-1]
    following = F.pad(x, (0, 0, 0, 1))[:, 1:]
    expected = torch.cat([previous[..., :2], x[..., 2:6], following[..., 6:]], dim=-1) + x
    assert torch.allclose(conv(x), expected.mean(1), atol=1e-6)


def test_temporal_shift_moves_an_eighth_of_channels_each_way():
    b, t, p, c = 1, 3, 2, 16
    x = torch.arange(b * t * (p + 1) * c, dtype=torch.float32).view(b * t, p + 1, c)
    out = temporal_shift(x, t).view(b, t, p + 1, c)
    x = x.view(b, t, p + 1, c)
    assert torch.equal(out[:, :, 0], x[:, :, 0])  # class token untouched
    assert torch.equal(out[:, :-1, 1:, :2], x[:, 1:, 1:, :2]) and (out[:, -1, 1:, :2] == 0).all()
    assert torch.equal(out[:, 1:, 1:, 2:4], x[:, :-1, 1:, 2:4]) and (out[:, 0, 1:, 2:4] == 0).all()
    assert torch.equal(out[..., 1:, 4:], x[..., 1:, 4:])


def test_text_encoder_cut_to_longest_prompt_matches_full_context():
    model = actionclip.create_model("test-tiny", seed=0).eval()
    clip = open_clip.CLIP(**{k: v for k, v in model.config.clip.items()})
    clip.load_state_dict(
        {
            (
                "visual." + k[len("video.visual.") :]
                if k.startswith("video.visual.")
                else k[len("text.") :]
                if k.startswith("text.")
                else k
            ): v
            for k, v in model.state_dict().items()
            if not k.startswith("video.temporal.")
        }
    )
    tokens = model.tokenize(fill_templates(ACTIONCLIP_TEMPLATES[:4], LABELS))
    assert tokens.shape == (12, 77)
    with torch.no_grad():
        error = (model.encode_text(tokens) - clip.encode_text(tokens)).abs().max().item()
    print(f"text embeddings cut to the longest prompt vs 77 tokens: max abs difference {error:.1e}")
    assert error <= 1e-5


def test_classify_is_the_official_test_arithmetic():
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", seed=0).eval()
    video = random_video(batch=2)
    with torch.no_grad():
        v = F.normalize(model.encode_video(video), dim=-1)
        t = F.normalize(model.encode_text(model.tokenize(fill_templates(ACTIONCLIP_TEMPLATES, LABELS))), dim=-1)
        expected = (100.0 * v @ t.T).view(2, 16, 3).softmax(-1).mean(1)
        class_mean = F.normalize(t.view(16, 3, -1).mean(0), dim=-1)
        expected_embedding = (100.0 * v @ class_mean.T).softmax(-1)
        label_only = (100.0 * v @ t.view(16, 3, -1)[7].T).softmax(-1)  # template 7 is "{}"
    assert torch.allclose(model.classify(video, LABELS), expected, atol=1e-6)
    assert torch.allclose(model.classify(video, LABELS, ensemble="embedding"), expected_embedding, atol=1e-6)
    assert torch.allclose(model.classify(video, LABELS, templates="label_only"), label_only, atol=1e-6)
    assert model.training is False


def test_classify_restores_training_mode_and_cleans_labels():
    model = actionclip.create_model("test-tiny", visual_prompt="Transf_cls", seed=0).train()
    video = random_video(batch=1)
    first = model.classify(video, ["ApplyEyeMakeup", "brush_hair"], clean_labels=True)
    assert model.training
    second = model.classify(video, ["apply eye makeup", "brush hair"])
    assert torch.equal(first, second)  # eval mode inside: Transf_cls dropout off, cleaned names used


def test_unimodal_baseline_has_a_linear_head():
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", arch="unimodal", num_classes=5, seed=0)
    logits = model(random_video(batch=3))
    assert logits.shape == (3, 5)
    F.cross_entropy(logits, torch.tensor([0, 1, 4])).backward()
    assert model.head.weight.grad is not None and model.video.visual.conv1.weight.grad is not None
    with pytest.raises(ValueError, match="num_classes"):
        actionclip.create_model("test-tiny", arch="unimodal")


def test_unknown_prompt_and_model_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown visual prompt 'Pool'"):
        actionclip.create_model("test-tiny", visual_prompt="Pool")
    with pytest.raises(ValueError, match="unknown model 'ViT-X-1'"):
        actionclip.create_model("ViT-X-1")
    assert actionclip.create_model("test-tiny", visual_prompt="meanP").config.visual_prompt == "MeanP"
    assert actionclip.create_model("test-tiny", visual_prompt="Conv_1D").config.visual_prompt == "Conv1D"


def test_transf_heads_follow_text_width_like_the_official_code():
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", seed=0)
    block = model.video.temporal.transformer.resblocks[0]
    assert block.attn.num_heads == 1 and len(model.video.temporal.transformer.resblocks) == 6
    assert block.ln_1.eps == 1e-12
    assert model.video.temporal.frame_position_embeddings.weight.shape == (77, 64)


def test_similarities_stay_fp32_under_bf16_autocast():
    # At scale 100, bf16 rounds logits near 25 to steps of 0.125: near-tie top-1s among 400 classes would flip.
    generator = torch.Generator().manual_seed(0)
    video = F.normalize(torch.randn(4, 64, generator=generator), dim=-1)
    text = F.normalize(torch.randn(2, 400, 64, generator=generator), dim=-1)
    for ensemble in ("softmax", "embedding"):
        expected = ensemble_probabilities(video, text, ensemble)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            probabilities = ensemble_probabilities(video, text, ensemble)
        assert probabilities.dtype == torch.float32
        torch.testing.assert_close(probabilities, expected, rtol=0, atol=1e-6)
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", seed=0).eval()
    cached = model.encode_text(model.tokenize(LABELS)).detach()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        per_video, per_text = model(random_video(batch=2), text_features=cached)
        v, t, scale = model(random_video(batch=2), text_features=cached, normalized_features=True)
    assert per_video.dtype == per_text.dtype == torch.float32
    torch.testing.assert_close(per_video, scale * v @ t.T, rtol=0, atol=1e-5)
    torch.testing.assert_close(per_text, per_video.T, rtol=0, atol=1e-5)


def _backward_with_block_calls(model, checkpointing: bool) -> tuple[int, dict]:
    """Forward calls of the first vision block (its first layer norm) during one training step, and the gradients."""
    # A pre-hook: the recomputation during backward stops once it has the tensors it needs, before the block ends.
    model.video.visual.set_grad_checkpointing(checkpointing)
    model.zero_grad()
    calls = []
    handle = model.video.visual.transformer.resblocks[0].ln_1.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        logits_v, logits_t = model(random_video(batch=2, frames=3), model.tokenize(["a", "b"]))
        kl_contrastive_loss(logits_v, logits_t, torch.tensor([0, 1])).backward()
    finally:
        handle.remove()
    return len(calls), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("prompt", ["Shift", "Joint", "Transf"])
def test_grad_checkpointing_recomputes_the_vision_blocks_with_the_same_gradients(prompt):
    model = actionclip.create_model("test-tiny", visual_prompt=prompt, num_frames=3, seed=0)
    plain_calls, plain = _backward_with_block_calls(model, False)
    checkpointed_calls, checkpointed = _backward_with_block_calls(model, True)
    assert (plain_calls, checkpointed_calls) == (1, 2)  # the block ran again during backward: its activations were not kept
    assert plain.keys() == checkpointed.keys() and all(torch.equal(plain[n], checkpointed[n]) for n in plain)
