"""Quiet CRS and resolution changes of geosparse's datasets.

TorchGeo's :class:`~torchgeo.datasets.GeoDataset` prints every change of a
dataset's CRS or resolution (``A & B`` changes the second member's), with both CRSs
as full WKT. geosparse's datasets log one line at DEBUG level instead, the CRSs by
EPSG code (``geosparse --verbose`` shows it).
"""

from __future__ import annotations

import logging
from typing import Any

from pyproj import CRS as ProjCRS
from torchgeo.datasets import GeoDataset

__all__ = ['QuietRegrid', 'crs_name']

logger = logging.getLogger('geosparse.datasets')


def crs_name(crs: Any) -> str:
    """``EPSG:<code>`` of a CRS, else its name (never the WKT).

    .. versionadded:: 0.1
    """
    try:
        proj = ProjCRS.from_user_input(crs)
    except Exception:  # pragma: no cover - anything TorchGeo accepted has a name
        return str(crs)[:60]
    code = proj.to_epsg()
    return f'EPSG:{code}' if code is not None else proj.name


class QuietRegrid(GeoDataset):
    """GeoDataset mixin: ``crs`` and ``res`` changes log at DEBUG instead of printing.

    Same effect as TorchGeo's setters (the index is reprojected; the resolution is
    stored); put it before the TorchGeo base class. A subclass may still define its
    own ``crs`` property.

    .. versionadded:: 0.1
    """

    @property
    def crs(self) -> Any:
        """CRS of the samples (TorchGeo's)."""
        return GeoDataset.crs.fget(self)  # type: ignore[attr-defined]

    @crs.setter
    def crs(self, new_crs: Any) -> None:
        """Reproject the index, with a DEBUG line naming both CRSs."""
        if new_crs == self.crs:
            return
        logger.debug(
            '%s: CRS %s -> %s',
            type(self).__name__,
            crs_name(self.crs),
            crs_name(new_crs),
        )
        self.index.to_crs(new_crs, inplace=True)

    @property
    def res(self) -> tuple[float, float]:
        """Resolution of the samples in CRS units (TorchGeo's)."""
        return GeoDataset.res.fget(self)  # type: ignore[attr-defined]

    @res.setter
    def res(self, new_res: float | tuple[float, float]) -> None:
        """Store the resolution, with a DEBUG line naming both."""
        if isinstance(new_res, int | float):
            new_res = (new_res, new_res)
        if new_res == self.res:
            return
        logger.debug('%s: resolution %s -> %s', type(self).__name__, self.res, new_res)
        self._res = new_res
