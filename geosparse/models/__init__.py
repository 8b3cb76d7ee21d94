"""Networks of geosparse beyond the segmentation models TorchGeo builds."""

from .distance import DistanceOutput, LearnableDistance
from .local import LocalContextNet

__all__ = ['DistanceOutput', 'LearnableDistance', 'LocalContextNet']
