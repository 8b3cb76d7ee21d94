"""Losses of geosparse."""

from ..gp.likelihood import NPPLoss
from .lsr import BlockStatistics, StatisticsMatchingLoss, label_counting
from .naive import HardNaiveLoss, SoftNaiveLoss
from .p2r import p2r_loss, p2r_targets, peak_map
from .transport import bayesian_kernel, gst_kernel, transport_loss

__all__ = [
    'BlockStatistics',
    'HardNaiveLoss',
    'NPPLoss',
    'SoftNaiveLoss',
    'StatisticsMatchingLoss',
    'bayesian_kernel',
    'gst_kernel',
    'label_counting',
    'p2r_loss',
    'p2r_targets',
    'peak_map',
    'transport_loss',
]
