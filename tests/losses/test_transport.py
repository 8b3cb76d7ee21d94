import math

import numpy as np
import pytest
import torch

from geosparse.gaussians import GaussianFit
from geosparse.losses import (
    bayesian_kernel,
    dm_count_loss,
    gst_kernel,
    kernel_shares,
    ot_loss,
    transport_loss,
)


def _fit(means, stds, shape=(40, 60)):
    means = np.asarray(means, dtype=np.float64).reshape(-1, 2)
    covs = np.eye(2) * np.asarray(stds, dtype=np.float64).reshape(-1, 1, 1) ** 2
    return GaussianFit(means, covs, np.ones((len(means), 1)), np.zeros(1), shape)


def test_gst_kernel_assigns_cells_to_their_gaussian_or_the_background():
    fit = _fit([[10.5, 10.5], [10.5, 40.5]], [2.0, 6.0])
    k = gst_kernel(fit, stride=1, cutoff=3.0)
    assert k.shape == (3, 40 * 60)
    torch.testing.assert_close(k.sum(0), torch.ones(40 * 60, dtype=torch.float64))
    cell = lambda r, c: r * 60 + c  # noqa: E731
    # At a centre the background keeps exp(-c^2/2) / (1 + exp(-c^2/2)) = 1.1 % (c = 3).
    leak = math.exp(-4.5) / (1 + math.exp(-4.5))
    assert float(k[0, cell(10, 10)]) == pytest.approx(1 - leak, abs=1e-6)
    assert float(k[1, cell(10, 40)]) == pytest.approx(1 - leak, abs=1e-3)
    assert k[2, cell(35, 5)] > 0.99  # far from both: background
    # The wide Gaussian reaches further: 9 px from each centre (4.5 sd vs 1.5 sd).
    assert k[2, cell(10, 19)] > 0.5 and k[1, cell(10, 31)] > 0.5
    # Strided grid: cell (r, c) of a stride-4 grid is centred at pixel (4r + 2, 4c + 2).
    k4 = gst_kernel(fit, stride=4)
    assert k4.shape == (3, 10 * 15)
    assert k4[0, 2 * 15 + 2] > 0.98  # centre (10, 10)


def test_bayesian_kernel_background_grows_with_distance():
    pts = torch.tensor([[10.5, 10.5]])
    k = bayesian_kernel(pts, (40, 60), sigma=4.0, background_ratio=0.5)  # d = 20 px
    torch.testing.assert_close(k.sum(0), torch.ones(2400, dtype=torch.float64))
    near, far = k[1, 10 * 60 + 12], k[1, 10 * 60 + 55]
    assert near < 0.01 and far > 0.99
    # At distance r from the point: point exp(-r^2/2s^2) vs background exp(-(d - r)^2/2s^2).
    r = 10.0
    assert float(k[0, 10 * 60 + 20]) == pytest.approx(
        1 / (1 + math.exp(-((20 - r) ** 2 - r**2) / 32)), abs=1e-3
    )


def test_loss_is_zero_for_unit_mass_at_each_annotation_and_counts_background():
    fit = _fit([[10.5, 10.5], [30.5, 40.5]], [2.0, 2.0])
    k = gst_kernel(fit)
    density = torch.zeros(40, 60)
    density[10, 10] = density[30, 40] = 1.0
    leak = math.exp(-4.5) / (
        1 + math.exp(-4.5)
    )  # what the background keeps at a centre
    assert float(transport_loss(density, k)) == pytest.approx(4 * leak, abs=1e-4)
    density[0, 59] = 0.7  # mass on the background costs its amount
    assert float(transport_loss(density, k)) == pytest.approx(4 * leak + 0.7, abs=1e-4)
    missing = torch.zeros(40, 60)
    missing[10, 10] = 1.0  # the second object is not found
    assert float(transport_loss(missing, k)) == pytest.approx(1 + 2 * leak, abs=1e-4)
    density = torch.zeros(40, 60, requires_grad=True)
    transport_loss(density, k).backward()
    assert density.grad is not None and density.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='output stride'):
        transport_loss(torch.zeros(10, 15), k)
    with pytest.raises(ValueError, match='no annotations'):
        gst_kernel(_fit(np.zeros((0, 2)), []))


def test_sparse_gst_kernel_matches_the_dense_one_and_the_loss():
    rng = np.random.default_rng(0)
    means = rng.uniform(0, 40, (12, 2)) * [1, 1.5] + 0.5
    stds = rng.uniform(1.0, 4.0, 12)
    fit = _fit(means, stds)
    for stride in (1, 4):
        dense = gst_kernel(fit, stride=stride)
        sparse = gst_kernel(fit, stride=stride, sparse=True)
        assert sparse.is_sparse
        torch.testing.assert_close(sparse.to_dense(), dense, atol=1e-5, rtol=0)
        cells = dense.shape[1]
        assert sparse._nnz() < 0.6 * dense.numel() or cells < 200
    density = torch.rand(40, 60, dtype=torch.float64, requires_grad=True)
    a = transport_loss(density, gst_kernel(fit))
    b = transport_loss(density, gst_kernel(fit, sparse=True))
    assert float(a.detach()) == pytest.approx(float(b.detach()), abs=1e-3)
    b.backward()
    assert density.grad is not None and torch.isfinite(density.grad).all()


def share(density):
    """The share of a 32 x 48 density near the points of the OT test."""
    near = torch.zeros(32, 48, dtype=torch.bool)
    near[5:12, 5:12] = near[21:28, 37:44] = True
    return float(density[near].sum() / density.sum())


