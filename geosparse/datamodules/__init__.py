"""Lightning data modules of geosparse."""

from .lsr import LabelSuperResolutionDataModule
from .npp import NPPDataModule

__all__ = ['LabelSuperResolutionDataModule', 'NPPDataModule']
