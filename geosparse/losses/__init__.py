"""Losses of geosparse."""

from .lsr import BlockStatistics, StatisticsMatchingLoss, label_counting
from .naive import HardNaiveLoss, SoftNaiveLoss
from .npp import NPPLoss

__all__ = [
    'BlockStatistics',
    'HardNaiveLoss',
    'NPPLoss',
    'SoftNaiveLoss',
    'StatisticsMatchingLoss',
    'label_counting',
]
