"""GeoSamplers of geosparse."""

from .balanced import CoarseBalancedGeoSampler
from .cover import CoverGeoSampler, cover_offsets
from .points import PointGeoSampler
from .regions import (
    Box,
    LabelledBatchGeoSampler,
    RegionGeoSampler,
    window_positions,
)

__all__ = [
    'Box',
    'CoarseBalancedGeoSampler',
    'CoverGeoSampler',
    'LabelledBatchGeoSampler',
    'PointGeoSampler',
    'RegionGeoSampler',
    'cover_offsets',
    'window_positions',
]
