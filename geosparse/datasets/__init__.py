"""Datasets of geosparse."""

from .coarse import CoarseLabels, FineLabels, ImageryDataset
from .points import POINT_KEYS, SparsePoints, collate_points, spatial_split
from .synthetic import (
    FINE_CLASSES,
    InstanceScene,
    ObjectScene,
    SyntheticScene,
    make_instance_scene,
    make_object_scene,
    make_point_labels,
    make_scene,
    make_stac_tiles,
    nlcd_from_fractions,
)

__all__ = [
    'FINE_CLASSES',
    'POINT_KEYS',
    'CoarseLabels',
    'FineLabels',
    'ImageryDataset',
    'InstanceScene',
    'ObjectScene',
    'SparsePoints',
    'SyntheticScene',
    'collate_points',
    'make_instance_scene',
    'make_object_scene',
    'make_point_labels',
    'make_scene',
    'make_stac_tiles',
    'nlcd_from_fractions',
    'spatial_split',
]
