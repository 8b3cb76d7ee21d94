import math

import geopandas as gpd
import numpy as np
import pytest
import torch

import geosparse.gaussians as gaussians
from geosparse.datamodules.counting import COV_COLUMNS
from geosparse.datasets import SparsePoints
from geosparse.gaussians import GaussianFit, cached_fit, fit_gaussians, fit_key, render
from geosparse.transforms import flip_batch


def _scene(seed=0):
    """A 3-band 64 x 64 image of four elliptical blobs (axis ratio <= 1.4) on grey."""
    rng = np.random.default_rng(seed)
    means = np.array([[16.5, 16.5], [16.5, 46.5], [46.5, 20.5], [44.5, 44.5]])
    scales = np.array([[3.0, 4.0], [2.5, 2.5], [4.0, 3.0], [3.5, 2.6]])
    theta = rng.uniform(0, math.pi, 4)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    covs = rot @ (np.eye(2) * scales[:, None, :] ** 2) @ rot.transpose(0, 2, 1)
    colours = rng.uniform(0.6, 1.0, (4, 3))
    bg = np.full(3, 0.2)
    image = render(
        torch.from_numpy(means),
        torch.from_numpy(covs),
        torch.from_numpy(colours),
        torch.from_numpy(bg),
        (64, 64),
    ).numpy()
    return image, means, covs


def test_render_puts_each_colour_at_its_mean_and_decays_by_mahalanobis_distance():
    means = torch.tensor([[10.5, 10.5]], dtype=torch.float64)
    covs = torch.tensor([[[4.0, 0.0], [0.0, 16.0]]], dtype=torch.float64)
    out = render(
        means,
        covs,
        torch.tensor([[1.0]], dtype=torch.float64),
        torch.tensor([0.0], dtype=torch.float64),
        (21, 21),
    )
    assert out[0, 10, 10] == pytest.approx(1.0)
    assert out[0, 12, 10] == pytest.approx(math.exp(-0.5))  # 2 px along the 2-px axis
    assert out[0, 10, 14] == pytest.approx(math.exp(-0.5))  # 4 px along the 4-px axis


def test_fit_recovers_the_shapes_of_the_blobs():
    image, means, covs = _scene()
    fit = fit_gaussians(image, means, steps=300, lr=0.05)
    np.testing.assert_allclose(fit.means, means)
    got = np.linalg.eigvalsh(fit.covs)
    want = np.linalg.eigvalsh(covs)
    np.testing.assert_allclose(np.sqrt(got), np.sqrt(want), rtol=0.15)
    rendered = render(
        *(
            torch.from_numpy(a)
            for a in (fit.means, fit.covs, fit.colours, fit.background)
        ),
        (64, 64),
    )
    assert float((rendered.numpy() - image).std()) < 0.1 * float(image.std())


def test_deformity_elimination_makes_long_gaussians_round_at_the_short_axis():
    means = np.array([[32.5, 32.5]])
    covs = np.array([[[4.0, 0.0], [0.0, 36.0]]])  # std 2 x 6: ratio 3
    image = render(
        *(torch.from_numpy(a) for a in (means, covs, np.ones((1, 1)), np.zeros(1))),
        (64, 64),
    ).numpy()
    fit = fit_gaussians(image, means, steps=300)
    np.testing.assert_allclose(fit.covs[0], np.eye(2) * fit.covs[0, 0, 0], atol=1e-9)
    assert math.sqrt(fit.covs[0, 0, 0]) == pytest.approx(2.0, rel=0.15)


