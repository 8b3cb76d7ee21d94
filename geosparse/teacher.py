r"""Mean-teacher pieces for semi-supervised point counting (P2R's unlabelled branch).

Lin, Zhao and Chan ("Point-to-Region Loss for Semi-Supervised Point-Based Crowd
Counting", CVPR 2025) train a student on labelled images with the P2R loss and on
unlabelled images with pseudo-points from an exponential-moving-average teacher:

- :class:`EMATeacher`: :math:`\theta_t \leftarrow \alpha \theta_t + (1 - \alpha) \theta_s`
  after every student step (Tarvainen and Valpola, 2017);
- :func:`pseudo_points`: the teacher's confident local maxima as points, each with
  its probability as confidence (every cell of its P2R region inherits it);
- :func:`unlabelled_weight`: the ramp-up of the unlabelled loss,
  :math:`w(t) = w_{max} \exp(-5 (1 - t/T)^2)` for :math:`t < T` (Laine and Aila, 2017);
- :func:`frozen_norm_statistics`: the student's forward on strongly augmented views
  without moving its BatchNorm running statistics (which the teacher averages and
  predicts with) towards the statistics of those views.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .losses.p2r import peak_map

__all__ = ['EMATeacher', 'frozen_norm_statistics', 'pseudo_points', 'unlabelled_weight']


class EMATeacher(nn.Module):
    """A frozen copy of a student network updated as its exponential moving average.

    .. versionadded:: 0.1
    """

    def __init__(self, student: nn.Module, decay: float = 0.99) -> None:
        r"""Copy the student.

        Args:
            student: the network being trained.
            decay: :math:`\alpha` in [0, 1).

        Raises:
            ValueError: for a decay outside [0, 1).
        """
        super().__init__()
        if not 0 <= decay < 1:
            raise ValueError(f'decay={decay} must be in [0, 1).')
        self.decay = decay
        self.model = copy.deepcopy(student).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        r"""Move the teacher: :math:`\theta_t \leftarrow \alpha \theta_t + (1 - \alpha) \theta_s`.

        Floating-point buffers (BatchNorm running statistics) are averaged the same
        way, so that they belong to the averaged weights; integer buffers (batch
        counters) are copied.
        """
        for t, s in zip(self.model.parameters(), student.parameters(), strict=True):
            t.mul_(self.decay).add_(s.detach(), alpha=1 - self.decay)
        for tb, sb in zip(self.model.buffers(), student.buffers(), strict=True):
            if tb.is_floating_point():
                tb.mul_(self.decay).add_(sb, alpha=1 - self.decay)
            else:
                tb.copy_(sb)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """The teacher's output (no gradients)."""
        return self.model(x)


def pseudo_points(
    logits: Tensor, threshold: float = 0.5, window: int = 3
) -> tuple[Tensor, Tensor]:
    """Confident local maxima of a ``(h, w)`` logit map as points with confidences.

    .. versionadded:: 0.1

    Args:
        logits: the teacher's logits on one image.
        threshold: minimum probability of a pseudo-point.
        window: side of the local-maximum window (odd, in cells).

    Returns:
        ``(points (P, 2) cell centres as (row, col) + 0.5, confidence (P,))``.

    Raises:
        ValueError: for an even window.
    """
    prob = torch.sigmoid(logits.detach().float())
    keep = peak_map(prob, threshold, window)
    rc = torch.nonzero(keep)
    return rc.to(torch.float64) + 0.5, prob[keep].to(torch.float64)


def unlabelled_weight(step: int, ramp_steps: int, max_weight: float = 1.0) -> float:
    """Weight of the unlabelled loss at ``step``: a Gaussian ramp-up over ``ramp_steps``.

    .. versionadded:: 0.1
    """
    if ramp_steps <= 0 or step >= ramp_steps:
        return max_weight
    t = max(step, 0) / ramp_steps
    return max_weight * math.exp(-5 * (1 - t) ** 2)


@contextlib.contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    r"""Forward passes in training mode that leave BatchNorm's running statistics alone.

    In training mode a BatchNorm layer normalises with the batch's own statistics
    and moves its running estimates, :math:`\hat\mu \leftarrow (1 - m)\hat\mu + m
    \mu_B`, which the network uses at prediction. Inside this context the momentum
    :math:`m` is 0: the batch is normalised the same way (the gradients are
    unchanged) but the running estimates keep describing the imagery the network
    will predict on, not a strongly augmented view of it (noise, cut-out, jitter).

    .. versionadded:: 0.1
    """
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
