r"""Kernel parameters fitted to residuals by maximum marginal likelihood (grid search).

With the network fixed, the residuals :math:`r = y - f(x)` at the labelled points
are a Gaussian process with kernel :math:`k` and noise :math:`\sigma_0^2`;
:func:`~geosparse.gp.fit_kernel` picks :math:`(\ell, s^2, \sigma_0^2)` from a grid by
the marginal likelihood of :class:`~geosparse.gp.likelihood.MarginalLikelihood`, summed
over images. :math:`s^2` and :math:`\sigma_0^2` are parametrised by the total variance
:math:`v` (the mean squared residual) and the noise fraction :math:`f` (the
nugget): :math:`s^2 = (1 - f) v`, :math:`\sigma_0^2 = f v`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .kernels import StationaryKernel
from .likelihood import MarginalLikelihood
from .noise import GaussianNoise
from .params import KernelParams

__all__ = ['fit_kernel']


def fit_kernel(
    residuals: Sequence[tuple[Tensor, Tensor]],
    lengthscales: Iterable[float],
    noise_fractions: Iterable[float] = (0.01, 0.1, 0.3),
    family: str = 'rbf',
) -> KernelParams:
    r"""Static kernel parameters that maximise the GP likelihood of residuals.

    .. versionadded:: 0.1

    Args:
        residuals: per image, ``(P, 2)`` point coordinates (pixels) and ``(P,)``
            residuals of a network on data it was not trained on.
        lengthscales: candidate :math:`\ell` in pixels.
        noise_fractions: candidate :math:`f` (0 < f < 1).
        family: kernel family (:func:`~geosparse.gp.stationary`).

    Returns:
        The best parameters (:math:`\ell` in pixels).

    Raises:
        ValueError: without any residual, or if they are all zero.
    """
    if not residuals or sum(len(r) for _, r in residuals) == 0:
        raise ValueError('fit_kernel needs residuals at one point at least.')
    total = torch.cat([r for _, r in residuals]).double()
    v = float(total.square().mean())
    if not v > 0:
        raise ValueError('fit_kernel: the residuals are all zero; nothing to fit.')
    # One padded batch; the likelihood gives the mean negative log-likelihood per point.
    n = max(len(r) for _, r in residuals)
    coords = torch.zeros(len(residuals), n, 2, dtype=torch.float64)
    target = torch.zeros(len(residuals), n, dtype=torch.float64)
    valid = torch.zeros(len(residuals), n, dtype=torch.bool)
    for i, (pts, r) in enumerate(residuals):
        coords[i, : len(r)], target[i, : len(r)], valid[i, : len(r)] = pts, r, True
    best = (math.inf, KernelParams(family, 1.0, v, 0.1 * v))
    with torch.no_grad():
        for ell in lengthscales:
            for f in noise_fractions:
                s2, n2 = (1 - f) * v, f * v
                loss = MarginalLikelihood(
                    StationaryKernel(ell, s2, learnable=False, family=family),
                    GaussianNoise(n2, learnable=False),
                )
                nll = float(loss(torch.zeros_like(target), target, coords, valid))
                if nll < best[0]:
                    best = (nll, KernelParams(family, float(ell), s2, n2))
    return best[1]
