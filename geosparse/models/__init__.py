"""Networks of geosparse beyond the segmentation models TorchGeo builds."""

from .local import LocalContextNet

__all__ = ['LocalContextNet']
