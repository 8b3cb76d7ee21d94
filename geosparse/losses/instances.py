r"""Losses that teach a pixel-to-instance distance from one point per object.

The points alone supervise the distance (ECCV 2024, "Point-Supervised Panoptic
Segmentation via Estimating Pseudo Labels from Learnable Distance"): at the
annotated point of instance :math:`i` its distance is the smallest, the other
queries' larger. Points say nothing about the pixels between them, so a second term
carries the labels along the image: neighbouring pixels of similar colour should go
to the same query (the pairwise term of BoxInst, Tian et al., CVPR 2021, used there
for the same reason: box labels say nothing about the pixels inside). The paper does
not say what else its loss holds; this pairwise term is our choice.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = [
    'affinity_loss',
    'colour_similarity',
    'foreground_loss',
    'point_query_loss',
]


def _at_points(maps: Tensor, points: Tensor) -> Tensor:
    """``(B, Q, N)`` values of ``(B, Q, H, W)`` maps at the pixels of ``(B, N, 2)`` points."""
    b, q, h, w = maps.shape
    rows = points[..., 0].floor().long().clamp(0, h - 1)
    cols = points[..., 1].floor().long().clamp(0, w - 1)
    index = (rows * w + cols)[:, None, :].expand(b, q, -1)
    return maps.flatten(2).gather(2, index)


def point_query_loss(
    distances: Tensor,
    points: Tensor,
    valid: Tensor,
    stuff: Tensor,
    query_valid: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    r"""Cross-entropy over queries at every labelled point.

    With :math:`\ell_i(p) = -D_i(p) / \tau` the logits of the queries at pixel
    :math:`p`, an object point :math:`p_j` (query :math:`j`) and a background point
    :math:`p_b`:

    .. math::

       L = -\frac{1}{|P|}\Big(\sum_j \log \mathrm{softmax}_i\,\ell_i(p_j)\big|_{i=j}
           + \sum_b \log \sum_{s \in \mathrm{stuff}} \mathrm{softmax}_i\,\ell_i(p_b)\big|_{i=s}\Big).

    .. versionadded:: 0.1

    Args:
        distances: ``(B, Q, H, W)``, queries ``0..N-1`` the points in order.
        points: ``(B, N, 2)`` (row, col).
        valid: ``(B, N)`` real points.
        stuff: ``(B, Q)`` stuff queries (background points and learnable ones).
        query_valid: ``(B, Q)`` real queries.
        temperature: :math:`\tau`.

    Returns:
        The mean over labelled points (0 with a gradient if there are none).
    """
    n = points.shape[1]
    # at the points first, then the logits: the same values, without a whole-map op
    at = (-_at_points(distances, points) / temperature).masked_fill(
        ~query_valid[..., None], float('-inf')
    )  # (B, Q, N)
    logp = torch.log_softmax(at, 1)
    own = torch.diagonal(logp[:, :n, :], dim1=1, dim2=2)  # (B, N): query j at point j
    stuff_logp = torch.logsumexp(
        logp.masked_fill(~stuff[..., None], float('-inf')), 1
    )  # (B, N)
    background = stuff[:, :n]
    per_point = torch.where(background, stuff_logp, own)
    if not bool(valid.any()):
        return distances.sum() * 0.0
    return -per_point[valid].mean()


def colour_similarity(
    image: Tensor, dilation: int = 2, theta: float = 0.5
) -> list[tuple[tuple[int, int], Tensor]]:
    r"""Similarity of each pixel to its neighbours at ``dilation``, four directions.

    :math:`S_{pq} = \exp(-\lVert \hat x_p - \hat x_q \rVert / \theta)` on the
    standardised image (BoxInst uses LAB colour and :math:`\theta = 2`; a
    standardised image has no fixed colour space, so :math:`\theta` is in standard
    deviations). The four offsets right, down, down-right and down-left cover the
    8-neighbourhood (the relation is symmetric).

    .. versionadded:: 0.1

    Returns:
        ``((dr, dc), S)`` with ``S`` ``(B, H - |dr|, W - |dc|)`` between pixel
        ``(r, c)`` and ``(r + dr, c + dc)``, cropped to the pairs inside the window.
    """
    out = []
    for dr, dc in (
        (0, dilation),
        (dilation, 0),
        (dilation, dilation),
        (dilation, -dilation),
    ):
        a, b = _pair_slices(image, dr, dc)
        # sqrt of the summed squares, not Tensor.norm(dim=1): the same value, but
        # norm's strided reduction over bands is ~100x slower on CPU.
        dist = (a - b).square().sum(1).sqrt()
        out.append(((dr, dc), torch.exp(-dist / theta)))
    return out


def _pair_slices(x: Tensor, dr: int, dc: int) -> tuple[Tensor, Tensor]:
    """The two ``(..., H-|dr|, W-|dc|)`` views of ``x`` whose pixels are ``(dr, dc)`` apart."""
    h, w = x.shape[-2:]
    c0, c1 = (0, w - dc) if dc >= 0 else (-dc, w)
    return (
        x[..., : h - dr, c0:c1],
        x[..., dr:, c0 + dc : c1 + dc],
    )


class _PairAgreement(torch.autograd.Function):
    r""":math:`\sum_i A_{ip} A_{iq}` for the neighbour pairs at each offset.

    Autograd's own backward of the two shifted views builds a zero map the size of
    ``A`` for every view (eight a call, four offsets); this one writes all of them
    into a single map, :math:`\partial L / \partial A_{ip} \mathrel{+}= g_{pq}
    A_{iq}` for each pair (about half the time of the loss on CPU).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, probs: Tensor, *offsets: tuple[int, int]
    ) -> tuple[Tensor, ...]:
        ctx.save_for_backward(probs)
        ctx.offsets = offsets  # type: ignore[attr-defined]
        pairs = (_pair_slices(probs, dr, dc) for dr, dc in offsets)
        return tuple((a * b).sum(1) for a, b in pairs)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        (probs,) = ctx.saved_tensors
        out = torch.zeros_like(probs)
        for (dr, dc), g in zip(ctx.offsets, grads, strict=True):
            if g is None:
                continue
            a, b = _pair_slices(probs, dr, dc)
            ga, gb = _pair_slices(out, dr, dc)
            ga.addcmul_(b, g[:, None])
            gb.addcmul_(a, g[:, None])
        return (out, *([None] * len(ctx.offsets)))


