import math

import numpy as np
import pytest
import torch

from geosparse.gp import KernelParams, Trend, fit_revealed, posterior_map
from geosparse.gp.kernels import stationary


def _field(n, ell, var, noise, seed, side=100.0):
    """``n`` points on a square and a GP draw at them (RBF, plus noise)."""
    gen = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 2, generator=gen, dtype=torch.float64) * side
    k = stationary(pts, pts, ell, var) + noise * torch.eye(n, dtype=torch.float64)
    z = torch.randn(n, generator=gen, dtype=torch.float64)
    return pts, torch.linalg.cholesky(k) @ z, gen


# What a network that fitted its training points leaves: narrow, sure, tiny.
TRAINED = KernelParams('rbf', 2.0, 0.01, 1e-4)


def test_fit_recovers_the_kernel_and_drops_an_uninformative_network():
    pts, g, gen = _field(150, 8.0, 4.0, 0.25, seed=0)
    y = 5 + g
    m = 3 * torch.randn(150, generator=gen, dtype=torch.float64)  # says nothing
    fit = fit_revealed([(pts, y, m)], TRAINED)
    assert fit.refitted and fit.points == 150
    assert 5 < fit.params.lengthscale < 12
    assert 2 < fit.params.variance < 8 and 0.05 < fit.params.noise < 1
    assert abs(fit.trend.slope) < 0.1 and abs(fit.trend.intercept - 5) < 1.5


def test_fit_keeps_an_informative_network():
    pts, g, gen = _field(150, 8.0, 0.2, 0.01, seed=1)
    m = 10 * torch.randn(150, generator=gen, dtype=torch.float64)
    fit = fit_revealed([(pts, m + g, m)], TRAINED)
    assert abs(fit.trend.slope - 1) < 0.05 and fit.params.variance < 1


def test_images_are_pooled():
    """Fifty images of six points each: no image could be fitted alone."""
    groups = []
    for i in range(50):
        pts, g, _ = _field(6, 5.0, 1.0, 0.01, seed=10 + i, side=28.0)
        groups.append((pts, g, torch.zeros(6, dtype=torch.float64)))
    fit = fit_revealed(groups, TRAINED)
    assert fit.refitted and fit.points == 300
    assert 3 < fit.params.lengthscale < 8 and 0.5 < fit.params.variance < 2


def test_revealing_more_points_does_not_hurt_after_the_refit():
    """The trained kernel makes more points worse; the re-fitted one does not."""
    pts, g, _ = _field(400, 10.0, 1.0, 0.04, seed=3)
    test = slice(300, 400)
    mean = torch.zeros(100, 100, dtype=torch.float64)
    rc = pts[test].floor().long()
    errors = {'trained': [], 'refit': []}
    wrong = KernelParams('rbf', 40.0, 0.05, 1e-6)  # too long, and noiseless
    for n in (25, 100, 300):
        known = slice(0, n)
        fit = fit_revealed([(pts[known], g[known], torch.zeros(n))], wrong)
        for name, params, trend in (
            ('trained', wrong, None),
            ('refit', fit.params, fit.trend),
        ):
            mu, _ = posterior_map(mean, pts[known], g[known], params, trend=trend)
            err = (mu[rc[:, 0], rc[:, 1]] - g[test]).square().mean().sqrt()
            errors[name].append(float(err))
    refit = errors['refit']
    assert refit[0] >= refit[1] >= refit[2]
    assert all(r < t for r, t in zip(refit, errors['trained'], strict=True))


def test_few_points_or_one_value_fall_back_to_the_trained_kernel_with_a_warning():
    pts, g, _ = _field(20, 5.0, 1.0, 0.01, seed=4)
    m = torch.zeros(20, dtype=torch.float64)
    with pytest.warns(UserWarning, match='5 revealed points are too few'):
        fit = fit_revealed([(pts[:5], g[:5], m[:5])], TRAINED)
    assert not fit.refitted and fit.params == TRAINED and fit.trend == Trend()
    with pytest.warns(UserWarning, match='all 20 revealed points hold the value 3'):
        fit = fit_revealed([(pts, torch.full((20,), 3.0), m)], TRAINED)
    assert not fit.refitted and 'value column' in str(fit.reason)
    with pytest.warns(UserWarning, match='no revealed point'):
        assert not fit_revealed([], TRAINED).refitted
    with pytest.raises(ValueError, match='NaN is nodata'):
        fit_revealed(
            [(pts, g.clone().index_fill_(0, torch.tensor([0]), math.nan), m)], TRAINED
        )