def test_ot_loss_gradient_is_scale_free_and_pulls_mass_to_the_points():
    """DM-Count's gradient: orthogonal to the density, mass flows to the annotations."""
    gen = torch.Generator().manual_seed(0)
    density = (torch.rand(32, 48, generator=gen) + 0.1).requires_grad_(True)
    points = torch.tensor([[8.5, 8.5], [24.5, 40.5]])
    for stride in (1, 2):
        density.grad = None
        ot_loss(density, points, reg=1.0, stride=stride).backward()
        grad = density.grad
        assert grad is not None
        # W depends on the normalised density only: <grad, zeta> = 0.
        assert float((grad * density.detach()).sum()) == pytest.approx(0, abs=1e-4)
        # A step against the gradient moves mass towards the points.
        moved = (density.detach() - 0.3 * grad / grad.abs().max()).clamp_min(0)
        assert share(moved) > share(density.detach()) + 0.01
    # Stride 2: every pixel of a cell gets the same gradient.
    density.grad = None
    ot_loss(density, points, stride=2).backward()
    g = density.grad
    assert g is not None
    torch.testing.assert_close(g[0::2, 0::2], g[1::2, 1::2])
    with pytest.raises(ValueError, match='no annotations'):
        ot_loss(density, torch.zeros(0, 2))


def test_dm_count_loss_terms():
    """Count term fixes the mass; an empty window costs its mass; TV at the points."""
    density = torch.zeros(16, 16)
    density[4, 4] = density[10, 12] = 1.0
    points = torch.tensor([[4.5, 4.5], [10.5, 12.5]])
    # Exact mass at the points: count 0, TV 0; the OT surrogate alone remains.
    exact = dm_count_loss(density, points, ot_weight=0.0)
    assert float(exact) == pytest.approx(0.0, abs=1e-6)
    double = dm_count_loss(2 * density, points, ot_weight=0.0)
    assert float(double) == pytest.approx(2.0, abs=1e-5)  # |4 - 2|, TV still 0
    moved = torch.zeros(16, 16)
    moved[4, 4] = moved[0, 0] = 1.0  # half the mass in the wrong place: TV = 1/2
    tv = dm_count_loss(moved, points, ot_weight=0.0, tv_weight=1.0)
    assert float(tv) == pytest.approx(0.5 * 2, abs=1e-5)
    empty = torch.full((16, 16), 0.01)
    assert float(dm_count_loss(empty, torch.zeros(0, 2))) == pytest.approx(2.56)


def test_growing_background_of_the_authors_code():
    """The background grows with the distance: sharper, and 'r' moves the edge."""
    fit = _fit([[20.5, 30.5]], [2.0])
    cutoff = gst_kernel(fit, background='cutoff')
    growing = gst_kernel(fit, background='growing', background_ratio=0.015)
    for k in (cutoff, growing):
        torch.testing.assert_close(k.sum(0), torch.ones(2400, dtype=torch.float64))
    row = lambda k, c: float(k[0, 20 * 60 + c])  # noqa: E731
    # m = 1 (2 px): the object keeps the cell under both, more so under growing.
    assert row(growing, 32) > row(cutoff, 32) > 0.9
    # The edge: cutoff at m = 3 exactly (p = 1/2); growing where
    # m^2 = c^2 / 2 + log(sd^2) - log r, here about m = 3.38 (6.8 px).
    assert row(cutoff, 36) == pytest.approx(0.5, abs=0.01)  # 6 px = 3 sd
    edge = math.sqrt(4.5 + math.log(4.0) - math.log(0.015))
    assert (
        row(growing, 30 + int(2 * edge + 0.5) - 1)
        > 0.5
        > row(growing, 30 + int(2 * edge + 0.5) + 1)
    )
    # The sparse kernel agrees.
    sparse = gst_kernel(fit, background='growing', sparse=True).to_dense()
    torch.testing.assert_close(sparse, growing, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="'cutoff' or 'growing'"):
        gst_kernel(fit, background='nearest')  # type: ignore[arg-type]


def test_kernel_shares_of_wide_gaussians():
    fit = _fit([[10.5, 10.5], [25.5, 40.5]], [1.5, 6.0])
    k = gst_kernel(fit)
    shares = kernel_shares(k, torch.tensor([1.5, 6.0]), widest=4.0)
    assert shares['wide_gaussians'] == 0.5
    assert shares['wide_mass'] > 0.8  # the wide one owns far more cells
    assert 0 < shares['background'] < 1
    assert shares['cells_per_object'] == pytest.approx(
        float(k[:-1].sum()) / 2, rel=1e-9
    )
    assert shares['contested_mass'] == 0.0  # far apart: each cell has one owner
    # Two points on one object: every cell is shared half and half.
    crowd = gst_kernel(_fit([[20.5, 30.5], [20.5, 30.5]], [3.0, 3.0]))
    shares = kernel_shares(crowd, torch.tensor([3.0, 3.0]), widest=4.0)
    assert shares['contested_mass'] == 0.0  # exactly half is not less than half
    near = gst_kernel(_fit([[20.5, 30.5], [20.5, 32.5], [20.5, 34.5]], [3.0] * 3))
    shares = kernel_shares(near, torch.tensor([3.0] * 3), widest=4.0)
    assert 0.2 < shares['contested_mass'] < 1.0  # the middle one shares its cells
