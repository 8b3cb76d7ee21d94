r"""Empirical Bayes at prediction: the residual GP re-fitted on the revealed points.

The kernel and noise that a Neural Point Process learns in training describe the
residuals at its *training* points, which the network has partly fitted, and
prediction would trust them. :func:`fit_revealed` re-estimates them, before any
conditioning, from the labels revealed at prediction time, with the network mean
kept as trained. The model of the revealed labels :math:`y` at points :math:`P` is
kriging with the network mean, and optionally the image bands :math:`z_k`, as
external drifts (Rasmussen and Williams, *Gaussian Processes for Machine
Learning*, 2006, Sec. 2.7):

.. math::
    y = \beta_0 + \beta_1 m(P) + \textstyle\sum_k \gamma_k z_k(P) + g(P)
    + \varepsilon, \quad
    g \sim GP(0, k_\theta), \quad \varepsilon \sim \mathcal N(0, \sigma_0^2 I), \quad
    (\beta, \gamma) \sim \mathcal N(b, B),

with :math:`b = (0, 1, 0, \dots)` (the network as trained) and a Gaussian prior
:math:`B`: on standardised labels and bands, standard deviations 10 for
:math:`\beta_0`, 1 for :math:`\beta_1` and 1 for each :math:`\gamma_k` (a mild
ridge, so that many or collinear bands stay stable with few points). Where the
imagery explains the labels through the network, :math:`\beta_1 \approx 1` and the
map is NPP-GP; where the network says little, :math:`\beta_1 \to 0` and the map
becomes ordinary kriging of the points (a constant plus the GP), or, with the
bands, regression kriging on them (the regression fitted by generalised least
squares with the GP, i.e. universal kriging), so the method cannot be much worse
than the kriging the user already knows. The bands are kept only when they predict
the points better than the trend on the network alone, left out one at a time
(validation likelihood, R&W Sec. 5.4.2). The marginal likelihood was tried as the
criterion first: on Meuse log zinc it kept the bands out of most folds, R² 0.52
where the bands give 0.65. With
:math:`(\beta, \gamma)` integrated out,
:math:`y \sim \mathcal N(H b, K_\theta + \sigma_0^2 I + H B H^\top)` with
:math:`H = [1, m(P), z_1(P), \dots]` (R&W Eq. 2.43); :math:`\theta = (\ell, s^2)` and
:math:`\sigma_0^2` maximise this marginal likelihood (type-II maximum likelihood,
R&W Sec. 5.4.1), by L-BFGS-B from the trained values and a small grid of starts,
within bounds that keep the fit stable. (Letting the trend fixed at :math:`b`
compete by marginal likelihood was tried and dropped: it lowered R² on Meuse log
zinc from 0.50 to 0.42 and on Kootenay from 0.698 to 0.685, and did not mend the
case it was meant for.) The posterior of the trend is
:math:`\bar\beta = \Sigma_\beta (H^\top K_y^{-1} y + B^{-1} b)`,
:math:`\Sigma_\beta = (B^{-1} + H^\top K_y^{-1} H)^{-1}` (R&W Eq. 2.42), used by
:func:`~geosparse.gp.posterior_map`.

Images (windows, test images) can be pooled: each is an independent GP with the
same :math:`\theta`, :math:`\sigma_0^2` and trend.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from .kernels import stable_cholesky, stationary
from .params import KernelParams

__all__ = ['RevealedFit', 'Trend', 'fit_revealed']

#: Prior standard deviations of the standardised intercept, of the slope on the
#: network mean and of each standardised band's coefficient.
_PRIOR_SD = (10.0, 1.0)
_BAND_PRIOR_SD = 1.0
#: Bounds of the standardised variance and noise (label variance = 1).
_VAR_BOUNDS = (1e-4, 10.0)


@dataclass(frozen=True)
class Trend:
    r"""The mean of the labels: :math:`\beta_0 + \beta_1 m(x) + \sum_k \gamma_k z_k(x)`.

    .. versionadded:: 0.2

    .. versionchanged:: 0.3
       Coefficients on the image bands (:attr:`bands`); :attr:`cov` is the whole
       matrix.

    Attributes:
        intercept: :math:`\bar\beta_0` (label units).
        slope: :math:`\bar\beta_1`.
        bands: :math:`\bar\gamma_k`, one per image band (label units per band
            unit); empty for a trend on the network mean alone.
        cov: :math:`\Sigma_\beta` over :math:`(\beta_0, \beta_1, \gamma_1, \dots)`,
            row by row; empty for a trend taken as known.
    """

    intercept: float = 0.0
    slope: float = 1.0
    bands: tuple[float, ...] = ()
    cov: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        p = 2 + len(self.bands)
        if self.cov and (len(self.cov) != p or any(len(r) != p for r in self.cov)):
            raise ValueError(
                f'Trend.cov must be {p} x {p} (intercept, slope and '
                f'{len(self.bands)} band coefficients), got {len(self.cov)} rows.'
            )

    def basis(self, mean: Tensor, covariates: Tensor | None = None) -> Tensor:
        r""":math:`h(x) = (1, m(x), z_1(x), \dots)`, shape ``(*mean.shape, p)``.

        Args:
            mean: the network mean :math:`m`, any shape ``S``.
            covariates: ``(K, *S)`` the image bands :math:`z_k` (needed when the
                trend has band coefficients).

        Raises:
            ValueError: when the trend has band coefficients and ``covariates`` is
                missing or has another number of bands.
        """
        parts = [torch.ones_like(mean), mean]
        if self.bands:
            if covariates is None or len(covariates) != len(self.bands):
                got = 'none' if covariates is None else str(len(covariates))
                raise ValueError(
                    f'this trend has coefficients on {len(self.bands)} image bands; '
                    f'pass the image as covariates (got {got} bands).'
                )
            parts += [c.to(mean.dtype) for c in covariates]
        return torch.stack(parts, -1)

    @property
    def coefficients(self) -> Tensor:
        r""":math:`\bar\beta = (\beta_0, \beta_1, \gamma_1, \dots)`, float64."""
        return torch.tensor(
            [self.intercept, self.slope, *self.bands], dtype=torch.float64
        )

    def __call__(self, mean: Tensor, covariates: Tensor | None = None) -> Tensor:
        r""":math:`h(x)^\top \bar\beta`."""
        if not self.bands:
            return self.intercept + self.slope * mean
        basis = self.basis(mean.double(), covariates)
        return (basis @ self.coefficients).to(mean.dtype)

    @property
    def matrix(self) -> Tensor | None:
        r""":math:`\Sigma_\beta` as a ``(p, p)`` float64 tensor (None if known)."""
        if not self.cov:
            return None
        return torch.tensor(self.cov, dtype=torch.float64)

    def as_dict(self) -> dict[str, Any]:
        """``{intercept, slope, intercept_sd, slope_sd[, bands, bands_sd]}`` (tags)."""
        var = [self.cov[i][i] if self.cov else 0.0 for i in range(2 + len(self.bands))]
        sd = [math.sqrt(max(v, 0.0)) for v in var]
        out: dict[str, Any] = {
            'intercept': self.intercept,
            'slope': self.slope,
            'intercept_sd': sd[0],
            'slope_sd': sd[1],
        }
        if self.bands:
            out['bands'] = list(self.bands)
            out['bands_sd'] = sd[2:]
        return out


@dataclass(frozen=True)
class RevealedFit:
    r"""Kernel, noise and trend of the revealed points' residuals.

    .. versionadded:: 0.2

    Attributes:
        params: the kernel (:math:`\ell` in pixels) and noise.
        trend: the trend on the network mean.
        refitted: False when the trained kernel was kept (too few points, or no
            spread in their values); the reason is in :attr:`reason`.
        points: revealed points used.
        nll: negative log marginal likelihood per point at the optimum (NaN if not
            refitted).
        reason: why the trained kernel was kept, else None.
        drift: what the trend is on: ``network`` (the network mean) or ``bands``
            (the network mean and the image bands).
        loo: leave-one-out negative log predictive density per point of the
            standardised labels (NaN if not computed): the criterion that selects
            the drift.
        compared: ``(drift, loo)`` of each trend model fitted, when the better was
            selected.
    """

    params: KernelParams
    trend: Trend
    refitted: bool
    points: int
    nll: float = math.nan
    reason: str | None = None
    drift: str = 'network'
    loo: float = math.nan
    compared: tuple[tuple[str, float], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The fit as written in the COG tags and the STAC item."""
        out: dict[str, Any] = {
            'source': 'refit on the revealed points' if self.refitted else 'trained',
            **self.params.as_dict(),
            'units': self.params.units,
            'trend': self.trend.as_dict(),
            'points': self.points,
        }
        if self.reason:
            out['reason'] = self.reason
        if math.isfinite(self.nll):
            out['nll_per_point'] = self.nll
        if self.refitted:
            out['drift'] = self.drift
        if self.compared:
            out['loo_nlpd_by_drift'] = dict(self.compared)
        return out


