"""GeoSamplers of geosparse."""

from .balanced import CoarseBalancedGeoSampler
from .cover import CoverGeoSampler, cover_offsets
from .points import PointGeoSampler
from .regions import Box, LabelledBatchGeoSampler, RegionGeoSampler

__all__ = [
    'Box',
    'CoarseBalancedGeoSampler',
    'CoverGeoSampler',
    'LabelledBatchGeoSampler',
    'PointGeoSampler',
    'RegionGeoSampler',
    'cover_offsets',
]
