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

The input is an :class:`~geosparse.io.source.ImageSource`: one raster, or a mosaic
of several on one grid. Blocks run on dask's threaded scheduler by default, or on a
dask.distributed cluster (a :class:`distributed.Client`), whose workers compute the
blocks while this process writes them, in any order, as they arrive; the bytes
written are the same either way.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
from rasterio.io import DatasetWriter
from rasterio.windows import Window

from ..console import progress as progress_bar
from ..io.cog import CogOptions, cog_writer
from ..io.source import ImageSource

if TYPE_CHECKING:
    from distributed import Client

__all__ = ['BlockFunction', 'OutputFile', 'predict_blocks']

#: The model applied to one window (halo included),
#: ``fn(image (C, h, w) float32, coarse (h, w) int64 or None) -> (K, h, w)``. A function
#: with a true ``needs_transform`` attribute also receives ``transform=`` (the window's
#: affine).
BlockFunction = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclass(frozen=True)
class OutputFile:
    """A further COG written by :func:`predict_blocks` from the model's last bands.

    .. versionadded:: 0.1

    Attributes:
        path: output COG (atomic).
        count: bands taken, in order, after those of the files before it.
        cog: keyword arguments of :func:`~geosparse.io.cog.cog_writer`.
    """

    path: Path
    count: int
    cog: CogOptions = field(default_factory=lambda: CogOptions())


class _WindowTarget:
    """A :func:`dask.array.store` target writing ``[band, rows, cols]`` windows.

    The bands are split, in order, across the open datasets.
    """

    def __init__(self, dsts: list[DatasetWriter]) -> None:
        self.dsts = dsts

    def write(self, value: np.ndarray, window: Window) -> None:
        """Write a block's bands into the datasets."""
        start = 0
        for dst in self.dsts:
            dst.write(value[start : start + dst.count], window=window)
            start += dst.count

    def __setitem__(self, key: tuple[slice, slice, slice], value: np.ndarray) -> None:
        _, rows, cols = key
        self.write(value, Window.from_slices(rows, cols))


