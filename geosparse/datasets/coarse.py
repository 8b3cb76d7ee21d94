"""Coarse and fine label rasters for label super-resolution, TorchGeo-native.

Imagery comes from any :class:`~torchgeo.datasets.RasterDataset` (TorchGeo's NAIP
included). Coarse labels (e.g. NLCD at 30 m in EPSG:5070) come from
:class:`CoarseLabels`, which behaves like any categorical RasterDataset (it is
reprojected onto the imagery's grid with nearest-neighbour resampling by ``&``) and
adds, for every fine pixel, the id of the *coarse pixel it falls in*, computed from
the coarse raster's own transform and CRS. Those ids are the blocks of the label
counting layer.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any, Literal

import numpy as np
import rasterio
import torch
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from torch import Tensor
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice, Path

from ..io.source import nodata_mask
from .regrid import QuietRegrid

__all__ = ['CoarseLabels', 'FineLabels', 'ImageryDataset', 'class_codes']


class ImageryDataset(QuietRegrid, RasterDataset):
    """Multiband imagery from any GeoTIFFs matching ``filename_glob``.

    A thin, configurable RasterDataset: ``ImageryDataset(paths, glob='*_naip.tif')``.
    TorchGeo's own :class:`~torchgeo.datasets.NAIP` works just as well.

    Pixels whose every band holds a raster's declared nodata value come as NaN, as
    prediction reads them (:func:`geosparse.io.source.nodata_mask`), so that the
    tasks leave them out of training (:class:`~geosparse.trainers.FiniteTraining`)
    instead of learning from the fill value.

    .. versionadded:: 0.1

    .. versionchanged:: 0.7
       Declared nodata pixels are NaN (they were the fill value, e.g. black).
    """

    is_image = True

    def __init__(
        self,
        paths: Path | Iterable[Path] = 'data',
        glob: str = '*.tif',
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        bands: list[str] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
    ) -> None:
        """Index the rasters.

        Args:
            paths: files or folders.
            glob: file name pattern.
            crs: output CRS (default: the first file's).
            res: output resolution (default: the first file's).
            bands: band names (all bands by default).
            transforms: sample transforms.
            cache: keep opened files.
        """
        self.filename_glob = glob
        super().__init__(paths, crs, res, bands, transforms, cache)
        nodata = set()
        for path in sorted(set(self.index.filepath)):
            with rasterio.open(path) as src:
                if src.nodata is not None:
                    nodata.add(float(src.nodata))
        self.nodata_values = sorted(nodata)

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """The window's imagery, NaN where every band holds a declared nodata value.

        The mask is taken on the values as stored, before any ``transforms``.
        """
        transforms, self.transforms = self.transforms, None
        try:
            sample = super().__getitem__(query)
        finally:
            self.transforms = transforms
        image = sample.get('image')
        if self.nodata_values and isinstance(image, Tensor):
            values = image.numpy()
            missing = np.logical_or.reduce(
                [nodata_mask(values, v) for v in self.nodata_values]
            )
            if bool(missing.any()):
                sample['image'] = image.masked_fill(
                    torch.from_numpy(missing), float('nan')
                )
        if transforms is not None:
            sample = transforms(sample)
        return sample


def class_codes(
    values: np.ndarray, nodata: int | None, source: str, kind: str, option: str
) -> np.ndarray:
    """Class codes (int64) of a label raster read as floating point.

    NaN becomes ``nodata``; a value that is not a whole number is refused, since a
    continuous raster is not a class map.

    Args:
        values: the raster's values, any shape and dtype.
        nodata: the code NaN becomes (``None``: NaN is an error).
        source: the file(s), for messages.
        kind: ``coarse`` or ``fine``, for messages.
        option: the setting that gives ``nodata`` (e.g. ``coarse_nodata``).

    Returns:
        ``values`` as int64 codes.

    Raises:
        ValueError: for NaN without a ``nodata`` code, or fractional values.

    .. versionadded:: 0.7
    """
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        return values.astype(np.int64)
    missing = np.isnan(values)
    if missing.any():
        if nodata is None:
            raise ValueError(
                f'{source}: NaN {kind} pixels but no nodata code; give the code '
                f'({option}) that NaN should become.'
            )
        values = np.where(missing, float(nodata), values)
    fractions = values[values != np.round(values)]
    if fractions.size:
        raise ValueError(
            f'{source}: {kind} labels must be whole-number class codes, but the raster '
            f'holds values such as {float(fractions[0]):g}; give a class map.'
        )
    return values.astype(np.int64)


class _ClassCodes(RasterDataset):
    """Mixin: a class-code raster read as float32 with nearest resampling.

    TorchGeo casts a mask to int64 on reading, which turns the NaN of a
    floating-point label raster into an arbitrary code; reading float32 keeps NaN
    until :meth:`_codes` makes it the ``nodata`` code.
    """

    nodata: int | None
    #: the labels' kind and the setting that gives ``nodata``, named in messages.
    kind = 'label'
    nodata_option = 'nodata'

    @property
    def dtype(self) -> torch.dtype:
        """float32 as read, so that NaN survives until :meth:`_codes`."""
        return torch.float32

    @property
    def resampling(self) -> Resampling:
        """Nearest: codes are categories (TorchGeo's default for floats is bilinear)."""
        return Resampling.nearest

    @cached_property
    def _files(self) -> str:
        """The indexed files, named in messages (listed once, not per window)."""
        return ', '.join(sorted(set(self.index.filepath)))

    def _codes(self, values: Tensor) -> Tensor:
        """Codes (int64) of a window read as float, by :func:`class_codes`.

        Raises:
            ValueError: for NaN without a ``nodata`` code, or fractional codes.
        """
        codes = class_codes(
            values.numpy(), self.nodata, self._files, self.kind, self.nodata_option
        )
        return torch.from_numpy(codes)


class FineLabels(QuietRegrid, _ClassCodes):
    """Fine (high-resolution) categorical labels, returned under ``mask``.

    Read like :class:`CoarseLabels`: nearest resampling, NaN of a floating-point
    raster as the ``nodata`` code, fractional values refused.

    .. versionadded:: 0.1

    .. versionchanged:: 0.7
       NaN is ``nodata`` (it was cast to an arbitrary code).
    """

    is_image = False
    kind = 'fine'
    nodata_option = 'fine_nodata'

    def __init__(
        self,
        paths: Path | Iterable[Path] = 'data',
        glob: str = '*.tif',
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
        nodata: int | None = 0,
    ) -> None:
        """Index the rasters (see :class:`ImageryDataset` for the arguments).

        Args:
            paths: files or folders.
            glob: file name pattern.
            crs: output CRS.
            res: output resolution.
            transforms: sample transforms.
            cache: keep opened files.
            nodata: fine code that NaN becomes ("no label").
        """
        self.filename_glob = glob
        self.nodata = nodata
        self._sample_transforms = transforms
        super().__init__(paths, crs, res, None, None, cache)

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """Return ``mask`` (int64 codes, NaN as ``nodata``) for a window."""
        sample = super().__getitem__(query)
        sample['mask'] = self._codes(sample['mask'])
        if self._sample_transforms is not None:
            sample = self._sample_transforms(sample)
        return sample


class CoarseLabels(QuietRegrid, _ClassCodes):
    r"""Coarse categorical labels with the block structure of their own grid.

    Each sample holds ``coarse`` (the coarse code at every pixel of the query grid,
    nearest-neighbour) and, with ``blocks='grid'``, ``block``: an integer per pixel
    naming the coarse pixel it falls in (``-1`` where the coarse value is nodata).
    The block of pixel centre :math:`(x, y)` (query CRS) is the cell
    :math:`(\lfloor (Y - f)/e \rfloor, \lfloor (X - c)/a \rfloor)` of the coarse
    raster's affine transform :math:`(a, 0, c, 0, e, f)`, where :math:`(X, Y)` is
    :math:`(x, y)` reprojected to the coarse raster's CRS.

    For coarse labels that were already resampled onto the fine grid (their cells
    are lost) two approximations exist: ``blocks='regions'`` returns no ``block``,
    and the loss uses the regions of one coarse class within a sample, as the
    authors' code does; ``blocks='cells'`` cuts those regions with a grid of
    ``cell_size`` (query CRS units, anchored at the CRS origin), which restores
    blocks of about the coarse pixel's size.

    .. versionadded:: 0.1
    """

    is_image = False
    kind = 'coarse'
    nodata_option = 'coarse_nodata'

    def __init__(
        self,
        paths: Path | Iterable[Path] = 'data',
        glob: str = '*.tif',
        crs: CRS | None = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
        nodata: int | None = 0,
        blocks: Literal['grid', 'regions', 'cells'] = 'grid',
        cell_size: float = 30.0,
    ) -> None:
        """Index the coarse rasters.

        Args:
            paths: files or folders.
            glob: file name pattern.
            crs: output CRS (set by ``&`` to the imagery's).
            res: output resolution (set by ``&`` to the imagery's).
            transforms: sample transforms.
            cache: keep opened files.
            nodata: coarse value meaning "no label" (NLCD: 0).
            blocks: ``grid`` (blocks are coarse pixels), ``regions`` or ``cells``.
            cell_size: block size for ``blocks='cells'``.

        Raises:
            ValueError: if the coarse rasters do not share one grid.
        """
        if blocks not in ('grid', 'regions', 'cells'):
            raise ValueError(f"blocks={blocks!r}: choose 'grid', 'regions' or 'cells'.")
        if cell_size <= 0:
            raise ValueError(f'cell_size={cell_size} must be > 0.')
        self.cell_size = cell_size
        self.filename_glob = glob
        self.nodata = nodata
        self.blocks = blocks
        self._sample_transforms = transforms
        super().__init__(paths, crs, res, None, None, cache)
        self._native_crs, self._native = self._native_grid()

    def _native_grid(self) -> tuple[CRS, tuple[float, float, float, float]]:
        """CRS and grid (a, c, e, f) of the coarse rasters, checked to agree."""
        files = sorted(set(self.index.filepath))
        grid: tuple[float, float, float, float] | None = None
        crs: CRS | None = None
        for path in files:
            with rasterio.open(path) as src:
                t = src.transform
                this = (t.a, t.c, t.e, t.f)
                if grid is None:
                    grid, crs = this, src.crs
                    continue
                same_res = math.isclose(t.a, grid[0]) and math.isclose(t.e, grid[2])
                dx = (t.c - grid[1]) / grid[0]
                dy = (t.f - grid[3]) / grid[2]
                aligned = abs(dx - round(dx)) < 1e-3 and abs(dy - round(dy)) < 1e-3
                if src.crs != crs or not (same_res and aligned):
                    raise ValueError(
                        f'{path}: coarse rasters must share one grid (CRS, resolution '
                        f'and alignment) so that their pixels define the blocks; '
                        f'this file differs from {files[0]}. Warp it onto that grid, '
                        "or use blocks='regions'."
                    )
        assert grid is not None and crs is not None
        return crs, grid

    def block_ids(self, query: GeoSlice, shape: tuple[int, int]) -> np.ndarray:
        """Coarse-pixel id of every pixel centre of a query window.

        Args:
            query: the window, in this dataset's CRS.
            shape: ``(height, width)`` of the window in pixels.

        Returns:
            ``(H, W)`` int64 ids, unique per coarse pixel, relabelled to ``0..n-1``.
        """
        x, y, _ = self._disambiguate_slice(query)
        h, w = shape
        xs = x.start + (np.arange(w) + 0.5) * (x.stop - x.start) / w
        ys = y.stop - (np.arange(h) + 0.5) * (y.stop - y.start) / h
        gx, gy = np.meshgrid(xs, ys)
        if CRS.from_user_input(self.crs) != self._native_crs:
            tr = Transformer.from_crs(self.crs, self._native_crs, always_xy=True)
            gx, gy = tr.transform(gx, gy)
        a, c, e, f = self._native
        col = np.floor((np.asarray(gx) - c) / a).astype(np.int64)
        row = np.floor((np.asarray(gy) - f) / e).astype(np.int64)
        col -= col.min()
        row -= row.min()
        ids = row * (int(col.max()) + 1) + col
        _, inv = np.unique(ids, return_inverse=True)
        return inv.reshape(h, w).astype(np.int64)

    def cell_ids(
        self, query: GeoSlice, shape: tuple[int, int], coarse: np.ndarray
    ) -> np.ndarray:
        """Ids of (grid cell of ``cell_size``, coarse value) pairs in a window.

        Args:
            query: the window, in this dataset's CRS.
            shape: ``(height, width)`` in pixels.
            coarse: ``(H, W)`` coarse values of the window.

        Returns:
            ``(H, W)`` int64 ids relabelled to ``0..n-1``.
        """
        x, y, _ = self._disambiguate_slice(query)
        h, w = shape
        xs = x.start + (np.arange(w) + 0.5) * (x.stop - x.start) / w
        ys = y.stop - (np.arange(h) + 0.5) * (y.stop - y.start) / h
        col = np.floor(xs / self.cell_size).astype(np.int64)
        row = np.floor(ys / self.cell_size).astype(np.int64)
        col -= col.min()
        row -= row.min()
        cell = row[:, None] * (int(col.max()) + 1) + col[None, :]
        key = cell * (int(coarse.max()) + 1) + coarse.astype(np.int64)
        _, inv = np.unique(key, return_inverse=True)
        return inv.reshape(h, w).astype(np.int64)

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """Return ``coarse`` (and ``block``) for a window.

        Args:
            query: ``[xmin:xmax:xres, ymin:ymax:yres, tmin:tmax:tres]``.

        Returns:
            The sample; ``coarse`` is int64 with nodata as stored in the file, and
            NaN (of a floating-point raster) as ``nodata``.

        .. versionchanged:: 0.7
           NaN is nodata (it was cast to an arbitrary code).
        """
        sample = super().__getitem__(query)
        coarse = self._codes(sample.pop('mask'))
        sample['coarse'] = coarse
        if self.blocks != 'regions':
            shape = (int(coarse.shape[-2]), int(coarse.shape[-1]))
            if self.blocks == 'grid':
                ids_np = self.block_ids(query, shape)
                # GDAL's warper samples with an approximate transformer, so near cell
                # borders its nearest value can come from the neighbouring coarse
                # pixel; the exact cell index is authoritative: every block takes
                # the code that most of its pixels received.
                codes = coarse.numpy().astype(np.int64)
                k = int(codes.max()) + 1
                counts = np.bincount(
                    (ids_np * k + codes).ravel(), minlength=(int(ids_np.max()) + 1) * k
                ).reshape(-1, k)
                coarse = torch.from_numpy(counts.argmax(1)[ids_np]).to(coarse.dtype)
                sample['coarse'] = coarse
                ids = torch.from_numpy(ids_np)
            else:
                ids = torch.from_numpy(self.cell_ids(query, shape, coarse.numpy()))
            if self.nodata is not None:
                ids[coarse == self.nodata] = -1
            sample['block'] = ids
        if self.nodata is not None and bool((coarse == self.nodata).all()):
            warnings.warn(
                f'{type(self).__name__}: a window holds only coarse nodata '
                f'({self.nodata}); it contributes nothing to a coarse-label loss.',
                stacklevel=2,
            )
        if self._sample_transforms is not None:
            sample = self._sample_transforms(sample)
        return sample
