"""One georeferenced pixel grid for tiling, halos and world-to-pixel conversion.

:class:`RasterGrid` is geosparse's grid primitive, in the spirit of odc-geo's
GeoBox and GeoboxTiles (kept as a small class of ours: TorchGeo samples windows by
CRS bounds, and odc-geo would add a dependency for a few lines). Prediction cuts it
into blocks with a halo (:meth:`~geosparse.io.RasterGrid.blocks`,
:meth:`~geosparse.io.RasterGrid.with_halo`), calibration and GP conditioning map points
to pixels (:meth:`~geosparse.io.RasterGrid.to_pixels`,
:meth:`~geosparse.io.RasterGrid.pixel_of`), and the counting data module tiles its
Gaussian fits with it, so every copy of this arithmetic is one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import rasterio
import rasterio.transform
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window

__all__ = ['RasterGrid', 'apply_affine']


def apply_affine(
    transform: Affine, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``transform`` applied to coordinate arrays, :math:`(a x + b y + c, d x + e y + f)`.

    Spelt out because affine 3 deprecates ``transform * (x, y)`` and affine 2.4 has
    no ``@`` for coordinate tuples.

    .. versionadded:: 0.1
    """
    a, b, c, d, e, f = tuple(transform)[:6]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return a * x + b * y + c, d * x + e * y + f


@dataclass(frozen=True)
class RasterGrid:
    """A georeferenced pixel grid: ``crs``, ``transform``, ``height``, ``width``.

    .. versionadded:: 0.1
    """

    crs: CRS
    transform: Affine
    height: int
    width: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in the grid's CRS."""
        w, s, e, n = rasterio.transform.array_bounds(
            self.height, self.width, self.transform
        )
        return float(w), float(s), float(e), float(n)

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window of this grid."""
        return rasterio.windows.transform(window, self.transform)

    def coverage(self, path: str | os.PathLike[str]) -> float:
        """Fraction of this grid's area inside another raster's footprint.

        Args:
            path: the other raster (any CRS).

        Returns:
            0 (no overlap) to 1; its bounds are reprojected to this grid's CRS.
        """
        with rasterio.open(path) as src:
            west, south, east, north = transform_bounds(src.crs, self.crs, *src.bounds)
        w, s, e, n = self.bounds
        dx = max(0.0, min(e, east) - max(w, west))
        dy = max(0.0, min(n, north) - max(s, south))
        return float(dx * dy / ((e - w) * (n - s)))

    # ------------------------------------------------------------ world <-> pixels
    def to_pixels(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``(rows, cols)`` pixel coordinates of ``(P, 2)`` points in the grid's CRS.

        Pixel ``(i, j)`` spans ``[i, i + 1) x [j, j + 1)``; its centre is at
        ``(i + 0.5, j + 0.5)``.
        """
        cols, rows = apply_affine(~self.transform, xy[:, 0], xy[:, 1])
        return np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)

    def pixel_of(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, cols, inside)``: the pixel holding each point, and if it is on the grid."""
        rows, cols = self.to_pixels(xy)
        inside = (rows >= 0) & (rows < self.height) & (cols >= 0) & (cols < self.width)
        return np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64), inside

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Which ``(P, 2)`` points (this grid's CRS) fall on one of its pixels."""
        return self.pixel_of(xy)[2]

    # ------------------------------------------------------------ tiling
    def blocks(self, block: int) -> list[Window]:
        """Windows of ``block`` x ``block`` pixels tiling the grid, row by row.

        The last row and column are cut at the grid's edge (no overhang).

        Raises:
            ValueError: for a non-positive block.
        """
        if block <= 0:
            raise ValueError(f'block={block} must be > 0.')
        return [
            Window.from_slices(
                (r, min(r + block, self.height)), (c, min(c + block, self.width))
            )
            for r in range(0, self.height, block)
            for c in range(0, self.width, block)
        ]

    def block_of(self, rows: np.ndarray, cols: np.ndarray, block: int) -> np.ndarray:
        """Index (in :meth:`blocks` order) of the block holding each pixel."""
        per_row = -(-self.width // block)
        return (np.asarray(rows) // block) * per_row + np.asarray(cols) // block

    def with_halo(self, window: Window, halo: int) -> Window:
        """``window`` grown by ``halo`` pixels on every side, clipped to the grid."""
        (r0, r1), (c0, c1) = window.toranges()
        return Window.from_slices(
            (max(r0 - halo, 0), min(r1 + halo, self.height)),
            (max(c0 - halo, 0), min(c1 + halo, self.width)),
        )

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of a window, in the grid's CRS."""
        w, s, e, n = rasterio.windows.bounds(window, self.transform)
        return float(w), float(s), float(e), float(n)

    def window_grid(self, window: Window) -> RasterGrid:
        """The grid of a window (its own transform, height and width)."""
        return RasterGrid(
            self.crs,
            self.window_transform(window),
            int(window.height),
            int(window.width),
        )

    def decimated(self, max_pixels: int) -> RasterGrid:
        r"""The same extent in coarser pixels, at most about ``max_pixels`` (:math:`N`).

        Each side is divided by :math:`\max(1, \sqrt{HW / N})`
        (the grid itself when it is small enough), for reading a raster onto it
        cheaply, e.g. to count its classes.
        """
        step = max(1.0, math.sqrt(self.height * self.width / max(max_pixels, 1)))
        height = max(1, int(self.height / step))
        width = max(1, int(self.width / step))
        scale = Affine.scale(self.width / width, self.height / height)
        return RasterGrid(self.crs, self.transform * scale, height, width)

    @classmethod
    def from_bounds(
        cls,
        crs: CRS | str,
        bounds: tuple[float, float, float, float],
        res: tuple[float, float],
    ) -> RasterGrid:
        """The grid with north-up pixels of ``res`` (x, y) from the top-left of ``bounds``.

        The size is rounded to whole pixels (a last partial pixel counts).
        """
        west, south, east, north = bounds
        xres, yres = res
        width = max(1, math.ceil((east - west) / xres - 1e-9))
        height = max(1, math.ceil((north - south) / yres - 1e-9))
        return cls(
            CRS.from_user_input(crs),
            Affine(xres, 0.0, west, 0.0, -yres, north),
            height,
            width,
        )
