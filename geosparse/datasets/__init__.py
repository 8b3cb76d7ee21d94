"""Datasets of geosparse."""

from .coarse import CoarseLabels, FineLabels, ImageryDataset, class_codes
from .instances import (
    INSTANCE_VALUES,
    InstancePolygons,
    match_points_to_polygons,
    points_on_one_pixel,
    read_instance_points,
)
from .points import POINT_KEYS, SparsePoints, collate_points, spatial_split
from .pseudo import InstanceRaster, collate_instances, instance_targets
from .radiometry import (
    DISPLACEMENT_THRESHOLD,
    RadiometricShift,
    harmonize_folder,
    sample_rasters,
    shift_folder,
)
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
    'DISPLACEMENT_THRESHOLD',
    'FINE_CLASSES',
    'INSTANCE_VALUES',
    'POINT_KEYS',
    'CoarseLabels',
    'FineLabels',
    'ImageryDataset',
    'InstancePolygons',
    'InstanceRaster',
    'InstanceScene',
    'ObjectScene',
    'RadiometricShift',
    'SparsePoints',
    'SyntheticScene',
    'class_codes',
    'collate_instances',
    'collate_points',
    'harmonize_folder',
    'instance_targets',
    'make_instance_scene',
    'make_object_scene',
    'make_point_labels',
    'make_scene',
    'make_stac_tiles',
    'match_points_to_polygons',
    'nlcd_from_fractions',
    'points_on_one_pixel',
    'read_instance_points',
    'sample_rasters',
    'shift_folder',
    'spatial_split',
]
