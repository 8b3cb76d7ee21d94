"""Synthetic NAIP-like scenes with NLCD-like coarse labels, for demos and tests.

A scene is three GeoTIFFs:

* ``<name>_naip.tif``: 4-band (R, G, B, NIR) uint8 imagery at 1 m in UTM 18N, with
  water, forest, field and impervious (roads, buildings) whose spectra differ as in
  NAIP (water dark with low NIR, vegetation with high NIR, impervious bright and flat);
* ``<name>_nlcd.tif``: NLCD-like codes at 30 m in EPSG:5070 (CONUS Albers), derived
  from the fine map cell by cell with NLCD's class rules (impervious fraction for
  the developed classes 21-24, 75 % water for 11, forest and herbaceous majority);
* ``<name>_lc.tif``: the fine map (1 water, 2 forest, 3 field, 4 impervious) as truth.

Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.transform
import rasterio.warp
import rasterio.windows
from pyproj import Transformer
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds
from scipy.ndimage import gaussian_filter

from ..io.raster import atomic_path, atomic_write_raster

__all__ = [
    'FINE_CLASSES',
    'InstanceScene',
    'ObjectScene',
    'SyntheticScene',
    'make_instance_scene',
    'make_object_scene',
    'make_point_labels',
    'make_scene',
    'make_stac_tiles',
    'nlcd_from_fractions',
]

#: Fine classes of the synthetic scenes (raster value -> name).
FINE_CLASSES: dict[int, str] = {1: 'water', 2: 'forest', 3: 'field', 4: 'impervious'}

# Mean NAIP-like digital numbers (R, G, B, NIR) per fine class.
_SPECTRA = np.array(
    [
        [38, 52, 62, 18],  # water
        [58, 82, 55, 140],  # forest
        [122, 138, 92, 172],  # field
        [168, 162, 152, 118],  # impervious
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class SyntheticScene:
    """Paths of one synthetic scene.

    .. versionadded:: 0.1
    """

    image: Path
    coarse: Path
    fine: Path


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float
) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal(shape), sigma, mode='wrap')
    return (field - field.mean()) / (field.std() + 1e-9)


def _fine_map(size: int, rng: np.random.Generator) -> np.ndarray:
    """Fine land cover: forest/field mosaic, a lake and a river, roads, buildings."""
    fine = np.full((size, size), 3, dtype=np.uint8)
    fine[_smooth_noise(rng, (size, size), size / 14) > 0.0] = 2
    fine[_smooth_noise(rng, (size, size), size / 10) > 1.6] = 1
    yy, xx = np.mgrid[0:size, 0:size]
    # A meandering river.
    phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.12) * size
    centre = size * rng.uniform(0.3, 0.7) + amp * np.sin(xx / size * 2 * np.pi + phase)
    fine[np.abs(yy - centre) < rng.uniform(4, 9)] = 1
    # A town: denser roads and buildings in one quadrant.
    town_x, town_y = rng.uniform(0.2, 0.8, size=2) * size
    town = np.hypot(xx - town_x, yy - town_y) < size * 0.3
    n_roads = max(2, size // 128)
    for axis in (0, 1):
        for pos in rng.uniform(0.05, 0.95, n_roads) * size:
            half = rng.uniform(3, 5)
            band = np.abs((yy if axis == 0 else xx) - pos) < half
            fine[band] = 4
    n_buildings = int(size * size / 2500)
    for _ in range(n_buildings):
        bx, by = rng.integers(0, size, 2)
        if not town[by, bx] and rng.random() > 0.15:
            continue
        w, h = rng.integers(8, 26, 2)
        fine[by : by + h, bx : bx + w] = 4
    return fine


def _imagery(fine: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = fine.shape[0]
    img = _SPECTRA[fine - 1].transpose(2, 0, 1).copy()
    # Shared low-frequency brightness (illumination, soil moisture).
    img *= 1 + 0.08 * _smooth_noise(rng, fine.shape, size / 8)[None]
    # Class-specific texture: canopy speckle in forest, rows in fields.
    speckle = gaussian_filter(rng.standard_normal(fine.shape), 1.2)
    img += (
        (fine == 2)[None]
        * 18
        * speckle[None]
        * np.array([0.6, 0.8, 0.5, 1.0])[:, None, None]
    )
    rows = np.sin(np.arange(size)[None, :] / 3.0 + rng.uniform(0, 6)) * 6
    img += (fine == 3)[None] * rows[None] * np.array([1, 1, 0.8, 1.2])[:, None, None]
    img += rng.normal(0, 6, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def nlcd_from_fractions(frac: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r"""NLCD-like code of each coarse cell from its fine-class fractions.

    Rules (after the NLCD 2011 legend): impervious :math:`\geq` 80 % -> 24,
    :math:`\geq` 50 % -> 23, :math:`\geq` 20 % -> 22; water :math:`\geq` 75 % -> 11;
    impervious :math:`\geq` 5 % -> 21 (developed, open space); forest majority -> 41
    (some 42/43); otherwise herbaceous -> 81 or 82; water majority -> 11.

    .. versionadded:: 0.1

    Args:
        frac: ``(..., 4)`` fractions of water, forest, field, impervious.
        rng: random generator (for forest and crop subtypes).

    Returns:
        ``(...)`` uint8 NLCD codes.
    """
    w, f, g, i = (frac[..., k] for k in range(4))
    code = np.where(g >= 0.0, 81, 0).astype(np.uint8)
    crop = rng.random(code.shape) < 0.5
    code[crop] = 82
    forest_type = rng.choice([41, 41, 41, 42, 43], size=code.shape).astype(np.uint8)
    code = np.where(f >= np.maximum(g, w), forest_type, code)
    code = np.where((w > f) & (w > g), 11, code)
    code = np.where(i >= 0.05, 21, code)
    code = np.where(w >= 0.75, 11, code)
    code = np.where(i >= 0.2, 22, code)
    code = np.where(i >= 0.5, 23, code)
    code = np.where(i >= 0.8, 24, code)
    return code.astype(np.uint8)


def make_scene(
    root: str | os.PathLike[str],
    size: int = 512,
    seed: int = 0,
    name: str = 'scene',
    origin: tuple[float, float] = (360000.0, 4310000.0),
    utm_epsg: int = 32618,
    coarse_res: float = 30.0,
) -> SyntheticScene:
    """Write one synthetic scene (imagery, NLCD-like coarse labels, fine truth).

    .. versionadded:: 0.1

    Args:
        root: output folder.
        size: side length in 1 m pixels.
        seed: random seed; the same seed gives the same files.
        name: file name prefix.
        origin: upper-left corner (easting, northing) in the UTM zone.
        utm_epsg: EPSG code of the imagery's UTM zone.
        coarse_res: coarse pixel size in metres (EPSG:5070).

    Returns:
        The paths written.
    """
    if size < 64:
        raise ValueError(f'size={size}: a scene needs at least 64 pixels a side.')
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fine = _fine_map(size, rng)
    image = _imagery(fine, rng)
    fine_tr = from_origin(origin[0], origin[1], 1.0, 1.0)
    utm = f'EPSG:{utm_epsg}'

    # The coarse grid: EPSG:5070 cells of coarse_res, aligned to multiples of it.
    left, bottom, right, top = transform_bounds(
        utm, 'EPSG:5070', origin[0], origin[1] - size, origin[0] + size, origin[1]
    )
    x0 = np.floor(left / coarse_res) * coarse_res
    y0 = np.ceil(top / coarse_res) * coarse_res
    ncol = int(np.ceil((right - x0) / coarse_res))
    nrow = int(np.ceil((y0 - bottom) / coarse_res))
    yy, xx = np.mgrid[0:size, 0:size]
    ex, ny = fine_tr * (xx + 0.5, yy + 0.5)
    ax, ay = Transformer.from_crs(utm, 'EPSG:5070', always_xy=True).transform(ex, ny)
    col = np.floor((ax - x0) / coarse_res).astype(np.int64)
    row = np.floor((y0 - ay) / coarse_res).astype(np.int64)
    cell = (row * ncol + col).ravel()
    counts = np.zeros((nrow * ncol, 4))
    np.add.at(counts, (cell, fine.ravel().astype(np.int64) - 1), 1)
    total = counts.sum(1, keepdims=True)
    frac = counts / np.maximum(total, 1)
    nlcd = nlcd_from_fractions(frac, rng)
    nlcd[total[:, 0] < 0.25 * coarse_res**2] = 0  # cells mostly outside: nodata
    nlcd = nlcd.reshape(nrow, ncol)

    scene = SyntheticScene(
        root / f'{name}_naip.tif', root / f'{name}_nlcd.tif', root / f'{name}_lc.tif'
    )
    common = dict(driver='GTiff', tiled=True, blockxsize=256, blockysize=256)
    atomic_write_raster(
        scene.image,
        image,
        dict(common, crs=utm, transform=fine_tr, photometric='MINISBLACK'),
        descriptions=['red', 'green', 'blue', 'nir'],
    )
    atomic_write_raster(
        scene.fine, fine[None], dict(common, crs=utm, transform=fine_tr, nodata=0)
    )
    coarse_tr = from_origin(x0, y0, coarse_res, coarse_res)
    atomic_write_raster(
        scene.coarse,
        nlcd[None],
        dict(driver='GTiff', crs='EPSG:5070', transform=coarse_tr, nodata=0),
    )
    return scene


def read_scene(scene: SyntheticScene) -> dict[str, np.ndarray]:
    """Read a scene's arrays (for plots and tests)."""
    out = {}
    for key in ('image', 'coarse', 'fine'):
        with rasterio.open(getattr(scene, key)) as src:
            out[key] = src.read()
    return out