def test_points_closer_than_a_pixel_with_other_values_give_a_stable_fit():
    pts, g, _ = _field(40, 6.0, 1.0, 0.01, seed=5)
    # Ten pairs 0.1 px apart whose values differ by 2 label sd.
    twins = pts[:10] + 0.1
    pts2 = torch.cat([pts, twins])
    y = torch.cat([g, g[:10] + 2 * g.std()])
    fit = fit_revealed([(pts2, y, torch.zeros(50))], TRAINED)
    assert fit.params.noise > 0.05 * float(y.var())
    mean = torch.zeros(100, 100, dtype=torch.float64)
    _, std = posterior_map(mean, pts2, y, fit.params, trend=fit.trend)
    assert bool(torch.isfinite(std).all()) and float(std.max()) < 3 * float(y.std())


def test_trend_sets_the_prior_mean_and_adds_its_uncertainty():
    mean = torch.linspace(0, 1, 50, dtype=torch.float64).reshape(5, 10)
    params = KernelParams('rbf', 2.0, 1.0, 0.1)
    trend = Trend(intercept=1.0, slope=2.0, cov=((0.04, 0.0), (0.0, 0.01)))
    mu, std = posterior_map(
        mean, torch.zeros(0, 2), torch.zeros(0), params, trend=trend
    )
    torch.testing.assert_close(mu, 1 + 2 * mean)
    torch.testing.assert_close(std, (1 + 0.04 + 0.01 * mean.square()).sqrt())
    # A known identity trend is the posterior as before.
    pts = torch.tensor([[1.5, 2.5], [3.5, 7.5]], dtype=torch.float64)
    vals = torch.tensor([0.3, 2.0], dtype=torch.float64)
    a = posterior_map(mean, pts, vals, params)
    b = posterior_map(mean, pts, vals, params, trend=Trend())
    torch.testing.assert_close(a, b)
    # Near a point, the trend's uncertainty is explained away.
    _, std_t = posterior_map(mean, pts, vals, params, trend=trend)
    assert float(std_t[1, 2]) < float(std_t[4, 0])


def test_fit_is_written_as_plain_values():
    pts, g, _ = _field(30, 5.0, 1.0, 0.01, seed=6)
    fit = fit_revealed([(pts, g, torch.zeros(30))], TRAINED, select=False)
    d = fit.as_dict()
    assert d['source'] == 'refit on the revealed points' and d['points'] == 30
    assert set(d['trend']) == {'intercept', 'slope', 'intercept_sd', 'slope_sd'}
    assert all(np.isfinite(v) for v in d['trend'].values())


