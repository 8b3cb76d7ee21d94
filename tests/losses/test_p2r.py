import numpy as np
import pytest
import torch

from geosparse.losses import p2r_loss, p2r_targets


def test_flat_logits_put_the_positive_at_the_point_and_the_rest_negative():
    logits = torch.zeros(20, 30)
    target, weight = p2r_targets(logits, torch.tensor([[5.5, 7.5]]), radius=4.0)
    assert target.sum() == 1 and target[5, 7] == 1
    assert weight[5, 7] == 2.0  # pos_weight
    assert weight[15, 25] == 1.0 and target[15, 25] == 0  # no region: negative


def test_a_confident_neighbour_wins_the_trade_off():
    logits = torch.full((20, 30), -5.0)
    logits[5, 9] = 5.0  # 2 cells away (0.5 of the radius), probability ~1
    target, _ = p2r_targets(logits, torch.tensor([[5.5, 7.5]]), radius=4.0)
    assert target[5, 9] == 1 and target.sum() == 1
    logits[5, 9] = -5.0
    logits[5, 11] = 0.0  # 4 cells away and probability 0.5: worse than the point
    target, _ = p2r_targets(logits, torch.tensor([[5.5, 7.5]]), radius=4.0)
    assert target[5, 7] == 1 and target.sum() == 1


def test_voronoi_regions_give_one_positive_per_point_and_confidence_weights():
    pts = torch.tensor([[5.5, 5.5], [5.5, 9.5], [15.5, 20.5]])
    target, weight = p2r_targets(
        torch.zeros(20, 30), pts, radius=6.0, confidence=torch.tensor([1.0, 0.5, 0.25])
    )
    assert target.sum() == 3
    assert target[5, 5] == 1 and target[5, 9] == 1 and target[15, 20] == 1
    assert weight[5, 6] == 1.0 and weight[5, 8] == 0.5  # nearer point 0, point 1
    assert weight[15, 22] == 0.25 and weight[15, 20] == 0.5  # 0.25 x pos_weight
    assert weight[0, 29] == 1.0  # background


def test_loss_pushes_positives_up_and_negatives_down():
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    points = [torch.tensor([[4.5, 4.5]]), torch.zeros(0, 2)]
    loss = p2r_loss(logits, points, radius=3.0)
    loss.backward()
    g = logits.grad[:, 0]
    assert g[0, 4, 4] < 0 and g[0, 4, 5] > 0 and g[1].min() > 0
    target, weight = p2r_targets(logits[0, 0], points[0], radius=3.0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.zeros(16, 16), target, weight=weight
    )
    manual = (expected * 256 + torch.log(torch.tensor(2.0)) * 256) / 512
    assert float(loss.detach()) == pytest.approx(float(manual), rel=1e-5)
    with pytest.raises(ValueError, match='2 point sets for a batch of 1'):
        p2r_loss(torch.zeros(1, 8, 8), points)


def test_many_points_are_fast_enough_for_the_kd_tree():
    rng = np.random.default_rng(0)
    pts = torch.from_numpy(rng.uniform(0, 256, (1000, 2)))
    target, _ = p2r_targets(torch.zeros(256, 256), pts, radius=8.0)
    # Duplicates aside, every point gets exactly one positive.
    assert 950 <= int(target.sum()) <= 1000


def test_a_background_map_weights_only_the_cells_in_no_region():
    logits = torch.zeros(8, 8)
    points = torch.tensor([[2.5, 2.5]], dtype=torch.float64)
    background = torch.rand(8, 8)
    target, weight = p2r_targets(
        logits, points, radius=2.0, pos_weight=1.0, background_weight=background
    )
    rr, cc = np.meshgrid(np.arange(8) + 0.5, np.arange(8) + 0.5, indexing='ij')
    outside = torch.from_numpy(np.hypot(rr - 2.5, cc - 2.5) >= 2.0)  # strict radius
    assert torch.equal(weight[outside], background[outside])
    assert (weight[~outside] == 1).all() and target.sum() == 1
    # per image in a batch, and a wrong shape is refused
    loss = p2r_loss(logits[None], [points], 2.0, background_weight=[background])
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match='background_weight'):
        p2r_targets(logits, points, background_weight=torch.ones(4, 4))
