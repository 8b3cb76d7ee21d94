"""TorchGeo tasks of geosparse."""

from .lsr import LabelSuperResolutionTask, combine_with_prior, normalised_entropy
from .npp import NPPTask, point_values
from .utils import brief_trainer

__all__ = [
    'LabelSuperResolutionTask',
    'NPPTask',
    'brief_trainer',
    'combine_with_prior',
    'normalised_entropy',
    'point_values',
]
