"""Cloud-Optimized GeoTIFF output.

Data is first written as a tiled GeoTIFF and then converted with GDAL's COG driver
(512-pixel internal tiles, compression with a predictor, overviews), all into a
temporary file that is renamed onto the destination only when complete.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetWriter

from .. import __version__
from .raster import atomic_path, remove_staging

__all__ = ['CogOptions', 'cog_profile', 'cog_writer', 'translate_to_cog', 'write_cog']


def cog_profile(
    compress: Literal['ZSTD', 'DEFLATE'] = 'DEFLATE',
    blocksize: int = 512,
    categorical: bool = False,
    dtype: str = 'uint8',
) -> dict[str, Any]:
    """Creation options of GDAL's COG driver used by geosparse.

    .. versionadded:: 0.1

    Args:
        compress: ZSTD or DEFLATE.
        blocksize: internal tile size.
        categorical: nearest-neighbour overviews (class maps) instead of averages.
        dtype: data type (GDAL picks the predictor for it: 2 for integers, 3 for
            floating point).

    Returns:
        Options for :func:`rasterio.shutil.copy` with ``driver='COG'``.
    """
    return {
        'driver': 'COG',
        'BLOCKSIZE': blocksize,
        'COMPRESS': compress,
        # Horizontal differencing (integers) or floating-point prediction: it
        # shrinks the smooth bands (uncertainty, probabilities) and costs class
        # bands little.
        'PREDICTOR': 'YES',
        'OVERVIEWS': 'AUTO',
        'OVERVIEW_RESAMPLING': 'NEAREST' if categorical else 'AVERAGE',
        'BIGTIFF': 'IF_SAFER',
    }


def translate_to_cog(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    categorical: bool = False,
    compress: Literal['ZSTD', 'DEFLATE'] = 'DEFLATE',
) -> Path:
    """Convert a (tiled) GeoTIFF into a COG, atomically.

    .. versionadded:: 0.1

    Args:
        src: existing raster.
        dst: output COG.
        categorical: nearest-neighbour overviews.
        compress: ZSTD or DEFLATE.

    Returns:
        ``dst``.
    """
    with rasterio.open(src) as ds:
        dtype = ds.dtypes[0]
    opts = cog_profile(compress=compress, categorical=categorical, dtype=dtype)
    driver = opts.pop('driver')
    with atomic_path(dst, suffix='.tif') as tmp:
        rasterio.shutil.copy(src, tmp, driver=driver, **opts)
    return Path(dst)


class CogOptions(TypedDict, total=False):
    """Optional contents of a COG (keyword arguments of :func:`.cog_writer`).

    :meth:`~geosparse.io.spec.OutputSpec.cog_options` builds them from an output spec.

    .. versionadded:: 0.1

    Attributes:
        descriptions: band descriptions.
        colormap: colour table of band 1 (value -> RGBA).
        tags: dataset tags (``geosparse_version`` is always added).
        band_tags: tags per band.
        scales: band scale factors (physical value = raw * scale + offset).
        offsets: band offsets.
        categorical: class map (nearest-neighbour overviews).
        compress: ZSTD or DEFLATE (default DEFLATE).
    """

    descriptions: Sequence[str]
    colormap: Mapping[int, tuple[int, int, int, int]]
    tags: Mapping[str, str]
    band_tags: Sequence[Mapping[str, str]]
    scales: Sequence[float]
    offsets: Sequence[float]
    categorical: bool
    compress: Literal['ZSTD', 'DEFLATE']


@contextmanager
def cog_writer(
    path: str | os.PathLike[str],
    count: int,
    height: int,
    width: int,
    dtype: str | np.dtype[Any],
    crs: CRS | str,
    transform: Affine,
    nodata: float | None = None,
    **options: Unpack[CogOptions],
) -> Iterator[DatasetWriter]:
    """Open a tiled staging GeoTIFF for block writes; on exit, convert it to a COG.

    Blocks written into the yielded dataset (``dst.write(arr, window=...)``) go to
    disk as they come, so memory does not grow with the raster. When the ``with``
    body finishes, the stage becomes the COG at ``path`` (atomically); if it
    raises, nothing appears at ``path``.

    .. versionadded:: 0.1

    Args:
        path: output COG.
        count: number of bands.
        height: rows.
        width: columns.
        dtype: data type.
        crs: CRS.
        transform: affine transform.
        nodata: nodata value.
        **options: descriptions, colour table, tags, scales, ... (:class:`CogOptions`).

    Yields:
        The open staging dataset (512-pixel tiles, band interleaved).
    """
    profile = {
        'driver': 'GTiff',
        'count': count,
        'height': height,
        'width': width,
        'dtype': dtype,
        'crs': crs,
        'transform': transform,
        'nodata': nodata,
        'tiled': True,
        'blockxsize': 512,
        'blockysize': 512,
        'photometric': 'MINISBLACK',
        'interleave': 'band',
        'BIGTIFF': 'IF_SAFER',
    }
    all_tags = {'geosparse_version': __version__, **options.get('tags', {})}
    colormap = options.get('colormap')
    scales, offsets = options.get('scales'), options.get('offsets')
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_staging(out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f'.{out.name}.') as tmp:
        stage = Path(tmp) / 'stage.tif'
        with rasterio.open(stage, 'w', **profile) as dst:
            for i, text in enumerate(options.get('descriptions', ()), start=1):
                dst.set_band_description(i, text)
            if colormap is not None:
                dst.write_colormap(1, dict(colormap))
            dst.update_tags(**all_tags)
            for i, bt in enumerate(options.get('band_tags', ()), start=1):
                dst.update_tags(i, **bt)
            if scales is not None:
                dst.scales = tuple(scales)
            if offsets is not None:
                dst.offsets = tuple(offsets)
            yield dst
        translate_to_cog(
            stage,
            out,
            categorical=options.get('categorical', False),
            compress=options.get('compress', 'DEFLATE'),
        )


def write_cog(
    path: str | os.PathLike[str],
    data: np.ndarray,
    crs: CRS | str,
    transform: Affine,
    nodata: float | None = None,
    **options: Unpack[CogOptions],
) -> Path:
    """Write an in-memory ``(bands, rows, cols)`` array as a COG, atomically.

    Arguments as in :func:`~geosparse.io.cog.cog_writer`; ``data`` is the array.

    .. versionadded:: 0.1

    Returns:
        ``path``.
    """
    if data.ndim != 3:
        raise ValueError(f'{path}: data must be (bands, rows, cols), got {data.shape}.')
    with cog_writer(
        path,
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        **options,
    ) as dst:
        dst.write(data)
    return Path(path)