def make_stac_tiles(
    scene: SyntheticScene,
    root: str | os.PathLike[str],
    tiles: int = 2,
    collection: str = 'synthetic-naip',
) -> list[Path]:
    """Cut a scene's imagery into column tiles described as a STAC collection.

    Each tile is a GeoTIFF ``tile<i>.tif`` and a STAC Item with assets ``image``
    (the tile) and ``nlcd`` (the scene's coarse labels), dated 2018-06-01, in a
    collection ``collection``. Serve the two JSON files with
    :func:`geosparse.stac.serve_stac` to search them like a real catalog.

    .. versionadded:: 0.1

    Args:
        scene: the scene (:func:`make_scene`).
        root: output folder.
        tiles: number of tiles, side by side from west to east.
        collection: collection id.

    Returns:
        ``[collection.json, items.json]`` (an item collection).
    """
    import datetime as dt
    import json

    import pystac
    from shapely.geometry import box, mapping, shape

    from ..io.raster import atomic_write_text

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    when = dt.datetime(2018, 6, 1, tzinfo=dt.UTC)
    items = []
    with rasterio.open(scene.image) as src:
        edges = np.linspace(0, src.width, tiles + 1).round().astype(int)
        for i, (c0, c1) in enumerate(itertools.pairwise(edges.tolist())):
            window = rasterio.windows.Window(c0, 0, c1 - c0, src.height)
            path = root / f'tile{i}.tif'
            atomic_write_raster(
                path,
                src.read(window=window),
                dict(
                    driver='GTiff',
                    crs=src.crs,
                    transform=src.window_transform(window),
                    photometric='MINISBLACK',
                ),
                descriptions=list(src.descriptions),
            )
            bounds = rasterio.windows.bounds(window, src.transform)
            geom = rasterio.warp.transform_geom(
                src.crs, 'EPSG:4326', mapping(box(*bounds))
            )
            item = pystac.Item(
                id=f'tile{i}',
                geometry=geom,
                bbox=list(shape(geom).bounds),
                datetime=when,
                properties={},
                collection=collection,
            )
            item.add_asset(
                'image',
                pystac.Asset(str(path.absolute()), media_type=pystac.MediaType.GEOTIFF),
            )
            item.add_asset(
                'nlcd',
                pystac.Asset(
                    str(Path(scene.coarse).absolute()),
                    media_type=pystac.MediaType.GEOTIFF,
                ),
            )
            items.append(item.to_dict(include_self_link=False))
    west = min(it['bbox'][0] for it in items)
    south = min(it['bbox'][1] for it in items)
    east = max(it['bbox'][2] for it in items)
    north = max(it['bbox'][3] for it in items)
    col = pystac.Collection(
        id=collection,
        description='Synthetic NAIP-like tiles with NLCD-like labels (geosparse).',
        extent=pystac.Extent(
            pystac.SpatialExtent([[west, south, east, north]]),
            pystac.TemporalExtent([[when, when]]),
        ),
    )
    col_path = atomic_write_text(
        root / 'collection.json', json.dumps(col.to_dict(include_self_link=False))
    )
    items_path = atomic_write_text(
        root / 'items.json',
        json.dumps({'type': 'FeatureCollection', 'features': items}),
    )
    return [col_path, items_path]


