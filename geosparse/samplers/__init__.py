"""GeoSamplers of geosparse."""

from .balanced import CoarseBalancedGeoSampler
from .cover import CoverGeoSampler, cover_offsets
from .points import PointGeoSampler
from .regions import Box, RegionGeoSampler

__all__ = [
    'Box',
    'CoarseBalancedGeoSampler',
    'CoverGeoSampler',
    'PointGeoSampler',
    'RegionGeoSampler',
    'cover_offsets',
]
