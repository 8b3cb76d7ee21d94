"""Imagery to predict, on the output grid: one raster, or a mosaic of several.

An :class:`ImageSource` is the input side of block-wise prediction. It names its
rasters by path or URL (anything rasterio opens, e.g. ``/vsicurl/...``) and opens
them for each window it reads, so it pickles to a few strings and can be sent to
dask workers. For one raster, the output grid is the raster's own grid and a window
is a plain read. For a mosaic (:meth:`ImageSource.mosaic`), the output grid covers
the union of the rasters' footprints in the first raster's CRS and resolution, and
each window is assembled by warping (nearest neighbour) every raster that overlaps
it; where rasters overlap, the first one listed wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.transform
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from .grid import RasterGrid
from .raster import read_coarse_on_grid

__all__ = ['ImageSource', 'nodata_mask']


def nodata_mask(image: np.ndarray, nodata: float) -> np.ndarray:
    """``(h, w)``: True where every band of ``(count, h, w)`` holds ``nodata``.

    A NaN nodata value matches NaN pixels (``image == nan`` is never true).

    .. versionadded:: 0.1
    """
    if np.isnan(nodata):
        return np.isnan(image).all(0)
    return (image == nodata).all(0)


def _mask_non_finite(
    image: np.ndarray, invalid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Treat NaN and infinite pixels as nodata: masked, and zeroed for the model.

    A pixel with any non-finite band is invalid (its outputs become nodata); its
    values become 0 so that they cannot spread NaN through the model's receptive
    field into the rest of the block.
    """
    if not np.issubdtype(image.dtype, np.floating):
        return image, invalid
    bad = ~np.isfinite(image).all(0)
    if not bad.any():
        return image, invalid
    image = np.where(bad[None], 0, image).astype(image.dtype, copy=False)
    return image, bad if invalid is None else invalid | bad


def _read(src: Any, path: str, window: Window, **kwargs: Any) -> np.ndarray:
    """``src.read`` whose error names the file, the window and the likely cause."""
    try:
        return np.asarray(src.read(window=window, **kwargs))
    except RasterioIOError as err:
        cause = str(err.__cause__ or err.__context__ or err)
        raise RasterioIOError(
            f'{path}: cannot read rows {int(window.row_off)}:'
            f'{int(window.row_off + window.height)}, columns {int(window.col_off)}:'
            f'{int(window.col_off + window.width)} ({cause}); the file is damaged or '
            'truncated: download or write it again.'
        ) from err


def _open_error(path: str, err: Exception) -> RasterioIOError:
    return RasterioIOError(
        f'{path}: cannot open the input raster ({err}). Check that the file or URL '
        'exists and is readable.'
    )


