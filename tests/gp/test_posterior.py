import math

import numpy as np
import pytest
import torch

from geosparse.gp import KernelParams
from geosparse.gp.kernels import rbf
from geosparse.gp.posterior import loo_variance_scale, posterior_map


def _dense(mean, pts, vals, ell, var, noise):
    """The NPP-GP formulas written out with numpy over every pixel at once."""
    h, w = mean.shape
    rr, cc = np.mgrid[0:h, 0:w]
    xs = np.stack([rr.ravel() + 0.5, cc.ravel() + 0.5], 1)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return var * np.exp(-0.5 * d2 / ell**2)

    m_p = mean[pts[:, 0].astype(int), pts[:, 1].astype(int)]
    kpp = k(pts, pts) + noise * np.eye(len(pts))
    ks = k(xs, pts)
    mu = mean.ravel() + ks @ np.linalg.solve(kpp, vals - m_p)
    cov = var - np.einsum('ij,ji->i', ks, np.linalg.solve(kpp, ks.T))
    return mu.reshape(h, w), np.sqrt(np.clip(cov, 0, None)).reshape(h, w)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(30, 40))
    pts = np.array([[3.5, 4.5], [10.5, 30.5], [25.5, 12.5], [26.5, 13.5]])
    vals = np.array([2.0, -1.0, 0.5, 0.7])
    return mean, pts, vals


def test_posterior_matches_the_dense_formula_in_any_chunking(problem):
    mean, pts, vals = problem
    ref_mu, ref_sd = _dense(mean, pts, vals, 4.0, 2.0, 0.01)
    for chunk in (7, 1000, 10**7):
        mu, sd = posterior_map(
            torch.from_numpy(mean),
            torch.from_numpy(pts),
            torch.from_numpy(vals),
            KernelParams('rbf', 4.0, 2.0, 0.01),
            chunk=chunk,
        )
        np.testing.assert_allclose(mu.numpy(), ref_mu, atol=1e-8)
        np.testing.assert_allclose(sd.numpy(), ref_sd, atol=1e-6)


def test_revealed_points_pin_the_map_and_far_pixels_keep_the_network(problem):
    mean, pts, vals = problem
    mu, sd = posterior_map(
        torch.from_numpy(mean),
        torch.from_numpy(pts),
        torch.from_numpy(vals),
        KernelParams('rbf', 2.0, 1.0, 1e-6),
    )
    for (r, c), v in zip(pts.astype(int), vals, strict=True):
        assert mu[r, c] == pytest.approx(v, abs=1e-3)
        assert sd[r, c] < 1e-2
    # 20 length-scales away nothing changes: network mean, prior std.
    assert mu[0, 39] == pytest.approx(mean[0, 39], abs=1e-9)
    assert sd[0, 39] == pytest.approx(1.0, abs=1e-9)


def test_no_points_and_bad_parameters():
    mean = torch.zeros(5, 6)
    mu, sd = posterior_map(
        mean, torch.zeros(0, 2), torch.zeros(0), KernelParams('rbf', 3.0, 4.0, 0.1)
    )
    assert torch.equal(mu, mean) and torch.allclose(sd, torch.full((5, 6), 2.0))
    with pytest.raises(ValueError, match='lengthscale=0'):
        posterior_map(
            mean, torch.zeros(1, 2), torch.zeros(1), KernelParams('rbf', 0.0, 1.0, 0.1)
        )
    with pytest.raises(ValueError, match=r'points must be \(P, 2\)'):
        posterior_map(
            mean, torch.zeros(2, 3), torch.zeros(2), KernelParams('rbf', 1.0, 1.0, 0.1)
        )


def test_duplicated_points_without_noise_still_factorise():
    pts = torch.tensor([[2.5, 2.5], [2.5, 2.5]], dtype=torch.float64)
    mu, _ = posterior_map(
        torch.zeros(6, 6, dtype=torch.float64),
        pts,
        torch.tensor([1.0, 1.0]),
        KernelParams('rbf', 2.0, 1.0, 0.0),
    )
    assert torch.isfinite(mu).all() and mu[2, 2] == pytest.approx(1.0, abs=1e-3)
    assert rbf(pts, pts, 1.0, 3.0)[0, 1] == pytest.approx(3.0)


def test_loo_variance_scale_recovers_the_true_variance():
    torch.manual_seed(0)
    pts = torch.rand(300, 2, dtype=torch.float64) * 100
    k = rbf(pts, pts, 8.0, 4.0) + 0.1 * torch.eye(300, dtype=torch.float64)
    resid = torch.linalg.cholesky(k) @ torch.randn(300, dtype=torch.float64)
    for var in (0.25, 4.0, 16.0):
        # The kernel's shape is right and its scale wrong by 4 / var.
        c = loo_variance_scale(pts, resid, KernelParams('rbf', 8.0, var, 0.1 * var / 4))
        assert c == pytest.approx(4 / var, rel=0.25)
    assert (
        loo_variance_scale(pts[:1], resid[:1], KernelParams('rbf', 8.0, 1.0, 0.1))
        == 1.0
    )
    with pytest.raises(ValueError, match='finite'):
        loo_variance_scale(
            pts[:2], torch.tensor([0.0, math.nan]), KernelParams('rbf', 8.0, 1.0, 0.1)
        )
