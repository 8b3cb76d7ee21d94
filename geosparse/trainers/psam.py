r"""Point-specific activation maps (PSAM): where a point's supervision pushes the features.

Lin, Zhao and Chan (CVPR 2025) diagnose semi-supervised point counting with a
Jacobian-based map: for one annotated (or pseudo-) point, the gradient of the part
of the loss that this point supervises with respect to the network's feature map.
It shows which pixels a point's supervision moves, and whether the background (cells
that should hold nothing) still gets a "nothing here" gradient; with point-to-point
matching on pseudo-labels it does not, and the features are over-activated around
the objects.

Here, for a :class:`~geosparse.trainers.PointMapTask` and one window:

- :math:`F` is the input of the network's last convolution (the decoder's pixel
  features, ``(C, H, W)``), :math:`\hat y` the pooled logits and :math:`\ell_j`
  the weighted binary cross-entropy of cell :math:`j` under the P2R targets and
  weights (:func:`~geosparse.losses.p2r_targets`, with the points' confidences);
- the PSAM of point :math:`i` is

  .. math::
      A_i(u) = \Big\lVert \frac{\partial}{\partial F(u)} \sum_{j \in R_i} \ell_j
      \Big\rVert_2,

  over the cells :math:`R_i` of its region (its positive and its negatives), and
  the background map :math:`A_\emptyset` is the same over the cells in no region;
- with the true objects (``truth``), ``negative_on_objects`` is the share of the
  negatives' gradient in cells that hold an object;
- the *shares* split the total gradient :math:`\sum_u \lVert \partial L /
  \partial F(u) \rVert` between the positives, the regions' negatives and the
  background (each part's own gradient norm, summed over pixels, over the sum of
  the three).

``scheme='p2p'`` gives the same maps for the point-to-point supervision that P2R
replaces: only each point's matched cell carries its confidence, every other cell
is a negative of weight ``background_weight`` (the confidence is not propagated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import p2r_regions, p2r_targets

if TYPE_CHECKING:
    from .counting import PointMapTask

__all__ = ['PointActivation', 'point_activation_maps']


@dataclass
class PointActivation:
    """PSAMs of one window (:func:`point_activation_maps`).

    .. versionadded:: 0.1
    """

    #: ``(N, H, W)``: :math:`A_i`, one map per point, at the features' resolution.
    points: Tensor
    #: ``(H, W)``: :math:`A_\emptyset`, the gradient of the cells in no region.
    background: Tensor
    #: Shares of the gradient: ``positive``, ``region_negative``, ``background``.
    shares: dict[str, float]


def _last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError('point_activation_maps: the network has no Conv2d layer.')
    return convs[-1]


def point_activation_maps(
    task: PointMapTask,
    image: Tensor,
    points: Tensor,
    confidence: Tensor | None = None,
    scheme: Literal['p2r', 'p2p'] = 'p2r',
    background_weight: float | Tensor = 1.0,
    truth: Tensor | None = None,
) -> PointActivation:
    """PSAMs of a point-map task on one raw window (module doc).

    .. versionadded:: 0.1

    Args:
        task: the trained (or training) task; its network is put in eval mode for
            the call and restored after.
        image: ``(C, H, W)`` raw image.
        points: ``(N, 2)`` (row, col) points in window pixels; with none, every
            cell is background (a teacher that found nothing).
        confidence: ``(N,)`` point confidences (default 1: annotations).
        scheme: ``p2r`` (regions share the point's confidence) or ``p2p`` (only the
            matched cell does).
        background_weight: weight of the cells in no region (number or ``(h, w)``
            cell map).
        truth: ``(M, 2)`` true object positions (window pixels), when the points
            are pseudo-points: adds the share ``negative_on_objects``, the part of
            the negatives' gradient (region negatives and background) that lies in
            cells holding a true object, i.e. how hard the supervision pushes real
            objects towards "nothing here".

    Returns:
        The maps and shares.

    Raises:
        ValueError: for an unknown scheme or a network without a convolution.
    """
    hp = task.hparams
    stride = float(hp['stride'])
    radius = float(hp['radius']) / stride
    captured: list[Tensor] = []

    def keep(_: nn.Module, args: tuple[Tensor, ...]) -> None:
        args[0].retain_grad()
        captured.append(args[0])

    was_training = task.model.training
    task.model.eval()
    handle = _last_conv(task.model).register_forward_pre_hook(keep)
    try:
        with torch.enable_grad():
            x = task.normalize(image[None]).requires_grad_(True)
            logits = task.pool(task.model(x))[0, 0]
            cells = points.double() / stride
            target, weight = p2r_targets(
                logits, cells, radius, confidence, hp['pos_weight'], background_weight
            )
            shape = (logits.shape[0], logits.shape[1])
            _, owner = p2r_regions(shape, cells, radius)
            owner_t = torch.from_numpy(owner).reshape(logits.shape)
            positive = target > 0
            if scheme == 'p2p':
                # Only the matched cell keeps the point's weight; the rest of each
                # region becomes background.
                bg = weight.clone()
                bg[owner_t >= 0] = (
                    background_weight[owner_t >= 0]
                    if isinstance(background_weight, Tensor)
                    else float(background_weight)
                )
                weight = torch.where(positive, weight, bg)
                owner_t = torch.where(positive, owner_t, torch.full_like(owner_t, -1))
            elif scheme != 'p2r':
                raise ValueError(f"scheme={scheme!r}: use 'p2r' or 'p2p'.")
            loss = F.binary_cross_entropy_with_logits(
                logits, target.to(logits), weight=weight.to(logits), reduction='none'
            )
            feats = captured[0]
            parts = {
                'positive': positive,
                'region_negative': (owner_t >= 0) & ~positive,
                'background': owner_t < 0,
            }
            grads = {}
            for name, mask in parts.items():
                (g,) = torch.autograd.grad(
                    loss[mask].sum(), feats, retain_graph=True, allow_unused=True
                )
                grads[name] = (
                    torch.zeros_like(feats[0, 0]) if g is None else g[0].norm(dim=0)
                )
            maps = []
            for i in range(len(points)):
                mask = owner_t == i
                (g,) = torch.autograd.grad(
                    loss[mask].sum(), feats, retain_graph=True, allow_unused=True
                )
                maps.append(
                    torch.zeros_like(feats[0, 0]) if g is None else g[0].norm(dim=0)
                )
    finally:
        handle.remove()
        task.model.train(was_training)
    total = sum(float(g.sum()) for g in grads.values())
    shares = {
        k: float(g.sum()) / total if total > 0 else float(np.nan)
        for k, g in grads.items()
    }
    if truth is not None:
        negative = grads['region_negative'] + grads['background']
        h, w = negative.shape
        occupied = torch.zeros(logits.shape, dtype=torch.bool)
        if len(truth):
            rc = (truth.double() / stride).floor().long()
            rc[:, 0] = rc[:, 0].clamp(0, logits.shape[0] - 1)
            rc[:, 1] = rc[:, 1].clamp(0, logits.shape[1] - 1)
            occupied[rc[:, 0], rc[:, 1]] = True
        s = int(stride)
        pixels = occupied.repeat_interleave(s, 0).repeat_interleave(s, 1)[:h, :w]
        neg_total = float(negative.sum())
        shares['negative_on_objects'] = (
            float(negative[pixels].sum()) / neg_total if neg_total > 0 else 0.0
        )
    return PointActivation(
        points=torch.stack(maps).detach()
        if maps
        else torch.zeros((0, *grads['background'].shape)),
        background=grads['background'].detach(),
        shares=shares,
    )
