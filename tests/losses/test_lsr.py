import math

import pytest
import torch

from geosparse.losses import (
    HardNaiveLoss,
    SoftNaiveLoss,
    StatisticsMatchingLoss,
    label_counting,
)

ETA = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
RHO = torch.tensor([[0.1, 0.1], [0.2, 0.2]])


def test_label_counting_matches_definition():
    torch.manual_seed(0)
    probs = torch.rand(2, 3, 6, 5).softmax(1)
    blocks = torch.randint(0, 4, (2, 6, 5))
    blocks[0, 0, 0] = -1
    coarse = torch.zeros(2, 6, 5, dtype=torch.long)
    stats = label_counting(probs, blocks, coarse)
    k = 0
    for b in range(2):
        for blk in range(4):
            sel = blocks[b] == blk
            if not sel.any():
                continue
            p = probs[b][:, sel]
            n = sel.sum()
            torch.testing.assert_close(stats.mean[k], p.mean(1))
            torch.testing.assert_close(stats.var[k], (p * (1 - p)).sum(1) / n**2)
            assert stats.count[k] == n
            k += 1
    assert k == len(stats.count)


def test_gaussian_loss_is_eq7_for_one_block():
    logits = torch.randn(1, 2, 4, 4)
    coarse = torch.zeros(1, 4, 4, dtype=torch.long)
    loss = StatisticsMatchingLoss(ETA, RHO, var_floor=0.0)(logits, coarse)
    p = logits.softmax(1)[0].reshape(2, -1)
    mu, var = p.mean(1), (p * (1 - p)).sum(1) / 16**2
    ref = (
        0.5 * (mu - ETA[0]) ** 2 / (var + RHO[0] ** 2)
        + 0.5 * torch.log(2 * math.pi * var)
    ).sum()
    torch.testing.assert_close(loss, ref)


def test_loss_prefers_prior_matching_prediction_and_has_gradients():
    coarse = torch.zeros(1, 8, 8, dtype=torch.long)
    loss = StatisticsMatchingLoss(ETA, RHO)
    good = torch.zeros(1, 2, 8, 8)
    good[:, 0, :, :7] = 5  # ~90 % class 0
    good[:, 1, :, 7:] = 5
    bad = good.flip(1)
    assert loss(good, coarse) < loss(bad, coarse)
    x = bad.clone().requires_grad_(True)
    loss(x, coarse).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_interval_variant_has_no_data_term_inside_interval():
    coarse = torch.zeros(1, 10, 10, dtype=torch.long)
    logits = torch.zeros(1, 2, 10, 10)
    logits[:, 0, :, :] = 10
    logits[:, 1, :, 8:] = 20  # mu = (0.8, 0.2): within 0.1 of eta
    gauss = StatisticsMatchingLoss(ETA, RHO, variant='gaussian')(logits, coarse)
    inter = StatisticsMatchingLoss(ETA, RHO, variant='interval')(logits, coarse)
    assert inter < gauss
    kl = StatisticsMatchingLoss(ETA, RHO, variant='kl')(logits, coarse)
    assert torch.isfinite(kl)


def test_nodata_is_excluded_and_all_nodata_raises():
    loss = StatisticsMatchingLoss(ETA, RHO)
    logits = torch.randn(1, 2, 4, 4)
    coarse = torch.zeros(1, 4, 4, dtype=torch.long)
    masked = coarse.clone()
    masked[:, :2] = -1
    logits2 = logits.clone()
    logits2[:, :, :2] = 100 * torch.randn(1, 2, 2, 4)  # nodata pixels: ignored
    torch.testing.assert_close(loss(logits, masked), loss(logits2, masked))
    with pytest.raises(ValueError, match='nodata'):
        loss(logits, torch.full_like(coarse, -1))
    with pytest.raises(ValueError, match='3 classes'):
        loss(torch.randn(1, 3, 4, 4), coarse)


