"""A GeoDataset held in one GeoDataFrame: its footprint, extent and reprojection.

:class:`~geosparse.datasets.SparsePoints` (points) and
:class:`~geosparse.datasets.InstancePolygons` (polygons) keep their features in a
:class:`~geopandas.GeoDataFrame` rather than in files TorchGeo indexes. Both index one
footprint (the features' bounds, grown to an optional ``extent``) and, when TorchGeo
changes their CRS (``imagery & points`` reprojects the second member), reproject the
features and the extent together. :class:`FrameDataset` holds that once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from geopandas import GeoDataFrame, GeoSeries
from rasterio.crs import CRS
from torchgeo.datasets import GeoDataset

from .regrid import QuietRegrid, crs_name, logger

__all__ = ['FrameDataset']


class FrameDataset(QuietRegrid, GeoDataset):
    """GeoDataset mixin for features held in a GeoDataFrame (see the module doc).

    A subclass sets ``path``, ``_res`` and ``_extent`` (``(xmin, ymin, xmax, ymax)``
    in the features' CRS, or None), keeps its features with :meth:`_set_frame`, and
    returns them from :meth:`_frame`.

    .. versionadded:: 0.1
    """

    path: str
    _res: tuple[float, float]
    _extent: tuple[float, float, float, float] | None
    #: Grow the footprint outwards to multiples of the resolution.
    snap_footprint = False

    def _frame(self) -> GeoDataFrame:
        """The features (in :attr:`crs`)."""
        raise NotImplementedError

    def _set_frame(self, frame: GeoDataFrame) -> None:
        """Keep new features (the same ones reprojected, or a subset)."""
        raise NotImplementedError

    def _index_footprint(self, frame: GeoDataFrame) -> None:
        """Index one footprint: the bounds of ``frame`` and of the extent."""
        minx, miny, maxx, maxy = frame.total_bounds
        if self._extent is not None:
            minx, miny = min(minx, self._extent[0]), min(miny, self._extent[1])
            maxx, maxy = max(maxx, self._extent[2]), max(maxy, self._extent[3])
        if self.snap_footprint:
            rx, ry = self._res
            minx, maxx = np.floor(minx / rx) * rx, (np.floor(maxx / rx) + 1) * rx
            miny, maxy = (np.ceil(miny / ry) - 1) * ry, np.ceil(maxy / ry) * ry
        index = pd.IntervalIndex.from_tuples(
            [(pd.Timestamp.min, pd.Timestamp.max)], closed='both', name='datetime'
        )
        self.index = GeoDataFrame(
            {'filepath': [self.path]},
            index=index,
            geometry=[shapely.box(minx, miny, maxx, maxy)],
            crs=frame.crs,
        )

    @property
    def crs(self) -> CRS:
        """CRS of the samples."""
        return CRS.from_user_input(self.index.crs)

    @crs.setter
    def crs(self, new_crs: CRS) -> None:
        """Reproject the features and the extent (one DEBUG line names both CRSs)."""
        if new_crs == self.crs:
            return
        logger.debug(
            '%s: CRS %s -> %s',
            type(self).__name__,
            crs_name(self.crs),
            crs_name(new_crs),
        )
        frame = self._frame()
        if self._extent is not None:
            box = GeoSeries([shapely.box(*self._extent)], crs=frame.crs)
            self._extent = tuple(box.to_crs(new_crs).total_bounds)
        self._set_frame(frame.to_crs(new_crs))
