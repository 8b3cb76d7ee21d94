"""Label counting and statistics matching (label super-resolution).

Reference: K. Malkin, C. Robinson, L. Hou, R. Soobitsky, J. Czawlytko, D. Samaras,
J. Saltz, L. Joppa, N. Jojic, "Label Super-Resolution Networks", ICLR 2019.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .balance import CoarseBalance, balance_by_class, check_balance

__all__ = ['BlockStatistics', 'StatisticsMatchingLoss', 'label_counting']

LOG_2PI = math.log(2 * math.pi)


class BlockStatistics:
    r"""Output of :func:`label_counting`.

    .. versionadded:: 0.1

    Attributes:
        mean: ``(N, L)`` mean predicted fraction :math:`\mu_l` per block.
        var: ``(N, L)`` variance :math:`\sigma^2_l` per block.
        count: ``(N,)`` number of valid pixels per block.
        coarse: ``(N,)`` coarse class index of each block.
    """

    def __init__(self, mean: Tensor, var: Tensor, count: Tensor, coarse: Tensor):
        self.mean, self.var, self.count, self.coarse = mean, var, count, coarse


def label_counting(probs: Tensor, blocks: Tensor, coarse: Tensor) -> BlockStatistics:
    r"""Summarise per-pixel class probabilities over blocks (the label counting layer).

    With :math:`p_{i,l}` the softmax output at pixel :math:`i` of block :math:`B`,
    each pixel's label is an independent Bernoulli(:math:`p_{i,l}`), so the fraction
    of class :math:`l` in the block is approximately Gaussian with

    .. math::
        \mu_l = \frac{1}{|B|}\sum_{i\in B} p_{i,l}, \qquad
        \sigma^2_l = \frac{1}{|B|^2}\sum_{i\in B} p_{i,l}(1-p_{i,l})

    (Malkin et al., ICLR 2019, Eq. 4-5).

    .. versionadded:: 0.1

    Args:
        probs: ``(B, L, H, W)`` class probabilities.
        blocks: ``(B, H, W)`` integer block id per pixel, unique within a sample;
            negative values mark pixels outside every block (nodata).
        coarse: ``(B, H, W)`` coarse class index per pixel (constant within a block).

    Returns:
        The statistics of every non-empty block in the batch.
    """
    b, n_cls, h, w = probs.shape
    blocks = blocks.long()
    valid = blocks >= 0
    span = int(blocks.max().item()) + 1 if bool(valid.any()) else 0
    # Slot `span` of each sample collects the pixels outside every block.
    ids = torch.where(valid, blocks, torch.full_like(blocks, span)).view(b, h * w)
    p = probs.reshape(b, n_cls, h * w)
    idx = ids.unsqueeze(1).expand(b, n_cls, h * w)
    s1 = probs.new_zeros(b, n_cls, span + 1).scatter_add_(2, idx, p)
    s2 = probs.new_zeros(b, n_cls, span + 1).scatter_add_(2, idx, p * (1 - p))
    count = probs.new_zeros(b, span + 1).scatter_add_(
        1, ids, probs.new_ones(()).expand(b, h * w)
    )
    z = torch.zeros(b, span + 1, dtype=torch.long, device=probs.device)
    z.scatter_(1, ids, coarse.reshape(b, h * w).long())
    count = count[:, :span].reshape(-1)
    keep = count > 0
    s1 = s1[:, :, :span].permute(0, 2, 1).reshape(-1, n_cls)[keep]
    s2 = s2[:, :, :span].permute(0, 2, 1).reshape(-1, n_cls)[keep]
    z = z[:, :span].reshape(-1)[keep]
    count = count[keep]
    mean = s1 / count[:, None]
    var = s2 / count[:, None] ** 2
    return BlockStatistics(mean, var, count, z)


class StatisticsMatchingLoss(nn.Module):
    r"""Statistics matching loss between block statistics and the joint distribution.

    For a block with coarse class :math:`z` and fine class :math:`l`, with the
    label-counting statistics :math:`(\mu_l, \sigma^2_l)` and the prior
    :math:`(\eta_{l,z}, \rho_{l,z})`:

    * ``gaussian`` (Eq. 7 of Malkin et al.): the negative log-likelihood of
      :math:`\eta` under :math:`\mathcal{N}(\mu, \sigma^2 + \rho^2)` in the form the
      paper optimises,
      :math:`\tfrac12 (\mu_l-\eta_{l,z})^2/(\sigma^2_l+\rho^2_{l,z})
      + \tfrac12\log 2\pi(\sigma^2_l + \epsilon)`.
    * ``interval`` (the authors' released code): the squared distance from
      :math:`\mu_l` to the interval :math:`[\eta-\rho, \eta+\rho]`,
      :math:`\tfrac12\,\mathrm{relu}(|\mu_l-\eta_{l,z}|-\rho_{l,z})^2
      /(\sigma^2_l+\rho^2_{l,z}) + \tfrac12\log 2\pi(\sigma^2_l+\epsilon)`.
    * ``kl``: :math:`\mathrm{KL}(\mathcal{N}(\mu_l, \sigma^2_l+\epsilon)\,\|\,
      \mathcal{N}(\eta_{l,z}, \rho^2_{l,z}))`, an ablation that asks the predicted
      block distribution to match the prior's spread too.

    :math:`\epsilon` (``var_floor``) bounds the log-variance term. The paper writes
    :math:`\epsilon = 0`; then, with blocks of hundreds of pixels, :math:`\sigma^2`
    is tiny and :math:`\log\sigma^2` dominates, rewarding confidence whatever the
    class. The authors' code uses :math:`\epsilon = 0.03`, the default here
    (``var_floor_scale='block'``). Since :math:`\sigma^2_l \le 1/(4|B|)`, that floor
    switches the confidence term off for blocks of more than a few pixels: the loss
    then only matches block means. With ``var_floor_scale='pixel'`` the floor is
    :math:`\epsilon/|B|`, i.e. it bounds the mean per-pixel Bernoulli variance
    :math:`s_l = |B|\sigma^2_l = \frac{1}{|B|}\sum_i p_{i,l}(1-p_{i,l})`:
    :math:`\log(\sigma^2_l + \epsilon/|B|) = \log(s_l + \epsilon) - \log|B|`,
    so the term pushes towards confident pixels with the same strength (relative
    to the data term) in blocks of any size, and stays bounded below.

    Blocks are combined as :math:`\sum_b w_{z_b} |B_b|^a \sum_l \ell_{b,l} /
    \sum_b w_{z_b} |B_b|^a`: with :math:`a = 1` (``size_power``) weighted by size
    as in the authors' code, and by an optional per-coarse-class weight :math:`w_z`.
    With ``balance='batch'`` the size weights are first divided by their sum over
    the blocks of the same coarse class in the batch, so every coarse class present
    weighs :math:`w_z` (:mod:`geosparse.losses.balance`; our addition).
    With region blocks (all pixels of one coarse class in a window), :math:`a = 1`
    treats a region as that many independent coarse pixels, :math:`a = 0` as one
    observation; the truth, with spatially correlated coarse pixels, is between.

    .. versionadded:: 0.1
    """

    eta: Tensor
    rho: Tensor
    class_weights: Tensor

    def __init__(
        self,
        eta: Tensor,
        rho: Tensor,
        variant: Literal['gaussian', 'interval', 'kl'] = 'gaussian',
        var_floor: float = 0.03,
        class_weights: Tensor | None = None,
        size_power: float = 1.0,
        var_floor_scale: Literal['block', 'pixel'] = 'block',
        balance: CoarseBalance = 'none',
    ) -> None:
        r"""Initialise the loss.

        Args:
            eta: ``(Z, L)`` prior mean fractions.
            rho: ``(Z, L)`` prior standard deviations.
            variant: ``gaussian``, ``interval`` or ``kl`` (see class docstring).
            var_floor: :math:`\epsilon` added to :math:`\sigma^2` inside the log.
            class_weights: optional ``(Z,)`` weight per coarse class.
            size_power: exponent :math:`a` of the block size in the block weight
                :math:`w_{z_b}|B_b|^a` (1: by size, as the authors' code; 0: every
                block counts the same, as Eq. 7 summed over blocks).
            var_floor_scale: ``block`` adds :math:`\epsilon` to :math:`\sigma^2`
                (the authors' code); ``pixel`` adds :math:`\epsilon/|B|`, a floor on
                the mean per-pixel variance (see the class docstring).
            balance: ``none``, or ``batch`` to give every coarse class of a batch
                the same total weight (:mod:`geosparse.losses.balance`).
        """
        super().__init__()
        check_balance(balance)
        self.balance = balance
        if variant not in ('gaussian', 'interval', 'kl'):
            raise ValueError(f'variant={variant!r}: choose gaussian, interval or kl.')
        if var_floor < 0:
            raise ValueError(f'var_floor={var_floor} must be >= 0.')
        if var_floor_scale not in ('block', 'pixel'):
            raise ValueError(
                f'var_floor_scale={var_floor_scale!r}: choose block or pixel.'
            )
        self.var_floor_scale = var_floor_scale
        self.variant = variant
        self.var_floor = float(var_floor)
        self.size_power = float(size_power)
        self.register_buffer('eta', torch.as_tensor(eta, dtype=torch.float32))
        self.register_buffer('rho', torch.as_tensor(rho, dtype=torch.float32))
        w = torch.ones(self.eta.shape[0]) if class_weights is None else class_weights
        self.register_buffer('class_weights', torch.as_tensor(w, dtype=torch.float32))

    def block_loss(self, stats: BlockStatistics) -> Tensor:
        r"""Per-block, per-class loss :math:`\ell_{b,l}`, shape ``(N, L)``."""
        eta = self.eta[stats.coarse].to(stats.mean.dtype)
        rho2 = self.rho[stats.coarse].to(stats.mean.dtype) ** 2
        mu, var = stats.mean, stats.var
        floor: float | Tensor = self.var_floor
        if self.var_floor_scale == 'pixel':
            floor = self.var_floor / stats.count[:, None].to(var.dtype)
        var_b = var + floor
        if self.variant == 'kl':
            return 0.5 * (
                torch.log(rho2)
                - torch.log(var_b)
                + (var_b + (mu - eta) ** 2) / rho2
                - 1
            )
        diff = mu - eta
        if self.variant == 'interval':
            diff = F.relu(diff.abs() - rho2.sqrt())
        return 0.5 * diff**2 / (var + rho2) + 0.5 * (LOG_2PI + torch.log(var_b))

    def forward(
        self, logits: Tensor, coarse: Tensor, blocks: Tensor | None = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            logits: ``(B, L, H, W)`` network output.
            coarse: ``(B, H, W)`` coarse class index per pixel, ``-1`` for nodata.
            blocks: ``(B, H, W)`` block id per pixel (e.g. the coarse pixel each fine
                pixel lies in), ``-1`` for nodata. Without it, all pixels of one
                coarse class within a sample form one block (the authors' code, for
                coarse labels already resampled onto the fine grid).

        Returns:
            Scalar loss.

        Raises:
            ValueError: if no pixel of the batch carries a coarse label, or the
                shapes disagree.
        """
        if logits.shape[1] != self.eta.shape[1]:
            raise ValueError(
                f'the network predicts {logits.shape[1]} classes but the joint '
                f'distribution has {self.eta.shape[1]} fine classes.'
            )
        if coarse.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f'coarse labels {tuple(coarse.shape)} do not match the logits '
                f'{tuple(logits.shape)}.'
            )
        valid = coarse >= 0
        if not bool(valid.any()):
            raise ValueError(
                'every pixel of the batch is coarse nodata: the statistics matching '
                'loss is undefined (skip such samples).'
            )
        if blocks is None:
            blocks = coarse
        blocks = torch.where(valid, blocks.long(), torch.full_like(blocks.long(), -1))
        probs = logits.float().softmax(dim=1)
        stats = label_counting(probs, blocks, coarse.clamp(min=0))
        per_block = self.block_loss(stats).sum(dim=1)
        weight = stats.count.to(per_block.dtype) ** self.size_power
        if self.balance == 'batch':
            weight = balance_by_class(weight, stats.coarse, self.eta.shape[0])
        weight = weight * self.class_weights[stats.coarse]
        return (per_block * weight).sum() / weight.sum().clamp(min=1e-12)
