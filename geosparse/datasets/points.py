"""Sparse point labels as a TorchGeo GeoDataset.

:class:`SparsePoints` reads points and one or more value columns (any file geopandas
reads, GeoParquet, or CSV with coordinate columns; :func:`~geosparse.io.points.read_points_frame`),
in any CRS. A sample is the points inside the query window as pixel coordinates
``(row, col)`` of the window's grid with their values, not a rasterised mask, so that
``imagery & points`` gives the image and its points together.
:func:`~geosparse.datasets.collate_points` pads a batch to the largest number of points
and adds a validity mask; :func:`~geosparse.datasets.spatial_split` holds out whole
spatial blocks of points for validation and testing (nearby points are correlated, so a
random split would leak).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from geopandas import GeoDataFrame
from rasterio.crs import CRS
from torch import Tensor
from torchgeo.datasets.utils import GeoSlice, stack_samples

from ..compat import georeference
from ..io.points import read_points_frame
from .vector import FrameDataset

__all__ = ['POINT_KEYS', 'SparsePoints', 'collate_points', 'spatial_split']

#: Per-point sample keys besides ``points``, padded by
#: :func:`~geosparse.datasets.collate_points`: ``values``, the points' value columns
#: (e.g. NPP targets), and ``covariances``, each point's Gaussian covariance (GST, set
#: by :class:`~geosparse.datamodules.CountingDataModule`).
POINT_KEYS = ('values', 'covariances')


class SparsePoints(FrameDataset):
    """Point labels with float values, sampled by geographic windows.

    Sample keys: ``points`` ``(N, 2)`` float32 pixel coordinates ``(row, col)`` of
    the window (row 0 at the top, pixel centres at +0.5), ``values`` ``(N, V)``
    float32, ``crs`` and ``bounds``; with :meth:`with_values` ``(..., key=...)``, also
    that key (e.g. ``covariances`` ``(N, 3)``).

    .. versionadded:: 0.1
    """

    snap_footprint = True

    def __init__(
        self,
        path: str | os.PathLike[str] | GeoDataFrame,
        values: str | Sequence[str] = (),
        crs: CRS | str | None = None,
        res: float | tuple[float, float] = 1.0,
        x: str | None = None,
        y: str | None = None,
        points_crs: str | None = None,
        subset: Sequence[int] | np.ndarray | None = None,
        extent: tuple[float, float, float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Read the points.

        Args:
            path: points file, or the points as a GeoDataFrame (with a CRS).
            values: value column(s); none (``[]``) for points that only mark
                objects (counting).
            crs: CRS of the samples (default: the file's).
            res: pixel size of the windows' grid, in ``crs`` units.
            x: CSV x / longitude column.
            y: CSV y / latitude column.
            points_crs: CRS of CSV coordinates (default EPSG:4326).
            subset: keep only these rows (e.g. one part of
                :func:`~geosparse.datasets.spatial_split`).
            extent: ``(xmin, ymin, xmax, ymax)`` in ``crs`` that the dataset covers
                besides its points (default: the points' footprint), so that
                windows without points can be sampled (e.g. the imagery's bounds
                for counting, where empty windows say "nothing here").
            transforms: applied to each sample.

        Raises:
            ValueError: for bad files or columns (the message names them).
        """
        self.values = [values] if isinstance(values, str) else list(values)
        #: Further per-point sample keys (of
        #: :data:`~geosparse.datasets.points.POINT_KEYS`) and their columns.
        self.point_columns: dict[str, list[str]] = {}
        if isinstance(path, GeoDataFrame):
            if path.crs is None:
                raise ValueError('SparsePoints: the GeoDataFrame has no CRS; set it.')
            frame = path[[*self.values, 'geometry']]
            path = '<GeoDataFrame>'
        else:
            frame = read_points_frame(path, self.values, x, y, points_crs)
        if crs is not None:
            source_crs = frame.crs.to_string() if frame.crs is not None else None
            target = CRS.from_user_input(crs)
            frame = frame.to_crs(target.to_wkt())
            finite = np.isfinite(frame.geometry.x) & np.isfinite(frame.geometry.y)
            if not finite.all():
                raise ValueError(
                    f'{path}: {int((~finite).sum())} of {len(frame)} points cannot be '
                    f'projected from {source_crs} to {target.to_string()} (coordinates '
                    'outside the valid area of their CRS); for a CSV, give the CRS of '
                    'its x/y columns (points_crs, --points-crs).'
                )
        if subset is not None:
            frame = frame.iloc[np.asarray(subset)]
        self.path = str(path)
        self.transforms = transforms
        self._res = (float(res), float(res)) if isinstance(res, int | float) else res
        self._extent = extent
        self._set_frame(frame)

    def _set_frame(self, frame: GeoDataFrame) -> None:
        """Keep the points, their coordinate and value arrays, and the index."""
        self.points = frame.reset_index(drop=True)
        self._xy = np.stack(
            [self.points.geometry.x.to_numpy(), self.points.geometry.y.to_numpy()], 1
        )
        self._values = self.points[self.values].to_numpy(np.float32)
        self._columns = {
            key: self.points[names].to_numpy(np.float32)
            for key, names in self.point_columns.items()
        }
        self._index_footprint(self.points)

    def _frame(self) -> GeoDataFrame:
        """The points (see :class:`~geosparse.datasets.vector.FrameDataset`)."""
        return self.points

    def with_values(
        self, columns: Mapping[str, np.ndarray], key: str = 'values'
    ) -> SparsePoints:
        """A copy whose samples carry these per-point columns as ``key``.

        ``key='values'`` replaces the value columns; another key of
        :data:`~geosparse.datasets.points.POINT_KEYS` adds a per-point array beside
        them, e.g. the fitted Gaussians' covariances of
        :class:`~geosparse.datamodules.CountingDataModule` as ``covariances``.

        Raises:
            ValueError: if a column's length differs from the number of points, or
                for a key outside :data:`~geosparse.datasets.points.POINT_KEYS`.
        """
        if key not in POINT_KEYS:
            raise ValueError(
                f'key={key!r}: per-point columns go under one of {list(POINT_KEYS)} '
                '(collate_points pads those).'
            )
        frame = self.points.copy()
        for name, column in columns.items():
            if len(column) != len(frame):
                raise ValueError(
                    f'column {name!r} has {len(column)} values for {len(frame)} points.'
                )
            frame[name] = np.asarray(column, dtype=np.float64)
        other = copy.copy(self)
        if key == 'values':
            other.values = list(columns)
        else:
            other.point_columns = {**self.point_columns, key: list(columns)}
        other._set_frame(frame)
        return other

    def select(self, indices: Sequence[int] | np.ndarray) -> SparsePoints:
        """A copy holding only the points ``indices`` (e.g. one split), not re-read."""
        other = copy.copy(self)
        other._set_frame(self.points.iloc[np.asarray(indices)])
        return other

    def xy(self) -> np.ndarray:
        """``(P, 2)`` point coordinates in :attr:`crs`."""
        return self._xy

    def __len__(self) -> int:
        """Number of points."""
        return len(self.points)

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """Points inside a window ``[xmin, xmax) × (ymin, ymax]``, in its pixels."""
        x, y, _ = self._disambiguate_slice(query)
        xres = x.step or self.res[0]
        yres = y.step or self.res[1]
        xy = self._xy
        inside = (
            (xy[:, 0] >= x.start)
            & (xy[:, 0] < x.stop)
            & (xy[:, 1] > y.start)
            & (xy[:, 1] <= y.stop)
        )
        sel = xy[inside]
        rows = (y.stop - sel[:, 1]) / yres
        cols = (sel[:, 0] - x.start) / xres
        sample: dict[str, Any] = {
            'points': torch.from_numpy(np.stack([rows, cols], 1).astype(np.float32)),
            'values': torch.from_numpy(self._values[inside]),
            **{k: torch.from_numpy(a[inside]) for k, a in self._columns.items()},
            **georeference(
                self.crs, slice(x.start, x.stop, xres), slice(y.start, y.stop, yres)
            ),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def collate_points(samples: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch samples with different numbers of points.

    ``points`` becomes ``(B, N, 2)`` and each per-point key of
    :data:`~geosparse.datasets.points.POINT_KEYS` that the samples carry (``values``
    ``(B, N, V)``, ``covariances`` ``(B, N, 3)``) ``(B, N, ·)``, padded with zeros to
    the largest ``N`` of the batch, with ``valid`` ``(B, N)`` marking real points; the
    other keys are stacked as by TorchGeo's ``stack_samples``.

    .. versionadded:: 0.1
    """
    samples = list(samples)
    n = max((len(s['points']) for s in samples), default=0)
    b = len(samples)
    points = torch.zeros(b, n, 2)
    valid = torch.zeros(b, n, dtype=torch.bool)
    for i, s in enumerate(samples):
        k = len(s['points'])
        points[i, :k] = s['points']
        valid[i, :k] = True
    padded: dict[str, Tensor] = {}
    for key in POINT_KEYS:
        if not samples or key not in samples[0]:
            continue
        nv = max((s[key].shape[-1] for s in samples if s[key].ndim == 2), default=1)
        out = torch.zeros(b, n, nv)
        for i, s in enumerate(samples):
            k = len(s['points'])
            out[i, :k] = s[key].reshape(k, nv)
        padded[key] = out
    rest = [
        {k: v for k, v in s.items() if k != 'points' and k not in POINT_KEYS}
        for s in samples
    ]
    batch = stack_samples(rest)
    batch.update(points=points, valid=valid, **padded)
    return batch


def spatial_split(
    xy: np.ndarray,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    block_size: float = 1000.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """Split points by square spatial blocks, so that held-out points are far away.

    Blocks of ``block_size`` (CRS units) are shuffled and given to the splits in turn
    until each split holds its fraction of the points.

    .. versionadded:: 0.1

    Args:
        xy: ``(P, 2)`` coordinates.
        fractions: fraction of points per split (they must sum to 1).
        block_size: block side in CRS units (larger than the kernel's reach).
        seed: shuffling seed.

    Returns:
        One array of point indices per split.

    Raises:
        ValueError: if the fractions do not sum to 1.
    """
    if not np.isclose(sum(fractions), 1.0):
        raise ValueError(f'fractions {list(fractions)} must sum to 1.')
    cells = np.floor(np.asarray(xy) / block_size).astype(np.int64)
    _, cell_id = np.unique(cells, axis=0, return_inverse=True)
    order = np.random.default_rng(seed).permutation(cell_id.max() + 1)
    counts = np.bincount(cell_id)
    cum = np.cumsum(counts[order]) / len(xy)
    bounds = np.cumsum(fractions)
    split_of_cell = np.empty(len(order), dtype=np.int64)
    split_of_cell[order] = np.minimum(
        np.searchsorted(bounds, cum - counts[order] / len(xy) / 2), len(fractions) - 1
    )
    return [
        np.flatnonzero(split_of_cell[cell_id.ravel()] == i)
        for i in range(len(fractions))
    ]
