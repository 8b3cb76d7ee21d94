r"""Land-cover metrics (accuracy, IoU per class, mIoU, a coarse subset); count bias and coverage.

All scores come from one confusion matrix :math:`C` (rows truth, columns
prediction): accuracy :math:`\sum_l C_{ll} / \sum C`, IoU
:math:`C_{ll} / (\sum_k C_{lk} + \sum_k C_{kl} - C_{ll})`, and mIoU the mean IoU over
the classes *present in the truth* (as in Malkin et al.). The same scores restricted
to pixels whose coarse label is in a chosen set (default: NLCD developed, 21-24) are
reported with the prefix ``dev_``.

:class:`CountCoverage` scores the standard deviation of predicted counts: the share
of windows whose true count lies within one and two standard deviations of the
prediction. :class:`CountBias` is the mean signed error of the counts, which the MAE
hides: whether a model over- or under-counts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ['CountBias', 'CountCoverage', 'LandCoverMetrics', 'scores_from_confusion']


def scores_from_confusion(cm: Tensor, names: list[str] | None = None) -> dict[str, Any]:
    """Accuracy, IoU per class and mIoU over the classes present in the truth.

    .. versionadded:: 0.1

    Args:
        cm: ``(L, L)`` confusion matrix, rows truth, columns prediction.
        names: class names (default: indices).

    Returns:
        ``{"acc": float, "miou": float, "iou": {name: float}}``; IoU of a class absent
        from both truth and prediction is omitted; an empty matrix gives NaNs.
    """
    cm = cm.double()
    names = names or [str(i) for i in range(cm.shape[0])]
    total = cm.sum()
    tp = cm.diag()
    truth = cm.sum(1)
    pred = cm.sum(0)
    union = truth + pred - tp
    iou = {names[i]: float(tp[i] / union[i]) for i in range(len(names)) if union[i] > 0}
    present = truth > 0
    acc = float(tp.sum() / total) if total > 0 else float('nan')
    miou = (
        float((tp[present] / union[present]).mean()) if present.any() else float('nan')
    )
    return {'acc': acc, 'miou': miou, 'iou': iou}


class LandCoverMetrics(Metric):
    """Confusion matrices over all pixels and over a subset of coarse classes.

    .. versionadded:: 0.1
    """

    full_state_update = False
    cm: Tensor
    cm_sub: Tensor

    def __init__(self, num_classes: int, names: list[str] | None = None) -> None:
        """Initialise.

        Args:
            num_classes: number of fine classes.
            names: class names.
        """
        super().__init__()
        self.num_classes = num_classes
        self.names = names or [str(i) for i in range(num_classes)]
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state('cm', default=zeros.clone(), dist_reduce_fx='sum')
        self.add_state('cm_sub', default=zeros.clone(), dist_reduce_fx='sum')

    def update(
        self, pred: Tensor, target: Tensor, subset: Tensor | None = None
    ) -> None:
        """Accumulate.

        Args:
            pred: predicted class index per pixel.
            target: true class index per pixel, negative for nodata.
            subset: boolean mask of pixels in the coarse subset.
        """
        valid = target >= 0
        n = self.num_classes
        idx = target[valid] * n + pred[valid]
        self.cm += torch.bincount(idx, minlength=n * n).reshape(n, n)
        if subset is not None:
            sel = valid & subset
            idx = target[sel] * n + pred[sel]
            self.cm_sub += torch.bincount(idx, minlength=n * n).reshape(n, n)

    def compute(self) -> dict[str, Any]:
        """Scores over all pixels and (``dev_`` prefix) the coarse subset."""
        out = scores_from_confusion(self.cm, self.names)
        sub = scores_from_confusion(self.cm_sub, self.names)
        out['dev_acc'], out['dev_miou'], out['dev_iou'] = (
            sub['acc'],
            sub['miou'],
            sub['iou'],
        )
        return out


class CountBias(Metric):
    r"""Mean signed count error over windows, :math:`\frac{1}{W}\sum_w (\hat n_w - n_w)`.

    Positive when the model counts too many objects, negative when too few; its
    absolute value is at most the count MAE.

    .. versionadded:: 0.2
    """

    full_state_update = False
    error: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        """Initialise the sums (``kwargs`` go to :class:`~torchmetrics.Metric`)."""
        super().__init__(**kwargs)
        self.add_state('error', torch.tensor(0.0), dist_reduce_fx='sum')
        self.add_state('total', torch.tensor(0.0), dist_reduce_fx='sum')

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add windows: predicted and true counts, each ``(B,)``."""
        self.error += (preds.float() - target.float()).sum()
        self.total += preds.numel()

    def compute(self) -> Tensor:
        """The mean signed error (NaN before any update)."""
        return self.error / self.total


class CountCoverage(Metric):
    r"""Share of windows whose true count :math:`n` lies within 1 and 2 sd of the prediction.

    Within :math:`k` sd: :math:`|\hat n - n| \le k\,\hat s`. A calibrated Gaussian
    predictive gives 0.68 and 0.95.

    .. versionadded:: 0.2
    """

    full_state_update = False
    within1: Tensor
    within2: Tensor
    total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        """Initialise the counters (``kwargs`` go to :class:`~torchmetrics.Metric`)."""
        super().__init__(**kwargs)
        self.add_state('within1', torch.tensor(0.0), dist_reduce_fx='sum')
        self.add_state('within2', torch.tensor(0.0), dist_reduce_fx='sum')
        self.add_state('total', torch.tensor(0.0), dist_reduce_fx='sum')

    def update(self, preds: Tensor, target: Tensor, std: Tensor) -> None:
        """Add windows: predicted counts, true counts and predicted sd, each ``(B,)``."""
        err = (preds.float() - target.float()).abs()
        sd = std.float()
        self.within1 += (err <= sd).sum()
        self.within2 += (err <= 2 * sd).sum()
        self.total += err.numel()

    def compute(self) -> dict[str, Tensor]:
        """``count_within_1sd`` and ``count_within_2sd`` (NaN before any update)."""
        return {
            'count_within_1sd': self.within1 / self.total,
            'count_within_2sd': self.within2 / self.total,
        }
