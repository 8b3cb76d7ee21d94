"""Sparse point labels from vector files or CSV, reprojected to a raster's CRS.

Any file geopandas reads (GeoPackage, GeoJSON, shapefile, ...) or GeoParquet; a CSV
needs coordinate columns (``x``/``y`` or ``lon``/``lat`` by default) and their CRS.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.crs import CRS

from .grid import apply_affine
from .polygons import require_geoparquet

__all__ = [
    'BOX_COLUMNS',
    'box_centres',
    'is_box_csv',
    'read_points',
    'read_points_frame',
]

#: Columns of a CSV of pixel boxes (as written by DeepForest and its NEON data).
BOX_COLUMNS = ('xmin', 'ymin', 'xmax', 'ymax')


def _read_csv(path: Path, nrows: int | None = None) -> pd.DataFrame:
    """A CSV as a frame; an unreadable file is a ValueError naming it."""
    try:
        return pd.read_csv(path, nrows=nrows)
    except UnicodeDecodeError as err:
        raise ValueError(
            f'{path}: not a UTF-8 text CSV ({err.reason} at byte {err.start}).'
        ) from err
    except pd.errors.EmptyDataError as err:
        raise ValueError(f'{path}: the file is empty (no header, no rows).') from err
    except pd.errors.ParserError as err:
        raise ValueError(f'{path}: not a readable CSV ({err}).') from err


def _numeric(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> pd.DataFrame:
    """``columns`` as float64; text that is not a number names the column and row."""
    out = frame.copy()
    for name in columns:
        values = pd.to_numeric(out[name], errors='coerce')
        text = values.isna() & out[name].notna()
        if text.any():
            row = int(np.flatnonzero(text.to_numpy())[0])
            raise ValueError(
                f'{path}: column {name!r} holds {out[name].iloc[row]!r} at data row '
                f'{row + 1}, not a number; fix or delete that row.'
            )
        out[name] = values.astype(np.float64)
    return out


def read_points_frame(
    path: str | os.PathLike[str],
    values: Sequence[str],
    x: str | None = None,
    y: str | None = None,
    points_crs: str | None = None,
    raw: Sequence[str] | Mapping[str, str] = (),
) -> gpd.GeoDataFrame:
    """Points and their value columns as a GeoDataFrame in the file's CRS.

    Rows with a missing or non-finite value are dropped with a warning.

    .. versionadded:: 0.1

    Args:
        path: vector file, GeoParquet (``.parquet``) or CSV.
        values: columns with the labels (numeric).
        x: CSV column of x / longitude (default ``x`` or ``lon``).
        y: CSV column of y / latitude (default ``y`` or ``lat``).
        points_crs: CRS of CSV coordinates (default EPSG:4326); also overrides a
            vector file without a CRS.
        raw: further columns kept as they are (not converted; missing values
            allowed), e.g. an id column that background points leave empty; a
            mapping from each column to the parameter that named it (e.g.
            ``{'fid': 'id_column'}``) puts the parameter in the error message.

    Returns:
        The points (float64 value columns, then the ``raw`` columns).

    Raises:
        ValueError: naming the file and parameter, for a missing column, no CRS,
            non-point geometries, non-numeric values or no points at all.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f'{path}: no such points file.')
    if path.suffix.lower() == '.csv':
        frame = _read_csv(path)
        cols = set(frame.columns)
        x = x or ('x' if 'x' in cols else 'lon')
        y = y or ('y' if 'y' in cols else 'lat')
        for name in (x, y):
            if name not in cols:
                raise ValueError(
                    f'{path}: no coordinate column {name!r} (columns: '
                    f'{", ".join(frame.columns)}); name them with --x/--y.'
                )
        frame = _numeric(frame, [x, y], path)
        gdf = gpd.GeoDataFrame(
            frame,
            geometry=gpd.points_from_xy(frame[x], frame[y]),
            crs=points_crs or 'EPSG:4326',
        )
    else:
        if path.suffix.lower() == '.parquet':
            require_geoparquet(path)
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path)
        if points_crs is not None:
            gdf = gdf.set_crs(points_crs, allow_override=True)
        if gdf.crs is None:
            raise ValueError(f'{path}: the points have no CRS; give it (points_crs).')
    for value in [*values, *raw]:
        if value not in gdf.columns:
            given = (
                f'column {value!r} ({raw[value]})'
                if isinstance(raw, Mapping) and value in raw
                else f'value column {value!r}'
            )
            raise ValueError(
                f'{path}: no {given} (columns: '
                f'{", ".join(c for c in gdf.columns if c != "geometry")}); name one '
                'of them.'
            )
    if len(gdf) == 0:
        raise ValueError(f'{path}: the file holds no points.')
    kinds = gdf.geom_type  # None for a missing geometry: dropped below, as NaN
    if (kinds.notna() & (kinds != 'Point')).any():
        found = sorted(set(kinds.dropna()) - {'Point'})
        raise ValueError(
            f'{path}: every geometry must be a Point (found {", ".join(found)}); give '
            'one point per object (e.g. polygon centroids or representative points).'
        )
    extra = [c for c in raw if c not in values]
    out = gdf[[*values, *extra, 'geometry']].copy()
    for value in values:
        try:
            out[value] = pd.to_numeric(out[value]).astype(np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'{path}: column {value!r} is not numeric ({err}).'
            ) from err
    xs, ys = out.geometry.x.to_numpy(), out.geometry.y.to_numpy()
    located = np.isfinite(xs) & np.isfinite(ys)
    if gdf.crs.is_geographic and located.any():
        lon, lat = xs[located], ys[located]
        if (np.abs(lon) > 360).any() or (np.abs(lat) > 90).any():
            raise ValueError(
                f'{path}: coordinates such as ({lon[0]:.6g}, {lat[0]:.6g}) are not '
                f'longitude and latitude, but the points CRS is {gdf.crs.to_string()}; '
                'give their CRS (points_crs, --points-crs, e.g. EPSG:32618).'
            )
    keep = np.isfinite(out[list(values)].to_numpy()).all(1) & located
    if not keep.all():
        warnings.warn(
            f'{path}: dropped {int((~keep).sum())} of {len(out)} points with a '
            'missing or non-finite value or coordinate.',
            stacklevel=2,
        )
    if not located.any():
        raise ValueError(
            f'{path}: no point has coordinates (every geometry is missing or empty).'
        )
    if not keep.any():
        raise ValueError(f'{path}: no point has a finite value in {list(values)}.')
    return out[keep]