def make_point_labels(
    scene: SyntheticScene,
    n: int = 300,
    seed: int = 0,
    name: str = 'scene',
    field: str = 'land_cover',
) -> Path:
    """Sparse point labels of a smooth "canopy height" over a synthetic scene.

    With ``field='land_cover'``, height is 22 m over forest, 1 m over field, 6 m
    over impervious and 0 over water in the fine truth, smoothed (Gaussian, sigma
    4 px) so that nearby points co-vary: the imagery explains it. With
    ``field='independent'``, it is a smooth random field (white noise smoothed by a
    Gaussian of sigma 12 px, mean 10 m, std 5 m) that the imagery does not show, as
    rainfall is to an elevation grid: only the points' spatial correlation helps.
    Then 0.5 m noise; ``n`` points at random pixel centres are written as
    ``<name>_points.gpkg`` (column ``height``, the imagery's CRS) and the dense
    height as ``<name>_height.tif``.

    .. versionadded:: 0.1

    .. versionchanged:: 0.2
       ``field``.

    Raises:
        ValueError: for an unknown ``field``.

    Returns:
        The points file.
    """
    import geopandas as gpd
    from shapely.geometry import Point

    rng = np.random.default_rng(seed)
    with rasterio.open(scene.fine) as src:
        fine = src.read(1)
        crs, transform, profile = src.crs, src.transform, src.profile
    if field == 'land_cover':
        level = np.array([0.0, 0.0, 22.0, 1.0, 6.0], dtype=np.float32)[fine]
        height = gaussian_filter(level, sigma=4).astype(np.float32)
    elif field == 'independent':
        noise = np.random.default_rng(seed + 1).standard_normal(fine.shape)
        smooth = gaussian_filter(noise, sigma=12, mode='wrap')
        height = (10 + 5 * smooth / smooth.std()).astype(np.float32)
    else:
        raise ValueError(f"field={field!r}: choose 'land_cover' or 'independent'.")
    rows = rng.integers(0, fine.shape[0], n)
    cols = rng.integers(0, fine.shape[1], n)
    values = height[rows, cols] + rng.normal(0, 0.5, n).astype(np.float32)
    xs, ys = rasterio.transform.xy(transform, rows, cols)
    root = Path(scene.fine).parent
    path = root / f'{name}_points.gpkg'
    gdf = gpd.GeoDataFrame(
        {'height': values.astype(np.float64)},
        geometry=[Point(x, y) for x, y in zip(xs, ys, strict=True)],
        crs=crs,
    )
    with atomic_path(path, suffix='.gpkg') as tmp:
        gdf.to_file(tmp, driver='GPKG', layer='points')
    profile.update(dtype='float32', nodata=None, count=1)
    atomic_write_raster(root / f'{name}_height.tif', height[None], profile)
    return path


