"""GeoSamplers of geosparse."""

from .balanced import CoarseBalancedGeoSampler
from .cover import CoverGeoSampler, cover_offsets
from .points import PointGeoSampler

__all__ = [
    'CoarseBalancedGeoSampler',
    'CoverGeoSampler',
    'PointGeoSampler',
    'cover_offsets',
]
