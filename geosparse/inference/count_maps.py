"""Counts from predicted density or point-probability maps.

:func:`~geosparse.inference.predict.predict_raster` writes a counting model's map as a COG:
``density`` (objects per pixel, :class:`~geosparse.trainers.DensityTask`) or
``probability`` and ``detection`` (:class:`~geosparse.trainers.PointMapTask`, 1 at each
detected object). :func:`count_map` turns either into a COG of counts per cell
of ``cell`` pixels, read in strips so that memory stays at one strip, and
:func:`total_count` gives the count of the whole map.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from ..io.cog import write_cog

__all__ = ['count_map', 'total_count']


def _open(path: Path) -> tuple[rasterio.DatasetReader, int]:
    """The map and its band of objects per pixel (density, or detections).

    The kind of map is its ``counting`` tag, written by every geosparse version
    (from the output spec's ``counting`` property since the spec exists).
    """
    src = rasterio.open(path)
    kind = src.tags().get('counting')
    if kind not in ('density', 'point map'):
        src.close()
        raise ValueError(
            f'{path}: not a counting map (no counting tag); predict it with a '
            'DensityTask or PointMapTask checkpoint.'
        )
    return src, 1 if kind == 'density' else 2


def count_map(
    path: str | os.PathLike[str], out: str | os.PathLike[str], cell: int = 32
) -> Path:
    """Counts per cell of ``cell`` x ``cell`` pixels, written as a COG (atomically).

    Edge cells cover what is left of the raster.

    .. versionadded:: 0.1

    Args:
        path: a counting map written by prediction.
        out: output COG.
        cell: cell side in pixels (>= 1).

    Returns:
        ``out``.

    Raises:
        ValueError: for a map that is not a counting map or a bad ``cell``.
    """
    if cell < 1:
        raise ValueError(f'cell={cell} must be at least 1 pixel.')
    src, band = _open(Path(path))
    with src:
        h, w = src.height, src.width
        ny, nx = -(-h // cell), -(-w // cell)
        counts = np.zeros((ny, nx), dtype=np.float64)
        for i in range(ny):
            rows = min(cell, h - i * cell)
            block = src.read(band, window=Window(0, i * cell, w, rows))
            objects = np.nan_to_num(block.astype(np.float64), nan=0.0)
            pad = np.zeros((rows, nx * cell))
            pad[:, :w] = objects
            counts[i] = pad.reshape(rows, nx, cell).sum((0, 2))
        t = src.transform  # the same origin, pixels `cell` times larger
        transform = Affine(t.a * cell, t.b * cell, t.c, t.d * cell, t.e * cell, t.f)
        crs = src.crs
        tags = {'source': Path(path).name, 'cell_pixels': str(cell)}
    return write_cog(
        out,
        counts[None].astype(np.float32),
        crs,
        transform,
        descriptions=['count'],
        tags=tags,
        band_tags=[{'definition': f'objects per {cell} x {cell}-pixel cell'}],
    )


def total_count(path: str | os.PathLike[str]) -> float:
    """The number of objects of a whole counting map (read in strips).

    .. versionadded:: 0.1
    """
    src, band = _open(Path(path))
    total = 0.0
    with src:
        for _, window in src.block_windows(band):
            total += float(np.nansum(src.read(band, window=window), dtype=np.float64))
    return total