def test_windows_and_flips_move_the_gaussians_like_the_image():
    """The data path's windows (SparsePoints) and flips (flip_batch) move the fit."""
    image, means, _ = _scene()
    fit = fit_gaussians(image, means, steps=20)
    c = fit.covs
    covs = np.stack([c[:, 0, 0], c[:, 0, 1], c[:, 1, 1]], 1)  # COV_COLUMNS order

    def draw(m, v):
        v = np.asarray(v, dtype=np.float64)
        matrices = np.stack([v[:, [0, 1]], v[:, [1, 2]]], 1)
        t = [np.asarray(m, dtype=np.float64), matrices, fit.colours, fit.background]
        return render(*(torch.from_numpy(a) for a in t), fit.shape).numpy()

    full = draw(fit.means, covs)
    for horizontal, flipped in ((True, full[:, :, ::-1]), (False, full[:, ::-1, :])):
        batch = {
            'image': torch.from_numpy(full.copy())[None],
            'points': torch.from_numpy(fit.means.copy())[None],
            'covariances': torch.from_numpy(covs.copy())[None],
        }
        flip_batch(batch, torch.tensor([horizontal]), torch.tensor([not horizontal]))
        np.testing.assert_allclose(batch['image'][0].numpy(), flipped)
        got = draw(batch['points'][0].numpy(), batch['covariances'][0].numpy())
        np.testing.assert_allclose(got, flipped, atol=1e-6)
    # A window [8, 48) x [30, 64) keeps the Gaussians whose centre lies in it.
    frame = gpd.GeoDataFrame(
        geometry=gpd.points_from_xy(means[:, 1], 64 - means[:, 0]), crs='EPSG:32618'
    )
    points = SparsePoints(frame, res=1.0).with_values(
        dict(zip(COV_COLUMNS, covs.T, strict=True)), key='covariances'
    )
    window = points[(slice(30, 64, 1.0), slice(64 - 48, 64 - 8, 1.0), slice(None))]
    assert len(window['points']) == 2  # the two blobs whose centre lies in the window
    np.testing.assert_allclose(window['points'], means[[1, 3]] - [8, 30])
    np.testing.assert_allclose(window['covariances'], covs[[1, 3]], rtol=1e-6)


def test_cache_is_reused_and_never_stale(tmp_path, monkeypatch):
    image, means, _ = _scene()
    calls = []
    real = gaussians.fit_gaussians

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gaussians, 'fit_gaussians', counting)
    a = cached_fit(image, means, tmp_path, steps=5)
    b = cached_fit(image, means, tmp_path, steps=5)
    assert len(calls) == 1 and np.array_equal(a.covs, b.covs)
    cached_fit(image * 0.5, means, tmp_path, steps=5)  # another image: refit
    cached_fit(image, means[:3], tmp_path, steps=5)  # other points: refit
    assert len(calls) == 3 and len(list(tmp_path.glob('*.npz'))) == 3
    path = next(tmp_path.glob('*.npz'))
    with pytest.raises(ValueError, match='another image'):
        GaussianFit.load(path, fit_key(image, means[:2], steps=5))


def test_bad_points_are_refused():
    image = _scene()[0]
    with pytest.raises(ValueError, match='no points'):
        fit_gaussians(image, np.zeros((0, 2)))
    with pytest.raises(ValueError, match='1 of 2 points lie outside'):
        fit_gaussians(image, np.array([[5.0, 5.0], [70.0, 5.0]]))


def test_truncated_rendering_matches_every_pixel_rendering():
    _, means, covs = _scene()
    args = [
        torch.from_numpy(a) for a in (means, covs, np.full((4, 3), 0.9), np.zeros(3))
    ]
    local = render(*args, (64, 64), chunk=3)  # reach 4 sd: patches of 2 x 16 + 1 px
    dense = render(*args, (64, 64), reach=math.inf)
    torch.testing.assert_close(local, dense, atol=5e-4, rtol=0)
    # Gradients flow through the patches as through the dense image.
    c = torch.full((4, 3), 0.9, dtype=torch.float64, requires_grad=True)
    render(args[0], args[1], c, args[3], (64, 64)).sum().backward()
    assert c.grad is not None and (c.grad > 0).all()


def test_max_scale_caps_the_fitted_gaussians():
    image, means, covs = _scene()
    assert np.sqrt(np.linalg.eigvalsh(covs)).max() > 2.0  # the blobs are wider
    fit = fit_gaussians(image, means, steps=50, max_scale=1.5)
    assert np.sqrt(np.linalg.eigvalsh(fit.covs)).max() <= 1.5 + 1e-6


def test_clamp_scales_keeps_the_axes_and_clamps_each_std():
    theta = 0.3
    rot = np.array(
        [[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]
    )
    covs = np.stack([rot @ np.diag([0.25, 36.0]) @ rot.T, np.diag([4.0, 4.0])])
    out = gaussians.clamp_scales(covs, 1.0, 5.0)
    values, vectors = np.linalg.eigh(out[0])
    np.testing.assert_allclose(np.sqrt(values), [1.0, 5.0])
    assert abs(abs(float(vectors[:, 1] @ rot[:, 1])) - 1) < 1e-9  # same long axis
    np.testing.assert_allclose(out[1], covs[1])  # inside the range: unchanged
    with pytest.raises(ValueError, match='low <= high'):
        gaussians.clamp_scales(covs, 3.0, 2.0)
