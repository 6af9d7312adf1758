import pytest
import torch
import torch.nn.functional as F

import actionclip
from actionclip.engine.mixing import smoothed_targets, soft_cross_entropy
from actionclip.engine.objectives import ClassCrossEntropy, VideoTextKL, class_logits, create_objective
from actionclip.losses import kl_contrastive_loss
from conftest import random_video

CLASSES = ["red circle moving left", "blue square growing", "green triangle moving up"]


def _model(arch, **kwargs):
    return actionclip.create_model(
        "test-tiny", arch=arch, num_frames=8, seed=0, num_classes=len(CLASSES) if arch == "unimodal" else None, **kwargs
    )


@pytest.mark.parametrize("arch, kind", [("actionclip", VideoTextKL), ("xclip", ClassCrossEntropy), ("unimodal", ClassCrossEntropy)])
def test_each_architecture_gets_its_own_objective(arch, kind):
    assert type(create_objective(_model(arch), CLASSES)) is kind


def test_kl_draws_each_samples_template_from_its_seed():
    model = _model("actionclip")
    objective = create_objective(model, CLASSES, templates=["a video of {}", "{}", "{}, an action"])
    videos, labels, seeds = random_video(batch=3), torch.tensor([0, 2, 2]), torch.tensor([5, 7, 9])
    # seeds % 3 = 2, 1, 0: the third template, the second, the first
    tokens = model.tokenize([f"{CLASSES[0]}, an action", CLASSES[2], f"a video of {CLASSES[2]}"])
    expected = kl_contrastive_loss(*model(videos, tokens), labels)
    torch.testing.assert_close(objective(model, videos, labels, seeds=seeds), expected)


def test_ce_is_cross_entropy_against_every_class_text_with_a_frozen_tower_encoded_once():
    model = _model("actionclip", freeze_text=True)  # ActionCLIP with X-CLIP's recipe, as the demo's actionclip_vit_ce
    calls = []
    hook = model.text.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    objective = create_objective(model, CLASSES, templates="label_only", kind="ce", label_smoothing=0.1)
    videos, labels = random_video(batch=2), torch.tensor([1, 0])
    loss = objective(model, videos, labels)
    objective(model, videos, labels)
    hook.remove()
    assert calls == [3]  # the class texts, once, when the objective was made
    with torch.no_grad():
        logits = model(videos, model.tokenize(CLASSES))[0]
    torch.testing.assert_close(loss, soft_cross_entropy(logits, smoothed_targets(labels, 3, 0.1)))


def test_head_without_smoothing_or_mixing_is_torch_cross_entropy():
    model = _model("unimodal")
    videos, labels = random_video(batch=2), torch.tensor([2, 1])
    loss = create_objective(model, CLASSES)(model, videos, labels)
    assert torch.equal(loss, F.cross_entropy(model(videos), labels))


def test_class_logits_of_both_architectures_are_video_by_class():
    for arch in ("actionclip", "xclip"):
        model = _model(arch)
        with torch.no_grad():
            assert class_logits(model, random_video(batch=2), model.tokenize(CLASSES)).shape == (2, 3)


@pytest.mark.parametrize(
    "arch, kind, options, message",
    [
        ("actionclip", "head", {}, "does not fit an 'actionclip' model"),
        ("unimodal", "kl", {}, "does not fit an 'unimodal' model"),
        ("xclip", "kl", {}, "train it with ce"),
        ("actionclip", "kl", {"mixup_alpha": 0.8}, "not to kl"),
        ("actionclip", "focal", {}, "unknown objective 'focal'"),
    ],
)
def test_objectives_that_do_not_fit_are_refused(arch, kind, options, message):
    with pytest.raises(ValueError, match=message):
        create_objective(_model(arch), CLASSES, kind=kind, **options)
