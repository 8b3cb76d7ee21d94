"""GeoSamplers of geosparse."""

from .balanced import CoarseBalancedGeoSampler
from .cover import CoverGeoSampler, cover_offsets

__all__ = ['CoarseBalancedGeoSampler', 'CoverGeoSampler', 'cover_offsets']
