"""Datasets of geosparse."""

from .coarse import CoarseLabels, FineLabels, ImageryDataset
from .instances import (
    INSTANCE_VALUES,
    InstancePolygons,
    match_points_to_polygons,
    read_instance_points,
)
from .points import POINT_KEYS, SparsePoints, collate_points, spatial_split
from .synthetic import (
    FINE_CLASSES,
    ObjectScene,
    SyntheticScene,
    make_object_scene,
    make_point_labels,
    make_scene,
    make_stac_tiles,
    nlcd_from_fractions,
)

__all__ = [
    'FINE_CLASSES',
    'INSTANCE_VALUES',
    'POINT_KEYS',
    'CoarseLabels',
    'FineLabels',
    'ImageryDataset',
    'InstancePolygons',
    'ObjectScene',
    'SparsePoints',
    'SyntheticScene',
    'collate_points',
    'make_object_scene',
    'make_point_labels',
    'make_scene',
    'make_stac_tiles',
    'match_points_to_polygons',
    'nlcd_from_fractions',
    'read_instance_points',
    'spatial_split',
]
