import numpy as np
import torch
from affine import Affine

from geosparse.gp import KernelParams, RevealedFit, Trend, posterior_map
from geosparse.inference.conditioning import GPConditioning, RevealedPoints


def _scene():
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(24, 20, generator=gen)
    image = np.random.default_rng(0).normal(size=(2, 24, 20))
    # 2 m pixels; points at pixel centres (row, col) -> (x, y).
    transform = Affine(2.0, 0, 100.0, 0, -2.0, 200.0)
    rc = np.array([[3, 4], [10, 15], [20, 2], [7, 9]])
    xy = np.stack([100 + 2 * (rc[:, 1] + 0.5), 200 - 2 * (rc[:, 0] + 0.5)], 1)
    points = RevealedPoints(xy, np.array([1.0, -0.5, 2.0, 0.3]))
    return mean, image, transform, points, rc


def test_stacked_fit_maps_the_mixture_of_its_trends():
    """Mean and std of the weighted mixture of each trend's predictive."""
    mean, image, transform, points, rc = _scene()
    network = RevealedFit(
        KernelParams('rbf', 8.0, 1.0, 0.1, units='crs'),
        Trend(0.2, 0.9, cov=((0.01, 0.0), (0.0, 0.02))),
        True,
        4,
        drift='network',
    )
    kriging = RevealedFit(
        KernelParams('rbf', 20.0, 2.0, 0.3, units='crs'),
        Trend(
            0.5,
            0.0,
            (0.4, -0.2),
            cov=((0.05, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0.01, 0), (0, 0, 0, 0.01)),
        ),
        True,
        4,
        drift='kriging',
    )
    stacked = RevealedFit(
        network.params,
        network.trend,
        True,
        4,
        drift='network',
        members=(network, kriging),
        weights=(0.7, 0.3),
    )
    out = GPConditioning(points=points, fit=stacked)(mean, image, transform)
    pts = torch.from_numpy(rc + 0.5).double()
    vals = torch.from_numpy(points.values)
    bands = torch.from_numpy(image)
    mus, variances = [], []
    for f in (network, kriging):
        params = f.params.in_pixels(2.0)
        mu, sd = posterior_map(
            mean.double(), pts, vals, params, trend=f.trend, covariates=bands
        )
        mus.append(mu.numpy())
        variances.append(sd.numpy() ** 2 + params.noise)
    mix = 0.7 * mus[0] + 0.3 * mus[1]
    second = 0.7 * (variances[0] + mus[0] ** 2) + 0.3 * (variances[1] + mus[1] ** 2)
    np.testing.assert_allclose(out[0], mix, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], np.sqrt(second - mix**2), rtol=1e-4, atol=1e-5)
    # The trends' disagreement widens the mixture beyond their mean variance.
    within = 0.7 * variances[0] + 0.3 * variances[1]
    assert bool((out[1] ** 2 >= within - 1e-4).all())
    assert float((out[1] ** 2 - within).max()) > 0.01
    # Alone, the heaviest part is what a single fit maps.
    alone = GPConditioning(points=points, fit=network)(mean, image, transform)
    np.testing.assert_allclose(alone[0], mus[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(alone[1], np.sqrt(variances[0]), rtol=1e-5, atol=1e-5)
    # The tags list both parts with their weights.
    tags = stacked.as_dict()
    assert [p['drift'] for p in tags['stack']] == ['network', 'kriging']
    assert [p['weight'] for p in tags['stack']] == [0.7, 0.3]


def test_points_outside_the_window_condition_it_and_the_nearest_are_kept(
    monkeypatch,
):
    """With at_points, a window sees points beyond it; past the cap, the nearest."""
    import warnings

    import pytest

    from geosparse.inference import conditioning as module

    mean, image, transform, points, rc = _scene()
    fit = RevealedFit(
        KernelParams('rbf', 16.0, 1.0, 0.1, units='crs'), Trend(), True, 4
    )
    at = np.concatenate(
        [mean[rc[:, 0], rc[:, 1]].numpy()[:, None], image[:, rc[:, 0], rc[:, 1]].T], 1
    )
    whole = GPConditioning(points=points, fit=fit)(mean, image, transform)
    # The window of rows 12-24: points at rows 3, 7 and 10 lie above it.
    top = Affine(2.0, 0, 100.0, 0, -2.0, 200.0 - 2 * 12)
    part = GPConditioning(points=points, fit=fit, at_points=at)
    # The table is an array: it stays out of == (which would raise) and hash.
    assert part == GPConditioning(points=points, fit=fit, at_points=at.copy())
    assert hash(part.replace(points=None)) == hash(GPConditioning(fit=fit))
    got = part(mean[12:], image[:, 12:], top)
    np.testing.assert_allclose(got, whole[:, 12:], atol=1e-5)
    # Without the points' means, only the one inside the window conditions it.
    alone = GPConditioning(points=points, fit=fit)(mean[12:], image[:, 12:], top)
    assert np.abs(alone - whole[:, 12:]).max() > 0.01
    # Capped at two points: the nearest two (rows 20 and 10), said once.
    monkeypatch.setattr(module, 'MAX_POINTS_PER_WINDOW', 2)
    with pytest.warns(UserWarning, match='conditioned on the nearest 2'):
        capped = part(mean[12:], image[:, 12:], top)
    two = RevealedPoints(points.xy[[1, 2]], points.values[[1, 2]])
    expect = GPConditioning(points=two, fit=fit, at_points=at[[1, 2]])
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        np.testing.assert_allclose(capped, expect(mean[12:], image[:, 12:], top))
