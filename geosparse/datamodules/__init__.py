"""Lightning data modules of geosparse."""

from .lsr import LabelSuperResolutionDataModule

__all__ = ['LabelSuperResolutionDataModule']
