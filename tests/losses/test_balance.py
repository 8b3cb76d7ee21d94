import pytest
import torch

from geosparse.losses import (
    HardNaiveLoss,
    SoftNaiveLoss,
    StatisticsMatchingLoss,
    label_counting,
)
from geosparse.losses.balance import balance_by_class

from .test_lsr import ETA, RHO


def test_weights_of_each_class_sum_to_one():
    mass = torch.tensor([1.0, 3.0, 2.0, 0.0])
    coarse = torch.tensor([0, 0, 1, 2])
    w = balance_by_class(mass, coarse, 3)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.75, 1.0, 0.0]))


def _scene():
    torch.manual_seed(3)
    logits = torch.randn(2, 2, 6, 6)
    coarse = torch.zeros(2, 6, 6, dtype=torch.long)
    coarse[0, :2] = 1  # 12 pixels of class 1 among 60 of class 0
    return logits, coarse


def test_lsr_batch_balance_averages_the_classes():
    logits, coarse = _scene()
    loss = StatisticsMatchingLoss(ETA, RHO, balance='batch')
    stats = label_counting(logits.softmax(1), coarse, coarse)
    per_block = loss.block_loss(stats).sum(1)
    n = stats.count
    per_class = [
        (per_block[stats.coarse == z] * n[stats.coarse == z]).sum()
        / n[stats.coarse == z].sum()
        for z in (0, 1)
    ]
    expected = torch.stack(per_class).mean()
    torch.testing.assert_close(loss(logits, coarse), expected)
    plain = StatisticsMatchingLoss(ETA, RHO)(logits, coarse)
    assert not torch.isclose(plain, expected)


@pytest.mark.parametrize('cls', [SoftNaiveLoss, HardNaiveLoss])
def test_naive_batch_balance_averages_the_classes(cls):
    logits, coarse = _scene()
    per_class = [cls(ETA)(logits, torch.where(coarse == z, z, -1)) for z in (0, 1)]
    balanced = cls(ETA, balance='batch')(logits, coarse)
    torch.testing.assert_close(balanced, torch.stack(per_class).mean())
    assert not torch.isclose(cls(ETA)(logits, coarse), balanced)


@pytest.mark.parametrize('cls', [SoftNaiveLoss, HardNaiveLoss])
def test_unknown_balance_is_refused(cls):
    with pytest.raises(ValueError, match="balance='class'"):
        cls(ETA, balance='class')
    with pytest.raises(ValueError, match="balance='class'"):
        StatisticsMatchingLoss(ETA, RHO, balance='class')