def affinity_loss(
    distances: Tensor,
    similarity: list[tuple[tuple[int, int], Tensor]],
    query_valid: Tensor,
    threshold: float = 0.3,
    temperature: float = 1.0,
    pixel_valid: Tensor | None = None,
) -> Tensor:
    r"""Neighbours of similar colour go to the same query (BoxInst's pairwise term).

    With :math:`A_{ip} = \mathrm{softmax}_i(-D_i(p) / \tau)` and the probability
    that two pixels take the same query :math:`P_{pq} = \sum_i A_{ip} A_{iq}`:

    .. math::

       L = -\frac{1}{|E|} \sum_{(p, q) \in E} \log P_{pq},
       \qquad E = \{(p, q) : S_{pq} \ge \kappa\}

    over the neighbour pairs of :func:`colour_similarity` whose similarity reaches
    ``threshold`` :math:`\kappa` (:math:`P_{pq}` floored at :math:`10^{-6}`).

    .. versionadded:: 0.1

    Args:
        distances: ``(B, Q, H, W)``.
        similarity: :func:`colour_similarity` of the window.
        query_valid: ``(B, Q)``.
        threshold: :math:`\kappa`.
        temperature: :math:`\tau`.
        pixel_valid: ``(B, H, W)`` pixels that may take part (e.g. finite ones).

    Returns:
        The mean over the pairs (0 with a gradient if there are none).
    """
    logits = (-distances / temperature).masked_fill(
        ~query_valid[..., None, None], float('-inf')
    )
    probs = torch.softmax(logits, 1)
    total = distances.new_zeros(())
    count = 0
    agreement = _PairAgreement.apply(probs, *(offset for offset, _ in similarity))
    for ((dr, dc), sim), pairs in zip(similarity, agreement, strict=True):
        same = pairs.clamp_min(1e-6).log()
        edges = sim >= threshold
        if pixel_valid is not None:
            pa, pb = _pair_slices(pixel_valid, dr, dc)
            edges = edges & pa & pb
        total = total - same[edges].sum()
        count += int(edges.sum())
    if count == 0:
        return distances.sum() * 0.0
    return total / count


def foreground_loss(
    logits: Tensor,
    points: Tensor,
    valid: Tensor,
    background: Tensor,
    similarity: list[tuple[tuple[int, int], Tensor]],
    threshold: float = 0.3,
    pixel_valid: Tensor | None = None,
    pairwise_weight: float = 1.0,
) -> Tensor:
    r"""Background/object logits taught by the points (and the pairwise colour term).

    .. math::

       L = -\frac{1}{|P|} \sum_{p \in P} \log \mathrm{softmax}(z(p))_{y_p}
           + \beta\, L_\mathrm{pair}

    the cross-entropy at the labelled points (:math:`y_p = 1` at an object's point,
    0 at a background point) plus :func:`affinity_loss` on the two classes' logits
    as negative distances (BoxInst's term: neighbours of similar colour take the
    same class), weight :math:`\beta` (``pairwise_weight``).

    .. versionadded:: 0.1

    Args:
        logits: ``(B, 2, H, W)`` background and object logits :math:`z`.
        points: ``(B, N, 2)`` (row, col), centres at +0.5.
        valid: ``(B, N)`` real points.
        background: ``(B, N)`` background points.
        similarity: :func:`colour_similarity` of the window.
        threshold: :math:`\kappa` of :func:`affinity_loss`.
        pixel_valid: ``(B, H, W)`` pixels that may take part in pairs.
        pairwise_weight: :math:`\beta`.

    Returns:
        The loss (its point term 0 with a gradient when a batch has no point).
    """
    b, _, h, w = logits.shape
    rows = points[..., 0].floor().long().clamp(0, h - 1)
    cols = points[..., 1].floor().long().clamp(0, w - 1)
    index = torch.arange(b, device=logits.device)[:, None].expand_as(rows)
    at = logits.permute(0, 2, 3, 1)[index, rows, cols]  # (B, N, 2)
    if bool(valid.any()):
        point = F.cross_entropy(at[valid], (~background).long()[valid])
    else:
        point = logits.sum() * 0.0
    both = torch.ones(b, 2, dtype=torch.bool, device=logits.device)
    pair = affinity_loss(-logits, similarity, both, threshold, 1.0, pixel_valid)
    return point + pairwise_weight * pair
