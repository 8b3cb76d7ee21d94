r"""Observation noise of a Gaussian process, kept apart from its kernel (as gpytorch does).

Labels are the process plus i.i.d. Gaussian noise, :math:`y = g(P) + \varepsilon`,
:math:`\varepsilon \sim \mathcal N(0, \sigma_0^2 I)`, with
:math:`\sigma_0^2 = \mathrm{softplus}(\theta_0)` so that it stays positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import inverse_softplus

__all__ = ['GaussianNoise']


class GaussianNoise(nn.Module):
    r"""I.i.d. noise variance :math:`\sigma_0^2`, static or learnable.

    .. versionadded:: 0.1
    """

    def __init__(self, noise: float = 0.1, learnable: bool = True) -> None:
        r"""Initialise the noise.

        Args:
            noise: :math:`\sigma_0^2` (initial value when learnable).
            learnable: optimise :math:`\sigma_0^2`.

        Raises:
            ValueError: for a non-positive noise.
        """
        super().__init__()
        if noise <= 0:
            raise ValueError(f'noise={noise} must be > 0.')
        raw = torch.tensor(inverse_softplus(noise))
        if learnable:
            self.raw = nn.Parameter(raw)
        else:
            self.register_buffer('raw', raw)

    @property
    def variance(self) -> Tensor:
        r""":math:`\sigma_0^2 = \mathrm{softplus}(\theta_0)`."""
        return F.softplus(self.raw)
