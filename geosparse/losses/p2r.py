r"""Point-to-Region loss for point-supervised counting (Lin, Zhao and Chan, CVPR 2025).

The network outputs a logit map :math:`\hat y` on a grid of cells. Each annotated (or
pseudo-) point :math:`x_i` owns the cells nearer to it than to any other point (its
Voronoi region), truncated at ``radius`` cells. Inside a region, the single
*positive* cell is the one with the best trade-off of normalised distance and
predicted probability,

.. math::
    j^*_i = \arg\min_{j \in R_i} \; \frac{\lVert c_j - x_i \rVert}{r} - \sigma(\hat y_j),

and every other cell of the region is a negative; cells in no region (further than
``radius`` from every point) are negatives too, which gives the "nothing here" signal
that point-to-point matching lacks. The loss is binary cross-entropy averaged over all
cells, with positives weighted by ``pos_weight`` and each region weighted by its
point's confidence (1 for annotations, the teacher's confidence for pseudo-points in
semi-supervised training). Counting: the cells with :math:`\sigma(\hat y) > 0.5`, on a
logit map coarse enough that a cell holds at most one object (the paper's network
outputs a down-sampled map; :class:`~geosparse.trainers.PointMapTask` pools to a
``stride``); at finer strides a confident cell's neighbours pass 0.5 too, and
:func:`~geosparse.losses.peak_map` counts local maxima instead.

Points are matched to regions by a k-d tree (scipy), so the cost grows with the
number of cells, not with cells x points.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

__all__ = ['p2r_loss', 'p2r_regions', 'p2r_targets', 'peak_map']


def p2r_regions(
    shape: tuple[int, int], points: Tensor, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's P2R region: its nearest point within ``radius`` cells.

    .. versionadded:: 0.1

    Args:
        shape: ``(h, w)`` of the cell grid.
        points: ``(N, 2)`` (row, col) points in cell units (none: every cell is in
            no region).
        radius: truncation radius of the regions, in cells.

    Returns:
        ``(distance, owner)``, each flat over the ``h * w`` cells: the distance to
        the owning point and its index, or ``inf`` and -1 for a cell in no region.
    """
    h, w = shape
    if len(points) == 0:
        return np.full(h * w, np.inf), np.full(h * w, -1, dtype=np.int64)
    rr, cc = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing='ij')
    cells = np.stack([rr.ravel(), cc.ravel()], 1)
    pts = points.detach().cpu().double().numpy()
    dist, owner = cKDTree(pts).query(cells, distance_upper_bound=radius)
    return dist, np.where(np.isfinite(dist), owner, -1)


def p2r_targets(
    logits: Tensor,
    points: Tensor,
    radius: float = 8.0,
    confidence: Tensor | None = None,
    pos_weight: float = 2.0,
    background_weight: float | Tensor = 1.0,
) -> tuple[Tensor, Tensor]:
    r"""Targets and weights of the P2R loss for one ``(h, w)`` logit map.

    .. versionadded:: 0.1

    Args:
        logits: ``(h, w)`` logits.
        points: ``(N, 2)`` (row, col) points in cell units (cell centres at
            integer + 0.5); may be empty.
        radius: truncation radius of the regions, in cells.
        confidence: ``(N,)`` weight of each point's region (default 1).
        pos_weight: extra weight of the positives.
        background_weight: weight of the cells in no region: one number, or an
            ``(h, w)`` map (for pseudo-labels, the teacher's confidence that a cell
            is empty, :math:`1 - p^t_j`).

    Returns:
        ``(target, weight)``, each ``(h, w)``.

    Raises:
        ValueError: for a non-positive radius or mismatched shapes.
    """
    if radius <= 0:
        raise ValueError(f'radius={radius} must be > 0 (cells).')
    h, w = logits.shape
    target = torch.zeros(h * w, dtype=logits.dtype)
    if isinstance(background_weight, Tensor):
        if background_weight.shape != (h, w):
            raise ValueError(
                f'background_weight must be ({h}, {w}), got '
                f'{tuple(background_weight.shape)}.'
            )
        weight = background_weight.detach().reshape(-1).to(logits.dtype).cpu().clone()
    else:
        weight = torch.full((h * w,), float(background_weight), dtype=logits.dtype)
    if len(points) == 0:
        return target.reshape(h, w), weight.reshape(h, w)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'points must be (N, 2), got {tuple(points.shape)}.')
    conf = (
        torch.ones(len(points), dtype=logits.dtype)
        if confidence is None
        else confidence.to(logits.dtype)
    )
    if conf.shape != (len(points),):
        raise ValueError(
            f'confidence must be ({len(points)},), got {tuple(conf.shape)}.'
        )
    dist, owner = p2r_regions((h, w), points, radius)
    inside = owner >= 0
    owner_t = torch.from_numpy(np.where(inside, owner, 0))
    inside_t = torch.from_numpy(inside)
    prob = torch.sigmoid(logits.detach().reshape(-1))
    cost = torch.from_numpy(np.where(inside, dist, 0.0)).to(prob.dtype) / radius - prob
    cost = torch.where(inside_t, cost, torch.full_like(cost, torch.inf))
    best = torch.full((len(points),), torch.inf, dtype=cost.dtype)
    best = best.scatter_reduce(0, owner_t[inside_t], cost[inside_t], reduce='amin')
    positive = inside_t & (cost == best[owner_t])
    target[positive] = 1.0
    region_weight = conf[owner_t]
    weight = torch.where(inside_t, region_weight, weight)
    weight = torch.where(positive, weight * pos_weight, weight)
    return target.reshape(h, w), weight.reshape(h, w)


