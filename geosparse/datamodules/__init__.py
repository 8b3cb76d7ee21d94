"""Lightning data modules of geosparse."""

from .counting import CountingDataModule
from .instances import PointInstanceDataModule
from .lsr import LabelSuperResolutionDataModule
from .npp import NPPDataModule
from .pseudo import PseudoMaskDataModule

__all__ = [
    'CountingDataModule',
    'LabelSuperResolutionDataModule',
    'NPPDataModule',
    'PointInstanceDataModule',
    'PseudoMaskDataModule',
]
