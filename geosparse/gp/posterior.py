r"""Gaussian-process posterior maps: condition a network's mean map on known points.

Neural Point Processes (Shi et al., "Neural Point Processes for Pixel-wise
Regression") treat the labels of an image as a Gaussian process whose mean is the
network output :math:`m = f(x)`: :math:`y = m + g`, :math:`g \sim GP(0, k)`, with
i.i.d. noise :math:`\sigma_0^2` on observed labels. Revealing labels :math:`y_+` at
points :math:`P_+` gives, for every other pixel :math:`P_*` (the paper's "partial
label revelation", NPP-GP),

.. math::
    \mu_* = m(P_*) + k(P_*, P_+) K_{++}^{-1} (y_+ - m(P_+)), \qquad
    \sigma_*^2 = k(P_*, P_*) - k(P_*, P_+) K_{++}^{-1} k(P_+, P_*),

with :math:`K_{++} = k(P_+, P_+) + \sigma_0^2 I`. :math:`K_{++}` is factorised once
(Cholesky, with a growing jitter if needed); the pixels are then processed in
tiles, so memory is bounded by ``chunk`` × the number of points whatever the
map's size, and each tile uses only the points within reach of its pixels. The kernel
is the RBF :math:`k(a, b) = s^2 \exp(-\lVert a - b \rVert^2 / 2\ell^2)` in pixel units,
or a Matérn (:func:`~geosparse.gp.stationary`), given with the noise as one
:class:`~geosparse.gp.params.KernelParams`.

The kernel learnt in training describes the residuals at *training* points, which the
network has partly fitted, so its variance can be too small (or, early in training,
too large) for new places. :func:`~geosparse.gp.loo_variance_scale` recalibrates it from
the revealed points themselves by leave-one-out cross-validation (Rasmussen and
Williams, *Gaussian Processes for Machine Learning*, 2006, Sec. 5.4.2): it scales
:math:`s^2` and :math:`\sigma_0^2` together so that the standardised leave-one-out
residuals have unit variance; the posterior mean does not change.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from .empirical import RevealedFit, Trend
from .kernels import kernel_reach, stable_cholesky, stationary
from .params import KernelParams

__all__ = [
    'loo_variance_scale',
    'mixture_moments',
    'posterior_map',
    'predictive_map',
    'predictive_parts',
]


def _in_pixels(params: KernelParams) -> tuple[float, float, float, str]:
    if params.units != 'pixels':
        raise ValueError(
            'the kernel length-scale must be in pixels of the map; convert it with '
            'KernelParams.in_pixels(resolution).'
        )
    return params.lengthscale, params.variance, params.noise, params.family


def posterior_map(
    mean: Tensor,
    points: Tensor,
    values: Tensor,
    params: KernelParams,
    chunk: int = 8_000_000,
    cutoff: float = 1e-12,
    trend: Trend | None = None,
    covariates: Tensor | None = None,
    point_mean: Tensor | None = None,
    point_covariates: Tensor | None = None,
    variance_cutoff: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Posterior mean and standard deviation of every pixel given revealed points.

    The map is processed in square tiles. For a tile, only the points within
    :math:`R = \ell \sqrt{2 \ln(1 / \epsilon)}` of it (``cutoff`` :math:`= \epsilon`)
    have a covariance above :math:`\epsilon s^2` with any of its pixels; the others
    are left out of :math:`k(P_*, P_+)`, which changes the result by at most about
    :math:`\epsilon` relative. Then
    :math:`\mu_* = m_* + k_{*L} \alpha_L` and
    :math:`\sigma_*^2 = s^2 - k_{*L} [K_{++}^{-1}]_{LL} k_{L*}` over the local points
    :math:`L` (:math:`\alpha = K_{++}^{-1}(y_+ - m_+)` and :math:`K_{++}^{-1}` are
    computed once, in float64). The cost is
    :math:`O(P^3 + HW\,\bar L^2)` instead of :math:`O(HW P^2)`: with a short
    length-scale, a tile sees few points. The variance's quadratic form costs
    :math:`\bar L^2` per pixel and the mean :math:`\bar L`, so with a long
    length-scale and many points a larger ``variance_cutoff`` for the variance alone
    saves most of the time (measured on a 576 px window with 1000 points and
    :math:`\ell` = 103 px: :math:`10^{-4}` moved the std by at most
    :math:`5 \cdot 10^{-6} s`, while the same cutoff for the mean moved it by
    :math:`3 \cdot 10^{-3} s`).

    With a ``trend`` (:func:`~geosparse.gp.fit_revealed`), the prior mean is
    :math:`h(x)^\top \bar\beta = \bar\beta_0 + \bar\beta_1 m(x) + \sum_k
    \bar\gamma_k z_k(x)` instead of :math:`m(x)`, the residuals are taken from it,
    and the variance gains the uncertainty of :math:`\beta` (R&W Eq. 2.42):
    :math:`R^\top \Sigma_\beta R` with :math:`R = h(x) - H^\top K_{++}^{-1} k_{+*}`,
    :math:`H = [1, m(P_+), z_1(P_+), \dots]`. :math:`\Sigma_\beta` comes from the fit
    over all the revealed points, so within a window it is an approximation that
    ignores how few of them the window holds.

    .. versionadded:: 0.1

    .. versionchanged:: 0.6
       ``point_mean`` and ``point_covariates``: points outside the map.

    Args:
        mean: ``(H, W)`` network mean map :math:`m`.
        points: ``(P, 2)`` revealed points as (row, col) pixel coordinates of
            ``mean`` (pixel centres at integer + 0.5 are not required; the network
            mean at a point is read at the pixel that contains it, unless
            ``point_mean`` is given).
        values: ``(P,)`` revealed labels :math:`y_+`.
        params: kernel family, :math:`\ell` (pixels), :math:`s^2` and
            :math:`\sigma_0^2`; for a Matérn the reach :math:`R` is
            :func:`~geosparse.gp.kernel_reach`.
        chunk: at most this many kernel entries (pixels × points) at once.
        cutoff: :math:`\epsilon`, the relative covariance below which a point is
            ignored for a tile (0 keeps every point).
        trend: the trend on the network mean (and the bands) and its
            uncertainty (default: the network as trained, taken as known).
        covariates: ``(K, H, W)`` the image bands :math:`z_k`, needed when the
            trend has coefficients on them.
        point_mean: ``(P,)`` the network mean :math:`m(P_+)` at the points, when
            it is known (e.g. from the blocks that hold them); the points may then
            lie outside the map, within the kernel's reach, and condition it (a map
            cut into blocks is then the same as the whole map's posterior).
        point_covariates: ``(K, P)`` the bands at the points, with
            ``point_mean`` and a trend on bands.
        variance_cutoff: :math:`\epsilon` for the variance alone (None: ``cutoff``;
            a larger one leaves more points out of the variance, not of the mean).

    Returns:
        ``(mean, std)`` maps ``(H, W)``; without points, the trend of ``mean`` and
        the prior std everywhere.

    Raises:
        ValueError: on mismatched shapes, a length-scale not in pixels, or a
            trend on bands without ``covariates``.
    """
    lengthscale, variance, noise, family = _in_pixels(params)
    if points.ndim != 2 or points.shape[1] != 2 or values.shape != points.shape[:1]:
        raise ValueError(
            f'points must be (P, 2) and values (P,), got {tuple(points.shape)} and '
            f'{tuple(values.shape)}.'
        )
    h, w = mean.shape
    dtype = torch.float64
    trend = trend or Trend()
    sigma = trend.matrix
    z = None
    if trend.bands:
        if covariates is None or covariates.shape[1:] != mean.shape:
            got = None if covariates is None else tuple(covariates.shape)
            raise ValueError(
                f'the trend has coefficients on {len(trend.bands)} image bands: pass '
                f'covariates of shape ({len(trend.bands)}, {h}, {w}), got {got}.'
            )
        z = covariates.to(dtype)
    prior = trend(mean.to(dtype), z)

    def basis(r0: int, r1: int, c0: int, c1: int) -> Tensor:
        # h(x) over a tile, (n, p).
        m = mean[r0:r1, c0:c1].to(dtype).reshape(-1)
        zt = None if z is None else z[:, r0:r1, c0:c1].reshape(len(z), -1)
        return trend.basis(m, zt)

    def trend_var(r: Tensor, proj: Tensor | None = None) -> Tensor:
        # R' Σβ R with R = h(x) - H' K^-1 k (proj); only with a Σβ.
        assert sigma is not None
        if proj is not None:
            r = r - proj
        return ((r @ sigma) * r).sum(-1)

    if points.shape[0] == 0:
        var = torch.full((h * w,), variance, dtype=dtype)
        if sigma is not None:
            var = var + trend_var(basis(0, h, 0, w))
        return prior.to(mean.dtype), var.sqrt().reshape(h, w).to(mean.dtype)
    pts = points.to(dtype)
    if point_mean is not None:
        if point_mean.shape != values.shape:
            raise ValueError(
                f'point_mean must be (P,) like values, got {tuple(point_mean.shape)}.'
            )
        at_pts = point_mean.to(dtype)
        z_pts = None
        if z is not None:
            if point_covariates is None or point_covariates.shape != (
                len(z),
                len(values),
            ):
                got = None if point_covariates is None else point_covariates.shape
                raise ValueError(
                    f'the trend is on {len(z)} bands: pass point_covariates of shape '
                    f'({len(z)}, {len(values)}) with point_mean, got {got}.'
                )
            z_pts = point_covariates.to(dtype)
    else:
        rows = pts[:, 0].floor().long().clamp(0, h - 1)
        cols = pts[:, 1].floor().long().clamp(0, w - 1)
        at_pts = mean[rows, cols].to(dtype)
        z_pts = None if z is None else z[:, rows, cols]
    # A point on nodata (NaN mean or band) has no residual: it is left out.
    finite = torch.isfinite(at_pts) & torch.isfinite(values.to(dtype))
    if z_pts is not None:
        finite &= torch.isfinite(z_pts).all(0)
    if not bool(finite.all()):
        warnings.warn(
            f'{int((~finite).sum())} of {len(finite)} revealed points lie on nodata '
            'pixels (NaN network mean, band or value) and are left out of the '
            'posterior.',
            stacklevel=2,
        )
        pts, at_pts, values = pts[finite], at_pts[finite], values[finite]
        z_pts = None if z_pts is None else z_pts[:, finite]
        if len(pts) == 0:
            return posterior_map(
                mean, pts, values, params, chunk, cutoff, trend, covariates
            )
    resid = values.to(dtype) - trend(at_pts, z_pts)
    kpp = stationary(pts, pts, lengthscale, variance, family)
    kpp = kpp + noise * torch.eye(len(pts), dtype=dtype)
    factor = stable_cholesky(kpp)
    alpha = torch.cholesky_solve(resid[:, None], factor)[:, 0]
    kinv = torch.cholesky_inverse(factor)
    # G = H' K^-1, (P, p): the projection of the trend's basis through the points.
    g = kinv @ trend.basis(at_pts, z_pts)
    reach = kernel_reach(lengthscale, family, cutoff)
    reach_var = kernel_reach(
        lengthscale, family, cutoff if variance_cutoff is None else variance_cutoff
    )
    tile = max(8, int(math.sqrt(chunk / len(pts))))
    # Outputs in the map's dtype, filled tile by tile (float64 only within a tile).
    out_mean = torch.empty_like(mean)
    out_std = torch.empty_like(mean)
    for r0 in range(0, h, tile):
        for c0 in range(0, w, tile):
            r1, c1 = min(r0 + tile, h), min(c0 + tile, w)
            # Distance from each point to the tile's rectangle of pixel centres.
            dr = (r0 + 0.5 - pts[:, 0]).clamp(min=0) + (pts[:, 0] - r1 + 0.5).clamp(
                min=0
            )
            dc = (c0 + 0.5 - pts[:, 1]).clamp(min=0) + (pts[:, 1] - c1 + 0.5).clamp(
                min=0
            )
            d2 = dr.square() + dc.square()
            near = torch.nonzero(d2 <= reach**2)[:, 0]
            # The points of the variance, among ``near`` (all of them by default).
            in_var = torch.nonzero(d2[near] <= min(reach, reach_var) ** 2)[:, 0]
            near_var = near[in_var]
            tile_prior = prior[r0:r1, c0:c1]
            shape = (r1 - r0, c1 - c0)
            tile_h = basis(r0, r1, c0, c1) if sigma is not None else None
            if len(near) == 0:
                var = torch.full(shape, variance, dtype=dtype).reshape(-1)
                if tile_h is not None:
                    var = var + trend_var(tile_h)
                out_mean[r0:r1, c0:c1] = tile_prior
                out_std[r0:r1, c0:c1] = var.sqrt().reshape(shape)
                continue
            rr, cc = torch.meshgrid(
                torch.arange(r0, r1, dtype=dtype) + 0.5,
                torch.arange(c0, c1, dtype=dtype) + 0.5,
                indexing='ij',
            )
            xy = torch.stack([rr.reshape(-1), cc.reshape(-1)], dim=1)
            ks = stationary(xy, pts[near], lengthscale, variance, family)  # n, L
            out_mean[r0:r1, c0:c1] = tile_prior + (ks @ alpha[near]).reshape(shape)
            ks_v = ks if len(in_var) == len(near) else ks[:, in_var]
            quad = ((ks_v @ kinv[near_var][:, near_var]) * ks_v).sum(1)
            var = (variance - quad).clamp(min=0)
            if tile_h is not None:
                var = var + trend_var(tile_h, ks_v @ g[near_var])
            out_std[r0:r1, c0:c1] = var.sqrt().reshape(shape)
    return out_mean, out_std