def p2r_loss(
    logits: Tensor,
    points: list[Tensor],
    radius: float = 8.0,
    confidence: list[Tensor] | None = None,
    pos_weight: float = 2.0,
    background_weight: float | list[Tensor] = 1.0,
    cell_weight: Tensor | None = None,
) -> Tensor:
    """P2R loss of a batch: weighted BCE over all cells of every image.

    .. versionadded:: 0.1

    Args:
        logits: ``(B, 1, h, w)`` or ``(B, h, w)`` logits.
        points: per image, ``(N_b, 2)`` points in cell units.
        radius: region radius in cells.
        confidence: per image, ``(N_b,)`` point confidences.
        pos_weight: extra weight of the positives.
        background_weight: weight of the cells in no region: one number, or per
            image an ``(h, w)`` map.
        cell_weight: ``(B, h, w)`` factor of every cell's weight, e.g. 0 where
            the imagery has no data (default: 1).

    Returns:
        Scalar loss (mean over cells).

    .. versionchanged:: 0.7
       ``cell_weight``.

    Raises:
        ValueError: if the number of point sets differs from the batch.
    """
    maps = logits[:, 0] if logits.ndim == 4 else logits
    if len(points) != len(maps):
        raise ValueError(f'{len(points)} point sets for a batch of {len(maps)}.')
    targets, weights = [], []
    for i, pts in enumerate(points):
        t, wt = p2r_targets(
            maps[i],
            pts,
            radius,
            None if confidence is None else confidence[i],
            pos_weight,
            background_weight
            if not isinstance(background_weight, list)
            else background_weight[i],
        )
        targets.append(t)
        weights.append(wt)
    target = torch.stack(targets).to(maps.device)
    weight = torch.stack(weights).to(maps.device)
    if cell_weight is not None:
        weight = weight * cell_weight.to(weight)
    return F.binary_cross_entropy_with_logits(maps, target, weight=weight)


def peak_map(prob: Tensor, threshold: float = 0.5, window: int = 3) -> Tensor:
    """Detections: local maxima of ``prob`` above ``threshold`` (same shape, bool).

    .. versionadded:: 0.1

    Args:
        prob: ``(..., H, W)`` probabilities.
        threshold: minimum probability of a detection.
        window: side of the local-maximum window (odd, in cells; 1: every cell
            above the threshold).

    Returns:
        True at each detection; its count per map is the predicted count.

    Raises:
        ValueError: for an even window.
    """
    if window % 2 == 0:
        raise ValueError(f'window={window} must be odd.')
    if window == 1:
        return prob > threshold
    shape = prob.shape
    flat = prob.reshape(-1, 1, *shape[-2:]).float()
    peak = F.max_pool2d(flat, window, stride=1, padding=window // 2)
    return ((flat >= peak) & (flat > threshold)).reshape(shape)