@dataclass(frozen=True)
class ObjectScene:
    """Files of a synthetic counting scene (:func:`make_object_scene`).

    .. versionadded:: 0.1

    Attributes:
        image: RGB uint8 GeoTIFF.
        points: GeoPackage with one point per object (the image's CRS).
        boxes: CSV of pixel boxes ``xmin, ymin, xmax, ymax`` around the objects.
        count: number of objects.
    """

    image: Path
    points: Path
    boxes: Path
    count: int


def make_object_scene(
    root: str | os.PathLike[str],
    size: int = 128,
    n: int = 60,
    radius: float = 3.0,
    seed: int = 0,
    name: str = 'objects',
) -> ObjectScene:
    """A scene of tree-like objects on grass, with their points, for counting.

    Ground: a smooth green-brown texture with noise. Each object is a dark crown, a
    Gaussian blob of std ``radius`` (varied by ±30 %), with a bright sunlit centre
    offset to the south-east, so that the objects are visible but not trivial to
    threshold. Object centres keep at least ``1.5 radius`` apart. 1 m pixels in UTM
    zone 18N.

    .. versionadded:: 0.1

    Args:
        root: output folder.
        size: side in pixels.
        n: objects drawn (fewer if they do not fit).
        radius: crown std in pixels.
        seed: random seed.
        name: file name stem.

    Returns:
        The files and the number of objects.
    """
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Point

    rng = np.random.default_rng(seed)
    pts: list[tuple[float, float]] = []
    for _ in range(50 * n):
        if len(pts) == n:
            break
        p = rng.uniform(1, size - 1, 2)
        if all(
            (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= (1.5 * radius) ** 2 for q in pts
        ):
            pts.append((float(p[0]), float(p[1])))
    rc = np.array(pts).reshape(-1, 2)
    rr, cc = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing='ij')
    ground = gaussian_filter(rng.normal(0, 1, (size, size)), 6)
    ground = ground / (ground.std() + 1e-9)
    image = np.stack(
        [110 + 12 * ground, 140 + 10 * ground, 80 + 8 * ground]
    ) + rng.normal(0, 6, (3, size, size))
    crown = np.zeros((size, size))
    light = np.zeros((size, size))
    for r, c in rc:
        s = radius * rng.uniform(0.7, 1.3)
        crown = np.maximum(crown, np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * s**2)))
        d2 = (rr - r - 0.3 * s) ** 2 + (cc - c - 0.3 * s) ** 2
        light = np.maximum(light, np.exp(-d2 / (2 * (0.4 * s) ** 2)))
    tree = np.array([40.0, 75.0, 35.0])[:, None, None]
    sun = np.array([90.0, 150.0, 70.0])[:, None, None]
    image = image * (1 - crown) + tree * crown
    image = image * (1 - 0.6 * light) + sun * 0.6 * light
    data = np.clip(np.round(image), 1, 254).astype(np.uint8)
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    transform = from_origin(500000.0, 4200000.0, 1.0, 1.0)
    profile = {
        'driver': 'GTiff',
        'count': 3,
        'height': size,
        'width': size,
        'dtype': 'uint8',
        'crs': 'EPSG:32618',
        'transform': transform,
        'photometric': 'MINISBLACK',
    }
    image_path = out / f'{name}.tif'
    atomic_write_raster(image_path, data, profile)
    xs, ys = rasterio.transform.xy(transform, rc[:, 0] - 0.5, rc[:, 1] - 0.5)
    gdf = gpd.GeoDataFrame(
        {'object': np.arange(len(rc))},
        geometry=[Point(x, y) for x, y in zip(xs, ys, strict=True)],
        crs='EPSG:32618',
    )
    points_path = out / f'{name}.gpkg'
    with atomic_path(points_path, suffix='.gpkg') as tmp:
        gdf.to_file(tmp, driver='GPKG', layer='objects')
    half = 2 * radius
    boxes = pd.DataFrame(
        {
            'image_path': image_path.name,
            'xmin': np.floor(rc[:, 1] - half),
            'ymin': np.floor(rc[:, 0] - half),
            'xmax': np.ceil(rc[:, 1] + half),
            'ymax': np.ceil(rc[:, 0] + half),
            'label': 'Tree',
        }
    )
    boxes_path = out / f'{name}_boxes.csv'
    with atomic_path(boxes_path, suffix='.csv') as tmp:
        boxes.to_csv(tmp, index=False)
    return ObjectScene(image_path, points_path, boxes_path, len(rc))


