import numpy as np
import pytest

from geosparse.gp import ordinary_kriging, regression_kriging


def _scene(n=200, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (n, 2))
    return xy, rng


def test_ordinary_kriging_beats_the_mean_on_a_smooth_field():
    xy, rng = _scene()
    values = np.sin(xy[:, 0] / 10) + 0.1 * rng.normal(size=len(xy))
    targets = rng.uniform(0, 100, (500, 2))
    truth = np.sin(targets[:, 0] / 10)
    res = ordinary_kriging(xy, values, targets)
    rmse = np.sqrt(np.mean((res.mean - truth) ** 2))
    assert rmse < 0.5 * np.std(truth)
    assert res.std.shape == (500,) and (res.std > 0).all()
    assert res.variogram['model'] == 'exponential'


def test_regression_kriging_uses_the_covariate():
    xy, rng = _scene()
    cov = rng.normal(size=len(xy))
    values = 3 * cov + np.sin(xy[:, 0] / 10) + 0.1 * rng.normal(size=len(xy))
    targets = rng.uniform(0, 100, (500, 2))
    tcov = rng.normal(size=500)
    truth = 3 * tcov + np.sin(targets[:, 0] / 10)
    rk = regression_kriging(xy, values, cov[:, None], targets, tcov[:, None])
    ok = ordinary_kriging(xy, values, targets)
    assert np.sqrt(np.mean((rk.mean - truth) ** 2)) < 0.5 * np.sqrt(
        np.mean((ok.mean - truth) ** 2)
    )
    assert abs(rk.variogram['coefficients'][1] - 3) < 0.1


def test_kriging_bad_input():
    xy, rng = _scene(10)
    targets = rng.uniform(0, 100, (5, 2))
    with pytest.raises(ValueError, match='all 10 values are 2'):
        ordinary_kriging(xy, np.full(10, 2.0), targets)
    with pytest.raises(ValueError, match='at least 3 points'):
        ordinary_kriging(xy[:2], np.arange(2.0), targets)
    values = rng.normal(size=10)
    values[0] = np.nan
    with pytest.warns(UserWarning, match='1 points with NaN'):
        assert np.isfinite(ordinary_kriging(xy, values, targets).mean).all()
    with pytest.raises(ValueError, match='covariates must be'):
        regression_kriging(xy, values, np.ones((9, 1)), targets, np.ones((5, 1)))
