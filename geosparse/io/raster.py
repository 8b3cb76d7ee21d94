"""Atomic raster writes: a temporary file in the destination folder, then a rename."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

__all__ = [
    'atomic_path',
    'atomic_write_raster',
    'atomic_write_text',
    'file_checksum',
    'file_sha256',
    'read_coarse_on_grid',
    'remove_staging',
]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks.

    .. versionadded:: 0.1
    """
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksum(path: str | os.PathLike[str]) -> str:
    """STAC ``file:checksum`` of a file.

    A multihash: ``1220`` (SHA2-256, 32 bytes) followed by the hex digest.

    .. versionadded:: 0.1
    """
    return '1220' + file_sha256(path)


def remove_staging(path: str | os.PathLike[str]) -> None:
    """Remove what killed runs left while writing ``path``.

    Writers stage beside the destination under ``.NAME.*``
    (:func:`~geosparse.io.atomic_path`'s files, :func:`~geosparse.io.cog.cog_writer`'s
    folders); a process killed with ``kill -9`` cannot remove them, so the next write of
    the same output does. Two processes must not write one output at once.

    .. versionadded:: 0.1

    Args:
        path: the final destination.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    for stale in path.parent.glob(f'.{path.name}.*'):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = '') -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    A failure or interruption inside the block removes the temporary file, so
    nothing (in particular no partial file) appears at ``path``.

    .. versionadded:: 0.1

    Args:
        path: final destination.
        suffix: suffix of the temporary file (GDAL picks drivers by extension).

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        for side in tmp_path.parent.glob(tmp_path.name + '.*'):
            side.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically (e.g. a benchmark's JSON result).

    .. versionadded:: 0.1
    """
    remove_staging(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_raster(
    path: str | os.PathLike[str],
    data: np.ndarray,
    profile: dict[str, Any],
    descriptions: Sequence[str] | None = None,
) -> Path:
    """Write a ``(bands, rows, cols)`` array as a raster, atomically.

    .. versionadded:: 0.1

    Args:
        path: output file.
        data: the array; its dtype and shape complete ``profile``.
        profile: rasterio creation options (driver, crs, transform, nodata, ...).
        descriptions: optional band descriptions.

    Returns:
        ``path``.
    """
    if data.ndim != 3:
        raise ValueError(f'{path}: data must be (bands, rows, cols), got {data.shape}.')
    prof = dict(profile)
    prof.update(count=data.shape[0], height=data.shape[1], width=data.shape[2])
    prof.setdefault('dtype', data.dtype)
    with atomic_path(path, suffix='.tif') as tmp:
        with rasterio.open(tmp, 'w', **prof) as dst:
            dst.write(data)
            for i, text in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, text)
    return Path(path)


def read_coarse_on_grid(
    coarse_path: str | os.PathLike[str],
    image: str | os.PathLike[str] | Any,
    window: Window | None = None,
) -> np.ndarray:
    """Coarse codes reprojected (nearest) onto an image's grid.

    .. versionadded:: 0.1

    Args:
        coarse_path: coarse raster (any CRS and resolution).
        image: the target grid: a raster path, or any object with ``crs``,
            ``transform``, ``width`` and ``height`` (an open dataset, a
            :class:`~geosparse.io.grid.RasterGrid`).
        window: read only this window of the target grid.

    Returns:
        ``(H, W)`` coarse codes; outside the coarse raster, its nodata (or 0). A
        floating-point raster's NaN pixels are nodata too: they, and a NaN nodata
        value, become 0 (codes are whole numbers, returned as int64).

    .. versionchanged:: 0.7
       NaN is nodata (it was cast to an integer code).
    """
    if isinstance(image, str | os.PathLike):
        with rasterio.open(image) as img:
            return read_coarse_on_grid(coarse_path, img, window)
    with rasterio.open(coarse_path) as src:
        fill = src.nodata if src.nodata is not None else 0
        with WarpedVRT(
            src,
            crs=image.crs,
            transform=image.transform,
            width=image.width,
            height=image.height,
            resampling=Resampling.nearest,
            nodata=fill,
        ) as vrt:
            codes = vrt.read(1, window=window)
    if codes.dtype.kind == 'f':  # NaN (and a NaN nodata value) become 0
        codes = np.where(np.isfinite(codes), codes, np.nan_to_num(fill)).astype(
            np.int64
        )
    return codes
