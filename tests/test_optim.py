import math

import pytest
import torch

import actionclip
from actionclip.engine.optim import OptimConfig, build_optimizer, build_scheduler, warmup_cosine_factor


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_parameter_groups_are_the_official_three():
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", seed=0)
    optimizer = build_optimizer(model, OptimConfig())
    assert [g["name"] for g in optimizer.param_groups] == ["text", "visual", "new"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-6, 5e-6, 5e-5])
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.2, 0.2, 0.2]
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-8
    text, visual, new = (_names(model, g) for g in optimizer.param_groups)
    # The official solver: every CLIP parameter outside model.visual (logit scale included) is "text".
    assert "logit_scale" in text and "text.token_embedding.weight" in text and "text.text_projection" in text
    assert visual == {n for n, _ in model.named_parameters() if n.startswith("video.visual.")}
    assert new == {n for n, _ in model.named_parameters() if n.startswith("video.temporal.")}
    assert len(text) + len(visual) + len(new) == len(list(model.parameters()))


def test_no_decay_option_for_norms_biases_embeddings():
    model = actionclip.create_model("test-tiny", visual_prompt="Transf", seed=0)
    optimizer = build_optimizer(model, OptimConfig(decay_norm_bias=False))
    by_name = {g["name"]: g for g in optimizer.param_groups}
    assert set(by_name) == {"text", "text_no_decay", "visual", "visual_no_decay", "new", "new_no_decay"}
    no_decay = _names(model, by_name["text_no_decay"])
    assert {"logit_scale", "text.ln_final.bias", "text.token_embedding.weight", "text.positional_embedding"} <= no_decay
    assert "text.transformer.resblocks.0.attn.in_proj_weight" in _names(model, by_name["text"])
    assert by_name["new_no_decay"]["weight_decay"] == 0.0 and by_name["new_no_decay"]["lr"] == pytest.approx(5e-5)


def test_frozen_tower_is_left_out_and_joint_time_embedding_is_new():
    model = actionclip.create_model("test-tiny", visual_prompt="Joint", freeze_text=True, seed=0)
    groups = build_optimizer(model, OptimConfig()).param_groups
    assert [g["name"] for g in groups] == ["text", "visual", "new"]
    assert _names(model, groups[0]) == {"logit_scale"}
    assert _names(model, groups[2]) == {"video.time_embedding"}


def official_factor(epoch: float, warmup: float = 5, total: float = 50) -> float:
    # The official WarmupCosineAnnealingLR (utils/lr_scheduler.py) evaluated at a fractional epoch.
    if epoch < warmup:
        return epoch / warmup
    progress = min((epoch - warmup) / (total - warmup), 1.0)
    return (math.cos(math.pi * progress) + 1) / 2


@pytest.mark.parametrize("step", [0, 1, 37, 499, 500, 501, 1234, 2500, 4999, 5000])
def test_lr_curve_is_warmup_then_cosine(step):
    steps_per_epoch = 100
    assert warmup_cosine_factor(step, 500, 5000) == pytest.approx(official_factor(step / steps_per_epoch), abs=1e-12)


def test_scheduler_updates_every_step():
    model = torch.nn.Linear(2, 2)
    config = OptimConfig(lr=1e-3, epochs=10, warmup_epochs=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))
