import math

import pytest
import torch

from geosparse.losses import affinity_loss, colour_similarity, point_query_loss


def _setup(distances):
    q = distances.shape[1]
    return torch.ones(1, q, dtype=torch.bool)


def test_point_loss_small_when_each_point_is_nearest_to_its_query():
    d = torch.full((1, 3, 8, 8), 10.0)
    d[0, 0, 1, 1] = 0.0  # point 0 at pixel (1, 1)
    d[0, 1, 6, 6] = 0.0  # point 1 at pixel (6, 6)
    d[0, 2, 3, 3] = 0.0  # stuff query nearest at the background point
    points = torch.tensor([[[1.5, 1.5], [6.5, 6.5], [3.2, 3.9]]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    stuff = torch.tensor([[False, False, True]])
    good = point_query_loss(d, points, valid, stuff, _setup(d))
    assert float(good) == pytest.approx(
        -math.log(1 / (1 + 2 * math.exp(-10))), rel=1e-3
    )
    swapped = point_query_loss(d, points[:, [1, 0, 2]], valid, stuff, _setup(d))
    assert float(swapped) > 6.0


def test_point_loss_background_point_counts_any_stuff_query():
    d = torch.zeros(1, 4, 4, 4)
    points = torch.tensor([[[1.5, 1.5], [2.5, 2.5]]])
    stuff = torch.tensor([[False, True, True, True]])
    # point 1 is a background point: 3 of 4 queries are stuff, all at distance 0
    loss = point_query_loss(d, points, torch.tensor([[False, True]]), stuff, _setup(d))
    assert float(loss) == pytest.approx(-math.log(0.75), rel=1e-5)


def test_point_loss_without_points_is_zero_with_a_gradient():
    d = torch.rand(1, 2, 4, 4, requires_grad=True)
    loss = point_query_loss(
        d,
        torch.zeros(1, 1, 2),
        torch.zeros(1, 1, dtype=torch.bool),
        torch.tensor([[False, True]]),
        _setup(d),
    )
    loss.backward()
    assert float(loss) == 0 and d.grad is not None


def test_colour_similarity_pairs_the_right_pixels():
    image = torch.zeros(1, 1, 4, 5)
    image[0, 0, :, 3:] = 1.0
    sims = dict(colour_similarity(image, dilation=1, theta=1.0))
    right = sims[(0, 1)]
    assert right.shape == (1, 4, 4)
    # pixel (r, 2) and (r, 3) differ by 1: exp(-1); others equal: 1
    assert torch.allclose(right[0, :, 2], torch.full((4,), math.exp(-1)))
    assert torch.allclose(right[0, :, 0], torch.ones(4))
    down_left = sims[(1, -1)]
    assert down_left.shape == (1, 3, 4)
    # (r, c=4) with (r+1, 3): both 1 -> similar; (r, 3) with (r+1, 2): differ
    assert float(down_left[0, 0, 3]) == pytest.approx(1.0)
    assert float(down_left[0, 0, 2]) == pytest.approx(math.exp(-1))


def test_affinity_loss_rewards_same_query_for_similar_neighbours():
    image = torch.zeros(1, 1, 6, 6)
    image[0, 0, :, 3:] = 5.0  # a strong edge between columns 2 and 3
    sim = colour_similarity(image, dilation=1, theta=0.5)
    split = torch.full((1, 2, 6, 6), 20.0)
    split[0, 0, :, :3] = 0.0
    split[0, 1, :, 3:] = 0.0  # the queries follow the edge
    across = torch.full((1, 2, 6, 6), 20.0)
    across[0, 0, :3] = 0.0
    across[0, 1, 3:] = 0.0  # the queries cut the uniform halves
    valid = _setup(split)
    follows = affinity_loss(split, sim, valid)
    cuts = affinity_loss(across, sim, valid)
    assert float(follows) < 1e-6
    assert float(cuts) > 1.0
    # pairs across the edge are below the threshold: not counted
    nothing = affinity_loss(split, sim, valid, threshold=1.1)
    assert float(nothing) == 0.0


def _affinity_by_autograd(distances, similarity, query_valid, threshold, mask):
    """The pairwise term written with plain shifted views (autograd's own backward)."""
    from geosparse.losses.instances import _pair_slices

    logits = (-distances).masked_fill(~query_valid[..., None, None], float('-inf'))
    probs = torch.softmax(logits, 1)
    total, count = distances.new_zeros(()), 0
    for (dr, dc), sim in similarity:
        a, b = _pair_slices(probs, dr, dc)
        same = (a * b).sum(1).clamp_min(1e-6).log()
        pa, pb = _pair_slices(mask, dr, dc)
        edges = (sim >= threshold) & pa & pb
        total = total - same[edges].sum()
        count += int(edges.sum())
    return total / count


def test_affinity_loss_gradient_matches_autograd_of_the_shifted_views():
    torch.manual_seed(3)
    d = (torch.rand(2, 5, 9, 11, dtype=torch.float64) * 4).requires_grad_()
    image = torch.randn(2, 3, 9, 11, dtype=torch.float64)
    sim = colour_similarity(image, dilation=2, theta=1.0)
    valid = torch.tensor([[True] * 5, [True, True, True, False, True]])
    mask = torch.rand(2, 9, 11) > 0.2
    loss = affinity_loss(d, sim, valid, 0.3, 1.0, mask)
    (grad,) = torch.autograd.grad(loss, d)
    d2 = d.detach().clone().requires_grad_()
    ref = _affinity_by_autograd(d2, sim, valid, 0.3, mask)
    (grad_ref,) = torch.autograd.grad(ref, d2)
    assert torch.allclose(loss, ref, rtol=1e-12, atol=0)
    assert torch.allclose(grad, grad_ref, rtol=1e-9, atol=1e-15)
    assert grad.abs().sum() > 0
    # and against finite differences
    assert torch.autograd.gradcheck(
        lambda x: affinity_loss(x, sim, valid, 0.3, 1.0, mask),
        (d.detach().clone().requires_grad_(),),
    )