def _band_scene(seed, n=200, side=60):
    """A raster whose label is 2 * band 0 - band 1 plus a GP, and a useless network."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2, side, side, generator=gen, dtype=torch.float64)
    z = torch.nn.functional.avg_pool2d(z[None], 5, 1, 2, count_include_pad=False)[0]
    z = z / z.std()
    pts, g, _ = _field(n, 6.0, 0.3, 0.01, seed=seed + 100, side=float(side))
    rc = pts.floor().long()
    label = 2 * z[0] - z[1] + 7
    y = label[rc[:, 0], rc[:, 1]] + g
    mean = torch.zeros(side, side, dtype=torch.float64)
    return z, label, pts, y, mean


def test_band_drift_nests_regression_kriging():
    """The network says nothing; the bands say much: the fit finds their weights."""
    z, label, pts, y, mean = _band_scene(seed=4)
    rc = pts.floor().long()
    bands_at = z[:, rc[:, 0], rc[:, 1]].T
    m = mean[rc[:, 0], rc[:, 1]]
    fit = fit_revealed([(pts, y, m)], TRAINED, covariates=[bands_at])
    assert len(fit.trend.bands) == 2 and len(fit.trend.cov) == 4
    assert abs(fit.trend.bands[0] - 2) < 0.3 and abs(fit.trend.bands[1] + 1) < 0.3
    assert abs(fit.trend.intercept - 7) < 0.5
    assert 'bands' in fit.trend.as_dict() and len(fit.trend.as_dict()['bands_sd']) == 2
    # Far from the points, the map follows the bands; on the network alone it cannot.
    alone = fit_revealed([(pts[:20], y[:20], m[:20])], TRAINED)
    with_bands = fit_revealed(
        [(pts[:20], y[:20], m[:20])], TRAINED, covariates=[bands_at[:20]]
    )
    errs = []
    for f in (alone, with_bands):
        mu, std = posterior_map(
            mean, pts[:20], y[:20], f.params, trend=f.trend, covariates=z
        )
        assert bool(torch.isfinite(std).all())
        errs.append(float((mu - label).square().mean()))
    assert errs[1] < 0.25 * errs[0]


def test_band_drift_drops_a_constant_band_and_needs_the_bands():
    z, _, pts, y, mean = _band_scene(seed=5)
    rc = pts.floor().long()
    bands_at = torch.cat(
        [z[:, rc[:, 0], rc[:, 1]].T, torch.full((len(pts), 1), 3.0)], 1
    )
    fit = fit_revealed(
        [(pts, y, mean[rc[:, 0], rc[:, 1]])], TRAINED, covariates=[bands_at]
    )
    assert fit.trend.bands[2] == 0.0 and fit.trend.cov[4][4] == 0.0
    with pytest.raises(ValueError, match='pass covariates'):
        posterior_map(mean, pts, y, fit.params, trend=fit.trend)
    with pytest.raises(ValueError, match='finite'):
        fit_revealed(
            [(pts, y, mean[rc[:, 0], rc[:, 1]])],
            TRAINED,
            covariates=[bands_at * torch.nan],
        )
    with pytest.raises(ValueError, match=r'4 x 4'):
        Trend(bands=(1.0, 2.0), cov=((1.0, 0.0), (0.0, 1.0)))


def test_a_point_on_nodata_is_left_out_with_a_warning():
    mean = torch.zeros(20, 20, dtype=torch.float64)
    mean[2, 3] = torch.nan
    pts = torch.tensor([[2.5, 3.5], [10.5, 10.5]], dtype=torch.float64)
    vals = torch.tensor([5.0, 1.0], dtype=torch.float64)
    params = KernelParams('rbf', 3.0, 1.0, 0.01)
    with pytest.warns(UserWarning, match='1 of 2 revealed points lie on nodata'):
        mu, _ = posterior_map(mean, pts, vals, params)
    assert bool(torch.isfinite(mu[5:]).all()) and float(mu[10, 10]) > 0.9
    assert torch.isnan(mu[2, 3])


def test_leave_one_out_density_matches_refitting_without_each_point():
    """The closed form (R&W Eq. 5.12) against conditioning on the others, point by point."""
    from geosparse.gp.empirical import _loo_nlpd

    gen = torch.Generator().manual_seed(7)
    pts = [torch.rand(6, 2, generator=gen, dtype=torch.float64) * 10 for _ in range(2)]
    y = torch.randn(12, generator=gen, dtype=torch.float64)
    h = torch.cat([torch.ones(12, 1), torch.randn(12, 2, generator=gen)], 1).double()
    theta = torch.tensor([3.0, 0.8, 0.2], dtype=torch.float64).log()  # ℓ, s², σ²
    prior_mean = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    prior_sd = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    ell, s2, n2 = theta.exp()
    c = torch.block_diag(*[stationary(p, p, ell, s2) for p in pts])
    c = c + n2 * torch.eye(12, dtype=torch.float64) + (h * prior_sd**2) @ h.T
    mu = h @ prior_mean
    nlpd = []
    for i in range(12):
        o = [j for j in range(12) if j != i]
        w = torch.linalg.solve(c[o][:, o], c[o, i])
        m_i = mu[i] + w @ (y[o] - mu[o])
        v_i = c[i, i] - c[i, o] @ w
        nlpd.append(0.5 * torch.log(2 * math.pi * v_i) + 0.5 * (y[i] - m_i) ** 2 / v_i)
    every = torch.ones(12, dtype=torch.bool)
    got = _loo_nlpd(theta, 'rbf', pts, y, h, every, every, prior_mean, prior_sd)
    torch.testing.assert_close(got, torch.stack(nlpd), rtol=1e-9, atol=0)


def test_leave_one_out_with_seen_points_matches_the_map_without_each_point():
    """Seen points are conditioned on but do not estimate the trend (brute force)."""
    from geosparse.gp.empirical import _loo_nlpd

    gen = torch.Generator().manual_seed(8)
    pts = [torch.rand(9, 2, generator=gen, dtype=torch.float64) * 10 for _ in range(2)]
    y = torch.randn(18, generator=gen, dtype=torch.float64)
    h = torch.cat([torch.ones(18, 1), torch.randn(18, 2, generator=gen)], 1).double()
    trend_on = torch.tensor([True] * 6 + [False] * 3 + [True] * 5 + [False] * 4)
    scored = trend_on.clone()
    scored[0] = False  # a trend point that is not scored
    theta = torch.tensor([4.0, 0.7, 0.3], dtype=torch.float64).log()
    b = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    tau = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    ell, s2, n2 = theta.exp()
    k = torch.block_diag(*[stationary(p, p, ell, s2) for p in pts])
    k = k + n2 * torch.eye(18, dtype=torch.float64)
    nlpd = []
    for i in torch.nonzero(scored)[:, 0].tolist():
        o = [j for j in range(18) if j != i]
        t = [j for j in o if trend_on[j]]
        # The trend's posterior from the other trend points (R&W Eq. 2.42).
        kt = torch.linalg.inv(k[t][:, t])
        cov = torch.linalg.inv(torch.diag(tau**-2) + h[t].T @ kt @ h[t])
        beta = cov @ (torch.diag(tau**-2) @ b + h[t].T @ kt @ y[t])
        # Then the GP on every other point, with the trend's uncertainty.
        w = torch.linalg.solve(k[o][:, o], k[o, i])
        m_i = h[i] @ beta + w @ (y[o] - h[o] @ beta)
        r = h[i] - h[o].T @ w
        v_i = k[i, i] - k[i, o] @ w + r @ cov @ r
        nlpd.append(0.5 * torch.log(2 * math.pi * v_i) + 0.5 * (y[i] - m_i) ** 2 / v_i)
    got = _loo_nlpd(theta, 'rbf', pts, y, h, trend_on, scored, b, tau)
    torch.testing.assert_close(got, torch.stack(nlpd), rtol=1e-9, atol=0)


def test_stacking_weights_maximise_the_leave_one_out_density():
    """EM's weights against a direct optimiser of the same objective (Yao et al.)."""
    from scipy.optimize import minimize

    from geosparse.gp.empirical import _stacking_weights

    gen = torch.Generator().manual_seed(3)
    nlpd = torch.rand(3, 40, generator=gen, dtype=torch.float64) * 3
    w = _stacking_weights(nlpd)
    assert float(w.sum()) == pytest.approx(1.0) and bool((w >= 0).all())
    dens = (-nlpd).exp().numpy()

    def objective(v: np.ndarray) -> float:
        p = np.exp(v - v.max())
        return -float(np.log((p / p.sum()) @ dens).mean())

    best = minimize(objective, np.zeros(3), method='Nelder-Mead', tol=1e-12)
    assert objective(np.log(w.numpy() + 1e-300)) <= best.fun + 1e-6
    # A model better at every point takes all the weight; two equal ones share it.
    one = torch.stack([nlpd[0] - 1, nlpd[0]])
    assert float(_stacking_weights(one)[0]) > 0.999
    both = _stacking_weights(torch.stack([nlpd[0], nlpd[0]]))
    torch.testing.assert_close(both, torch.full((2,), 0.5, dtype=torch.float64))


