r"""Naive baselines for learning from coarse labels (Malkin et al., ICLR 2019, Sec. 5).

* soft naive: every pixel of a block labelled :math:`z` is trained with
  cross-entropy against the soft target :math:`\eta_{\cdot,z}`:
  :math:`-\sum_l \eta_{l,z}\log p_l`.
* hard naive: the same against the one-hot :math:`\arg\max_l \eta_{l,z}`.

Pixels are averaged; with ``balance='batch'`` each coarse class of a batch weighs the
same (:mod:`geosparse.losses.balance`), as in the lsr loss, so that the baselines are
compared with it on equal terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .balance import CoarseBalance, balance_by_class, check_balance

__all__ = ['HardNaiveLoss', 'SoftNaiveLoss']


def _check(logits: Tensor, coarse: Tensor, eta: Tensor) -> Tensor:
    if logits.shape[1] != eta.shape[1]:
        raise ValueError(
            f'the network predicts {logits.shape[1]} classes but the joint '
            f'distribution has {eta.shape[1]} fine classes.'
        )
    valid = coarse >= 0
    if not bool(valid.any()):
        raise ValueError('every pixel of the batch is coarse nodata: nothing to learn.')
    return valid


def _mean(loss: Tensor, coarse: Tensor, num_coarse: int, balance: str) -> Tensor:
    """Mean of per-pixel ``loss`` over pixels of ``coarse`` classes, or class-balanced."""
    if balance == 'batch':
        w = balance_by_class(torch.ones_like(loss), coarse, num_coarse)
        return (loss * w).sum() / w.sum()
    return loss.mean()


class SoftNaiveLoss(nn.Module):
    """Cross-entropy against the prior mean fractions of each pixel's coarse class.

    .. versionadded:: 0.1
    """

    eta: Tensor

    def __init__(self, eta: Tensor, balance: CoarseBalance = 'none') -> None:
        """Initialise with the ``(Z, L)`` prior mean fractions and the balancing."""
        super().__init__()
        check_balance(balance)
        self.balance = balance
        self.register_buffer('eta', torch.as_tensor(eta, dtype=torch.float32))

    def forward(self, logits: Tensor, coarse: Tensor) -> Tensor:
        r"""Mean of :math:`-\sum_l \eta_{l,z_i}\log p_{i,l}` over labelled pixels."""
        valid = _check(logits, coarse, self.eta)
        logp = F.log_softmax(logits.float(), dim=1).permute(0, 2, 3, 1)[valid]
        z = coarse[valid]
        loss = -(self.eta[z] * logp).sum(dim=1)
        return _mean(loss, z, self.eta.shape[0], self.balance)


class HardNaiveLoss(nn.Module):
    """Cross-entropy against the most likely fine class of each pixel's coarse class.

    .. versionadded:: 0.1
    """

    eta: Tensor
    target: Tensor

    def __init__(self, eta: Tensor, balance: CoarseBalance = 'none') -> None:
        """Initialise with the ``(Z, L)`` prior mean fractions and the balancing."""
        super().__init__()
        check_balance(balance)
        self.balance = balance
        self.register_buffer('target', torch.as_tensor(eta).argmax(dim=1))
        self.register_buffer('eta', torch.as_tensor(eta, dtype=torch.float32))

    def forward(self, logits: Tensor, coarse: Tensor) -> Tensor:
        r"""Cross-entropy with target :math:`\arg\max_l \eta_{l,z_i}`."""
        valid = _check(logits, coarse, self.eta)
        z = coarse[valid]
        logp = F.log_softmax(logits.float(), dim=1).permute(0, 2, 3, 1)[valid]
        loss = -logp.gather(1, self.target[z][:, None])[:, 0]
        return _mean(loss, z, self.eta.shape[0], self.balance)
