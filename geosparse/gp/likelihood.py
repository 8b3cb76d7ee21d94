r"""The Neural Point Process loss: the GP's marginal likelihood of point labels.

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

As in gpytorch, the likelihood is built over two separate objects: the kernel
(:mod:`geosparse.gp.kernels`) and the noise (:class:`~geosparse.gp.noise.GaussianNoise`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .kernels import stable_cholesky
from .noise import GaussianNoise

__all__ = ['MarginalLikelihood', 'NPPLoss']


class MarginalLikelihood(nn.Module):
    """Negative GP log marginal likelihood of point labels around the network's output.

    .. versionadded:: 0.1
    """

    def __init__(self, kernel: nn.Module, noise: GaussianNoise | None = None) -> None:
        """Initialise the loss.

        Args:
            kernel: a kernel of :mod:`geosparse.gp.kernels` (its parameters, if any,
                are trained through this loss).
            noise: the observation noise (default: learnable, initial 0.1).
        """
        super().__init__()
        self.kernel = kernel
        self.noise = GaussianNoise() if noise is None else noise

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict: dict[str, Any], prefix: str, *args, **kwargs
    ) -> None:
        # Checkpoints before geosparse.gp kept the noise as ``raw_noise``.
        old = f'{prefix}raw_noise'
        if old in state_dict:
            state_dict[f'{prefix}noise.raw'] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        cov = (
            k * pair
            + eye * (self.noise.variance.to(dtype) * mask + (1 - mask))[:, :, None]
        )
        factor = stable_cholesky(cov)
        logdet = 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        alpha = torch.cholesky_solve(resid[..., None], factor)[..., 0]
        quad = (resid * alpha).sum(-1)
        nll = 0.5 * (logdet + quad + mask.sum(-1) * math.log(2 * math.pi))
        return (nll.sum() / n_valid).to(pred.dtype)


#: The Neural Point Process loss is the GP's negative log marginal likelihood.
NPPLoss = MarginalLikelihood
