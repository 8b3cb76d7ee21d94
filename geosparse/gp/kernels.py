r"""Covariance kernels over pixel coordinates for Neural Point Processes.

Neural Point Processes (Shi et al., "Neural Point Processes for Pixel-wise
Regression") model the labels of an image as a Gaussian process whose mean is the
network output; the kernel :math:`k_\zeta` says how strongly labels at two pixels
co-vary. The paper's kernel is the RBF, :math:`k(a, b) = s^2 \exp(-r^2 / 2\ell^2)` with
:math:`r = \lVert a-b \rVert`; the Matérn family (Rasmussen and Williams, *Gaussian
Processes for Machine Learning*, 2006, Eq. 4.14-4.17), rougher and usual in
geostatistics, is offered too (:func:`~geosparse.gp.stationary`, ``family``):
:math:`s^2 e^{-r/\ell}` (``matern12``, exponential),
:math:`s^2 (1 + \sqrt3 r/\ell) e^{-\sqrt3 r/\ell}` (``matern32``) and
:math:`s^2 (1 + \sqrt5 r/\ell + 5r^2/3\ell^2) e^{-\sqrt5 r/\ell}` (``matern52``).
Kernels are objects, as in gpytorch: a kernel holds its family and its
length-scale and variance; the observation noise is a separate object
(:class:`~geosparse.gp.noise.GaussianNoise`) and the NPP loss is the marginal
likelihood over the two (:class:`~geosparse.gp.likelihood.MarginalLikelihood`).
Three ways to set :math:`\ell, s^2`:

- :class:`StationaryKernel` with ``learnable=False`` (*static*: :math:`\ell, s^2`
  fixed, e.g. tuned on validation data by :func:`~geosparse.gp.fit_kernel`) or
  ``learnable=True`` (optimised with the network);
- :class:`ContextKernel` (*context-aware*): :math:`\ell, s^2` regressed from the
  input image by a small convolutional head, one pair per image.

Both give their parameters for an image as :class:`~geosparse.gp.params.KernelParams`
(:meth:`~geosparse.trainers.NPPTask.kernel_params`), the one value type that the
posterior, the leave-one-out calibration, the task, the command line and the COG tags
share.

Parameters are kept positive through a softplus. Unlike the authors' public code,
the length-scale is not clamped to [1, 2] px and the context head receives
gradients (``tests/losses/test_npp.py`` checks both).
:func:`~geosparse.gp.stable_cholesky` factorises a batch of kernel matrices, adding
jitter only to the matrices that need it.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    'FAMILIES',
    'ContextKernel',
    'KernelFamily',
    'StationaryKernel',
    'kernel_reach',
    'rbf',
    'stable_cholesky',
    'stationary',
]

#: Names of the stationary kernel families (:func:`~geosparse.gp.stationary`).
KernelFamily = Literal['rbf', 'matern12', 'matern32', 'matern52']
#: Kernel families of :func:`~geosparse.gp.stationary`.
FAMILIES: tuple[str, ...] = get_args(KernelFamily)


def rbf(
    a: Tensor, b: Tensor, lengthscale: Tensor | float, variance: Tensor | float
) -> Tensor:
    r"""RBF kernel between point sets.

    :math:`k(a, b) = s^2 \exp(-\lVert a-b \rVert^2 / 2\ell^2)`.

    .. versionadded:: 0.1

    Args:
        a: ``(B, N, 2)`` or ``(N, 2)`` coordinates.
        b: ``(B, M, 2)`` or ``(M, 2)`` coordinates.
        lengthscale: :math:`\ell`, scalar or ``(B,)``.
        variance: :math:`s^2`, scalar or ``(B,)``.

    Returns:
        ``(B, N, M)`` (or ``(N, M)``) covariances.
    """
    return stationary(a, b, lengthscale, variance, 'rbf')


def _profile(x: Tensor, family: str) -> Tensor:
    """Correlation of ``family`` at distances ``x`` = r / ell (1 at 0)."""
    if family == 'rbf':
        return torch.exp(-0.5 * x * x)
    if family == 'matern12':
        return torch.exp(-x)
    if family == 'matern32':
        y = math.sqrt(3) * x
        return (1 + y) * torch.exp(-y)
    if family == 'matern52':
        y = math.sqrt(5) * x
        return (1 + y + y * y / 3) * torch.exp(-y)
    raise ValueError(f'kernel family {family!r}: choose one of {", ".join(FAMILIES)}.')


def _check_family(family: str) -> None:
    _profile(torch.zeros(()), family)


def stationary(
    a: Tensor,
    b: Tensor,
    lengthscale: Tensor | float,
    variance: Tensor | float,
    family: str = 'rbf',
) -> Tensor:
    r"""Stationary kernel of ``family`` between point sets (see the module doc).

    .. versionadded:: 0.1

    Args:
        a: ``(B, N, 2)`` or ``(N, 2)`` coordinates.
        b: ``(B, M, 2)`` or ``(M, 2)`` coordinates.
        lengthscale: :math:`\ell`, scalar or ``(B,)``.
        variance: :math:`s^2`, scalar or ``(B,)``.
        family: ``rbf``, ``matern12``, ``matern32`` or ``matern52``.

    Returns:
        ``(B, N, M)`` (or ``(N, M)``) covariances.

    Raises:
        ValueError: for an unknown family.
    """
    _check_family(family)
    d2 = (a.unsqueeze(-2) - b.unsqueeze(-3)).square().sum(-1)
    ell = torch.as_tensor(lengthscale, dtype=d2.dtype, device=d2.device)
    var = torch.as_tensor(variance, dtype=d2.dtype, device=d2.device)
    if a.ndim == 3:
        ell, var = ell.reshape(-1, 1, 1), var.reshape(-1, 1, 1)
    if family == 'rbf':  # from squared distances: no square root
        return var * torch.exp(-0.5 * d2 / ell.square())
    # sqrt(d2 + tiny): finite gradients with respect to the coordinates at r = 0.
    r = (d2 + 1e-30).sqrt()
    return var * _profile(r / ell, family)


def kernel_reach(
    lengthscale: float, family: str = 'rbf', cutoff: float = 1e-12
) -> float:
    r"""Distance beyond which the correlation of ``family`` is below ``cutoff``.

    .. versionadded:: 0.1

    Args:
        lengthscale: :math:`\ell`.
        family: kernel family.
        cutoff: correlation :math:`\epsilon` (0 < :math:`\epsilon` < 1; otherwise
            infinite reach).

    Returns:
        The distance, in the units of :math:`\ell`.
    """
    if not 0 < cutoff < 1:
        return math.inf
    if family == 'rbf':
        return lengthscale * math.sqrt(2 * math.log(1 / cutoff))
    lo, hi = 0.0, 1.0

    def corr(x: float) -> float:
        return float(_profile(torch.tensor(x, dtype=torch.float64), family))

    while corr(hi) > cutoff:
        hi *= 2
    for _ in range(60):  # bisection on the decreasing profile
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if corr(mid) > cutoff else (lo, mid)
    return lengthscale * hi


def stable_cholesky(matrix: Tensor, max_tries: int = 6) -> Tensor:
    r"""Cholesky factors of a batch of symmetric matrices, with a jitter fallback.

    Matrices that fail get :math:`10^{-6}, 10^{-5}, \ldots` times their mean diagonal
    added to the diagonal until they factorise; the others are left exact.

    .. versionadded:: 0.1

    Args:
        matrix: ``(..., N, N)`` symmetric positive semi-definite matrices.
        max_tries: jitter levels tried.

    Returns:
        Lower-triangular factors, same shape.

    Raises:
        RuntimeError: if a matrix fails even with the largest jitter (e.g. NaN
            entries, or duplicated points with zero noise and huge variance).
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    bad = info > 0
    if not bool(bad.any()):
        return factor
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    scale = matrix.diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp(min=1e-12)
    for i in range(max_tries):
        jitter = (scale * 10.0 ** (i - 6))[..., None, None] * eye
        trial, info = torch.linalg.cholesky_ex(matrix + jitter)
        factor = torch.where(bad[..., None, None], trial, factor)
        bad = bad & (info > 0)
        if not bool(bad.any()):
            return factor
    raise RuntimeError(
        f'{int(bad.sum())} kernel matrices are not positive definite even with '
        'jitter; check for NaN values, or raise the noise for duplicated points.'
    )


