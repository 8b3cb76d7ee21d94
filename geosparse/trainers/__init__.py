"""TorchGeo tasks of geosparse."""

from .counting import DensityTask, PointMapTask, smoothed_point_map
from .lsr import (
    LabelSuperResolutionTask,
    combine_with_prior,
    match_fractions,
    normalised_entropy,
)
from .npp import NPPTask, point_values
from .utils import brief_trainer

__all__ = [
    'DensityTask',
    'LabelSuperResolutionTask',
    'NPPTask',
    'PointMapTask',
    'brief_trainer',
    'combine_with_prior',
    'match_fractions',
    'normalised_entropy',
    'point_values',
    'smoothed_point_map',
]
