"""Losses of geosparse."""

from ..gp.likelihood import NPPLoss
from .instances import (
    affinity_loss,
    colour_similarity,
    foreground_loss,
    point_query_loss,
)
from .lsr import BlockStatistics, StatisticsMatchingLoss, label_counting
from .naive import HardNaiveLoss, SoftNaiveLoss
from .p2r import p2r_loss, p2r_regions, p2r_targets, peak_map
from .transport import (
    bayesian_kernel,
    dm_count_loss,
    gst_kernel,
    kernel_shares,
    ot_loss,
    transport_loss,
)

__all__ = [
    'BlockStatistics',
    'HardNaiveLoss',
    'NPPLoss',
    'SoftNaiveLoss',
    'StatisticsMatchingLoss',
    'affinity_loss',
    'bayesian_kernel',
    'colour_similarity',
    'dm_count_loss',
    'foreground_loss',
    'gst_kernel',
    'kernel_shares',
    'label_counting',
    'ot_loss',
    'p2r_loss',
    'p2r_regions',
    'p2r_targets',
    'peak_map',
    'point_query_loss',
    'transport_loss',
]
