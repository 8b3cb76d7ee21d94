"""Raster and polygon input and output."""

from .cog import cog_profile, translate_to_cog, write_cog
from .grid import RasterGrid
from .polygons import POLYGON_FORMATS, instance_polygons, write_polygons
from .raster import atomic_path, atomic_write_raster, atomic_write_text

__all__ = [
    'POLYGON_FORMATS',
    'RasterGrid',
    'atomic_path',
    'atomic_write_raster',
    'atomic_write_text',
    'cog_profile',
    'instance_polygons',
    'translate_to_cog',
    'write_cog',
    'write_polygons',
]
