r"""Empirical Bayes on the revealed points of a raster, before conditioning.

The kernel learnt in training describes the residuals at *training* points, which
the network has partly fitted, so prediction should not trust it. :func:`refit`
computes the network's mean at every revealed point on the same windows as the
blocks of prediction (so it is the value of the written map), then re-fits the
kernel, the noise and a trend :math:`\beta_0 + \beta_1 m(x) + \sum_k \gamma_k
z_k(x)` on the network mean and the raw image bands :math:`z_k` (regression
kriging nested in the posterior; the bands are kept only if they predict the
points better, each left out in turn) by maximum marginal likelihood
(:func:`~geosparse.gp.fit_revealed`; Rasmussen and Williams, 2006, Sec. 2.7 and
5.4.1). The fit is shared by every block, and so are the network mean and bands at
the points (:func:`refit_with_points`): each block is then conditioned on every
point within the kernel's reach of it, whichever block holds the point, so the
blocks of a map agree (no edges), whatever the halo.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..console import progress as progress_bar
from ..gp import KernelParams, RevealedFit, fit_revealed
from ..io.source import ImageSource
from .conditioning import RevealedPoints

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ['Drift', 'check_drift', 'network_at_points', 'refit', 'refit_with_points']

#: What the re-fitted trend is on (see :func:`refit`).
Drift = Literal['auto', 'bands', 'network', 'kriging']


def check_drift(drift: str) -> None:
    """Raise ValueError unless ``drift`` is one of :data:`Drift`.

    .. versionadded:: 0.3
    """
    if drift not in get_args(Drift):
        raise ValueError(
            f"drift must be 'auto', 'bands', 'network' or 'kriging', got {drift!r}."
        )


def refit(
    predictor: Predictor,
    source: ImageSource,
    block: int,
    halo: int,
    progress: bool = False,
    max_points: int = 1000,
    min_points: int = 8,
    points: RevealedPoints | None = None,
    drift: Drift = 'auto',
) -> RevealedFit:
    r"""Kernel, noise and trend of the revealed points on ``source``.

    .. versionadded:: 0.2

    Args:
        predictor: a predictor with revealed points (already in the source's CRS,
            see :meth:`~geosparse.inference.Predictor.for_crs`).
        source: the imagery about to be predicted.
        block: block size of the prediction.
        halo: halo of the prediction.
        progress: show a progress bar over the blocks that hold points.
        max_points: at most this many points (a random subset, seed 0) enter the
            fit, which factorises a points x points matrix.
        min_points: with fewer points on valid pixels, the trained kernel is kept
            (with a warning).
        points: fit on these points (in the source's CRS) instead of the revealed
            ones, e.g. those the network was not trained on.
        drift: ``auto``: of the trends on the network mean and the raw image
            bands, on the network mean alone, and, with ``points``, on the bands
            alone (universal kriging, fitted on every revealed point: it owes
            nothing to the network), and the kernel as trained (that of the
            first block with points) with the network mean as the trend,
            averaged with the stacking weights that maximise the leave-one-out
            likelihood at the fitted points, each predicted from all the other
            revealed points, the re-fits charged for their fitted kernels;
            ``bands``, ``network``, ``kriging``: that trend (see
            :func:`~geosparse.gp.fit_revealed`).

    Returns:
        The fit, :math:`\ell` in the raster's CRS units (the kernel as trained,
        if the points are too few or all hold one value).
    """
    return refit_with_points(
        predictor, source, block, halo, progress, max_points, min_points, points, drift
    )[0]


def refit_with_points(
    predictor: Predictor,
    source: ImageSource,
    block: int,
    halo: int,
    progress: bool = False,
    max_points: int = 1000,
    min_points: int = 8,
    points: RevealedPoints | None = None,
    drift: Drift = 'auto',
) -> tuple[RevealedFit, np.ndarray]:
    r""":func:`refit`, and the network mean and bands at each revealed point.

    The network mean and the image bands at the points are computed once, on the
    blocks of prediction that hold them (with their halo), for the fit and for
    conditioning: each block is then conditioned on every point within the
    kernel's reach, whichever block holds it
    (:attr:`~geosparse.inference.conditioning.GPConditioning.at_points`).

    .. versionadded:: 0.6

    Returns:
        The fit as :func:`refit` returns it, and a ``(P, 1 + K)`` float64 array:
        per revealed point of the predictor (in order), the network mean and the
        ``K`` bands there; NaN off the raster or on nodata.
    """
    check_drift(drift)
    conditioning = predictor.conditioning
    assert conditioning is not None and conditioning.points is not None
    grid = source.grid
    fit_points = conditioning.points if points is None else points
    # The revealed points the fit is not on (the network's training points, with
    # --refit-on): the map is conditioned on them, so the drift is chosen with them.
    seen = _others(conditioning.points, fit_points, abs(grid.transform.a))
    both = RevealedPoints(
        np.concatenate([fit_points.xy, seen.xy]),
        np.concatenate([fit_points.values, seen.values]),
    )
    is_seen = np.arange(len(both.values)) >= len(fit_points.values)
    idx, table, kernel = _sample(predictor, source, both, block, halo, progress)
    values = both.values
    exact = np.stack(grid.to_pixels(both.xy), 1)
    m_all, z_all = table[idx, 0], table[idx, 1:]
    split = [~is_seen[idx], is_seen[idx]]
    group, other = (
        (
            torch.from_numpy(exact[idx[s]]),
            torch.from_numpy(values[idx[s]].astype(np.float64)),
            torch.from_numpy(m_all[s]),
        )
        for s in split
    )
    z_fit, z_seen = (torch.from_numpy(z_all[s]) for s in split)
    with_bands = drift != 'network'
    fit = fit_revealed(
        [group],
        kernel,
        min_points=min_points,
        max_points=max_points,
        covariates=[z_fit] if with_bands else None,
        select=drift == 'auto',
        seen=[other] if len(other[1]) else None,
        seen_covariates=[z_seen] if with_bands and len(other[1]) else None,
        drift=None if drift == 'auto' else drift,
    )
    res = abs(grid.transform.a)
    fit = fit.map_params(
        lambda p: dataclasses.replace(p, lengthscale=p.lengthscale * res, units='crs')
    )
    # Each revealed point is one of ``both`` (a fitted point, or a seen one).
    _, at = cKDTree(both.xy).query(conditioning.points.xy)
    return fit, table[at]


def network_at_points(
    predictor: Predictor,
    source: ImageSource,
    block: int,
    halo: int,
    progress: bool = False,
) -> np.ndarray:
    """The network mean and bands at each revealed point, without a re-fit.

    For conditioning with the kernel as trained (``--no-refit``): see
    :func:`refit_with_points`.

    .. versionadded:: 0.6

    Returns:
        ``(P, 1 + K)`` float64, NaN off the raster or on nodata.
    """
    conditioning = predictor.conditioning
    assert conditioning is not None and conditioning.points is not None
    return _sample(predictor, source, conditioning.points, block, halo, progress)[1]


def _sample(
    predictor: Predictor,
    source: ImageSource,
    points: RevealedPoints,
    block: int,
    halo: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, KernelParams]:
    """The network mean and bands at ``points``, on the blocks that hold them.

    Returns:
        The indices of the points on valid pixels, block by block; the
        ``(P, 1 + K)`` table of mean and bands (NaN elsewhere); and the kernel of
        the first block with points (of the first block if none has any).
    """
    conditioning = predictor.conditioning
    assert conditioning is not None
    grid = source.grid
    rows, cols, inside = grid.pixel_of(points.xy)
    keys = grid.block_of(rows, cols, block)
    windows = grid.blocks(block)
    table = np.full((len(points.values), 1 + source.count), np.nan)
    kept: list[np.ndarray] = []
    kernel: KernelParams | None = None
    task_kernel = getattr(predictor.head, 'kernel_params', None)
    groups = np.unique(keys[inside])
    for key in progress_bar(
        groups, desc='revealed points', unit='block', enabled=progress
    ):
        sel = np.flatnonzero(inside & (keys == key))
        window = grid.with_halo(windows[int(key)], halo)
        (r_top, _), (c_left, _) = window.toranges()
        image, invalid = source.read(window)
        image = predictor.prepared(image)
        mean = predictor.window_mean(image, prepared=True)
        r, c = rows[sel] - r_top, cols[sel] - c_left
        ok = np.ones(len(sel), bool) if invalid is None else ~invalid[r, c]
        # NaN is nodata, in the mean and in any band.
        ok &= np.isfinite(mean[r, c]) & np.isfinite(image[:, r, c]).all(0)
        # The mean is read at the pixel that holds the point, as in the posterior.
        kept.append(sel[ok])
        table[sel[ok], 0] = mean[r[ok], c[ok]]
        table[sel[ok], 1:] = image[:, r[ok], c[ok]].T
        if kernel is None:
            kernel = conditioning.params(
                image, grid.window_transform(window), task_kernel
            )
    if kernel is None:  # no point on the raster's blocks
        image, _ = source.read(grid.with_halo(windows[0], halo))
        kernel = conditioning.params(
            predictor.prepared(image),
            grid.window_transform(windows[0]),
            task_kernel,
        )
    idx = np.concatenate(kept) if kept else np.zeros(0, int)
    return idx, table, kernel


def _others(
    revealed: RevealedPoints, fitted: RevealedPoints, pixel: float
) -> RevealedPoints:
    """The revealed points not among the fitted ones (within a thousandth pixel)."""
    if fitted is revealed or not len(revealed.values) or not len(fitted.values):
        return revealed.subset(np.zeros(len(revealed.values), bool))
    dist, _ = cKDTree(fitted.xy).query(revealed.xy)
    return revealed.subset(dist > 1e-3 * pixel)
