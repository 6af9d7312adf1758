import torch
import torch.nn.functional as F
from torch import nn

from actionclip.losses import kl_contrastive_loss, kl_divergence_loss, same_label_targets


def official_kl_loss(prediction, label):
    # The arithmetic of the official utils/KLLoss.py: KLDivLoss(size_average=True, reduce=True) * batch size.
    probs1 = F.log_softmax(prediction, 1)
    probs2 = F.softmax(label * 10, 1)
    return nn.KLDivLoss(reduction="mean")(probs1, probs2) * prediction.shape[0]


def test_same_label_targets_match_gen_label():
    gt = same_label_targets(torch.tensor([0, 1, 0, 2]))
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float32)
    assert torch.equal(gt, expected)


def test_equals_official_arithmetic():
    logits = 20 * torch.randn(6, 6)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    gt = same_label_targets(labels)
    official = (official_kl_loss(logits, gt) + official_kl_loss(logits.T, gt)) / 2
    assert torch.allclose(kl_contrastive_loss(logits, logits.T, labels), official, atol=1e-6)


def test_one_positive_per_row_is_label_smoothed_cross_entropy():
    n = 5
    logits = 10 * torch.randn(n, n)
    labels = torch.arange(n)
    # softmax(10 * I) puts e^10 / (e^10 + n - 1) on the diagonal: cross-entropy with label smoothing
    # eps = n * off-diagonal mass, minus the (constant) entropy of that target.
    off = 1 / (torch.e**10 + n - 1)
    target = F.softmax(10 * torch.eye(n), dim=1)
    entropy = -(target * target.log()).sum(1).mean()
    smoothed_ce = F.cross_entropy(logits, labels, label_smoothing=float(n * off))
    assert torch.allclose(kl_divergence_loss(logits, torch.eye(n)), smoothed_ce - entropy, atol=1e-5)
    assert abs(kl_divergence_loss(logits, torch.eye(n)) - F.cross_entropy(logits, labels)) < 0.01


def test_invariant_to_sample_order():
    logits_v = 15 * torch.randn(6, 6)
    logits_t = 15 * torch.randn(6, 6)
    labels = torch.tensor([3, 1, 3, 0, 1, 2])
    perm = torch.randperm(6)
    permuted = kl_contrastive_loss(logits_v[perm][:, perm], logits_t[perm][:, perm], labels[perm])
    assert torch.allclose(kl_contrastive_loss(logits_v, logits_t, labels), permuted, atol=1e-5)


def test_loss_is_zero_only_at_the_target():
    labels = torch.tensor([0, 1, 0])
    gt = same_label_targets(labels)
    perfect = torch.log(F.softmax(10 * gt, dim=1))
    assert kl_contrastive_loss(perfect, perfect, labels).abs() < 1e-6
    assert kl_contrastive_loss(torch.zeros(3, 3), torch.zeros(3, 3), labels) > 0.1
