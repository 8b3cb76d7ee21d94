"""Raster input and output."""

from .cog import cog_profile, translate_to_cog, write_cog
from .raster import atomic_path, atomic_write_raster

__all__ = [
    'atomic_path',
    'atomic_write_raster',
    'cog_profile',
    'translate_to_cog',
    'write_cog',
]