def predictive_parts(
    mean: Tensor,
    points: Tensor,
    values: Tensor,
    fit: RevealedFit,
    covariates: Tensor | None = None,
    point_mean: Tensor | None = None,
    point_covariates: Tensor | None = None,
    **options: Any,
) -> list[tuple[float, Tensor, Tensor]]:
    r"""Each stacked member's weight and predictive mean and std at every pixel.

    For each member :math:`k` of ``fit`` (:attr:`~geosparse.gp.RevealedFit.parts`:
    the fit itself with weight 1 when it is not stacked), :func:`posterior_map` with
    its kernel and trend, the std widened by its noise,
    :math:`\sigma_k = \sqrt{\sigma_{*k}^2 + \sigma_{0k}^2}` (a held-out label is
    measured with the noise, as a kriging variance with a nugget).
    :func:`predictive_map` mixes them; the members themselves give the mixture's
    quantiles and density (Yao et al., 2018).

    .. versionadded:: 0.6

    Args:
        mean: ``(H, W)`` network mean map.
        points: ``(P, 2)`` (row, col) pixel coordinates of the known points.
        values: ``(P,)`` their labels.
        fit: the fit (:func:`~geosparse.gp.fit_revealed`), :math:`\ell` in pixels.
        covariates: ``(K, H, W)`` the image bands, for trends on them.
        point_mean: ``(P,)`` the network mean at the points, which may then lie
            outside the map (:func:`posterior_map`).
        point_covariates: ``(K, P)`` the bands at the points, with ``point_mean``.
        options: further keyword arguments of :func:`posterior_map` (``chunk``,
            ``cutoff``, ``variance_cutoff``).

    Returns:
        ``(w_k, mean_k, std_k)`` per member, maps ``(H, W)`` float64.
    """
    out = []
    for weight, part in fit.parts:
        on_bands = bool(part.trend.bands)
        mu, sd = posterior_map(
            mean.double(),
            points,
            values,
            part.params,
            trend=part.trend,
            covariates=covariates if on_bands else None,
            point_mean=point_mean,
            point_covariates=point_covariates if on_bands else None,
            **options,
        )
        var = sd.double().square() + part.params.noise
        out.append((weight, mu.double(), var.sqrt()))
    return out


