r"""Kriging baselines by PyKrige: what users of sparse points compare with.

Two classical geostatistical predictors of a variable known at points, so that a
Neural Point Process map can be compared on the user's own held-out points:

- :func:`ordinary_kriging`: the points alone. An experimental semivariogram is
  fitted by least squares with a model (exponential by default, with a nugget), and
  each target is the best linear unbiased predictor under an unknown constant mean
  (PyKrige's :class:`~pykrige.ok.OrdinaryKriging`; Cressie, *Statistics for Spatial
  Data*, 1993, Sec. 3.2).
- :func:`regression_kriging`: a linear regression of the values on covariates
  (e.g. the imagery bands at the points) by least squares, then ordinary kriging of
  its residuals (Hengl, Heuvelink and Rossiter, *Computers & Geosciences* 33, 2007):
  :math:`\hat y(x) = q(x)^\top \hat\beta + \hat r_{OK}(x)`, variance
  :math:`\sigma^2_{OK}(x) + \hat\sigma^2_{OLS}\, q(x)^\top (Q^\top Q)^{-1} q(x)`
  (the regression part with ordinary least squares' covariance, not the generalised
  one of the paper: a slight overestimate where residuals are correlated).

Both return the kriging standard deviation, which includes the nugget away from the
points (it is the std of a new measurement), and the fitted variogram. Targets are
processed in chunks, so memory stays bounded for millions of pixels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pykrige.ok import OrdinaryKriging

__all__ = ['KrigingResult', 'ordinary_kriging', 'regression_kriging']


@dataclass(frozen=True)
class KrigingResult:
    """Kriging predictions at targets.

    .. versionadded:: 0.2

    Attributes:
        mean: ``(T,)`` predictions.
        std: ``(T,)`` kriging standard deviations (nugget included).
        variogram: the fitted model: ``model`` and its ``parameters`` (PyKrige's
            order: sill, range and nugget, or slope and nugget), plus
            ``coefficients`` of the regression for regression kriging.
    """

    mean: np.ndarray
    std: np.ndarray
    variogram: dict[str, Any] = field(default_factory=dict)


def _checked(
    xy: np.ndarray, values: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(xy, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(values):
        raise ValueError(
            f'{name}: need (N, 2) coordinates and (N,) values, got '
            f'{xy.shape} and {values.shape}.'
        )
    ok = np.isfinite(xy).all(1) & np.isfinite(values)
    if not ok.all():
        warnings.warn(
            f'{name}: {int((~ok).sum())} points with NaN coordinates or values are '
            'nodata and left out.',
            stacklevel=3,
        )
        xy, values = xy[ok], values[ok]
    if len(values) < 3:
        raise ValueError(
            f'{name}: kriging needs at least 3 points with values, got {len(values)}.'
        )
    if np.ptp(values) == 0:
        raise ValueError(
            f'{name}: all {len(values)} values are {values[0]:g}; there is no '
            'variogram to fit (check the value column).'
        )
    return xy, values


def ordinary_kriging(
    xy: np.ndarray,
    values: np.ndarray,
    targets: np.ndarray,
    variogram_model: str = 'exponential',
    nlags: int = 12,
    chunk: int = 50_000,
) -> KrigingResult:
    """Ordinary kriging of point values at targets (PyKrige).

    .. versionadded:: 0.2

    Args:
        xy: ``(N, 2)`` point coordinates (any planar units; the same as ``targets``).
        values: ``(N,)`` values; NaN is nodata (left out, with a warning).
        targets: ``(T, 2)`` coordinates to predict at.
        variogram_model: PyKrige's model: ``exponential``, ``spherical``,
            ``gaussian``, ``linear``, ``power`` or ``hole-effect``.
        nlags: bins of the experimental semivariogram.
        chunk: targets per batch (memory grows as ``chunk`` x N).

    Returns:
        Mean and std at ``targets`` and the fitted variogram.

    Raises:
        ValueError: with fewer than 3 valid points, or values that are all equal.
    """
    xy, values = _checked(xy, values, 'ordinary_kriging')
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    # Points on one spot make the kriging matrix singular: a pseudo-inverse.
    model = OrdinaryKriging(
        xy[:, 0],
        xy[:, 1],
        values,
        variogram_model=variogram_model,
        nlags=nlags,
        pseudo_inv=True,
    )
    mean = np.empty(len(targets))
    var = np.empty(len(targets))
    for i in range(0, len(targets), chunk):
        part = targets[i : i + chunk]
        z, ss = model.execute('points', part[:, 0], part[:, 1])
        mean[i : i + chunk] = np.asarray(z)
        var[i : i + chunk] = np.asarray(ss)
    params = [float(p) for p in model.variogram_model_parameters]
    return KrigingResult(
        mean,
        np.sqrt(np.clip(var, 0, None)),
        {'model': variogram_model, 'parameters': params},
    )


def regression_kriging(
    xy: np.ndarray,
    values: np.ndarray,
    covariates: np.ndarray,
    targets: np.ndarray,
    target_covariates: np.ndarray,
    variogram_model: str = 'exponential',
    nlags: int = 12,
    chunk: int = 50_000,
) -> KrigingResult:
    r"""Regression kriging: least squares on covariates, then kriging of the residuals.

    .. versionadded:: 0.2

    Args:
        xy: ``(N, 2)`` point coordinates.
        values: ``(N,)`` values; NaN is nodata.
        covariates: ``(N, C)`` covariates at the points (an intercept is added).
        targets: ``(T, 2)`` coordinates to predict at.
        target_covariates: ``(T, C)`` covariates there.
        variogram_model: PyKrige's model of the residuals (see
            :func:`ordinary_kriging`).
        nlags: bins of the experimental semivariogram.
        chunk: targets per batch.

    Returns:
        Mean and std at ``targets``; ``variogram['coefficients']`` holds
        :math:`\hat\beta` (intercept first).

    Raises:
        ValueError: for mismatched shapes, non-finite covariates, fewer points than
            coefficients + 3, or values that are all equal.
    """
    xy = np.asarray(xy, dtype=np.float64)
    q = np.asarray(covariates, dtype=np.float64)
    q = q.reshape(len(q), -1)
    qt = np.asarray(target_covariates, dtype=np.float64)
    qt = qt.reshape(len(qt), -1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    if len(q) != len(xy) or len(qt) != len(targets) or q.shape[1] != qt.shape[1]:
        raise ValueError(
            'regression_kriging: covariates must be (N, C) at the points and (T, C) '
            f'at the targets, got {q.shape} and {qt.shape} for {len(xy)} points and '
            f'{len(targets)} targets.'
        )
    if not (np.isfinite(q).all() and np.isfinite(qt).all()):
        raise ValueError(
            'regression_kriging: covariates must be finite (NaN is nodata: drop '
            'those points and targets).'
        )
    ok = np.isfinite(np.asarray(values, dtype=np.float64)).reshape(-1)
    xy_ok, values = _checked(xy[ok], np.asarray(values)[ok], 'regression_kriging')
    design = np.column_stack([np.ones(len(values)), q[ok]])
    if len(values) < design.shape[1] + 3:
        raise ValueError(
            f'regression_kriging: {len(values)} points for {design.shape[1]} '
            'coefficients; give more points or fewer covariates.'
        )
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    resid = values - design @ coef
    dof = max(len(values) - design.shape[1], 1)
    s2 = float(resid @ resid) / dof
    xtx_inv = np.linalg.pinv(design.T @ design)
    kriged = ordinary_kriging(xy_ok, resid, targets, variogram_model, nlags, chunk)
    dt = np.column_stack([np.ones(len(targets)), qt])
    reg_var = s2 * np.einsum('ij,jk,ik->i', dt, xtx_inv, dt)
    return KrigingResult(
        dt @ coef + kriged.mean,
        np.sqrt(kriged.std**2 + reg_var),
        {**kriged.variogram, 'coefficients': [float(c) for c in coef]},
    )