def read_points(
    path: str | os.PathLike[str],
    value: str,
    crs: CRS | str,
    x: str | None = None,
    y: str | None = None,
    points_crs: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Point coordinates in ``crs`` and their values.

    .. versionadded:: 0.1

    Args:
        path: vector file, GeoParquet (``.parquet``) or CSV.
        value: column with the labels (float).
        crs: target CRS (the raster's).
        x: CSV column of x / longitude (default ``x`` or ``lon``).
        y: CSV column of y / latitude (default ``y`` or ``lat``).
        points_crs: CRS of CSV coordinates (default EPSG:4326); also overrides a
            vector file without a CRS.

    Returns:
        ``(P, 2)`` float64 ``x, y`` in ``crs`` and ``(P,)`` float64 values; rows
        with a missing value are dropped with a warning.

    Raises:
        ValueError: naming the file and parameter, for a missing column, no CRS,
            non-point geometries or non-numeric values.
    """
    gdf = read_points_frame(path, [value], x, y, points_crs)
    gdf = gdf.to_crs(CRS.from_user_input(crs).to_wkt())
    xy = np.stack([gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()], axis=1)
    return xy.astype(np.float64), gdf[value].to_numpy()


def is_box_csv(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a CSV with the pixel-box columns :data:`BOX_COLUMNS`.

    .. versionadded:: 0.1
    """
    path = Path(path)
    if path.suffix.lower() != '.csv' or not path.exists():
        return False
    header = _read_csv(path, nrows=0).columns
    return set(BOX_COLUMNS) <= set(header)


def box_centres(
    path: str | os.PathLike[str], raster: str | os.PathLike[str]
) -> gpd.GeoDataFrame:
    """Centres of pixel boxes as points in the raster's CRS.

    A box CSV gives ``xmin, ymin, xmax, ymax`` in pixel coordinates of ``raster``
    (column, row; row 0 at the top, edges at integers), as DeepForest writes its
    annotations. Each box becomes the point at its centre, mapped through the
    raster's transform; the box's ``width`` and ``height`` (pixels) are kept.

    .. versionadded:: 0.1

    Args:
        path: the CSV.
        raster: the raster the boxes were drawn on.

    Returns:
        Points with ``width`` and ``height`` columns, in the raster's CRS.

    Raises:
        ValueError: for missing columns, inverted boxes or boxes off the raster
            (the message names the file).
    """
    path = Path(path)
    frame = _read_csv(path)
    missing = [c for c in BOX_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f'{path}: no box columns {missing} (columns: {", ".join(frame.columns)}); '
            'a box CSV needs xmin, ymin, xmax, ymax in pixels.'
        )
    if len(frame) == 0:
        raise ValueError(f'{path}: the file holds no boxes.')
    frame = _numeric(frame, BOX_COLUMNS, path)
    box = frame[list(BOX_COLUMNS)].to_numpy(np.float64)
    missing_rows = ~np.isfinite(box).all(1)
    if missing_rows.all():
        raise ValueError(f'{path}: no box has all four finite coordinates.')
    if missing_rows.any():
        warnings.warn(
            f'{path}: dropped {int(missing_rows.sum())} of {len(box)} boxes with a '
            'missing or non-finite coordinate (first at data row '
            f'{int(np.flatnonzero(missing_rows)[0]) + 1}).',
            stacklevel=2,
        )
        frame, box = frame[~missing_rows], box[~missing_rows]
    bad = (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
    if bad.any():
        raise ValueError(
            f'{path}: {int(bad.sum())} boxes have xmax <= xmin or ymax <= ymin '
            f'(first at row {int(np.flatnonzero(bad)[0])}).'
        )
    with rasterio.open(raster) as src:
        transform, crs, shape = src.transform, src.crs, src.shape
    cols = (box[:, 0] + box[:, 2]) / 2
    rows = (box[:, 1] + box[:, 3]) / 2
    off = (cols < 0) | (cols > shape[1]) | (rows < 0) | (rows > shape[0])
    if off.any():
        raise ValueError(
            f'{path}: {int(off.sum())} box centres lie outside {raster} '
            f'({shape[0]} x {shape[1]} pixels); were the boxes drawn on another image?'
        )
    xs, ys = apply_affine(transform, cols, rows)
    return gpd.GeoDataFrame(
        {'width': box[:, 2] - box[:, 0], 'height': box[:, 3] - box[:, 1]},
        geometry=gpd.points_from_xy(xs, ys),
        crs=crs,
    )
