"""Losses of geosparse."""

from .lsr import BlockStatistics, StatisticsMatchingLoss, label_counting
from .naive import HardNaiveLoss, SoftNaiveLoss

__all__ = [
    'BlockStatistics',
    'HardNaiveLoss',
    'SoftNaiveLoss',
    'StatisticsMatchingLoss',
    'label_counting',
]
