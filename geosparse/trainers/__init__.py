"""TorchGeo tasks of geosparse."""

from .lsr import LabelSuperResolutionTask, combine_with_prior, normalised_entropy
from .utils import brief_trainer

__all__ = [
    'LabelSuperResolutionTask',
    'brief_trainer',
    'combine_with_prior',
    'normalised_entropy',
]