@dataclass(frozen=True)
class _Groups:
    """Groups of points padded into one batch (padding: identity rows, zero mask)."""

    coords: Tensor  # (G, P, 2)
    y: Tensor  # (G, P) standardised labels
    h: Tensor  # (G, P, p) trend basis (1, m, z...), zero on padding
    mask: Tensor  # (G, P) float, 1 for a point

    @classmethod
    def pad(cls, coords: list[Tensor], y: Tensor, h: Tensor) -> _Groups:
        g, size = len(coords), max(len(c) for c in coords)
        out = cls(
            torch.zeros(g, size, 2, dtype=torch.float64),
            torch.zeros(g, size, dtype=torch.float64),
            torch.zeros(g, size, h.shape[1], dtype=torch.float64),
            torch.zeros(g, size, dtype=torch.float64),
        )
        i = 0
        for j, c in enumerate(coords):
            n = len(c)
            out.coords[j, :n], out.y[j, :n] = c, y[i : i + n]
            out.h[j, :n], out.mask[j, :n] = h[i : i + n], 1.0
            i += n
        return out

    def solves(
        self, theta: Tensor, family: str, prior_mean: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r"""With :math:`D = K_\theta + \sigma_0^2 I` (block-diagonal) and :math:`r = y - Hb`.

        Returns:
            :math:`r^\top D^{-1} r`, :math:`\log|D|`, :math:`H^\top D^{-1} r`,
            :math:`H^\top D^{-1} H` and :math:`H^\top D^{-1} y`.
        """
        ell, s2, n2 = theta.exp()
        pair = self.mask[:, :, None] * self.mask[:, None, :]
        eye = torch.eye(self.mask.shape[1], dtype=torch.float64)
        k = stationary(self.coords, self.coords, ell, s2, family) * pair
        d = k + eye * (n2 * self.mask + (1 - self.mask))[:, :, None]
        factor = stable_cholesky(d)
        r = (self.y - self.h @ prior_mean) * self.mask
        rhs = torch.cat([r[..., None], self.h, self.y[..., None]], -1)
        sol = torch.cholesky_solve(rhs, factor)  # (G, P, p + 2)
        p = self.h.shape[-1]
        d_r, d_h, d_y = sol[..., :1], sol[..., 1 : p + 1], sol[..., p + 1 :]
        quad = (r[..., None] * d_r).sum()
        logdet = 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum()
        hdr = (self.h * d_r).sum((0, 1))
        hdh = torch.einsum('gpi,gpj->ij', self.h, d_h)
        hdy = (self.h * d_y).sum((0, 1))
        return quad, logdet, hdr, hdh, hdy


def _loo_nlpd(
    theta: Tensor, groups: _Groups, family: str, prior_mean: Tensor, prior_sd: Tensor
) -> float:
    r"""Leave-one-out negative log predictive density per point (R&W Sec. 5.4.2).

    For the model with the trend integrated out,
    :math:`C = K_\theta + \sigma_0^2 I + H B H^\top` and :math:`r = y - Hb`, the
    prediction of point :math:`i` from all the others has the residual
    :math:`[C^{-1} r]_i / [C^{-1}]_{ii}` and the variance :math:`1 / [C^{-1}]_{ii}`
    (R&W Eq. 5.12), the trend re-estimated without the point.
    """
    ell, s2, n2 = theta.exp()
    keep = groups.mask.reshape(-1) > 0
    g, size = groups.mask.shape
    blocks = stationary(groups.coords, groups.coords, ell, s2, family)
    d = torch.block_diag(*blocks)[keep][:, keep]
    n = int(keep.sum())
    h = groups.h.reshape(g * size, -1)[keep]
    c = d + n2 * torch.eye(n, dtype=torch.float64)
    c = c + (h * prior_sd.square()) @ h.T
    r = groups.y.reshape(-1)[keep] - h @ prior_mean
    c_inv = torch.cholesky_inverse(stable_cholesky(c))
    var = 1 / c_inv.diagonal()
    res = (c_inv @ r) * var
    return float((0.5 * torch.log(2 * math.pi * var) + 0.5 * res**2 / var).mean())


def _nll(
    theta: Tensor,
    groups: _Groups,
    family: str,
    prior_mean: Tensor,
    prior_sd: Tensor,
) -> Tensor:
    r"""Negative log marginal likelihood per point, log-parameters ``(ℓ, s², σ²)``.

    With :math:`C = D + H B H^\top`, :math:`B = \mathrm{diag}(\tau^2)`, by the
    matrix determinant lemma and Woodbury's identity (:math:`\tau = 0` fixes the
    trend): :math:`r^\top C^{-1} r = r^\top D^{-1} r - u^\top A^{-1} u` and
    :math:`\log|C| = \log|D| + \log|A|`, with :math:`u = T H^\top D^{-1} r`,
    :math:`A = I + T H^\top D^{-1} H T`, :math:`T = \mathrm{diag}(\tau)`.
    """
    quad, logdet, hdr, hdh, _ = groups.solves(theta, family, prior_mean)
    t = torch.diag(prior_sd)
    a = torch.eye(len(prior_sd), dtype=torch.float64) + t @ hdh @ t
    u = t @ hdr
    quad = quad - u @ torch.linalg.solve(a, u)
    logdet = logdet + torch.linalg.slogdet(a)[1]
    n = groups.mask.sum()
    return 0.5 * (quad + logdet + n * math.log(2 * math.pi)) / n


def _fallback(start: KernelParams, n: int, reason: str) -> RevealedFit:
    warnings.warn(
        f'{reason}; the kernel as trained is used (pass refit=False, or '
        '--no-refit, to use it without this warning).',
        stacklevel=3,
    )
    return RevealedFit(start, Trend(), False, n, reason=reason)


def fit_revealed(
    groups: Sequence[tuple[Tensor, Tensor, Tensor]],
    start: KernelParams,
    min_points: int = 8,
    max_points: int = 1000,
    seed: int = 0,
    covariates: Sequence[Tensor] | None = None,
    select: bool = True,
) -> RevealedFit:
    r"""Kernel, noise and trend re-fitted on revealed points (empirical Bayes).

    See the module doc for the model. Labels are standardised for the fit (mean 0,
    variance 1); :math:`s^2` and :math:`\sigma_0^2` are bounded to
    :math:`[10^{-4}, 10]` label variances and :math:`\ell` to half a pixel up to
    twice the points' extent, so a fit never gives a std of thousands. Points on
    one pixel with different values are read as noise.

    .. versionadded:: 0.2

    Args:
        groups: per image or window, ``(P, 2)`` point coordinates (pixels), ``(P,)``
            revealed labels and ``(P,)`` network mean at the points.
        start: the trained kernel (:math:`\ell` in pixels): the first start of the
            optimiser, and the fallback.
        min_points: with fewer revealed points, the trained kernel is kept with a
            warning (five parameters cannot be fitted from a handful of values).
        max_points: at most this many points (a random subset) enter the fit, whose
            cost grows as the cube of their number.
        seed: seed of that subset.
        covariates: per group, ``(P, K)`` image bands at the points, to enter the
            trend as drifts :math:`z_k` (standardised for the fit; a band with one
            value at every point gets the coefficient 0). None: the trend is on
            the network mean alone.
        select: with ``covariates``: fit the trend with and without the bands and
            keep the model whose leave-one-out predictive density of the points is
            higher (R&W Sec. 5.4.2, validation likelihood: each point predicted
            from the others, the trend re-estimated without it), so that bands
            that do not predict new points are left out. False: always with the
            bands.

    Returns:
        The fit (:attr:`RevealedFit.refitted` False for a fallback).

    Raises:
        ValueError: for non-finite labels, means or covariates, covariates that do
            not match the groups, or a length-scale not in pixels.
    """
    if start.units != 'pixels':
        raise ValueError('fit_revealed needs the starting kernel in pixels.')
    if covariates is not None and len(covariates) != len(groups):
        raise ValueError(
            f'covariates: {len(covariates)} arrays for {len(groups)} groups.'
        )
    bands = (
        [
            c.double().reshape(len(g[1]), -1)
            for g, c in zip(groups, covariates, strict=True)
        ]
        if covariates is not None
        else [torch.zeros(len(g[1]), 0, dtype=torch.float64) for g in groups]
    )
    keep_groups = [i for i, g in enumerate(groups) if len(g[1])]
    groups = [groups[i] for i in keep_groups]
    n = sum(len(g[1]) for g in groups)
    if n == 0:
        return _fallback(start, 0, 'no revealed point')
    pts = [g[0].double().reshape(-1, 2) for g in groups]
    y = torch.cat([g[1].double().reshape(-1) for g in groups])
    m = torch.cat([g[2].double().reshape(-1) for g in groups])
    z = torch.cat([bands[i] for i in keep_groups])
    if not (
        bool(torch.isfinite(y).all())
        and bool(torch.isfinite(m).all())
        and bool(torch.isfinite(z).all())
    ):
        raise ValueError(
            'revealed labels, and the network mean and bands at them, must be '
            'finite (NaN is nodata: drop those points).'
        )
    if n < min_points:
        return _fallback(
            start,
            n,
            f'{n} revealed points are too few to re-fit the kernel '
            f'(at least {min_points})',
        )
    sd = float(y.std(unbiased=False))
    if not sd > 0:
        return _fallback(
            start,
            n,
            f'all {n} revealed points hold the value {float(y[0]):g}, so '
            'their spread cannot be fitted (check the value column)',
        )
    if n > max_points:
        gen = torch.Generator().manual_seed(seed)
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=gen)[:max_points]] = True
        sizes = [len(p) for p in pts]
        parts = keep.split(sizes)
        pts = [p[k] for p, k in zip(pts, parts, strict=True)]
        y, m, z = y[keep], m[keep], z[keep]
        pts = [p for p in pts if len(p)]
    both = select and z.shape[1] > 0
    fits = [_fit(pts, y, m, z, start, n, loo_cv=both)]
    if both:
        fits.append(_fit(pts, y, m, z[:, :0], start, n, loo_cv=True))
    fit = min(fits, key=lambda f: f.loo) if both else fits[0]
    if len(fits) == 1:
        return fit
    compared = tuple((f.drift, f.loo) for f in fits)
    return dataclasses.replace(fit, compared=compared)


