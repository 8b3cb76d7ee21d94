"""Losses of geosparse."""

from .lsr import BlockStatistics, StatisticsMatchingLoss, label_counting
from .naive import HardNaiveLoss, SoftNaiveLoss
from .npp import NPPLoss
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
    'transport_loss',
]