def inverse_softplus(x: float) -> float:
    r""":math:`\theta` with :math:`\mathrm{softplus}(\theta) = x` (:math:`x > 0`)."""
    return x + math.log(-math.expm1(-x))


_inverse_softplus = inverse_softplus


class StationaryKernel(nn.Module):
    r"""A stationary kernel of one family, static or learnable.

    :math:`k(a, b) = s^2 \rho(\lVert a-b \rVert / \ell)` with the family's correlation
    :math:`\rho` (RBF or Matérn, :func:`~geosparse.gp.stationary`),
    :math:`\ell = \mathrm{softplus}(\theta_\ell)` and :math:`s^2 = \mathrm{softplus}(\theta_s)`.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        lengthscale: float = 3.0,
        variance: float = 1.0,
        learnable: bool = True,
        family: str = 'rbf',
    ) -> None:
        r"""Initialise the kernel.

        Args:
            lengthscale: :math:`\ell` in pixels (initial value when learnable).
            variance: :math:`s^2` (initial value when learnable).
            learnable: optimise the parameters with the network.
            family: ``rbf`` (the paper's) or a Matérn
                (:func:`~geosparse.gp.stationary`).

        Raises:
            ValueError: for non-positive values or an unknown family.
        """
        super().__init__()
        _check_family(family)
        self.family = family
        if lengthscale <= 0 or variance <= 0:
            raise ValueError(
                f'lengthscale={lengthscale} and variance={variance} must be > 0.'
            )
        raw = torch.tensor(
            [_inverse_softplus(lengthscale), _inverse_softplus(variance)]
        )
        if learnable:
            self.raw = nn.Parameter(raw)
        else:
            self.register_buffer('raw', raw)

    def params(
        self, context: Tensor | None = None, batch: int = 1
    ) -> tuple[Tensor, Tensor]:
        r""":math:`(\ell, s^2)` per image, each ``(batch,)``."""
        ell, var = F.softplus(self.raw).unbind()
        return ell.expand(batch), var.expand(batch)

    def forward(self, a: Tensor, b: Tensor, context: Tensor | None = None) -> Tensor:
        """``(B, N, M)`` covariances between ``(B, N, 2)`` and ``(B, M, 2)`` points."""
        ell, var = self.params(context, a.shape[0])
        return stationary(a, b, ell.to(a.dtype), var.to(a.dtype), self.family)


class ContextKernel(nn.Module):
    r"""A stationary kernel whose :math:`\ell` and :math:`s^2` are regressed from the image.

    A small head (two strided convolutions, global average pooling, a linear layer,
    softplus) maps each input image to its own :math:`(\ell, s^2)`, initialised
    near ``lengthscale`` and ``variance``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        in_channels: int,
        lengthscale: float = 3.0,
        variance: float = 1.0,
        width: int = 16,
        family: str = 'rbf',
    ) -> None:
        r"""Initialise the head.

        Args:
            in_channels: bands of the (normalised) input image.
            lengthscale: initial :math:`\ell` in pixels.
            variance: initial :math:`s^2`.
            width: channels of the head's convolutions.
            family: ``rbf`` (the paper's) or a Matérn
                (:func:`~geosparse.gp.stationary`).
        """
        super().__init__()
        _check_family(family)
        self.family = family
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 2),
        )
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            last.bias.copy_(
                torch.tensor(
                    [_inverse_softplus(lengthscale), _inverse_softplus(variance)]
                )
            )

    def params(
        self, context: Tensor | None = None, batch: int = 1
    ) -> tuple[Tensor, Tensor]:
        r""":math:`(\ell, s^2)` per image, each ``(B,)``, from ``context`` ``(B, C, H, W)``.

        Raises:
            ValueError: without ``context``.
        """
        if context is None:
            raise ValueError(
                'the context-aware kernel needs the input image (context).'
            )
        ell, var = F.softplus(self.head(context)).unbind(-1)
        return ell, var

    def forward(self, a: Tensor, b: Tensor, context: Tensor | None = None) -> Tensor:
        """``(B, N, M)`` covariances, each image with its own parameters."""
        ell, var = self.params(context, a.shape[0])
        return stationary(a, b, ell.to(a.dtype), var.to(a.dtype), self.family)