def predictive_map(
    mean: Tensor,
    points: Tensor,
    values: Tensor,
    fit: RevealedFit,
    covariates: Tensor | None = None,
    point_mean: Tensor | None = None,
    point_covariates: Tensor | None = None,
    **options: Any,
) -> tuple[Tensor, Tensor]:
    r"""Predictive mean and std of a new measurement at every pixel, given a fit.

    For one fit, :func:`posterior_map` with its kernel and trend, the std widened by
    the noise, :math:`\sqrt{\sigma_*^2 + \sigma_0^2}` (a held-out label is
    measured with the noise, as a kriging variance with a nugget). For stacked
    trends (:attr:`~geosparse.gp.RevealedFit.members`, weights :math:`w_k`), the
    moments of the mixture of their predictive distributions
    (:func:`predictive_parts`; Yao et al., 2018):

    .. math::
        \mu = \sum_k w_k \mu_k, \qquad
        \sigma^2 = \sum_k w_k (\sigma_k^2 + \mu_k^2) - \mu^2
        = \sum_k w_k \sigma_k^2 + \sum_k w_k (\mu_k - \mu)^2,

    so the std grows where the trends disagree.

    .. versionadded:: 0.5

    Args:
        mean: ``(H, W)`` network mean map.
        points: ``(P, 2)`` (row, col) pixel coordinates of the known points.
        values: ``(P,)`` their labels.
        fit: the fit (:func:`~geosparse.gp.fit_revealed`), :math:`\ell` in pixels.
        covariates: ``(K, H, W)`` the image bands, for trends on them.
        point_mean: ``(P,)`` the network mean at the points, which may then lie
            outside the map (:func:`posterior_map`).
        point_covariates: ``(K, P)`` the bands at the points, with ``point_mean``.
        options: further keyword arguments of :func:`posterior_map` (``chunk``,
            ``cutoff``, ``variance_cutoff``).

    Returns:
        ``(mean, std)`` maps ``(H, W)``, float64.
    """
    return mixture_moments(
        predictive_parts(
            mean,
            points,
            values,
            fit,
            covariates,
            point_mean,
            point_covariates,
            **options,
        )
    )


