"""Instances from one point per object: the points, the polygons, and their match.

Instance segmentation from point labels (one click per building or tree crown) needs
three things from the data:

- :func:`~geosparse.datasets.read_instance_points`: one point per object, as a
  :class:`~geosparse.datasets.SparsePoints` whose values are
  :data:`~geosparse.datasets.instances.INSTANCE_VALUES` ``(instance, class,
  background)``; points flagged as background (clicks on "nothing here") have instance
  and class 0;
- :class:`InstancePolygons`: the objects' outlines (for validation and testing),
  rasterised per window into an instance-id mask, the TorchGeo way (a GeoDataset,
  so that ``imagery & points & polygons`` gives all three together);
- :func:`~geosparse.datasets.match_points_to_polygons`: the polygon that holds each
  point, with a warning for a polygon without a point or a point without a polygon, and
  an error for two points in one polygon.

Ids: an instance's id comes from ``id_column``, else it is the row number + 1 (the
same rule for points and polygons, so a file's ids agree when they come from a
column). Ids are positive integers below :data:`MAX_ID` = 2**24, which float32 (the
values of :class:`~geosparse.datasets.SparsePoints`) holds exactly.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import torch
from affine import Affine
from geopandas import GeoDataFrame
from rasterio.crs import CRS
from rasterio.features import rasterize
from torchgeo.datasets.utils import GeoSlice

from ..compat import georeference
from ..errors import InputError
from ..io.points import read_points_frame
from .points import SparsePoints
from .vector import FrameDataset

__all__ = [
    'INSTANCE_VALUES',
    'MAX_ID',
    'InstancePolygons',
    'match_points_to_polygons',
    'points_on_one_pixel',
    'read_instance_points',
]

#: The value columns of :func:`~geosparse.datasets.read_instance_points`, in order, are
#: ``instance`` (id >= 1; 0 for background points), ``class`` (>= 1; 0 for background
#: points) and ``background`` (1.0 for background points, else 0.0).
INSTANCE_VALUES = ('instance', 'class', 'background')

#: Ids must stay below this (2**24; every integer up to it is exact in float32).
MAX_ID = 2**24

_TRUE = {'1', 'true', 't', 'yes', 'y', 'background', 'bg'}
_FALSE = {'', '0', 'false', 'f', 'no', 'n', 'nan', 'none', 'object', 'fg'}


def _row_ids(frame: pd.DataFrame) -> np.ndarray:
    """Row number + 1 of each row in its file (the index, if it is the row number)."""
    index = frame.index
    if pd.api.types.is_integer_dtype(index) and index.is_unique and len(index):
        if int(index.min()) >= 0:
            return index.to_numpy(np.int64) + 1
    return np.arange(1, len(frame) + 1, dtype=np.int64)


def _integers(
    column: pd.Series, path: str, param: str, what: str, minimum: int = 1
) -> np.ndarray:
    """A column of integer ids or classes, checked (``>= minimum``, ``< MAX_ID``).

    Raises:
        ValueError: for missing, non-numeric, fractional or out-of-range values.
    """
    try:
        values = pd.to_numeric(column).to_numpy(np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(
            f'{path}: {param}={column.name!r} is not numeric ({err}); give a column '
            f'of integer {what}.'
        ) from err
    bad = ~np.isfinite(values) | (values != np.round(values))
    bad |= (values < minimum) | (values >= MAX_ID)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f'{path}: {param}={column.name!r} has {int(bad.sum())} {what} that are '
            f'missing, not integers or outside [{minimum}, 2**24) (first: '
            f'{column.iloc[first]!r} at row {first}); give integer {what} >= {minimum}.'
        )
    return values.astype(np.int64)


def _truthy(column: pd.Series, path: str) -> np.ndarray:
    """Which rows of ``background_column`` flag background points.

    Booleans as they are; numbers: non-zero; text: ``true``/``yes``/``1``/
    ``background`` (any case) are background, ``false``/``no``/``0``/empty are not;
    missing values are not background.

    Raises:
        ValueError: for other text.
    """
    out = np.zeros(len(column), dtype=bool)
    for i, value in enumerate(column.tolist()):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, bool | np.bool_ | int | float | np.integer | np.floating):
            out[i] = bool(value)
            continue
        text = str(value).strip().lower()
        if text in _TRUE:
            out[i] = True
        elif text not in _FALSE:
            raise InputError(
                f'{path}: background_column={column.name!r} holds {value!r} at row '
                f'{i}; use true/false, yes/no or 1/0 (true marks a background point).'
            )
    return out


def read_instance_points(
    path: str | os.PathLike[str],
    id_column: str | None = None,
    class_column: str | None = None,
    background_column: str | None = None,
    crs: CRS | str | None = None,
    res: float | tuple[float, float] = 1.0,
    x: str | None = None,
    y: str | None = None,
    points_crs: str | None = None,
    extent: tuple[float, float, float, float] | None = None,
) -> SparsePoints:
    """One point per object, with its instance id, class and background flag.

    .. versionadded:: 0.1

    Args:
        path: vector file (any geopandas reads), GeoParquet or CSV with coordinate
            columns, in any CRS.
        id_column: instance ids (integers >= 1, unique among object points;
            background points may leave it empty); default: row number + 1.
        class_column: classes (integers >= 1); default: 1 for every object.
        background_column: truthy values mark background points (instance 0, class
            0, background 1); default: no background points.
        crs: CRS of the samples (default: the file's).
        res: pixel size of the samples' grid, in ``crs`` units.
        x: CSV x / longitude column.
        y: CSV y / latitude column.
        points_crs: CRS of CSV coordinates (default EPSG:4326).
        extent: ``(xmin, ymin, xmax, ymax)`` in ``crs`` that the dataset covers
            besides its points (e.g. the imagery's bounds).

    Returns:
        The points; their ``values`` are
        :data:`~geosparse.datasets.instances.INSTANCE_VALUES` (float32, exact for ids
        below 2**24).

    Raises:
        ValueError: naming the file, the parameter and the fix, for an empty file,
            a missing column, duplicate or non-positive ids among object points,
            ids of 2**24 or more, or non-point geometries (an
            :class:`~geosparse.errors.InputError` where this module checks).
    """
    params = {
        c: p
        for c, p in (
            (id_column, 'id_column'),
            (class_column, 'class_column'),
            (background_column, 'background_column'),
        )
        if c is not None
    }
    frame = read_points_frame(path, [], x, y, points_crs, raw=params)
    name = str(path)
    background = (
        _truthy(frame[background_column], name)
        if background_column is not None
        else np.zeros(len(frame), dtype=bool)
    )
    obj = ~background
    instance = np.zeros(len(frame), dtype=np.int64)
    if id_column is not None:
        instance[obj] = _integers(frame[id_column][obj], name, 'id_column', 'ids')
    else:
        instance[obj] = _row_ids(frame)[obj]
        if instance.max(initial=0) >= MAX_ID:
            raise InputError(
                f'{name}: {len(frame)} rows give ids (row number + 1) of 2**24 or '
                'more; split the file or give an id_column with smaller ids.'
            )
    ids, counts = np.unique(instance[obj], return_counts=True)
    if (counts > 1).any():
        dup = ids[counts > 1]
        raise InputError(
            f'{name}: id_column={id_column!r} repeats {len(dup)} instance ids among '
            f'object points (e.g. {int(dup[0])}); give each object one point and a '
            'unique id.'
        )
    classes = np.zeros(len(frame), dtype=np.int64)
    if class_column is not None:
        classes[obj] = _integers(
            frame[class_column][obj], name, 'class_column', 'classes'
        )
    else:
        classes[obj] = 1
    out = GeoDataFrame(
        {
            'instance': instance.astype(np.float64),
            'class': classes.astype(np.float64),
            'background': background.astype(np.float64),
        },
        geometry=frame.geometry.to_numpy(),
        crs=frame.crs,
    )
    if crs is not None:
        source = out.crs.to_string() if out.crs is not None else None
        target = CRS.from_user_input(crs)
        out = out.to_crs(target.to_wkt())
        finite = np.isfinite(out.geometry.x) & np.isfinite(out.geometry.y)
        if not finite.all():
            raise InputError(
                f'{name}: {int((~finite).sum())} of {len(out)} points cannot be '
                f'projected from {source} to {target.to_string()}; for a CSV, give '
                'the CRS of its x/y columns (points_crs, --points-crs).'
            )
    points = SparsePoints(out, values=INSTANCE_VALUES, res=res, extent=extent)
    points.path = name
    return points


def _read_polygons(
    path: str | os.PathLike[str] | GeoDataFrame,
    id_column: str | None,
    class_column: str | None,
) -> tuple[str, GeoDataFrame]:
    """The polygons as ``instance`` (and ``class``) columns and geometry, checked."""
    if isinstance(path, GeoDataFrame):
        gdf, name = path, '<GeoDataFrame>'
        if gdf.crs is None:
            raise InputError('InstancePolygons: the GeoDataFrame has no CRS; set it.')
    else:
        name = str(path)
        p = Path(path)
        if not p.exists():
            raise InputError(f'{name}: no such polygons file (polygons_path).')
        gdf = (
            gpd.read_parquet(p) if p.suffix.lower() == '.parquet' else gpd.read_file(p)
        )
        if gdf.crs is None:
            raise InputError(
                f'{name}: the polygons have no CRS; set it in the file (e.g. '
                'ogr2ogr -a_srs).'
            )
    for column, param in ((id_column, 'id_column'), (class_column, 'class_column')):
        if column is not None and column not in gdf.columns:
            raise InputError(
                f'{name}: no column {column!r} ({param}) (columns: '
                f'{", ".join(c for c in gdf.columns if c != "geometry")}); name one '
                'of them.'
            )
    if len(gdf) == 0:
        raise InputError(f'{name}: the file holds no polygons.')
    kinds = gdf.geom_type
    bad = ~kinds.isin(['Polygon', 'MultiPolygon']) | gdf.geometry.is_empty.to_numpy()
    if bad.any():
        found = sorted({str(k) for k in kinds[bad]})
        raise InputError(
            f'{name}: every geometry must be a (Multi)Polygon, found {", ".join(found)} '
            f'in {int(bad.sum())} rows; give object outlines (points go in points_path).'
        )
    if id_column is not None:
        ids = _integers(gdf[id_column], name, 'id_column', 'ids')
    else:
        ids = _row_ids(gdf)
        if ids.max() >= MAX_ID:
            raise InputError(
                f'{name}: too many rows for row-number ids (2**24); give an id_column.'
            )
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(
            f'{name}: id_column={id_column!r} repeats {int((counts > 1).sum())} ids '
            f'(e.g. {int(uniq[counts > 1][0])}); give each polygon a unique id.'
        )
    columns: dict[str, Any] = {'instance': ids}
    if class_column is not None:
        columns['class'] = _integers(gdf[class_column], name, 'class_column', 'classes')
    frame = GeoDataFrame(columns, geometry=gdf.geometry.to_numpy(), crs=gdf.crs)
    return name, frame


class InstancePolygons(FrameDataset):
    """Instance polygons, rasterised per window into an instance-id mask.

    Sample keys: ``instances`` ``(H, W)`` int64, each pixel the id of the polygon
    holding its centre (0: none; rasterio's pixel-centre rule, ``all_touched``
    off), ``classes`` ``(H, W)`` int64 with ``class_column`` (0: none), and the
    georeference keys of :func:`~geosparse.compat.georeference`. Where polygons
    overlap, the later one in the file wins (it is burnt last), in both masks.

    Ids keep their exact values: the mask is burnt here, not through TorchGeo's
    VectorDataset (which casts labels).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | GeoDataFrame,
        id_column: str | None = None,
        class_column: str | None = None,
        crs: CRS | str | None = None,
        res: float | tuple[float, float] = 1.0,
        extent: tuple[float, float, float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """Read the polygons.

        Args:
            path: any vector file geopandas reads, GeoParquet, or a GeoDataFrame
                (with a CRS).
            id_column: instance ids (integers >= 1, unique); default: row number
                + 1, the rule of :func:`~geosparse.datasets.read_instance_points`.
            class_column: classes (integers >= 1); default: no ``classes`` key.
            crs: CRS of the samples (default: the file's).
            res: pixel size of the windows' grid, in ``crs`` units.
            extent: ``(xmin, ymin, xmax, ymax)`` in ``crs`` that the dataset covers
                besides its polygons (e.g. the imagery's bounds).
            transforms: applied to each sample.

        Raises:
            ValueError: naming the file, the parameter and the fix, for an empty
                file, a missing column, non-polygon geometries, or duplicate,
                non-integer or non-positive ids.
        """
        self.path, frame = _read_polygons(path, id_column, class_column)
        self.has_classes = class_column is not None
        if crs is not None:
            frame = frame.to_crs(CRS.from_user_input(crs).to_wkt())
        self.transforms = transforms
        self._res = (float(res), float(res)) if isinstance(res, int | float) else res
        self._extent = extent
        self._set_frame(frame)

    def _set_frame(self, frame: GeoDataFrame) -> None:
        """Keep the polygons and the index (their footprint and the extent)."""
        #: The polygons (``instance``, ``class`` if given, geometry) in :attr:`crs`.
        self.frame = frame.reset_index(drop=True)
        self._index_footprint(self.frame)

    def _frame(self) -> GeoDataFrame:
        """The polygons (see :class:`~geosparse.datasets.vector.FrameDataset`)."""
        return self.frame

    def relabel(self, ids: Sequence[int] | np.ndarray) -> InstancePolygons:
        """A copy whose polygons have these ids (one per polygon, in order).

        Raises:
            ValueError: for a length other than the number of polygons.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(self.frame):
            raise ValueError(f'{len(ids)} ids for {len(self.frame)} polygons.')
        frame = self.frame.copy()
        frame['instance'] = ids
        other = copy.copy(self)
        other._set_frame(frame)
        return other

    def __len__(self) -> int:
        """Number of polygons."""
        return len(self.frame)

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """The instance (and class) mask of a window ``[xmin, xmax] × [ymin, ymax]``."""
        x, y, _ = self._disambiguate_slice(query)
        xres = x.step or self.res[0]
        yres = y.step or self.res[1]
        width = round((x.stop - x.start) / xres)
        height = round((y.stop - y.start) / yres)
        transform = Affine(xres, 0.0, x.start, 0.0, -yres, y.stop)
        near = np.sort(
            self.frame.sindex.query(shapely.box(x.start, y.start, x.stop, y.stop))
        )
        geoms = self.frame.geometry.to_numpy()[near]

        def burn(values: np.ndarray) -> torch.Tensor:
            if len(near) == 0 or width == 0 or height == 0:
                return torch.zeros(height, width, dtype=torch.int64)
            mask = rasterize(
                zip(geoms, values[near].tolist(), strict=True),
                out_shape=(height, width),
                transform=transform,
                fill=0,
                all_touched=False,
                dtype='int32',
            )
            return torch.from_numpy(mask.astype(np.int64))

        sample: dict[str, Any] = {
            'instances': burn(self.frame['instance'].to_numpy(np.int64))
        }
        if self.has_classes:
            sample['classes'] = burn(self.frame['class'].to_numpy(np.int64))
        sample.update(
            georeference(
                self.crs, slice(x.start, x.stop, xres), slice(y.start, y.stop, yres)
            )
        )
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def points_on_one_pixel(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Indices of the first group of points that share a pixel (empty if none).

    Two objects cannot be told apart by one pixel: their queries would sit on the
    same spot, and one of them would come out with no mask. The data module and
    :func:`~geosparse.inference.predict_instances` refuse such points.

    .. versionadded:: 0.8

    Args:
        rows: ``(P,)`` integer pixel rows of the object points.
        cols: ``(P,)`` integer pixel columns.

    Returns:
        The indices (into ``rows``) of every point on the first shared pixel, in
        order; an empty array when each point has a pixel of its own.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if len(rows) < 2:
        return np.zeros(0, dtype=np.int64)
    _, first, counts = np.unique(
        np.stack([rows, cols], 1), axis=0, return_index=True, return_counts=True
    )
    if not (counts > 1).any():
        return np.zeros(0, dtype=np.int64)
    k = int(first[counts > 1].min())
    return np.flatnonzero((rows == rows[k]) & (cols == cols[k]))


def match_points_to_polygons(
    points: SparsePoints | GeoDataFrame,
    polygons: InstancePolygons | GeoDataFrame,
    points_path: str | None = None,
    polygons_path: str | None = None,
) -> np.ndarray:
    """The id of the polygon that holds each point (0: none).

    Background points (``background`` 1 in
    :data:`~geosparse.datasets.instances.INSTANCE_VALUES`) match nothing and are not
    checked. Where polygons overlap, the later one holds the point, as in
    :class:`InstancePolygons`' masks.

    .. versionadded:: 0.1

    Args:
        points: the points, e.g. of :func:`~geosparse.datasets.read_instance_points`, or
            a GeoDataFrame (with an optional ``background`` column).
        polygons: the polygons; a GeoDataFrame's ids are its ``instance`` column,
            else its row number + 1.
        points_path: the points' file, for messages (default: theirs, if known).
        polygons_path: the polygons' file, for messages.

    Returns:
        ``(P,)`` int64 polygon ids, one per point.

    Raises:
        ValueError: if two object points fall in one polygon (naming both files).

    Warns:
        UserWarning: for polygons without a point and object points without a
            polygon (naming the files).
    """
    if isinstance(points, SparsePoints):
        pts = points.points
        points_path = points_path or points.path
    else:
        pts = points
    if isinstance(polygons, InstancePolygons):
        polys = polygons.frame
        polygons_path = polygons_path or polygons.path
    else:
        polys = polygons
    points_path = points_path or '<points>'
    polygons_path = polygons_path or '<polygons>'
    ids = (
        polys['instance'].to_numpy(np.int64)
        if 'instance' in polys.columns
        else np.arange(1, len(polys) + 1, dtype=np.int64)
    )
    if pts.crs is not None and polys.crs is not None and pts.crs != polys.crs:
        pts = pts.to_crs(polys.crs)
    background = (
        pts['background'].to_numpy(np.float64) > 0
        if 'background' in pts.columns
        else np.zeros(len(pts), dtype=bool)
    )
    obj = np.flatnonzero(~background)
    found = np.full(len(pts), -1, dtype=np.int64)
    if len(obj) and len(polys):
        pi, gi = polys.sindex.query(pts.geometry.to_numpy()[obj], predicate='within')
        # the later polygon wins where polygons overlap
        np.maximum.at(found, obj[pi], gi)
    out = np.where(found >= 0, ids[np.maximum(found, 0)], 0)
    out[background] = 0
    held = found[found >= 0]
    poly, counts = np.unique(held, return_counts=True)
    if (counts > 1).any():
        k = int(poly[counts > 1][0])
        inside = np.flatnonzero(found == k)[:2]
        names = (
            [f'instance {int(i)}' for i in pts['instance'].to_numpy()[inside]]
            if 'instance' in pts.columns
            else [f'row {int(i)}' for i in inside]
        )
        raise InputError(
            f'{points_path}: points {names[0]} and {names[1]} both fall in polygon '
            f'{int(ids[k])} of {polygons_path} ({int((counts > 1).sum())} polygons '
            'hold several points); give one point per object.'
        )
    lonely = len(obj) - len(held)
    if lonely:
        warnings.warn(
            f'{points_path}: {lonely} of {len(obj)} object points lie in no polygon '
            f'of {polygons_path}; check that both files cover the same objects (and '
            'their CRS).',
            stacklevel=2,
        )
    empty = len(polys) - len(poly)
    if empty:
        warnings.warn(
            f'{polygons_path}: {empty} of {len(polys)} polygons hold no point of '
            f'{points_path}; add a point per object (or drop those polygons).',
            stacklevel=2,
        )
    return out
