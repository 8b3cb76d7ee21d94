"""Datasets of geosparse."""

from .coarse import CoarseLabels, FineLabels, ImageryDataset
from .synthetic import (
    FINE_CLASSES,
    SyntheticScene,
    make_scene,
    make_stac_tiles,
    nlcd_from_fractions,
)

__all__ = [
    'FINE_CLASSES',
    'CoarseLabels',
    'FineLabels',
    'ImageryDataset',
    'SyntheticScene',
    'make_scene',
    'make_stac_tiles',
    'nlcd_from_fractions',
]
