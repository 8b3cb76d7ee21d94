"""Raster input and output."""

from .cog import cog_profile, translate_to_cog, write_cog
from .grid import RasterGrid
from .raster import atomic_path, atomic_write_raster, atomic_write_text

__all__ = [
    'RasterGrid',
    'atomic_path',
    'atomic_write_raster',
    'atomic_write_text',
    'cog_profile',
    'translate_to_cog',
    'write_cog',
]