def test_naive_losses():
    coarse = torch.tensor([[[0, 1]]])
    logits = torch.log(torch.tensor([[0.9, 0.2], [0.1, 0.8]])).view(1, 2, 1, 2)
    soft = SoftNaiveLoss(ETA)(logits, coarse)
    ref = (
        -(
            0.9 * math.log(0.9)
            + 0.1 * math.log(0.1)
            + 0.2 * math.log(0.2)
            + 0.8 * math.log(0.8)
        )
        / 2
    )
    assert soft.item() == pytest.approx(ref, rel=1e-5)
    hard = HardNaiveLoss(ETA)(logits, coarse)
    assert hard.item() == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2, rel=1e-5)


@pytest.mark.parametrize('power', [0.0, 0.5, 1.0])
def test_block_weights_follow_size_power(power):
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 4, 4)
    coarse = torch.zeros(1, 4, 4, dtype=torch.long)
    coarse[0, :1] = 1  # a 4-pixel block of class 1 beside a 12-pixel block of class 0
    loss = StatisticsMatchingLoss(ETA, RHO, size_power=power)
    stats = label_counting(logits.softmax(1), coarse, coarse)
    per_block = loss.block_loss(stats).sum(1)
    w = stats.count**power
    expected = (per_block * w).sum() / w.sum()
    torch.testing.assert_close(loss(logits, coarse), expected)
    sizes = sorted(stats.count.tolist())
    assert sizes == [4.0, 12.0]


def test_pixel_var_floor_bounds_the_mean_pixel_variance():
    logits = torch.randn(1, 2, 8, 8)
    coarse = torch.zeros(1, 8, 8, dtype=torch.long)
    loss = StatisticsMatchingLoss(ETA, RHO, var_floor=0.03, var_floor_scale='pixel')
    p = logits.softmax(1)[0].reshape(2, -1)
    n = p.shape[1]
    mu, s = p.mean(1), (p * (1 - p)).mean(1)  # s: mean per-pixel variance
    ref = (
        0.5 * (mu - ETA[0]) ** 2 / (s / n + RHO[0] ** 2)
        + 0.5 * (math.log(2 * math.pi) + torch.log(s + 0.03) - math.log(n))
    ).sum()
    torch.testing.assert_close(loss(logits, coarse), ref)
    with pytest.raises(ValueError, match='var_floor_scale'):
        StatisticsMatchingLoss(ETA, RHO, var_floor_scale='cell')  # type: ignore[arg-type]


@pytest.mark.parametrize('scale', ['block', 'pixel'])
def test_confidence_reward_with_block_size(scale):
    """How much confident pixels gain over hesitant ones, at one block mean.

    Both predictions give the prior's block fractions (0.5, 0.5): half the pixels
    sure of each class, or every pixel at 0.5. The data term is zero for both; only
    the log-variance term differs. A floor on the block variance ('block') makes that reward vanish in large
    blocks; a floor on the mean pixel variance ('pixel') keeps it whatever the size.
    """
    gains = []
    for side in (4, 64):
        coarse = torch.zeros(1, side, side, dtype=torch.long)
        sure = torch.zeros(1, 2, side, side)
        sure[:, 0, :, : side // 2] = 20
        sure[:, 1, :, side // 2 :] = 20
        hesitant = torch.zeros(1, 2, side, side)
        loss = StatisticsMatchingLoss(
            torch.tensor([[0.5, 0.5]]),
            torch.tensor([[0.1, 0.1]]),
            var_floor=0.03,
            var_floor_scale=scale,
        )
        gains.append(float(loss(hesitant, coarse) - loss(sure, coarse)))
    small, large = gains
    assert small > 0 and large > 0
    if scale == 'pixel':
        assert large == pytest.approx(small, rel=1e-4)
        assert large == pytest.approx(math.log((0.25 + 0.03) / 0.03), rel=1e-3)
    else:
        assert large < 0.01 * small