def mixture_moments(
    parts: list[tuple[float, Tensor, Tensor]],
) -> tuple[Tensor, Tensor]:
    r"""Mean and std of a mixture of Gaussians, :math:`\sum_k w_k \mathcal N(\mu_k, \sigma_k^2)`.

    :math:`\mu = \sum_k w_k \mu_k`,
    :math:`\sigma^2 = \sum_k w_k (\sigma_k^2 + \mu_k^2) - \mu^2`; one part is
    returned as it is.

    .. versionadded:: 0.6

    Args:
        parts: ``(w_k, mean_k, std_k)`` per component (:func:`predictive_parts`),
            weights summing to one.

    Returns:
        ``(mean, std)``, float64.
    """
    if len(parts) == 1:
        return parts[0][1], parts[0][2]
    first = torch.zeros_like(parts[0][1])
    second = torch.zeros_like(parts[0][1])
    for w, mu, sd in parts:
        first += w * mu
        second += w * (sd.square() + mu.square())
    return first, (second - first.square()).clamp_min(0).sqrt()


def loo_variance_scale(
    points: Tensor, residuals: Tensor, params: KernelParams
) -> float:
    r"""Factor :math:`c` for :math:`s^2` and :math:`\sigma_0^2` from leave-one-out residuals.

    With :math:`K = k(P_+, P_+) + \sigma_0^2 I` and :math:`\alpha = K^{-1} r`, the
    leave-one-out residual of point :math:`i` is :math:`\alpha_i / [K^{-1}]_{ii}` and
    its predictive variance :math:`1 / [K^{-1}]_{ii}` (Rasmussen and Williams, Eq.
    5.12). Scaling :math:`K` by
    :math:`c = \frac{1}{P} \sum_i \alpha_i^2 / [K^{-1}]_{ii}` makes the mean squared
    standardised residual exactly 1.

    .. versionadded:: 0.1

    Args:
        points: ``(P, 2)`` revealed points (pixels), :math:`P \ge 2`.
        residuals: ``(P,)`` labels minus the network mean at the points.
        params: the kernel (:math:`\ell` in pixels) and :math:`\sigma_0^2`.

    Returns:
        :math:`c > 0` (1.0 with fewer than two points, where it is undefined).

    Raises:
        ValueError: on mismatched shapes or non-finite residuals.
    """
    lengthscale, variance, noise, family = _in_pixels(params)
    if points.ndim != 2 or points.shape[1] != 2 or residuals.shape != points.shape[:1]:
        raise ValueError(
            f'points must be (P, 2) and residuals (P,), got {tuple(points.shape)} and '
            f'{tuple(residuals.shape)}.'
        )
    if not bool(torch.isfinite(residuals).all()):
        raise ValueError('residuals at the revealed points must be finite.')
    if len(points) < 2:
        return 1.0
    dtype = torch.float64
    pts = points.to(dtype)
    k = stationary(pts, pts, lengthscale, variance, family) + noise * torch.eye(
        len(pts), dtype=dtype
    )
    factor = stable_cholesky(k)
    kinv = torch.cholesky_inverse(factor)
    alpha = kinv @ residuals.to(dtype)
    c = float((alpha.square() / kinv.diagonal()).mean())
    return max(c, 1e-12)