def _fit(
    pts: list[Tensor],
    y: Tensor,
    m: Tensor,
    z: Tensor,
    start: KernelParams,
    n: int,
    loo_cv: bool = False,
) -> RevealedFit:
    """The type-II maximum-likelihood fit with the trend on ``(1, m, z)``."""
    sd = float(y.std(unbiased=False))
    center = float(y.mean())
    ys, ms = (y - center) / sd, (m - center) / sd
    # Bands standardised at the points; a constant one would repeat the intercept.
    z_mu = z.mean(0)
    z_sd = (z - z_mu).square().mean(0).sqrt()
    used = torch.nonzero(z_sd > 1e-12 * (1 + z_mu.abs()))[:, 0]
    zs = (z[:, used] - z_mu[used]) / z_sd[used]
    h = torch.cat([torch.ones_like(ms)[:, None], ms[:, None], zs], 1)
    k = len(used)
    prior_mean = torch.tensor([0.0, 1.0] + [0.0] * k, dtype=torch.float64)
    prior_sd = torch.tensor([*_PRIOR_SD] + [_BAND_PRIOR_SD] * k, dtype=torch.float64)
    data = _Groups.pad(pts, ys, h)
    # Bounds: ℓ from half a pixel to twice the extent of the points.
    span = max(float((p.amax(0) - p.amin(0)).norm()) for p in pts)
    ell_lo, ell_hi = 0.5, max(1.0, 2 * span)
    lo = [math.log(ell_lo), math.log(_VAR_BOUNDS[0]), math.log(_VAR_BOUNDS[0])]
    hi = [math.log(ell_hi), math.log(_VAR_BOUNDS[1]), math.log(_VAR_BOUNDS[1])]
    v = sd**2

    def clip(x: list[float]) -> list[float]:
        return [min(max(a, lo_), hi_) for a, lo_, hi_ in zip(x, lo, hi, strict=True)]

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        loss = _nll(theta, data, start.family, prior_mean, prior_sd)
        (grad,) = torch.autograd.grad(loss, theta)
        return loss.item(), grad.numpy()

    trained = clip(
        [
            math.log(start.lengthscale),
            math.log(max(start.variance / v, _VAR_BOUNDS[0])),
            math.log(max(start.noise / v, _VAR_BOUNDS[0])),
        ]
    )
    starts = [trained] + [
        clip([math.log(ell), math.log(1 - f), math.log(f)])
        for ell in np.geomspace(ell_lo * 2, ell_hi / 2, 5)
        for f in (0.1, 0.5)
    ]
    with torch.no_grad():
        first = [
            float(
                _nll(
                    torch.tensor(x, dtype=torch.float64),
                    data,
                    start.family,
                    prior_mean,
                    prior_sd,
                )
            )
            for x in starts
        ]
    best: tuple[float, list[float]] = (math.inf, trained)
    # The trained values and the best two grid starts, refined.
    for i in [0] + [i + 1 for i in np.argsort(first[1:])[:2]]:
        res = minimize(
            objective,
            np.array(starts[i]),
            jac=True,
            method='L-BFGS-B',
            bounds=list(zip(lo, hi, strict=True)),
            options={'maxiter': 200},
        )
        if math.isfinite(res.fun) and res.fun < best[0]:
            best = (float(res.fun), [float(x) for x in res.x])
    ell, s2, n2 = (math.exp(x) for x in best[1])
    # Posterior of the standardised trend (R&W Eq. 2.42).
    with torch.no_grad():
        theta = torch.tensor(best[1], dtype=torch.float64)
        _, _, _, hdh, hdy = data.solves(theta, start.family, prior_mean)
        prior_prec = torch.diag(prior_sd.square().reciprocal())
        cov_g = torch.linalg.inv(prior_prec + hdh)
        gamma = cov_g @ (hdy + prior_prec @ prior_mean)
        loo = (
            _loo_nlpd(theta, data, start.family, prior_mean, prior_sd)
            if loo_cv
            else math.nan
        )
    # Back to label units, beta = A gamma + (centre, 0, ...): y = centre + sd ys,
    # ms = (m - centre) / sd and zs_k = (z_k - mu_k) / sd_k give
    # beta0 = centre (1 - g1) + sd g0 - sum_k sd g_k mu_k / sd_k, beta1 = g1 and
    # gamma_k = sd g_k / sd_k.
    bands_total = z.shape[1]
    p = 2 + bands_total
    a = torch.zeros(p, 2 + k, dtype=torch.float64)
    a[0, 0], a[0, 1], a[1, 1] = sd, -center, 1.0
    for j, band in enumerate(used.tolist()):
        a[0, 2 + j] = -sd * float(z_mu[band] / z_sd[band])
        a[2 + band, 2 + j] = sd / float(z_sd[band])
    beta = a @ gamma
    beta[0] += center
    cov_b = a @ cov_g @ a.T
    trend = Trend(
        intercept=float(beta[0]),
        slope=float(beta[1]),
        bands=tuple(float(b) for b in beta[2:]),
        cov=tuple(tuple(float(c) for c in row) for row in cov_b),
    )
    params = dataclasses.replace(start, lengthscale=ell, variance=s2 * v, noise=n2 * v)
    drift = 'bands' if z.shape[1] else 'network'
    return RevealedFit(params, trend, True, n, nll=best[0], drift=drift, loo=loo)