@dataclass(frozen=True)
class InstanceScene:
    """Files of a synthetic instance scene (:func:`make_instance_scene`).

    .. versionadded:: 0.1

    Attributes:
        image: uint8 GeoTIFF (RGB or one band), 0.5 m pixels in UTM.
        polygons: GeoPackage of the object polygons (column ``instance``, 1..K).
        points: GeoPackage of one interior point per object (column ``instance``).
        background: GeoPackage of background points (column ``background`` = 1).
        truth: uint16 GeoTIFF of the true instance map (0 background).
        count: number of objects K.
    """

    image: Path
    polygons: Path
    points: Path
    background: Path
    truth: Path
    count: int


def _place(
    occupied: np.ndarray,
    rng: np.random.Generator,
    height: int,
    width: int,
    margin: int,
    tries: int = 200,
) -> tuple[int, int] | None:
    """Upper-left corner of a free ``height x width`` box (``margin`` clear)."""
    size_r, size_c = occupied.shape
    for _ in range(tries):
        if (
            size_r - height - 2 * margin <= margin
            or size_c - width - 2 * margin <= margin
        ):
            return None
        r0 = int(rng.integers(margin, size_r - height - margin))
        c0 = int(rng.integers(margin, size_c - width - margin))
        box = occupied[
            max(0, r0 - margin) : r0 + height + margin,
            max(0, c0 - margin) : c0 + width + margin,
        ]
        if not box.any():
            return r0, c0
    return None