def _seen_scene(seed, informative):
    """Bands explain the labels; the network knows its training points only."""
    z, label, pts, y, _mean = _band_scene(seed=seed)
    rc = pts.floor().long()
    bands_at = z[:, rc[:, 0], rc[:, 1]].T
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    if informative:
        # The network knows what is not linear in the bands.
        extra = 2 * bands_at[:, 0] ** 2
        y = y + extra
        m = label[rc[:, 0], rc[:, 1]] + extra
    else:
        # Memorised at its training points, noise anywhere else.
        m = 2 * torch.randn(n, generator=gen, dtype=torch.float64) + 7
        m[n // 3 :] = y[n // 3 :]
    rev, seen = slice(0, n // 3), slice(n // 3, n)
    return z, label, pts, y, m, bands_at, rev, seen


@pytest.mark.parametrize('informative', [False, True])
def test_the_network_steps_aside_for_kriging_when_it_only_knows_its_points(
    informative,
):
    """``seen`` points: the drift is chosen as the map will predict new points."""
    z, label, pts, y, m, bands_at, rev, seen = _seen_scene(6, informative)

    def fit_with(drift=None):
        return fit_revealed(
            [(pts[rev], y[rev], m[rev])],
            TRAINED,
            covariates=[bands_at[rev]],
            seen=[(pts[seen], y[seen], m[seen])],
            seen_covariates=[bands_at[seen]],
            drift=drift,
        )

    fit = fit_with()
    scores = dict(fit.compared)
    assert set(scores) == {'bands', 'network', 'kriging'}
    # The trends are stacked; the heaviest comes first and gives the tags' trend.
    weights = {f.drift: w for w, f in fit.parts}
    assert sum(weights.values()) == pytest.approx(1.0)
    top = max(fit.parts, key=lambda part: part[0])[1]
    assert (top.drift, top.params, top.trend) == (fit.drift, fit.params, fit.trend)
    if informative:
        assert weights.get('kriging', 0.0) < 0.5, (scores, weights)
        return
    assert fit.drift == 'kriging' and weights['kriging'] > 0.9, (scores, weights)
    assert fit.trend.slope == 0.0 and fit.trend.cov[1] == (0.0,) * 4
    assert abs(fit.trend.bands[0] - 2) < 0.3 and abs(fit.trend.bands[1] + 1) < 0.3
    # The network as a drift, conditioned on the same points, maps far worse.
    network = fit_with('network')
    # A map whose network mean is noise away from the points.
    gen = torch.Generator().manual_seed(0)
    noise_map = 2 * torch.randn(label.shape, generator=gen, dtype=torch.float64) + 7
    errs = {}
    for name, f in (('kriging', fit), ('network', network)):
        mu, std = posterior_map(
            noise_map, pts, y, f.params, trend=f.trend, covariates=z
        )
        assert bool(torch.isfinite(std).all())
        errs[name] = float((mu - label).square().mean())
    assert errs['kriging'] < 0.5 * errs['network'], errs


def test_drift_and_seen_points_are_checked():
    _z, _label, pts, y, m, bands_at, rev, seen = _seen_scene(7, False)
    one = [(pts[rev], y[rev], m[rev])]
    with pytest.raises(ValueError, match='drift must be one of'):
        fit_revealed(one, TRAINED, drift='trend')
    with pytest.raises(ValueError, match='needs the image bands'):
        fit_revealed(one, TRAINED, drift='kriging')
    with pytest.raises(ValueError, match='seen: 2 groups for 1'):
        fit_revealed(one, TRAINED, seen=one * 2)
    with pytest.raises(ValueError, match='exactly when covariates'):
        fit_revealed(one, TRAINED, covariates=[bands_at[rev]], seen=one)
    bad = [(pts[seen], y[seen] * torch.nan, m[seen])]
    with pytest.raises(ValueError, match='seen points: labels'):
        fit_revealed(one, TRAINED, seen=bad)
    # Without the bands, only the network's trend can be fitted.
    assert fit_revealed(one, TRAINED, seen=one).drift == 'network'


def test_trained_leave_one_out_matches_the_map_without_each_point():
    """The kernel as trained, the trend held at the network (brute force)."""
    from geosparse.gp.empirical import _Data, _trained_loo

    gen = torch.Generator().manual_seed(11)
    pts = [torch.rand(8, 2, generator=gen, dtype=torch.float64) * 10 for _ in range(2)]
    m = 3 * torch.randn(16, generator=gen, dtype=torch.float64)
    y = m + torch.randn(16, generator=gen, dtype=torch.float64)
    honest = torch.tensor([True] * 6 + [False] * 2 + [True] * 5 + [False] * 3)
    start = KernelParams('matern32', 3.0, 0.8, 0.2)
    data = _Data(pts, y, m, torch.zeros(16, 0, dtype=torch.float64), honest)
    k = torch.block_diag(*[stationary(p, p, 3.0, 0.8, 'matern32') for p in pts])
    k = k + 0.2 * torch.eye(16, dtype=torch.float64)
    nlpd = []
    for i in torch.nonzero(honest)[:, 0].tolist():
        o = [j for j in range(16) if j != i]
        w = torch.linalg.solve(k[o][:, o], k[o, i])
        mu = m[i] + w @ (y[o] - m[o])
        v = k[i, i] - k[i, o] @ w
        nlpd.append(0.5 * torch.log(2 * math.pi * v) + 0.5 * (y[i] - mu) ** 2 / v)
    # In the standardised labels of the fits: label units less log(sd).
    sd = float(y[honest].std(unbiased=False))
    got = _trained_loo(data, start) + math.log(sd)
    torch.testing.assert_close(got, torch.stack(nlpd), rtol=1e-6, atol=1e-8)


def _stack_scene(n, seed):
    """A GP of known kernel on a network mean that explains the labels."""
    pts, g, gen = _field(n, 6.0, 1.0, 0.05, seed, side=60.0)
    m = 5 * torch.randn(n, generator=gen, dtype=torch.float64)
    bands = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return [(pts, m + g, m)], [bands]


def test_the_kernel_as_trained_joins_the_stack_and_carries_few_points():
    """Right as trained, it takes the map from re-fits of 20 points; wrong, it cedes."""
    right = KernelParams('rbf', 6.0, 1.0, 0.05)
    groups, bands = _stack_scene(20, seed=0)
    fit = fit_revealed(groups, right, covariates=bands)
    # The one member left: the fit is the kernel as trained, and says why.
    assert [f.drift for _, f in fit.parts] == ['trained'] and not fit.refitted
    assert fit.params == right and fit.trend == Trend()
    assert 'preferred the kernel as trained' in str(fit.reason)
    # Its density is the criterion's: better than each re-fit's with the charge.
    assert all(fit.trained_loo < loo + 3 / 20 for _, loo in fit.compared)
    groups, bands = _stack_scene(40, seed=2)
    fit = fit_revealed(groups, right, covariates=bands)
    weights = {f.drift: w for w, f in fit.parts}
    assert fit.refitted and 0.3 < weights['trained'] < 1, weights
    assert fit.as_dict()['source'].endswith('stacked with the kernel as trained')
    assert fit.as_dict()['loo_nlpd_trained'] == fit.trained_loo
    # The trained member keeps the network as its trend, at the trained kernel.
    trained = next(f for _, f in fit.parts if f.drift == 'trained')
    assert trained.params == right and trained.trend == Trend()
    # A kernel trained narrow and sure gets (almost) nothing from 150 points.
    groups, bands = _stack_scene(150, seed=1)
    fit = fit_revealed(groups, TRAINED, covariates=bands)
    weights = {f.drift: w for w, f in fit.parts}
    assert weights.get('trained', 0.0) < 0.05 and fit.trained_loo > 5, weights


def test_the_kernel_as_trained_competes_without_bands():
    """With no covariates, the network's re-fit and the kernel as trained are stacked."""
    right = KernelParams('rbf', 6.0, 1.0, 0.05)
    groups, _ = _stack_scene(20, seed=0)
    fit = fit_revealed(groups, right)
    assert [f.drift for _, f in fit.parts] == ['trained'] and not fit.refitted
    assert [d for d, _ in fit.compared] == ['network']
    # Not selecting keeps the re-fit alone, as before.
    alone = fit_revealed(groups, right, select=False)
    assert alone.refitted and alone.drift == 'network' and not alone.members
    # Wrong as trained, it cedes to the re-fit of 150 points.
    groups, _ = _stack_scene(150, seed=1)
    fit = fit_revealed(groups, TRAINED)
    weights = {f.drift: w for w, f in fit.parts}
    assert fit.refitted and weights.get('trained', 0.0) < 0.05, weights
    assert weights['network'] > 0.95
