import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from actionclip.engine.metrics import average_precision, confusion_matrix, mean_average_precision, mean_class_accuracy, topk_accuracy


def test_topk_and_mean_class_accuracy():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 2, 2, 1])
    assert topk_accuracy(scores, labels, 1) == 50.0
    assert topk_accuracy(scores, labels, 2) == 100.0
    assert topk_accuracy(scores, labels, 5) == 100.0
    matrix = confusion_matrix(scores.argmax(1), labels, 3)
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert mean_class_accuracy(matrix) == pytest.approx((100 + 0 + 50) / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_sklearn_macro_average(seed):
    rng = np.random.default_rng(seed)
    targets = (rng.random((200, 12)) < 0.15).astype(np.float32)
    targets[:, 3] = 0  # a class without positives is left out, as in the Charades protocol
    scores = rng.random((200, 12)).astype(np.float32)
    scores[:50, 5] = 0.5  # ties
    ours = average_precision(torch.from_numpy(scores), torch.from_numpy(targets))
    keep = targets.sum(0) > 0
    expected = average_precision_score(targets[:, keep], scores[:, keep], average=None)
    assert torch.isnan(ours[3])
    assert np.allclose(ours[torch.from_numpy(keep)].numpy(), expected, atol=1e-9)
    assert mean_average_precision(torch.from_numpy(scores), torch.from_numpy(targets)) == pytest.approx(
        100 * average_precision_score(targets[:, keep], scores[:, keep], average="macro"), abs=1e-7
    )
