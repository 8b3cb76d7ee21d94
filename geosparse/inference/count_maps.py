r"""Counts from predicted density or point-probability maps.

:func:`~geosparse.inference.predict.predict_raster` writes a counting model's map as a COG:
``density`` (objects per pixel, :class:`~geosparse.trainers.DensityTask`) or
``probability`` and ``detection`` (:class:`~geosparse.trainers.PointMapTask`, 1 at each
detected object). :func:`count_map` turns either into a COG of counts per cell
of ``cell`` pixels with their standard deviations, read in strips so that memory
stays at one strip, and :func:`count_with_std` gives the count of the whole map with its std.

The standard deviation of a count follows the task's model
(:mod:`geosparse.trainers.counting`), times the map's ``count_dispersion`` tag
:math:`\phi` (fitted on validation windows by the task; 1 when absent): Poisson
for a density, :math:`\sqrt{\phi \sum \zeta}`; Poisson-binomial for a point
map, :math:`\sqrt{\phi \sum_c p_c (1 - p_c)}` over its cells of ``stride``
pixels, whose probability the map repeats over the cell's pixels (so each pixel
adds :math:`\phi\,p(1-p)/\mathrm{stride}^2`).

NaN is nodata (``geosparse predict`` writes it where the imagery has none): such
pixels are not counted, a cell without a valid pixel gets a NaN count and std, and
:func:`count_map`'s third band gives each cell's share of valid pixels, so that a
half-covered cell does not pass for a sparse one. :func:`count_summary` says how
much of the map was counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from ..io.cog import write_cog

__all__ = [
    'CountSummary',
    'count_map',
    'count_summary',
    'count_with_std',
    'total_count',
]


def _open(path: Path) -> tuple[rasterio.DatasetReader, int, int, float]:
    r"""The map, its band of objects per pixel, its band of variance, and the scale.

    Variance per pixel is ``scale * band`` (density: :math:`\phi \zeta`) or
    ``scale * p (1 - p)`` of the probability band (point map: ``φ / stride²``).
    The kind of map is its ``counting`` tag, written by every geosparse version
    (from the output spec's ``counting`` property since the spec exists).
    """
    src = rasterio.open(path)
    tags = src.tags()
    kind = tags.get('counting')
    if kind not in ('density', 'point map'):
        src.close()
        raise ValueError(
            f'{path}: not a counting map (no counting tag); predict it with a '
            'DensityTask or PointMapTask checkpoint.'
        )
    bands = 1 if kind == 'density' else 2
    try:
        phi = float(tags.get('count_dispersion', 1.0))
        stride = float(tags.get('stride', 1))
    except ValueError:
        phi = stride = float('nan')
    problem = ''
    if not (np.isfinite(phi) and phi > 0):
        problem = f'its count_dispersion tag ({tags.get("count_dispersion")}) is not a '
        problem += 'positive number'
    elif not (np.isfinite(stride) and stride >= 1):
        problem = f'its stride tag ({tags.get("stride")}) is not a number >= 1'
    elif src.count < bands:
        problem = (
            f'a point map needs {bands} bands (probability, detection) and it has '
            f'{src.count}'
        )
    if problem:
        src.close()
        raise ValueError(
            f'{path}: {problem}; re-run geosparse predict to write the map again.'
        )
    if kind == 'density':
        return src, 1, 1, phi
    return src, 2, 1, phi / stride**2


def _read(
    src: rasterio.DatasetReader, path: Path, band: int, var_band: int, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """A window's count band and variance band, both checked by :func:`_check`."""
    block = src.read(band, window=window)
    raw = block if var_band == band else src.read(var_band, window=window)
    for values in (block, raw) if raw is not block else (block,):
        _check(path, values, band)
    return block, raw


def _check(path: Path, raw: np.ndarray, kind_band: int) -> None:
    """Refuse values no prediction writes (NaN is nodata).

    Infinite values, negative densities, and probabilities outside [0, 1].
    """
    values = raw[~np.isnan(raw)]
    if values.size == 0:
        return
    low, high = float(values.min()), float(values.max())
    bad = ''
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = 'infinite values'
    elif kind_band == 1 and low < 0:
        bad = f'negative densities (down to {low:.3g})'
    elif kind_band != 1 and (low < 0 or high > 1):
        bad = f'probabilities outside [0, 1] ({low:.3g} to {high:.3g})'
    if bad:
        raise ValueError(
            f'{path}: holds {bad}, which no geosparse prediction writes; mark nodata '
            'as NaN and predict the map again.'
        )


def _variance(block: np.ndarray, kind_band: int, scale: float) -> np.ndarray:
    """Per-pixel count variance of a block of the variance band (see :func:`_open`)."""
    v = np.nan_to_num(block.astype(np.float64), nan=0.0)
    if kind_band == 1:
        return scale * np.clip(v, 0, None)
    return scale * v * (1 - v)


def count_map(
    path: str | os.PathLike[str], out: str | os.PathLike[str], cell: int = 32
) -> Path:
    """Counts per cell of ``cell`` x ``cell`` pixels and their std, as a COG (atomically).

    Band 1 ``count``, band 2 ``std`` (module doc), band 3 ``valid_fraction`` (the
    share of the cell's pixels that hold data; count and std are NaN where it is 0).
    Edge cells cover what is left of the raster.

    .. versionadded:: 0.1

    .. versionchanged:: 0.2
       The ``std`` band.

    .. versionchanged:: 0.7
       NaN pixels are nodata: the ``valid_fraction`` band, NaN for cells without data.

    Args:
        path: a counting map written by prediction.
        out: output COG.
        cell: cell side in pixels (>= 1).

    Returns:
        ``out``.

    Raises:
        ValueError: for a map that is not a counting map (its tags, bands or
            values), a bad ``cell``, or ``out`` naming the map itself.
    """
    if cell < 1:
        raise ValueError(f'cell={cell} must be at least 1 pixel.')
    if Path(out).resolve() == Path(path).resolve():
        raise ValueError(
            f'--out {out} is the map being counted and would replace it; give '
            'another file, e.g. counts.tif.'
        )
    src, band, var_band, scale = _open(Path(path))
    with src:
        h, w = src.height, src.width
        ny, nx = -(-h // cell), -(-w // cell)
        counts = np.zeros((3, ny, nx), dtype=np.float64)
        widths = np.minimum(cell, w - np.arange(nx) * cell)  # edge cells are smaller
        for i in range(ny):
            rows = min(cell, h - i * cell)
            window = Window(0, i * cell, w, rows)
            block, raw = _read(src, Path(path), band, var_band, window)
            var = _variance(raw, band, scale)
            valid = np.isfinite(block)
            for k, values in enumerate(
                (np.where(valid, block, 0.0), var, valid.astype(np.float64))
            ):
                pad = np.zeros((rows, nx * cell))
                pad[:, :w] = values
                counts[k, i] = pad.reshape(rows, nx, cell).sum((0, 2))
            counts[2, i] /= rows * widths  # the share of the cell's pixels
        t = src.transform  # the same origin, pixels `cell` times larger
        transform = Affine(t.a * cell, t.b * cell, t.c, t.d * cell, t.e * cell, t.f)
        crs = src.crs
        tags = {'source': Path(path).name, 'cell_pixels': str(cell)}
    counts[1] = np.sqrt(counts[1])
    counts[:2, counts[2] == 0] = np.nan  # no valid pixel: unknown, not zero
    return write_cog(
        out,
        counts.astype(np.float32),
        crs,
        transform,
        nodata=float('nan'),
        descriptions=['count', 'std', 'valid_fraction'],
        tags=tags,
        band_tags=[
            {
                'definition': f'objects per {cell} x {cell}-pixel cell (its valid pixels)'
            },
            {
                'definition': 'standard deviation of the count: Poisson (density) '
                'or Poisson-binomial (point map) scatter given the map'
            },
            {
                'definition': "share of the cell's pixels with data (not NaN); "
                'the count covers only those'
            },
        ],
    )


@dataclass(frozen=True)
class CountSummary:
    """Output of :func:`count_summary`.

    .. versionadded:: 0.7

    Attributes:
        total: objects counted over the valid pixels.
        std: its standard deviation (module doc).
        valid: pixels with data (not NaN).
        pixels: pixels of the map.
    """

    total: float
    std: float
    valid: int
    pixels: int

    @property
    def nodata_fraction(self) -> float:
        """Share of the map's pixels that are nodata (not counted)."""
        return 1.0 - self.valid / self.pixels if self.pixels else 0.0


def count_summary(path: str | os.PathLike[str]) -> CountSummary:
    """The count of a whole counting map, its std, and how much of it had data.

    Read in blocks. The std is that of the module doc, summed over the map as if its
    objects were independent. NaN pixels are nodata and not counted.

    .. versionadded:: 0.7

    Raises:
        ValueError: for a map that is not a counting map (its tags, bands or
            values).
    """
    src, band, var_band, scale = _open(Path(path))
    total = variance = 0.0
    valid = 0
    with src:
        for _, window in src.block_windows(band):
            block, raw = _read(src, Path(path), band, var_band, window)
            total += float(np.nansum(block, dtype=np.float64))
            variance += float(_variance(raw, band, scale).sum())
            valid += int(np.isfinite(block).sum())
        pixels = src.height * src.width
    return CountSummary(total, float(np.sqrt(variance)), valid, pixels)


def count_with_std(path: str | os.PathLike[str]) -> tuple[float, float]:
    """The number of objects of a whole counting map and its std (read in blocks).

    :func:`count_summary` without the nodata share.

    .. versionadded:: 0.2
    """
    summary = count_summary(path)
    return summary.total, summary.std


def total_count(path: str | os.PathLike[str]) -> float:
    """The number of objects of a whole counting map (:func:`count_with_std`).

    .. versionadded:: 0.1
    """
    return count_with_std(path)[0]