def _roof_layout(
    size: int, rng: np.random.Generator, terraces: int, isolated: int
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, bool]]]:
    """Rectangles ``(r0, c0, r1, c1)`` of the roofs and the shared walls.

    Returns the rectangles and the walls ``(k, position, vertical)``: roof ``k``
    touches roof ``k + 1`` along row or column ``position`` (the first pixel line of
    roof ``k + 1``).
    """
    occupied = np.zeros((size, size), dtype=bool)
    rects: list[tuple[int, int, int, int]] = []
    walls: list[tuple[int, int, bool]] = []
    for _ in range(terraces):
        n = int(rng.integers(3, 7))
        # Mix small and large roofs, so that a small roof's point sits closer to a
        # big neighbour's far side than the big roof's own point.
        lengths = [
            int(rng.integers(7, 13))
            if rng.random() < 0.4
            else int(rng.integers(18, 40))
            for _ in range(n)
        ]
        depth = int(rng.integers(14, 28))
        depths = [depth + int(rng.integers(-3, 4)) for _ in range(n)]
        along = sum(lengths)
        across = max(depths)
        horizontal = bool(rng.random() < 0.5)
        shape = (across, along) if horizontal else (along, across)
        corner = _place(occupied, rng, shape[0], shape[1], margin=6)
        if corner is None:
            continue
        r, c = corner
        pos = 0
        for k, (length, d) in enumerate(zip(lengths, depths, strict=True)):
            if horizontal:
                rect = (r, c + pos, r + d, c + pos + length)
            else:
                rect = (r + pos, c, r + pos + length, c + d)
            if k:
                walls.append(
                    (len(rects) - 1, (c if horizontal else r) + pos, horizontal)
                )
            rects.append(rect)
            occupied[rect[0] : rect[2], rect[1] : rect[3]] = True
            pos += length
    for _ in range(isolated):
        h, w = (int(v) for v in rng.integers(6, 30, 2))
        corner = _place(occupied, rng, h, w, margin=5)
        if corner is None:
            continue
        rect = (corner[0], corner[1], corner[0] + h, corner[1] + w)
        rects.append(rect)
        occupied[rect[0] : rect[2], rect[1] : rect[3]] = True
    return rects, walls


