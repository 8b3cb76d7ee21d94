r"""Block-wise prediction of a raster with dask, streamed into a COG.

The output grid is cut into blocks aligned with the COG's 512-pixel tiles. For each
block, the input window grown by a ``halo`` on every side (clipped at the raster's
edges) is read from disk, passed through the model, and only the block's own pixels
are kept (crop-centre). Where the model's receptive field fits inside the halo, the
result is therefore identical to one forward pass over the whole raster, with no
seams and no overhang at the last row and column. Blocks form a dask graph
(:func:`dask.array.map_blocks`) that is stored, block by block, into a tiled staging
GeoTIFF (:func:`dask.array.store`), then converted to a COG; memory is bounded by
the blocks in flight, not by the raster's size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import rasterio
from rasterio.io import DatasetWriter
from rasterio.windows import Window
from tqdm.auto import tqdm

from .io.cog import cog_writer
from .io.raster import read_coarse_on_grid

__all__ = ['BlockFunction', 'predict_blocks']

#: ``fn(image (C, h, w) float32, coarse (h, w) int64 or None) -> (K, h, w)``: the
#: model applied to one window (halo included).
BlockFunction = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


class _WindowTarget:
    """A :func:`dask.array.store` target writing ``[band, rows, cols]`` windows."""

    def __init__(self, dst: DatasetWriter) -> None:
        self.dst = dst

    def __setitem__(self, key: tuple[slice, slice, slice], value: np.ndarray) -> None:
        _, rows, cols = key
        self.dst.write(value, window=Window.from_slices(rows, cols))


def _read_window(
    image_path: str,
    coarse_path: str | None,
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Imagery, coarse codes on the image grid, and the image's nodata mask."""
    window = Window.from_slices(rows, cols)
    with rasterio.open(image_path) as src:
        image = src.read(window=window)
        invalid = None if src.nodata is None else (image == src.nodata).all(0)
        if coarse_path is None:
            return image, None, invalid
        return image, read_coarse_on_grid(coarse_path, src, window), invalid


def predict_blocks(
    image_path: str | os.PathLike[str],
    fn: BlockFunction,
    out_path: str | os.PathLike[str],
    count: int,
    dtype: str = 'uint8',
    nodata: float | None = 255,
    coarse_path: str | os.PathLike[str] | None = None,
    block: int = 512,
    halo: int = 32,
    workers: int = 1,
    scheduler: str = 'threads',
    progress: bool = True,
    cog: Mapping[str, Any] | None = None,
) -> Path:
    """Predict a raster block by block and write the result as a COG.

    Args:
        image_path: input raster.
        fn: the model on one window (:data:`BlockFunction`), returning ``count``
            bands of ``dtype`` with the window's height and width.
        out_path: output COG (written atomically: nothing appears there if the
            run fails or is killed).
        count: number of output bands.
        dtype: output data type.
        nodata: output nodata, written where every input band equals the input's
            nodata.
        coarse_path: optional coarse raster (any CRS), reprojected (nearest) onto
            each window and passed to ``fn``.
        block: block size in pixels (a multiple of 512 keeps writes tile-aligned).
        halo: context read around each block and discarded.
        workers: dask threads (the model itself also uses torch's threads).
        scheduler: dask scheduler: ``threads`` or ``synchronous``.
        progress: show a progress bar over the blocks.
        cog: keyword arguments of :func:`~geosparse.io.cog.cog_writer`
            (descriptions, colormap, tags, band_tags, scales, categorical, ...).

    Returns:
        ``out_path``.

    Raises:
        ValueError: if ``block``/``halo`` are invalid or ``fn`` returns the wrong
            shape (the message names the block).
    """
    if block <= 0 or halo < 0:
        raise ValueError(f'block={block} must be > 0 and halo={halo} >= 0.')
    if scheduler not in ('threads', 'synchronous'):
        raise ValueError(f"scheduler={scheduler!r}: choose 'threads' or 'synchronous'.")
    image_path = str(image_path)
    coarse = None if coarse_path is None else str(coarse_path)
    with rasterio.open(image_path) as src:
        height, width, crs, transform = src.height, src.width, src.crs, src.transform
    chunks = (
        (count,),
        tuple(min(block, height - r) for r in range(0, height, block)),
        tuple(min(block, width - c) for c in range(0, width, block)),
    )
    n_blocks = len(chunks[1]) * len(chunks[2])
    name = (
        f'geosparse-block-{dask.base.tokenize(image_path, coarse, id(fn), block, halo)}'
    )

    def run(block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        (_, _), (r0, r1), (c0, c1) = block_info[None]['array-location']
        rr = (max(r0 - halo, 0), min(r1 + halo, height))
        cc = (max(c0 - halo, 0), min(c1 + halo, width))
        image, coarse_codes, invalid = _read_window(image_path, coarse, rr, cc)
        out = np.asarray(fn(image.astype(np.float32), coarse_codes))
        expected = (count, rr[1] - rr[0], cc[1] - cc[0])
        if out.shape != expected:
            raise ValueError(
                f'{image_path}: block rows {r0}:{r1}, cols {c0}:{c1}: the model '
                f'returned shape {out.shape}, expected {expected}.'
            )
        out = out.astype(dtype, copy=False)
        if invalid is not None and nodata is not None:
            out = np.where(invalid[None], np.asarray(nodata, dtype=dtype), out)
        top, left = r0 - rr[0], c0 - cc[0]
        bar.update(1)
        return np.ascontiguousarray(out[:, top : top + r1 - r0, left : left + c1 - c0])

    arr = da.map_blocks(
        run, chunks=chunks, dtype=dtype, name=name, meta=np.empty((0, 0, 0), dtype)
    )
    with (
        cog_writer(
            out_path,
            count=count,
            height=height,
            width=width,
            dtype=dtype,
            crs=crs,
            transform=transform,
            nodata=nodata,
            **dict(cog or {}),
        ) as dst,
        tqdm(total=n_blocks, desc='predict', unit='block', disable=not progress) as bar,
    ):
        da.store(
            arr,
            _WindowTarget(dst),  # type: ignore[arg-type]  # any __setitem__ target
            lock=threading.Lock(),
            scheduler=scheduler,
            num_workers=workers,
        )
    return Path(out_path)
