import pytest
import torch
import torch.nn.functional as F

from actionclip.engine.mixing import mix_clips, smoothed_targets, soft_cross_entropy


def test_smoothed_targets_match_pytorch_label_smoothing():
    labels = torch.tensor([0, 3, 1])
    logits = torch.randn(3, 5)
    targets = smoothed_targets(labels, 5, 0.1)
    assert torch.allclose(targets.sum(1), torch.ones(3))
    assert targets[1, 3] == pytest.approx(0.9 + 0.02) and targets[1, 0] == pytest.approx(0.02)
    assert torch.allclose(soft_cross_entropy(logits, targets), F.cross_entropy(logits, labels, label_smoothing=0.1), atol=1e-6)


def test_mixup_mixes_clips_and_targets_with_one_coefficient():
    torch.manual_seed(0)
    videos = torch.randn(4, 3, 3, 8, 8)
    targets = smoothed_targets(torch.tensor([0, 1, 2, 3]), 4)
    mixed, mixed_targets = mix_clips(videos, targets, mixup_alpha=0.8, cutmix_alpha=0.0)
    lam = mixed_targets[0, 0].item()
    assert 0 < lam < 1 and mixed_targets[0, 3] == pytest.approx(1 - lam)
    assert torch.allclose(mixed, lam * videos + (1 - lam) * videos.flip(0), atol=1e-6)


def test_cutmix_pastes_one_box_in_every_frame_and_weights_targets_by_area():
    torch.manual_seed(1)
    videos = torch.zeros(2, 4, 3, 16, 16)
    videos[1] = 1.0
    targets = smoothed_targets(torch.tensor([0, 1]), 2)
    mixed, mixed_targets = mix_clips(videos, targets, mixup_alpha=0.0, cutmix_alpha=1.0)
    pasted = mixed[0, 0, 0]  # clip 0 received pixels of clip 1 inside the box
    assert all(torch.equal(mixed[0, t, c], pasted) for t in range(4) for c in range(3))
    kept_area = 1 - pasted.mean().item()
    assert mixed_targets[0, 0].item() == pytest.approx(kept_area)
    assert torch.allclose(mixed_targets.sum(1), torch.ones(2))


def test_no_mixing_is_the_identity():
    videos, targets = torch.randn(2, 1, 3, 4, 4), torch.eye(2)
    assert mix_clips(videos, targets, 0.0, 0.0) == (videos, targets)
