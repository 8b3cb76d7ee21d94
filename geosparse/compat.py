"""Every difference between the TorchGeo releases geosparse supports, in one place.

geosparse follows TorchGeo 0.10's conventions; this module adapts 0.8.1 to them.
Nothing else in the package branches on the TorchGeo version.

=====================  ===========================================  ==================================
TorchGeo               0.10 (Python >= 3.12)                        0.8.1 (Python 3.11)
=====================  ===========================================  ==================================
task classes           ``torchgeo.tasks.SemanticSegmentation``,     ``torchgeo.trainers.*Task``
                       ``PixelwiseRegression``,                     (``BaseTask``)
                       ``InstanceSegmentation``, ``BaseTask``
sample georeference    ``bounds``: ``(9,)`` tensor ``(xmin, xmax,   ``crs`` (a CRS) and ``bounds``
                       xres, ymin, ymax, yres, tmin, tmax, tres)``  (the query's slices)
                       and ``transform``: ``(9,)`` affine tensor;
                       no ``crs``
``A & B`` samples      ``bounds`` and ``transform`` of the members  the first member's ``crs`` and
                       concatenated (``(18,)``)                     ``bounds``
batches                every key a tensor; nothing dropped on its   ``crs`` and ``bounds`` are lists
                       way to the device                            that ``GeoDataModule`` deletes
=====================  ===========================================  ==================================

Use :func:`window_bounds` to read a sample's window whatever the release, and
:func:`georeference` to give a geosparse dataset's sample the installed release's keys.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from typing import Any

import torch
from affine import Affine
from rasterio.crs import CRS
from torch import Tensor
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler as _TorchGeoSampler

__all__ = [
    'GEO_KEYS',
    'SUPPORTED',
    'TORCHGEO_VERSION',
    'BaseTask',
    'GeoSampler',
    'InstanceSegmentation',
    'PixelwiseRegression',
    'SemanticSegmentation',
    'georeference',
    'window_bounds',
]

#: The TorchGeo releases geosparse runs on.
SUPPORTED = '0.8.1 (Python 3.11) and 0.10.x (Python >= 3.12)'


def _parse(text: str) -> tuple[int, int, int]:
    """``'0.10.1'`` -> ``(0, 10, 1)``; pre-release or local suffixes are ignored."""
    match = re.match(r'(\d+)\.(\d+)(?:\.(\d+))?', text)
    if match is None:
        return (0, 0, 0)
    major, minor, patch = match.groups(default='0')
    return int(major), int(minor), int(patch)


#: The installed TorchGeo version as ``(major, minor, patch)``.
TORCHGEO_VERSION = _parse(version('torchgeo'))

if not (
    (0, 8, 1) <= TORCHGEO_VERSION < (0, 9, 0)
    or (0, 10, 0) <= TORCHGEO_VERSION < (0, 11, 0)
):
    raise ImportError(
        f'geosparse supports torchgeo {SUPPORTED}; torchgeo {version("torchgeo")} is '
        "installed: run `pip install 'torchgeo>=0.8.1,<0.11'`."
    )

_CURRENT = TORCHGEO_VERSION >= (0, 10, 0)

# torchgeo 0.10 needs Python >= 3.12; the version test lets mypy (run with Python
# 3.11 and 0.8.1) see the branch that is installed there.
if sys.version_info >= (3, 12) and _CURRENT:
    from torchgeo.tasks import (
        BaseTask,
        InstanceSegmentation,
        PixelwiseRegression,
        SemanticSegmentation,
    )
else:  # 0.8.1: the same classes under their old names
    from torchgeo.trainers import BaseTask
    from torchgeo.trainers import InstanceSegmentationTask as InstanceSegmentation
    from torchgeo.trainers import PixelwiseRegressionTask as PixelwiseRegression
    from torchgeo.trainers import SemanticSegmentationTask as SemanticSegmentation

#: TorchGeo's tasks by the class paths checkpoints record (LightningCLI's
#: ``_class_path``), under both releases' names, so that a checkpoint written with
#: either loads with either.
TORCHGEO_TASKS: dict[str, type] = {
    'torchgeo.tasks.SemanticSegmentation': SemanticSegmentation,
    'torchgeo.tasks.PixelwiseRegression': PixelwiseRegression,
    'torchgeo.tasks.InstanceSegmentation': InstanceSegmentation,
    'torchgeo.trainers.SemanticSegmentationTask': SemanticSegmentation,
    'torchgeo.trainers.PixelwiseRegressionTask': PixelwiseRegression,
    'torchgeo.trainers.InstanceSegmentationTask': InstanceSegmentation,
}

#: Sample keys that are not tensors in the installed release (they cannot be moved to
#: a device or stacked, and 0.8.1's ``GeoDataModule`` deletes them before transfer).
GEO_KEYS: tuple[str, ...] = () if _CURRENT else ('crs', 'bounds')


class GeoSampler(_TorchGeoSampler):
    """TorchGeo's :class:`~torchgeo.samplers.GeoSampler` holding the dataset's grid.

    0.8.1's base class sets ``index`` and ``res`` from the dataset; 0.10's takes no
    dataset. geosparse's samplers derive from this class, which sets both itself.

    .. versionadded:: 0.1
    """

    def __init__(self, dataset: GeoDataset) -> None:
        """Keep the dataset's ``index`` (a GeoDataFrame) and ``res``."""
        self.index = dataset.index
        self.res: tuple[float, float] = dataset.res


def georeference(crs: CRS, x: slice, y: slice) -> dict[str, Any]:
    """The georeference keys of a sample of window ``x`` × ``y``, as TorchGeo makes them.

    .. versionadded:: 0.1

    Args:
        crs: the dataset's CRS.
        x: ``xmin:xmax:xres`` of the window.
        y: ``ymin:ymax:yres`` of the window.

    Returns:
        With 0.10, ``bounds`` and ``transform`` tensors (float64, so that UTM
        coordinates keep sub-millimetre precision); with 0.8.1, ``crs`` and ``bounds``
        (the slices).
    """
    if not _CURRENT:
        return {'crs': crs, 'bounds': (x, y)}
    transform = Affine(x.step, 0.0, x.start, 0.0, -y.step, y.stop)
    bounds = [x.start, x.stop, x.step, y.start, y.stop, y.step, 0.0, 0.0, 0.0]
    return {
        'bounds': torch.tensor(bounds, dtype=torch.float64),
        'transform': torch.tensor(tuple(transform), dtype=torch.float64),
    }


def window_bounds(bounds: Any) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of a sample's ``bounds``, whatever the release.

    .. versionadded:: 0.1

    Args:
        bounds: 0.8.1's slices ``(x, y[, t])``, or 0.10's tensor (``(9,)``, or the
            ``(9 k,)`` concatenation that ``A & B`` makes: the first member's window).

    Returns:
        The window's corners in its CRS. With 0.10, TorchGeo's own datasets store
        the bounds in float32: about 0.5 m of precision at UTM northings.
    """
    if isinstance(bounds, Tensor):
        b = bounds.detach().to('cpu', torch.float64).reshape(-1)[:9].tolist()
        return b[0], b[3], b[1], b[4]
    x, y = bounds[0], bounds[1]
    return float(x.start), float(y.start), float(x.stop), float(y.stop)
