r"""Naive baselines for learning from coarse labels (Malkin et al., ICLR 2019, Sec. 5).

* soft naive: every pixel of a block labelled :math:`z` is trained with
  cross-entropy against the soft target :math:`\\eta_{\\cdot,z}`:
  :math:`-\\sum_l \\eta_{l,z}\\log p_l`.
* hard naive: the same against the one-hot :math:`\\arg\\max_l \\eta_{l,z}`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


class SoftNaiveLoss(nn.Module):
    """Cross-entropy against the prior mean fractions of each pixel's coarse class."""

    eta: Tensor

    def __init__(self, eta: Tensor) -> None:
        """Initialise with the ``(Z, L)`` prior mean fractions."""
        super().__init__()
        self.register_buffer('eta', torch.as_tensor(eta, dtype=torch.float32))

    def forward(self, logits: Tensor, coarse: Tensor) -> Tensor:
        r"""Mean of :math:`-\\sum_l \\eta_{l,z_i}\\log p_{i,l}` over labelled pixels."""
        valid = _check(logits, coarse, self.eta)
        logp = F.log_softmax(logits.float(), dim=1).permute(0, 2, 3, 1)[valid]
        target = self.eta[coarse[valid]]
        return -(target * logp).sum(dim=1).mean()


class HardNaiveLoss(nn.Module):
    """Cross-entropy against the most likely fine class of each pixel's coarse class."""

    eta: Tensor
    target: Tensor

    def __init__(self, eta: Tensor) -> None:
        """Initialise with the ``(Z, L)`` prior mean fractions."""
        super().__init__()
        self.register_buffer('target', torch.as_tensor(eta).argmax(dim=1))
        self.register_buffer('eta', torch.as_tensor(eta, dtype=torch.float32))

    def forward(self, logits: Tensor, coarse: Tensor) -> Tensor:
        r"""Cross-entropy with target :math:`\\arg\\max_l \\eta_{l,z_i}`."""
        valid = _check(logits, coarse, self.eta)
        target = torch.where(valid, self.target[coarse.clamp(min=0)], -100)
        return F.cross_entropy(logits.float(), target, ignore_index=-100)
