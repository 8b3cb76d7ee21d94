"""TorchGeo tasks of geosparse."""

from .lsr import LabelSuperResolutionTask, combine_with_prior, normalised_entropy

__all__ = ['LabelSuperResolutionTask', 'combine_with_prior', 'normalised_entropy']
