"""Instance maps as polygons: one feature per instance, written atomically."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from shapely.geometry import shape

from .raster import atomic_path, remove_staging

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    'POLYGON_FORMATS',
    'instance_polygons',
    'require_geoparquet',
    'write_polygons',
]

#: File suffix -> writer of :func:`~geosparse.io.write_polygons`.
POLYGON_FORMATS: dict[str, str] = {'.gpkg': 'GeoPackage', '.parquet': 'GeoParquet'}


def _majority(instances: np.ndarray, classes: np.ndarray) -> dict[int, int]:
    """Most frequent class per instance id (ties: the smallest class)."""
    inst = instances.ravel()
    cls = np.asarray(classes).astype(np.int64).ravel()
    keep = inst != 0
    iid, iinv = np.unique(inst[keep], return_inverse=True)
    cid, cinv = np.unique(cls[keep], return_inverse=True)
    if len(iid) == 0:
        return {}
    code = iinv.astype(np.int64) * len(cid) + cinv
    uniq, counts = np.unique(code, return_counts=True)
    table = np.zeros((len(iid), len(cid)), dtype=np.int64)
    table[uniq // len(cid), uniq % len(cid)] = counts
    best = cid[table.argmax(axis=1)]
    return {int(i): int(c) for i, c in zip(iid, best, strict=True)}


def instance_polygons(
    instances: np.ndarray,
    transform: Affine,
    crs: Any,
    classes: np.ndarray | None = None,
    point_ids: np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """One (Multi)Polygon feature per instance id of an instance map.

    The pixels of each id are traced with :func:`rasterio.features.shapes`
    (4-connected, exact pixel edges, holes kept) and the pieces of one id merged
    with :func:`shapely.union_all`, so an instance split in several parts is one
    MultiPolygon.

    .. versionadded:: 0.1

    Args:
        instances: ``(H, W)`` int instance map, 0 the background (ids must fit in
            int32).
        transform: the map's affine transform.
        crs: the map's CRS (anything :mod:`geopandas` takes).
        classes: optional ``(H, W)`` int class map; each instance's ``class`` is the
            most frequent value under it (ties: the smallest). Default: 1.
        point_ids: optional ids to keep (e.g. those of the labelled points); ids
            without pixels are left out. Default: every nonzero id.

    Returns:
        A GeoDataFrame sorted by id with columns ``instance`` (int64), ``class``
        (int64), ``area`` (of the polygon, CRS units squared), ``pixels`` (int64
        count) and ``geometry``.
    """
    import geopandas as gpd

    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise ValueError(f'instances must be (H, W), got shape {inst.shape}.')
    inst = inst.astype(np.int64)
    if inst.size and (inst.min() < 0 or inst.max() > np.iinfo(np.int32).max):
        raise ValueError('instance ids must lie in [0, 2**31 - 1].')
    if classes is not None and np.shape(classes) != inst.shape:
        raise ValueError(
            f'classes has shape {np.shape(classes)}, expected {inst.shape}.'
        )
    ids, counts = np.unique(inst[inst != 0], return_counts=True)
    if point_ids is not None:
        wanted = np.unique(np.asarray(point_ids).astype(np.int64))
        keep = np.isin(ids, wanted)
        ids, counts = ids[keep], counts[keep]
    keep_mask = np.isin(inst, ids) & (inst != 0)
    pieces: dict[int, list[Any]] = {int(i): [] for i in ids}
    for geom, value in rasterio.features.shapes(
        inst.astype(np.int32), mask=keep_mask, connectivity=4, transform=transform
    ):
        pieces[int(value)].append(shape(geom))
    geoms = [shapely.union_all(pieces[int(i)]) for i in ids]
    majority = _majority(inst, classes) if classes is not None else {}
    frame = gpd.GeoDataFrame(
        {
            'instance': ids.astype(np.int64),
            'class': np.array([majority.get(int(i), 1) for i in ids], dtype=np.int64),
            'area': np.array([g.area for g in geoms], dtype=np.float64),
            'pixels': counts.astype(np.int64),
        },
        geometry=geoms,
        crs=crs,
    )
    return frame


def require_geoparquet(path: str | os.PathLike[str]) -> None:
    """Refuse a GeoParquet ``path`` in one line when ``pyarrow`` is not installed.

    geopandas reads and writes GeoParquet through ``pyarrow``, an optional
    dependency (the ``parquet`` extra).

    .. versionadded:: 0.7

    Raises:
        ValueError: naming the file and the fix.
    """
    if importlib.util.find_spec('pyarrow') is None:
        raise ValueError(
            f'{path}: GeoParquet needs pyarrow; install it (pip install '
            '"geosparse[parquet]") or use a GeoPackage (.gpkg).'
        )


def write_polygons(frame: gpd.GeoDataFrame, path: str | os.PathLike[str]) -> Path:
    """Write polygons as a GeoPackage or GeoParquet file, atomically.

    The format follows the suffix (:data:`~geosparse.io.polygons.POLYGON_FORMATS`:
    ``.gpkg`` a GeoPackage with layer ``instances``, ``.parquet`` GeoParquet, which
    needs ``pyarrow``). The file is written beside ``path`` under a temporary name and
    renamed onto it, so a failure leaves neither a partial file nor the temporary one.

    .. versionadded:: 0.1

    Args:
        frame: e.g. from :func:`instance_polygons`.
        path: destination.

    Returns:
        ``path``.

    Raises:
        ValueError: the suffix is not one of
            :data:`~geosparse.io.polygons.POLYGON_FORMATS`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in POLYGON_FORMATS:
        choices = ', '.join(f'{s} ({n})' for s, n in POLYGON_FORMATS.items())
        raise ValueError(f'{path}: unknown polygon format; choose one of {choices}.')
    if suffix == '.parquet':
        require_geoparquet(path)
    remove_staging(path)
    with atomic_path(path, suffix=suffix) as tmp:
        if suffix == '.gpkg':
            frame.to_file(tmp, driver='GPKG', layer='instances')
        else:
            frame.to_parquet(tmp)
    return path
