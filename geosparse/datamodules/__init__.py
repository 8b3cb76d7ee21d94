"""Lightning data modules of geosparse."""

from .counting import CountingDataModule
from .instances import PointInstanceDataModule
from .lsr import LabelSuperResolutionDataModule
from .npp import NPPDataModule

__all__ = [
    'CountingDataModule',
    'LabelSuperResolutionDataModule',
    'NPPDataModule',
    'PointInstanceDataModule',
]
