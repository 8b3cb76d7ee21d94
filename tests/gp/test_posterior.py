import math

import numpy as np
import pytest
import torch

from geosparse.gp import KernelParams, RevealedFit, Trend
from geosparse.gp.kernels import rbf
from geosparse.gp.posterior import (
    loo_variance_scale,
    mixture_moments,
    posterior_map,
    predictive_map,
    predictive_parts,
)


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


def test_mixture_moments_of_two_gaussians():
    """0.25 N(0, 1) + 0.75 N(4, 4): mean 3, variance 0.25 + 0.75 * 20 - 9 = 6.25."""
    ones = torch.ones(2, 3, dtype=torch.float64)
    mean, std = mixture_moments([(0.25, 0 * ones, ones), (0.75, 4 * ones, 2 * ones)])
    torch.testing.assert_close(mean, 3 * ones)
    torch.testing.assert_close(std, 2.5 * ones)
    # One component is itself.
    one = mixture_moments([(1.0, ones, 2 * ones)])
    torch.testing.assert_close(one[1], 2 * ones)


def test_predictive_parts_are_the_members_with_their_noise():
    net = torch.linspace(0, 1, 60, dtype=torch.float64).reshape(6, 10)
    pts = torch.tensor([[1.5, 2.5], [4.5, 7.5]], dtype=torch.float64)
    vals = torch.tensor([0.3, 2.0], dtype=torch.float64)
    a = RevealedFit(KernelParams('rbf', 2.0, 1.0, 0.1), Trend(), True, 2)
    b = RevealedFit(KernelParams('rbf', 5.0, 0.5, 0.3), Trend(slope=0.5), True, 2)
    fit = RevealedFit(a.params, a.trend, True, 2, members=(a, b), weights=(0.3, 0.7))
    parts = predictive_parts(net, pts, vals, fit)
    assert [w for w, _, _ in parts] == [0.3, 0.7]
    for (_, mu, sd), member in zip(parts, (a, b), strict=True):
        mu_m, sd_m = posterior_map(net, pts, vals, member.params, trend=member.trend)
        torch.testing.assert_close(mu, mu_m.double())
        torch.testing.assert_close(
            sd, (sd_m.double() ** 2 + member.params.noise).sqrt()
        )
    # The map is their mixture, wider than either member where they disagree.
    mean, std = predictive_map(net, pts, vals, fit)
    torch.testing.assert_close(mean, 0.3 * parts[0][1] + 0.7 * parts[1][1])
    assert bool((std >= torch.minimum(parts[0][2], parts[1][2]) - 1e-12).all())


def test_points_outside_a_window_condition_it_given_their_mean():
    """A window conditioned on every point, given their means, is the whole map's crop."""
    gen = torch.Generator().manual_seed(3)
    net = torch.randn(40, 60, generator=gen, dtype=torch.float64)
    bands = torch.randn(2, 40, 60, generator=gen, dtype=torch.float64)
    pts = torch.rand(25, 2, generator=gen, dtype=torch.float64) * torch.tensor(
        [40.0, 60.0], dtype=torch.float64
    )
    vals = torch.randn(25, generator=gen, dtype=torch.float64)
    params = KernelParams('rbf', 8.0, 1.0, 0.1)
    trend = Trend(
        0.2, 0.8, (0.3, -0.1), cov=tuple(tuple(r) for r in torch.eye(4).tolist())
    )
    full = posterior_map(net, pts, vals, params, trend=trend, covariates=bands)
    r, c = pts[:, 0].floor().long(), pts[:, 1].floor().long()
    win = (slice(10, 30), slice(20, 45))
    crop = posterior_map(
        net[win],
        pts - torch.tensor([10.0, 20.0], dtype=torch.float64),
        vals,
        params,
        trend=trend,
        covariates=bands[:, win[0], win[1]],
        point_mean=net[r, c],
        point_covariates=bands[:, r, c],
    )
    for a, b in zip(crop, full, strict=True):
        torch.testing.assert_close(a, b[win])
    # A trend on bands needs the bands at the points too.
    with pytest.raises(ValueError, match='point_covariates of shape'):
        posterior_map(
            net[win],
            pts,
            vals,
            params,
            trend=trend,
            covariates=bands[:, win[0], win[1]],
            point_mean=net[r, c],
        )


def test_a_variance_cutoff_leaves_the_mean_alone():
    gen = torch.Generator().manual_seed(4)
    pts = torch.rand(300, 2, generator=gen, dtype=torch.float64) * 200
    vals = torch.randn(300, generator=gen, dtype=torch.float64)
    net = torch.zeros(120, 120, dtype=torch.float64)
    params = KernelParams('rbf', 20.0, 1.0, 0.1)
    exact = posterior_map(net, pts, vals, params)
    loose = posterior_map(net, pts, vals, params, variance_cutoff=1e-4)
    torch.testing.assert_close(loose[0], exact[0], rtol=0, atol=0)
    diff = float((loose[1] - exact[1]).abs().max())
    assert 0 < diff < 1e-4
