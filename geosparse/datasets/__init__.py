"""Datasets of geosparse."""

from .coarse import CoarseLabels, FineLabels, ImageryDataset
from .points import SparsePoints, collate_points, spatial_split
from .synthetic import (
    FINE_CLASSES,
    SyntheticScene,
    make_point_labels,
    make_scene,
    make_stac_tiles,
    nlcd_from_fractions,
)

__all__ = [
    'FINE_CLASSES',
    'CoarseLabels',
    'FineLabels',
    'ImageryDataset',
    'SparsePoints',
    'SyntheticScene',
    'collate_points',
    'make_point_labels',
    'make_scene',
    'make_stac_tiles',
    'nlcd_from_fractions',
    'spatial_split',
]
