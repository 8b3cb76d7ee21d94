r"""Balancing the coarse classes of a batch in the losses that learn from coarse labels.

On a few training tiles one coarse class (an NLCD forest) covers most pixels of
every window, so even windows drawn inversely to coarse-class frequency (as Malkin
et al., ICLR 2019, sampled) leave the loss dominated by it, and the network learns
little about the rarer classes whose contrast with it tells what a fine class looks
like. With ``balance='batch'`` each coarse class present in a batch carries the same
total weight: an item :math:`i` (a block, or a pixel) of coarse class :math:`z_i` and
mass :math:`m_i` (its weight before balancing) gets

.. math:: \tilde m_i = m_i \Big/ \sum_{j:\,z_j = z_i} m_j .

This is our addition to the method, an inverse-frequency weighting computed from the
batch itself, so it needs no statistics of the training set.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ['CoarseBalance', 'balance_by_class']

#: How coarse classes are balanced (not at all, or equally within each batch).
CoarseBalance = Literal['none', 'batch']


def check_balance(balance: str) -> None:
    """Raise a clear error for an unknown ``balance``."""
    if balance not in ('none', 'batch'):
        raise ValueError(
            f"balance={balance!r}: choose 'none' (items weighted by their mass) or "
            "'batch' (every coarse class of a batch weighs the same)."
        )


def balance_by_class(mass: Tensor, coarse: Tensor, num_coarse: int) -> Tensor:
    r"""Weights :math:`m_i / \sum_{j: z_j = z_i} m_j` (see the module docstring).

    .. versionadded:: 0.1

    Args:
        mass: ``(N,)`` non-negative weight of each item before balancing.
        coarse: ``(N,)`` coarse class index of each item, in ``[0, num_coarse)``.
        num_coarse: number of coarse classes.

    Returns:
        ``(N,)`` weights; those of one coarse class sum to 1 (0 if its mass is 0).
    """
    total = torch.zeros(num_coarse, dtype=mass.dtype, device=mass.device)
    total = total.index_add(0, coarse, mass)
    return mass / total[coarse].clamp(min=torch.finfo(mass.dtype).tiny)
