r"""The Neural Point Process loss: a Gaussian-process likelihood over point labels.

Shi et al., "Neural Point Processes for Pixel-wise Regression": the labels
:math:`y_i` at the points :math:`P_i` of image :math:`i` are a Gaussian process with
mean :math:`f_P(x_i)` (the network output at those pixels), kernel :math:`K_i` and
i.i.d. noise :math:`\sigma_0^2`. Training minimises the negative log-likelihood

.. math::
    \frac{1}{2} \sum_i \left[ \log\det(K_i + \sigma_0^2 I)
    + (y_i - f_P(x_i))^\top (K_i + \sigma_0^2 I)^{-1} (y_i - f_P(x_i)) \right].

Images carry different numbers of points, so a batch is padded: padded entries get
an identity row and column and a zero residual, which adds nothing to either term.
The sum is divided by the number of valid points (the paper sums; per point keeps
the loss on the scale of the MSE it replaces, whatever the batch). An image with
one point reduces to a Gaussian with variance :math:`k(x, x) + \sigma_0^2`; an image
with none adds nothing; a batch without any point is an error, not a zero loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import stable_cholesky

__all__ = ['NPPLoss']


class NPPLoss(nn.Module):
    """Negative GP log-likelihood of point labels around the network's output."""

    def __init__(
        self, kernel: nn.Module, noise: float = 0.1, learn_noise: bool = True
    ) -> None:
        r"""Initialise the loss.

        Args:
            kernel: a kernel of :mod:`geosparse.kernels` (its parameters, if any,
                are trained through this loss).
            noise: :math:`\sigma_0^2` (initial value when learnable).
            learn_noise: optimise :math:`\sigma_0^2` too.

        Raises:
            ValueError: for a non-positive noise.
        """
        super().__init__()
        if noise <= 0:
            raise ValueError(f'noise={noise} must be > 0.')
        self.kernel = kernel
        raw = torch.tensor(noise + math.log(-math.expm1(-noise)))
        if learn_noise:
            self.raw_noise = nn.Parameter(raw)
        else:
            self.register_buffer('raw_noise', raw)

    @property
    def noise(self) -> Tensor:
        r""":math:`\sigma_0^2 = \mathrm{softplus}(\theta_0)`."""
        return F.softplus(self.raw_noise)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        coords: Tensor,
        valid: Tensor,
        context: Tensor | None = None,
    ) -> Tensor:
        """Mean negative log-likelihood per valid point.

        Args:
            pred: ``(B, N)`` network output at the points.
            target: ``(B, N)`` labels.
            coords: ``(B, N, 2)`` point coordinates (pixels).
            valid: ``(B, N)`` bool, False for padding.
            context: ``(B, C, H, W)`` input images (context-aware kernels).

        Returns:
            Scalar loss.

        Raises:
            ValueError: if the batch holds no valid point, or labels are not finite.
        """
        n_valid = int(valid.sum())
        if n_valid == 0:
            raise ValueError(
                'the batch holds no labelled point; sample windows that contain '
                'points (geosparse.samplers) or drop empty batches.'
            )
        dtype = torch.float64  # log det and solves of near-singular kernels
        mask = valid.to(dtype)
        resid = (target.to(dtype) - pred.to(dtype)) * mask
        if not bool(torch.isfinite(resid).all()):
            raise ValueError('labels or predictions at the points are not finite.')
        k = self.kernel(coords.to(dtype), coords.to(dtype), context)
        pair = mask[:, :, None] * mask[:, None, :]
        eye = torch.eye(k.shape[-1], dtype=dtype, device=k.device)
        cov = k * pair + eye * (self.noise.to(dtype) * mask + (1 - mask))[:, :, None]
        factor = stable_cholesky(cov)
        logdet = 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        alpha = torch.cholesky_solve(resid[..., None], factor)[..., 0]
        quad = (resid * alpha).sum(-1)
        nll = 0.5 * (logdet + quad + mask.sum(-1) * math.log(2 * math.pi))
        return (nll.sum() / n_valid).to(pred.dtype)
