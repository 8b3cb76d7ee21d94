"""TorchGeo tasks of geosparse."""

from .counting import DensityTask, PointMapTask, smoothed_point_map
from .foreground import PointForegroundTask
from .heads import OutputHead, normalised_entropy
from .instances import InstancePrediction, PointInstanceTask
from .lsr import LabelSuperResolutionTask, combine_with_prior, match_fractions
from .maskrcnn import Detections, MaskRCNNTask, paint_detections
from .npp import NPPTask, point_values
from .psam import PointActivation, point_activation_maps
from .utils import StepProgress, brief_trainer

__all__ = [
    'DensityTask',
    'Detections',
    'InstancePrediction',
    'LabelSuperResolutionTask',
    'MaskRCNNTask',
    'NPPTask',
    'OutputHead',
    'PointActivation',
    'PointForegroundTask',
    'PointInstanceTask',
    'PointMapTask',
    'StepProgress',
    'brief_trainer',
    'combine_with_prior',
    'match_fractions',
    'normalised_entropy',
    'paint_detections',
    'point_activation_maps',
    'point_values',
    'smoothed_point_map',
]
