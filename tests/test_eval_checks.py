"""`actionclip eval` against a model that does not fit the data: refused in one line, or evaluated with a warning."""
import pytest
import torch

from actionclip.engine.evaluate import EvalResult, summarize


@pytest.mark.parametrize("num_classes, has_top5", [(2, False), (5, False), (6, True)])
def test_top5_is_reported_only_with_more_than_five_classes(num_classes, has_top5):
    probabilities = torch.rand(8, num_classes).softmax(dim=1)
    targets = torch.arange(8) % num_classes
    summary = summarize(EvalResult(probabilities, targets, torch.arange(8), []))
    assert ("top5" in summary) == has_top5 and "top1" in summary