@dataclass(frozen=True)
class ImageSource:
    """Imagery read window by window on an output :class:`~geosparse.io.RasterGrid`.

    Use :meth:`open` for one raster and :meth:`mosaic` for several.

    .. versionadded:: 0.1

    Attributes:
        paths: rasters (paths or URLs rasterio opens).
        grid: output grid.
        count: bands (every raster must have this many).
        nodata: input nodata (of the first raster), or None.
        dtype: data type of the first raster.
        aligned: True when ``paths`` is one raster whose grid is ``grid``.
        footprints: each raster's ``(west, south, east, north)`` in the grid's CRS,
            so that a window reads only the rasters it overlaps.
    """

    paths: tuple[str, ...]
    grid: RasterGrid
    count: int
    nodata: float | None
    dtype: str
    aligned: bool
    footprints: tuple[tuple[float, float, float, float], ...] = ()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ImageSource:
        """One raster on its own grid.

        Raises:
            RasterioIOError: naming the path, if it cannot be opened.
        """
        path = str(path)
        try:
            with rasterio.open(path) as src:
                grid = RasterGrid(src.crs, src.transform, src.height, src.width)
                return cls((path,), grid, src.count, src.nodata, src.dtypes[0], True)
        except RasterioIOError as err:
            raise _open_error(path, err) from err

    @classmethod
    def mosaic(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        crs: CRS | str | None = None,
        res: float | None = None,
    ) -> ImageSource:
        """Several rasters on one grid covering the union of their footprints.

        Args:
            paths: rasters with the same band count; the first wins in overlaps.
            crs: output CRS (default: the first raster's).
            res: output pixel size in CRS units (default: the first raster's).

        Returns:
            The mosaic source. The grid is snapped to multiples of ``res``.

        Raises:
            ValueError: if ``paths`` is empty or band counts differ.
            RasterioIOError: naming the path, if one cannot be opened.
        """
        names = [str(p) for p in paths]
        if not names:
            raise ValueError('mosaic: no input rasters.')
        boxes: list[tuple[float, float, float, float]] = []
        count = 0
        nodata: float | None = None
        dtype = 'uint8'
        out_crs: CRS | None = CRS.from_user_input(crs) if crs is not None else None
        for i, name in enumerate(names):
            try:
                with rasterio.open(name) as src:
                    if i == 0:
                        count, nodata, dtype = src.count, src.nodata, src.dtypes[0]
                        out_crs = out_crs or src.crs
                        res = res or float(src.res[0])
                    elif src.count != count:
                        raise ValueError(
                            f'{name}: {src.count} bands, but {names[0]} has {count}; '
                            'a mosaic needs rasters with the same bands.'
                        )
                    boxes.append(transform_bounds(src.crs, out_crs, *src.bounds))
            except RasterioIOError as err:
                raise _open_error(name, err) from err
        assert out_crs is not None and res is not None
        west = math.floor(min(b[0] for b in boxes) / res) * res
        south = math.floor(min(b[1] for b in boxes) / res) * res
        east = math.ceil(max(b[2] for b in boxes) / res) * res
        north = math.ceil(max(b[3] for b in boxes) / res) * res
        grid = RasterGrid(
            out_crs,
            Affine(res, 0, west, 0, -res, north),
            round((north - south) / res),
            round((east - west) / res),
        )
        return cls(tuple(names), grid, count, nodata, dtype, False, tuple(boxes))

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """Imagery of a window of the grid and its nodata mask.

        Args:
            window: window of :attr:`grid` (inside it).

        Returns:
            ``(count, h, w)`` array in the rasters' dtype, and a ``(h, w)`` mask that
            is True where no raster has data or any band is NaN or infinite (those
            values are set to 0); None if the input has no nodata, no non-finite
            value and is a single raster.
        """
        if self.aligned:
            with rasterio.open(self.paths[0]) as src:
                image = _read(src, self.paths[0], window)
            invalid = None if self.nodata is None else nodata_mask(image, self.nodata)
            return _mask_non_finite(image, invalid)
        h, w = int(window.height), int(window.width)
        fill = 0 if self.nodata is None else self.nodata
        image = np.full((self.count, h, w), fill, dtype=self.dtype)
        invalid = np.ones((h, w), dtype=bool)
        west, south, east, north = rasterio.windows.bounds(window, self.grid.transform)
        for name, (left, bottom, right, top) in zip(
            self.paths, self.footprints, strict=True
        ):
            if west >= right or east <= left or south >= top or north <= bottom:
                continue  # this raster is not opened at all
            with rasterio.open(name) as src:
                # A warped view of this raster on the output grid: GDAL reads only
                # the source pixels the window needs. Without a nodata value an
                # alpha band marks the raster's footprint.
                with WarpedVRT(
                    src,
                    crs=self.grid.crs,
                    transform=self.grid.transform,
                    width=self.grid.width,
                    height=self.grid.height,
                    resampling=Resampling.nearest,
                    add_alpha=src.nodata is None,
                ) as vrt:
                    part = _read(
                        vrt, name, window, indexes=list(range(1, self.count + 1))
                    )
                    if src.nodata is None:
                        covered = vrt.read(self.count + 1, window=window) > 0
                    else:
                        covered = ~nodata_mask(part, src.nodata)
            take = covered & invalid
            image[:, take] = part[:, take]
            invalid &= ~take
        return _mask_non_finite(image, invalid)

    def coarse_window(
        self, coarse_path: str | os.PathLike[str], window: Window
    ) -> np.ndarray:
        """Coarse codes reprojected (nearest) onto a window of the grid.

        Returns:
            ``(h, w)`` codes; outside the coarse raster, its nodata (or 0).
        """
        return read_coarse_on_grid(coarse_path, self.grid, window)