@dataclass(frozen=True)
class _BlockJob:
    """Everything one block needs; pickles small enough to send to dask workers."""

    source: ImageSource
    fn: BlockFunction
    coarse: str | None
    halo: int
    count: int
    dtype: str
    nodata: float | None

    def __call__(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        grid = self.source.grid
        window = grid.with_halo(Window.from_slices((r0, r1), (c0, c1)), self.halo)
        rr, cc = window.toranges()
        image, invalid = self.source.read(window)
        coarse = (
            None
            if self.coarse is None
            else self.source.coarse_window(self.coarse, window)
        )
        if getattr(self.fn, 'needs_transform', False):
            out = np.asarray(
                self.fn(  # type: ignore[call-arg]
                    image.astype(np.float32),
                    coarse,
                    transform=grid.window_transform(window),
                )
            )
        else:
            out = np.asarray(self.fn(image.astype(np.float32), coarse))
        expected = (self.count, rr[1] - rr[0], cc[1] - cc[0])
        if out.shape != expected:
            raise ValueError(
                f'{", ".join(self.source.paths)}: block rows {r0}:{r1}, cols {c0}:{c1}: '
                f'the model returned shape {out.shape}, expected {expected}.'
            )
        out = out.astype(self.dtype, copy=False)
        if invalid is not None and self.nodata is not None:
            out = np.where(
                invalid[None], np.asarray(self.nodata, dtype=self.dtype), out
            )
        top, left = r0 - rr[0], c0 - cc[0]
        return np.ascontiguousarray(out[:, top : top + r1 - r0, left : left + c1 - c0])


def _store_distributed(
    job: _BlockJob,
    locations: list[tuple[int, int, int, int]],
    dst: _WindowTarget,
    client: Client,
    bar: Any,
) -> None:
    """Run the blocks on a dask.distributed cluster and write them as they arrive.

    At most two blocks per worker thread are in flight, so memory on both sides
    stays bounded whatever the raster's size.
    """
    from distributed import as_completed

    [remote] = client.scatter([job], broadcast=True)
    pending = iter(locations)
    limit = max(2 * sum(client.nthreads().values()), 2)
    futures = {}
    for loc in itertools.islice(pending, limit):
        futures[client.submit(_run_remote, remote, loc, pure=False)] = loc
    queue = as_completed(list(futures))
    try:
        for fut in queue:
            r0, r1, c0, c1 = futures.pop(fut)
            data = fut.result()  # a failed block raises here
            dst.write(data, Window.from_slices((r0, r1), (c0, c1)))
            bar.update(1)
            for loc in itertools.islice(pending, 1):
                nxt = client.submit(_run_remote, remote, loc, pure=False)
                futures[nxt] = loc
                queue.add(nxt)
    finally:
        if futures:  # after a failure: stop the blocks still running
            client.cancel(list(futures))


def _run_remote(job: _BlockJob, loc: tuple[int, int, int, int]) -> np.ndarray:
    return job(*loc)


def predict_blocks(
    source: str | os.PathLike[str] | ImageSource,
    fn: BlockFunction,
    out_path: str | os.PathLike[str],
    count: int,
    dtype: str = 'uint8',
    nodata: float | None = 255,
    coarse_path: str | os.PathLike[str] | None = None,
    block: int = 512,
    halo: int = 32,
    threads: int = 1,
    scheduler: str | Client = 'threads',
    progress: bool = True,
    cog: CogOptions | None = None,
    extra_outputs: Sequence[OutputFile] = (),
) -> Path:
    """Predict a raster block by block and write the result as a COG.

    .. versionadded:: 0.1

    Args:
        source: input raster, or an :class:`~geosparse.io.source.ImageSource`
            (e.g. a mosaic); the output has the source's grid.
        fn: the model on one window (:data:`BlockFunction`), returning ``count``
            bands of ``dtype`` with the window's height and width. With a
            distributed scheduler it must pickle (geosparse's
            :class:`~geosparse.inference.Predictor` pickles to its checkpoint path).
        out_path: output COG (written atomically: nothing appears there if the
            run fails or is killed).
        count: number of output bands.
        dtype: output data type.
        nodata: output nodata, written where the input has no data.
        coarse_path: optional coarse raster (any CRS), reprojected (nearest) onto
            each window and passed to ``fn``.
        block: block size in pixels (a multiple of 512 keeps writes tile-aligned).
        halo: context read around each block and discarded.
        threads: threads of the local ``threads`` scheduler (the model itself also
            uses torch's threads).
        scheduler: ``threads`` (default), ``synchronous``, or a
            :class:`distributed.Client` (a cluster; blocks run on its workers and
            are written here as they arrive).
        progress: show a progress bar over the blocks.
        cog: keyword arguments of :func:`~geosparse.io.cog.cog_writer`
            (descriptions, colormap, tags, band_tags, scales, categorical, ...).
        extra_outputs: further COGs on the same grid, dtype and nodata, filled from
            the bands ``fn`` returns after the first ``count`` (e.g. class
            probabilities beside a class map: GeoTIFF keeps a colour table only in
            files of one or two bands).

    Returns:
        ``out_path``.

    Raises:
        ValueError: if ``block``/``halo``/``scheduler`` are invalid or ``fn``
            returns the wrong shape (the message names the block).
    """
    if block <= 0 or halo < 0:
        raise ValueError(f'block={block} must be > 0 and halo={halo} >= 0.')
    local = isinstance(scheduler, str)
    if local and scheduler not in ('threads', 'synchronous'):
        raise ValueError(
            f"scheduler={scheduler!r}: choose 'threads', 'synchronous' or pass a "
            'distributed.Client.'
        )
    src = source if isinstance(source, ImageSource) else ImageSource.open(source)
    grid = src.grid
    total = count + sum(o.count for o in extra_outputs)
    job = _BlockJob(
        src,
        fn,
        None if coarse_path is None else str(coarse_path),
        halo,
        total,
        dtype,
        nodata,
    )
    blocks = [w.toranges() for w in grid.blocks(block)]
    rows = sorted({rr for rr, _ in blocks})
    cols = sorted({cc for _, cc in blocks})
    files = [OutputFile(Path(out_path), count, cog or CogOptions()), *extra_outputs]
    with contextlib.ExitStack() as stack:
        dsts = [
            stack.enter_context(
                cog_writer(
                    f.path,
                    count=f.count,
                    height=grid.height,
                    width=grid.width,
                    dtype=dtype,
                    crs=grid.crs,
                    transform=grid.transform,
                    nodata=nodata,
                    **f.cog,
                )
            )
            for f in files
        ]
        target = _WindowTarget(dsts)
        bar = stack.enter_context(
            progress_bar(
                desc='predict',
                unit='block',
                total=len(rows) * len(cols),
                enabled=progress,
            )
        )
        if not local:
            locations = [(r0, r1, c0, c1) for (r0, r1), (c0, c1) in blocks]
            _store_distributed(job, locations, target, scheduler, bar)  # type: ignore[arg-type]
        else:

            def run(block_info: dict[Any, Any] | None = None) -> np.ndarray:
                assert block_info is not None
                (_, _), (r0, r1), (c0, c1) = block_info[None]['array-location']
                out = job(r0, r1, c0, c1)
                bar.update(1)
                return out

            chunks = (
                (total,),
                tuple(r1 - r0 for r0, r1 in rows),
                tuple(c1 - c0 for c0, c1 in cols),
            )
            token = dask.base.tokenize(src.paths, job.coarse, id(fn), block, halo)
            arr = da.map_blocks(
                run,
                chunks=chunks,
                dtype=dtype,
                name=f'geosparse-block-{token}',
                meta=np.empty((0, 0, 0), dtype),
            )
            da.store(
                arr,
                target,  # type: ignore[arg-type]  # any __setitem__ target
                lock=threading.Lock(),
                scheduler=scheduler,
                num_workers=threads,
            )
    return Path(out_path)