def make_instance_scene(
    root: str | os.PathLike[str],
    size: int = 256,
    seed: int = 0,
    name: str = 'instances',
    bands: int = 3,
    terraces: int = 4,
    isolated: int = 9,
    background_points: int = 30,
    origin: tuple[float, float] = (500000.0, 4200000.0),
    utm_epsg: int = 32618,
) -> InstanceScene:
    """Touching roofs of similar appearance on textured ground, one point each.

    A scene on which hand-crafted distances fail but a learned one can succeed:

    * **terraces**: rows of 3-6 rectangular roofs of mixed sizes (7-12 and 18-39
      pixels along the row, depths varying by a few pixels) that touch along shared
      walls. All roofs of a terrace share one colour; each roof is a little brighter
      or darker (within +-14 DN) and its two pitches differ slightly, and the wall
      between two roofs is a one-pixel gutter or ridge line 8-20 DN darker or
      brighter: a weak edge that the pixel noise partly hides. Voronoi cuts a big
      roof where the point of a small neighbour is nearer; an image-edge geodesic
      stops at pitch lines as readily as at walls;
    * **isolated** roofs (6-29 pixels a side) apart from the others;
    * **ground**: grass with smooth texture and darker tree clumps, its brightness
      different from the roofs' on average but overlapping them.

    Pixels are 0.5 m in UTM (``utm_epsg``); the image is blurred (Gaussian, std
    0.7 px) and carries Gaussian noise (std 7 DN). Each object's point is uniform
    inside its rectangle (at least a quarter pixel from its edge); background points
    are at the centres of random background pixels. Deterministic in ``seed``.

    Files (``<name>`` the stem): ``<name>.tif`` (the image; ``bands`` 3 is RGB,
    1 a grey level), ``<name>_truth.tif`` (uint16 instance map),
    ``<name>_polygons.gpkg``, ``<name>_points.gpkg``, ``<name>_background.gpkg``.

    .. versionadded:: 0.1

    Args:
        root: output folder.
        size: side in pixels (at least 96).
        seed: random seed.
        name: file name stem.
        bands: 3 (RGB) or 1.
        terraces: terraces attempted (fewer if they do not fit).
        isolated: isolated roofs attempted.
        background_points: number of background points.
        origin: upper-left corner (easting, northing).
        utm_epsg: EPSG code of the UTM zone.

    Returns:
        The files and the number of objects K (about 20-35 with the defaults).
    """
    import geopandas as gpd
    from shapely.geometry import Point, box

    if size < 96:
        raise ValueError(f'size={size}: an instance scene needs at least 96 pixels.')
    if bands not in (1, 3):
        raise ValueError(f'bands={bands}: choose 1 (grey) or 3 (RGB).')
    res = 0.5
    rng = np.random.default_rng(seed)
    rects, walls = _roof_layout(size, rng, terraces, isolated)
    truth = np.zeros((size, size), dtype=np.uint16)
    for k, (r0, c0, r1, c1) in enumerate(rects, start=1):
        truth[r0:r1, c0:c1] = k

    # Ground: grass with smooth texture, darker tree clumps.
    texture = _smooth_noise(rng, (size, size), 8.0)
    fine = _smooth_noise(rng, (size, size), 1.0)
    trees = _smooth_noise(rng, (size, size), 5.0) > 1.0
    grass = np.array([110.0, 135.0, 85.0])[:, None, None]
    tree = np.array([60.0, 85.0, 50.0])[:, None, None]
    image = np.where(trees[None], tree, grass) + 16 * texture[None] + 8 * fine[None]

    # Roofs: one colour per terrace (and per isolated roof), small offsets per roof.
    palette = np.array(
        [[150, 115, 105], [135, 135, 140], [165, 150, 130], [120, 105, 100]],
        dtype=np.float64,
    )
    terrace_of = np.zeros(len(rects), dtype=np.int64)
    group = 0
    wall_starts = {k + 1 for k, _, _ in walls}
    for k in range(len(rects)):
        if k not in wall_starts:
            group += 1
        terrace_of[k] = group
    colours = palette[rng.integers(0, len(palette), group + 1)]
    for k, (r0, c0, r1, c1) in enumerate(rects):
        base = colours[terrace_of[k]] + rng.uniform(-14, 14)
        roof = np.broadcast_to(base[:, None, None], (3, r1 - r0, c1 - c0)).copy()
        # Two pitches: split along the longer side, one a little darker.
        pitch = rng.uniform(4, 9) * rng.choice([-1.0, 1.0])
        if r1 - r0 <= c1 - c0:
            roof[:, (r1 - r0) // 2 :, :] += pitch
        else:
            roof[:, :, (c1 - c0) // 2 :] += pitch
        image[:, r0:r1, c0:c1] = roof
    for k, position, horizontal in walls:
        r0, c0, r1, c1 = rects[k + 1]
        step = rng.uniform(8, 20) * rng.choice([-1.0, 1.0])
        if horizontal:
            image[:, r0:r1, position] += step
        else:
            image[:, position, c0:c1] += step
    image = gaussian_filter(image, sigma=(0, 0.7, 0.7))
    image += rng.normal(0, 7, image.shape)
    if bands == 1:
        image = image.mean(axis=0, keepdims=True)
    data = np.clip(np.round(image), 1, 254).astype(np.uint8)

    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    transform = from_origin(origin[0], origin[1], res, res)
    crs = f'EPSG:{utm_epsg}'
    common = dict(driver='GTiff', crs=crs, transform=transform)
    image_path = out / f'{name}.tif'
    atomic_write_raster(
        image_path,
        data,
        dict(common, photometric='RGB' if bands == 3 else 'MINISBLACK'),
        descriptions=['red', 'green', 'blue'] if bands == 3 else ['grey'],
    )
    truth_path = out / f'{name}_truth.tif'
    atomic_write_raster(truth_path, truth[None], dict(common, nodata=None))

    def xy(row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return origin[0] + col * res, origin[1] - row * res

    ids = np.arange(1, len(rects) + 1, dtype=np.int64)
    polys = []
    pts = []
    for r0, c0, r1, c1 in rects:
        (x0, x1), (y0, y1) = xy(np.array([r0, r1]), np.array([c0, c1]))
        polys.append(box(x0, y1, x1, y0))
        row = rng.uniform(r0 + 0.25, r1 - 0.25)
        col = rng.uniform(c0 + 0.25, c1 - 0.25)
        x, y = xy(np.array(row), np.array(col))
        pts.append(Point(float(x), float(y)))
    bg_rows, bg_cols = np.nonzero(truth == 0)
    pick = rng.choice(
        len(bg_rows), size=min(background_points, len(bg_rows)), replace=False
    )
    bx, by = xy(bg_rows[pick] + 0.5, bg_cols[pick] + 0.5)
    frames = {
        'polygons': gpd.GeoDataFrame({'instance': ids}, geometry=polys, crs=crs),
        'points': gpd.GeoDataFrame({'instance': ids}, geometry=pts, crs=crs),
        'background': gpd.GeoDataFrame(
            {'background': np.ones(len(pick), dtype=np.int64)},
            geometry=[Point(x, y) for x, y in zip(bx, by, strict=True)],
            crs=crs,
        ),
    }
    paths = {}
    for key, frame in frames.items():
        paths[key] = out / f'{name}_{key}.gpkg'
        with atomic_path(paths[key], suffix='.gpkg') as tmp:
            frame.to_file(tmp, driver='GPKG', layer=key)
    return InstanceScene(
        image_path,
        paths['polygons'],
        paths['points'],
        paths['background'],
        truth_path,
        len(rects),
    )
