r"""Scores of an instance map against the true one: point IoU, PQ, binary mIoU.

All scores come from one contingency table of (predicted id, true id) pixel
counts, built with :func:`numpy.unique` on the pairs, so a 1000 x 1000 map with a
thousand instances scores in a fraction of a second.

* ``instance_iou``: the mean over the labelled points of
  :math:`\mathrm{IoU}(\hat M_k, M_k)`, the predicted mask of point :math:`k`'s id
  against its own true mask (0 if the prediction lacks the id);
* ``pq``, ``sq``, ``rq``: panoptic quality of the things (Kirillov et al.,
  "Panoptic segmentation", CVPR 2019),
  :math:`\mathrm{PQ} = \sum_{(p, g) \in TP} \mathrm{IoU}(p, g) /
  (|TP| + |FP|/2 + |FN|/2) = \mathrm{SQ} \cdot \mathrm{RQ}`;
* ``miou``: mean IoU of the two classes background (0) and object (> 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ['instance_scores']


def _contingency(
    pred: np.ndarray, truth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (pred id, true id) pairs and their pixel counts."""
    pid, pinv = np.unique(pred.ravel(), return_inverse=True)
    tid, tinv = np.unique(truth.ravel(), return_inverse=True)
    code = pinv.astype(np.int64) * len(tid) + tinv
    uniq, counts = np.unique(code, return_counts=True)
    return pid[uniq // len(tid)], tid[uniq % len(tid)], counts


def _areas(labels: np.ndarray, counts: np.ndarray) -> dict[int, int]:
    ids, inv = np.unique(labels, return_inverse=True)
    sums = np.bincount(inv, weights=counts)
    return {int(i): int(s) for i, s in zip(ids, sums, strict=True)}


def instance_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    point_ids: np.ndarray | None = None,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    r"""Instance IoU at the points, panoptic quality and binary mIoU.

    **Instance IoU.** For each id :math:`k` in ``point_ids`` (default: the nonzero
    ids of ``truth``),

    .. math:: \mathrm{IoU}_k = \frac{|\{\hat y = k\} \cap \{y = k\}|}
       {|\{\hat y = k\} \cup \{y = k\}|}

    and ``instance_iou`` is their mean (an id absent from ``pred`` scores 0, an id
    absent from both scores 0 too; NaN without ids). Predicted ids are those of the
    points, so no matching is needed.

    **Panoptic quality** (Kirillov et al., CVPR 2019) of the things: each nonzero id
    of ``pred`` is a predicted segment, each nonzero id of ``truth`` a true one; a
    pair matches when :math:`\mathrm{IoU} >` ``iou_threshold`` (for the default 0.5
    matches are unique; below it pairs are matched greedily by decreasing IoU, each
    segment once). With TP the matches, FP the unmatched predicted segments and FN
    the unmatched true ones,

    .. math:: \mathrm{PQ} = \frac{\sum_{TP} \mathrm{IoU}}{|TP| + \tfrac12|FP| +
       \tfrac12|FN|}, \quad
       \mathrm{SQ} = \frac{\sum_{TP} \mathrm{IoU}}{|TP|}, \quad
       \mathrm{RQ} = \frac{|TP|}{|TP| + \tfrac12|FP| + \tfrac12|FN|}

    (PQ and RQ NaN when there are no segments at all, SQ 0 without matches).
    Segment areas count every pixel, the background's included (no void label).

    **Binary mIoU**: the mean of the IoUs of background (id 0) and object (id > 0)
    over those of the two classes present in truth or prediction.

    .. versionadded:: 0.1

    Args:
        pred: ``(H, W)`` int predicted instance map (0 background).
        truth: ``(H, W)`` int true instance map (0 background).
        point_ids: ids of the labelled points (default: the ids in ``truth``).
        iou_threshold: IoU above which a predicted and a true segment match.

    Returns:
        ``{"instance_iou", "pq", "sq", "rq", "miou"}`` floats and ``{"tp", "fp",
        "fn"}`` ints.
    """
    p = np.asarray(pred).astype(np.int64)
    t = np.asarray(truth).astype(np.int64)
    if p.shape != t.shape:
        raise ValueError(f'pred has shape {p.shape} but truth {t.shape}.')
    pl, tl, inter = _contingency(p, t)
    area_p = _areas(pl, inter)
    area_t = _areas(tl, inter)

    # Instance IoU at the points.
    if point_ids is None:
        ids = np.array(sorted(k for k in area_t if k != 0), dtype=np.int64)
    else:
        ids = np.asarray(point_ids).astype(np.int64).reshape(-1)
    same = pl == tl
    diag = dict(zip(pl[same].tolist(), inter[same].tolist(), strict=True))
    ious = []
    for k in ids.tolist():
        i = diag.get(k, 0)
        union = area_p.get(k, 0) + area_t.get(k, 0) - i
        ious.append(i / union if union > 0 else 0.0)
    instance_iou = float(np.mean(ious)) if ious else float('nan')

    # Panoptic quality of the things.
    things = (pl != 0) & (tl != 0)
    tpl, ttl, tin = pl[things], tl[things], inter[things]
    ap = np.array([area_p[k] for k in tpl.tolist()], dtype=np.float64)
    at = np.array([area_t[k] for k in ttl.tolist()], dtype=np.float64)
    iou = tin / (ap + at - tin)
    cand = np.nonzero(iou > iou_threshold)[0]
    cand = cand[np.argsort(-iou[cand], kind='stable')]
    used_p: set[int] = set()
    used_t: set[int] = set()
    matched = 0.0
    for j in cand.tolist():
        a, b = int(tpl[j]), int(ttl[j])
        if a in used_p or b in used_t:
            continue
        used_p.add(a)
        used_t.add(b)
        matched += float(iou[j])
    tp = len(used_p)
    fp = sum(1 for k in area_p if k != 0) - tp
    fn = sum(1 for k in area_t if k != 0) - tp
    denom = tp + 0.5 * fp + 0.5 * fn
    pq = matched / denom if denom > 0 else float('nan')
    rq = tp / denom if denom > 0 else float('nan')
    sq = matched / tp if tp > 0 else 0.0

    # Binary mIoU (background vs object).
    pf, tf = p > 0, t > 0
    class_ious = []
    for mp, mt in ((~pf, ~tf), (pf, tf)):
        both = int(np.count_nonzero(mp | mt))
        if both:
            class_ious.append(np.count_nonzero(mp & mt) / both)
    miou = float(np.mean(class_ious)) if class_ious else float('nan')
    return {
        'instance_iou': instance_iou,
        'pq': float(pq),
        'sq': float(sq),
        'rq': float(rq),
        'tp': int(tp),
        'fp': int(fp),
        'fn': int(fn),
        'miou': miou,
    }
