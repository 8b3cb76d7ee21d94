r"""Whole-raster instance masks and polygons from one point per object.

:func:`predict_instances` runs a trained
:class:`~geosparse.trainers.PointInstanceTask` over a raster block by block: each
block is read with a halo, the points inside the haloed window become the
network's queries (:meth:`~geosparse.trainers.PointInstanceTask.predict_instances`),
and the block's centre is kept. An instance is its point, so its id is the point's
id in every block, and an object split over blocks is stitched by its id: one id in
the COG, one feature in the polygons. Where the halo holds the whole object and
its neighbours, a block sees what one pass over the raster would.

Outputs, in ``out_dir``:

- ``<name>_instances.tif``: COG, uint32, bands ``instance`` (the point's id, 0
  background), ``class`` (the point's class, 0 background) and ``uncertainty``
  (:math:`\mathrm{round}(254\,u)`, scale 1/254; the margin uncertainty of
  :mod:`geosparse.trainers.instances`, 0 in blocks whose haloed window holds no
  object point, where no network runs); nodata 4294967295 on nodata pixels;
- ``<name>_instances.gpkg``: one feature per instance, columns ``instance``,
  ``class``, ``area`` (CRS units squared), ``pixels``;
- ``<name>_instances.json``: STAC Item listing both.

Without points (stage 2), :func:`predict_detected_instances` runs a trained
:class:`~geosparse.trainers.MaskRCNNTask` over the raster and writes the same three
files, ids numbered over the whole raster. Stitching blocks
(:func:`detect_instances`):

1. **Detect with a halo, keep what the block owns.** Each block is read with a
   ``halo`` and Mask R-CNN runs on the haloed window; a detection is kept only by
   the block whose core (the block without its halo) holds the centre of its box.
   Cores tile the raster, so an object is owned by exactly one block, which sees
   it whole when the halo exceeds the object's radius (make it at least its
   diameter). Its mask (probability > 0.5, off nodata) is kept in raster
   coordinates, as large as the haloed window shows it.
2. **One object, one detection.** Two blocks may each own a detection of one
   object (the two boxes' centres fall on either side of the edge): detections
   whose boxes overlap with IoU > ``merge_iou`` are reduced to the best-scoring one
   (torchvision's :func:`~torchvision.ops.nms` over the whole raster).
3. **Number and paint.** The survivors are numbered 1..K in raster order of their
   mask's top-left corner, and each block's core is painted from every object that
   reaches it, lower scores first so that where masks overlap the better object
   wins. An object lying on a block edge is painted in both blocks with its one id:
   one instance in the COG, and one feature once the blocks' polygons are
   dissolved by id.

The COG's bands are then ``instance`` (1..K, 0 background), ``class`` (Mask R-CNN's
label) and ``uncertainty`` (:math:`\mathrm{round}(254\,(1 - s))` with :math:`s` the
detection score of the pixel's object; 0 on background); the polygons have a
``score`` column. The objects' masks are held in memory until the raster is
written (a crop per object, a few kilobytes each).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pystac
from affine import Affine
from pystac.extensions.file import FileExtension
from rasterio.windows import Window

from ..console import progress as progress_bar
from ..datasets.instances import points_on_one_pixel, read_instance_points
from ..io.cog import cog_writer
from ..io.grid import RasterGrid
from ..io.polygons import instance_polygons, write_polygons
from ..io.raster import file_checksum
from ..io.source import ImageSource
from ..io.spec import BandSpec, OutputSpec, Property
from ..stac import output_item, write_item
from ..trainers.instances import PointInstanceTask
from ..trainers.maskrcnn import MaskRCNNTask
from .predict import output_stem

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    'GEOPACKAGE_MEDIA_TYPE',
    'INSTANCE_NODATA',
    'InstanceOutputs',
    'InstancePoints',
    'RasterObjects',
    'detect_instances',
    'detection_spec',
    'instance_spec',
    'paint_objects',
    'predict_detected_instances',
    'predict_instances',
    'read_points_on_grid',
]

#: Nodata of the instance COG (every band), the largest uint32.
INSTANCE_NODATA = 4294967295
#: Media type of the polygons asset in the STAC Item.
GEOPACKAGE_MEDIA_TYPE = 'application/geopackage+sqlite3'


@dataclass
class InstanceOutputs:
    """The files :func:`predict_instances` wrote (all in ``out_dir``).

    .. versionadded:: 0.1

    Attributes:
        raster: ``<name>_instances.tif``, the instance COG.
        polygons: ``<name>_instances.gpkg``, one feature per instance.
        item: ``<name>_instances.json``, the STAC Item of both.
    """

    raster: Path
    polygons: Path
    item: Path


@dataclass
class InstancePoints:
    """Points on a raster's pixel grid (those on the raster only).

    .. versionadded:: 0.1

    Attributes:
        rows: ``(N,)`` exact pixel rows (centres at +0.5).
        cols: ``(N,)`` exact pixel columns.
        ids: ``(N,)`` instance ids (0 for background points).
        classes: ``(N,)`` classes (0 for background points).
        background: ``(N,)`` background points.
        outside: how many points of the file lie off the raster.
    """

    rows: np.ndarray
    cols: np.ndarray
    ids: np.ndarray
    classes: np.ndarray
    background: np.ndarray
    outside: int

    def in_window(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(P, 2)`` (row, col) window pixel coordinates and which points those are."""
        (r0, r1), (c0, c1) = window.toranges()
        take = (
            (self.rows >= r0) & (self.rows < r1) & (self.cols >= c0) & (self.cols < c1)
        )
        rc = np.stack([self.rows[take] - r0, self.cols[take] - c0], 1)
        return rc.astype(np.float32), take


def read_points_on_grid(
    points: str | os.PathLike[str],
    grid: RasterGrid,
    label: str,
    id_column: str | None = None,
    class_column: str | None = None,
    background_column: str | None = None,
    x: str | None = None,
    y: str | None = None,
    points_crs: str | None = None,
) -> InstancePoints:
    """Read one point per object in the raster's CRS and keep those on the raster.

    .. versionadded:: 0.1

    Args:
        points: points file (any CRS; see
            :func:`~geosparse.datasets.read_instance_points`).
        grid: the raster's grid.
        label: the raster, as named in messages.
        id_column: instance ids (default: row number + 1).
        class_column: classes (default: 1).
        background_column: truthy values mark background points.
        x: CSV x / longitude column.
        y: CSV y / latitude column.
        points_crs: CRS of CSV coordinates.

    Returns:
        The points on the raster.

    Raises:
        ValueError: for an empty file, bad columns, or no object point on the raster
            (one line naming the file, the parameter and the fix).
    """
    empty = ValueError(
        f'{points}: the points file is empty; give points= (--points) a file with '
        'one point per object of the raster.'
    )
    try:
        sp = read_instance_points(
            points,
            id_column=id_column,
            class_column=class_column,
            background_column=background_column,
            crs=grid.crs,
            x=x,
            y=y,
            points_crs=points_crs,
        )
    except ValueError as err:
        if 'holds no points' in str(err):
            raise empty from None
        raise
    frame = sp.points
    if len(frame) == 0:
        raise empty
    xy = sp.xy()
    rows, cols = grid.to_pixels(xy)
    inside = grid.contains(xy) & np.isfinite(xy).all(1)
    background = frame['background'].to_numpy() > 0.5
    if not (inside & ~background).any():
        raise ValueError(
            f'{points}: none of the {int((~background).sum())} object points lies on '
            f'{label}; check the points= (--points) file covers this raster and that '
            'its CRS is set (a GeoJSON without a CRS is read as longitude and latitude).'
        )
    objects = np.flatnonzero(inside & ~background)
    shared = objects[
        points_on_one_pixel(np.floor(rows[objects]), np.floor(cols[objects]))
    ]
    if len(shared):
        a, b = (round(float(i)) for i in frame['instance'].to_numpy()[shared[:2]])
        raise ValueError(
            f'{points}: object points {a} and {b} (instance ids) lie on one pixel '
            f'(row {int(rows[shared[0]])}, col {int(cols[shared[0]])}) of {label}, so '
            'one of them would get no mask; keep one point per object.'
        )
    outside = int((~inside).sum())
    if outside:
        warnings.warn(
            f'{points}: {outside} of {len(frame)} points lie off {label} and are not '
            'used.',
            stacklevel=3,
        )
    return InstancePoints(
        rows=rows[inside],
        cols=cols[inside],
        ids=frame['instance'].to_numpy()[inside].round().astype(np.int64),
        classes=frame['class'].to_numpy()[inside].round().astype(np.int64),
        background=background[inside],
        outside=outside,
    )


def instance_spec(properties: dict[str, Property] | None = None) -> OutputSpec:
    """The :class:`~geosparse.io.spec.OutputSpec` of the instance COG.

    .. versionadded:: 0.1
    """
    return OutputSpec(
        task=PointInstanceTask.__name__,
        kind='instances',
        bands=(
            BandSpec('instance', "the object's point id (0: background)"),
            BandSpec('class', "the class of the object's point (0: background)"),
            BandSpec(
                'uncertainty',
                'margin uncertainty exp(-(d2 - d1) / tau) of the two nearest '
                'queries, in (0, 1]; stored as round(254 u)',
                scale=1 / 254,
            ),
        ),
        dtype='uint32',
        nodata=INSTANCE_NODATA,
        categorical=True,
        properties=dict(properties or {}),
    )


def _dissolve(frames: list[gpd.GeoDataFrame], crs: Any) -> gpd.GeoDataFrame:
    """One feature per instance from the blocks' polygons (pieces merged by id)."""
    import geopandas as gpd
    import pandas as pd

    frames = [f for f in frames if len(f)]
    if not frames:
        return instance_polygons(
            np.zeros((1, 1), dtype=np.int64), Affine.identity(), crs
        )
    joined = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)
    merged = joined.dissolve(
        by='instance', aggfunc={'class': 'first', 'pixels': 'sum'}, as_index=False
    )
    merged['area'] = merged.geometry.area
    merged = merged.sort_values('instance').reset_index(drop=True)
    out = merged[['instance', 'class', 'area', 'pixels', 'geometry']]
    return gpd.GeoDataFrame(
        out.astype({'instance': 'int64', 'class': 'int64', 'pixels': 'int64'}),
        geometry='geometry',
        crs=crs,
    )


def _polygons_asset(item: pystac.Item, path: Path) -> None:
    """Add the polygons file as the ``polygons`` asset (with its checksum)."""
    asset = pystac.Asset(
        href=f'./{path.name}',
        media_type=GEOPACKAGE_MEDIA_TYPE,
        roles=['data'],
        title='instance polygons (instance, class, area, pixels)',
    )
    item.add_asset('polygons', asset)
    file_ext = FileExtension.ext(asset, add_if_missing=True)
    file_ext.checksum = file_checksum(path)
    file_ext.size = path.stat().st_size


def predict_instances(
    task: PointInstanceTask,
    image_path: str | os.PathLike[str],
    points: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    block: int | None = None,
    halo: int | None = None,
    id_column: str | None = None,
    class_column: str | None = None,
    background_column: str | None = None,
    progress: bool = True,
    x: str | None = None,
    y: str | None = None,
    points_crs: str | None = None,
    properties: dict[str, Property] | None = None,
    split: Literal['auto', 'learned', 'geodesic'] = 'auto',
) -> InstanceOutputs:
    """Instance masks, polygons and a STAC Item of a raster from its points.

    See the module doc for the outputs. Every file is written atomically, and a
    failure removes what this call wrote, so ``out_dir`` holds all three or none.

    .. versionadded:: 0.1

    Args:
        task: the trained distance.
        image_path: imagery raster (raw values, as in training; nodata and NaN
            pixels are nodata).
        points: one point per object (GeoPackage, GeoJSON, GeoParquet, CSV, ...;
            any CRS, read in the raster's).
        out_dir: output folder (nothing is written outside it).
        name: output name stem (default: the raster's stem), made safe with
            :func:`~geosparse.inference.predict.output_stem`.
        block: block size in pixels (default: the side of the windows the task was
            trained on, its ``window``, else 512: the distance did worse on larger
            windows, which hold many more queries).
        halo: context read around each block, pixels (default a quarter of the
            block; make it at least an object's diameter, so that an object cut by
            a block edge is seen whole).
        id_column: column of the instance ids (default: row number + 1).
        class_column: column of the classes (default: 1 for every object).
        background_column: column whose truthy values mark background points.
        progress: show a progress bar.
        x: CSV x / longitude column.
        y: CSV y / latitude column.
        points_crs: CRS of CSV coordinates (default EPSG:4326).
        properties: further provenance (e.g. ``checkpoint``) for the COG's tags and
            the item's ``geosparse:*`` properties.
        split: how the foreground is divided between the objects (see
            :meth:`~geosparse.trainers.PointInstanceTask.predict_instances`):
            ``learned``, the query at the smallest learned distance; ``geodesic``,
            the task's foreground divided by the geodesic distance; ``auto``
            (default), the task's
            :attr:`~geosparse.trainers.PointInstanceTask.default_split`: learned
            for a distance with the region-colour term, geodesic for older
            checkpoints without it (each the better split on the generated scenes
            that chose it; see ``benchmarks/point_instances.py``). The split used
            is recorded in the outputs' ``split`` property.

    Returns:
        The paths written.

    Raises:
        ValueError: for a raster without a CRS or with other bands than the model's,
            an empty points file, no object point on the raster, or ``out_dir`` a
            file (one line naming the file, the parameter and the fix).
    """
    image_path = Path(image_path)
    label = str(image_path)
    src = ImageSource.open(image_path)
    grid = src.grid
    if grid.crs is None:
        raise ValueError(
            f'{label}: the raster has no CRS; assign one (e.g. `gdal_edit.py -a_srs '
            'EPSG:32618 FILE`) and run again.'
        )
    in_channels = task.hparams.get('in_channels')
    if in_channels is not None and src.count != in_channels:
        raise ValueError(
            f'{label}: {src.count} bands, but the model was trained on {in_channels}; '
            'pass imagery with the training bands.'
        )
    if block is None:
        block = int(task.hparams.get('window') or 512)
    if halo is None:
        halo = block // 4
    if block <= 0 or halo < 0:
        raise ValueError(f'block={block}, halo={halo}: need block > 0 and halo >= 0.')
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f'out_dir {out}: is a file; give a folder for the outputs.')
    pts = read_points_on_grid(
        points,
        grid,
        label,
        id_column,
        class_column,
        background_column,
        x,
        y,
        points_crs,
    )
    if split == 'auto':
        split = task.default_split
    elif split not in ('learned', 'geodesic'):
        raise ValueError(f"split={split!r}: give 'auto', 'learned' or 'geodesic'.")
    obj = ~pts.background
    stem = f'{output_stem(name or image_path.stem)}_instances'
    paths = InstanceOutputs(
        raster=out / f'{stem}.tif',
        polygons=out / f'{stem}.gpkg',
        item=out / f'{stem}.json',
    )
    spec = instance_spec(
        {
            'points': Path(points).name,
            'points_used': int(obj.sum()),
            'background_points_used': int((~obj).sum()),
            'points_outside': pts.outside,
            'split': split,
            'block': block,
            'halo': halo,
            **(properties or {}),
        }
    )
    # class of each object id, for the class band
    order = np.argsort(pts.ids[obj])
    known_ids = pts.ids[obj][order]
    known_classes = pts.classes[obj][order]

    created = not out.exists()
    written: list[Path] = []
    found: set[int] = set()  # object ids that got pixels
    try:
        frames = []
        with cog_writer(
            paths.raster,
            count=spec.count,
            height=grid.height,
            width=grid.width,
            dtype=spec.dtype,
            crs=grid.crs,
            transform=grid.transform,
            nodata=spec.nodata,
            **spec.cog_options(),
        ) as dst:
            windows = grid.blocks(block)
            for window in progress_bar(
                windows, desc='instances', unit='block', enabled=progress
            ):
                inst, unc, invalid = _predict_block(
                    task, src, grid, window, halo, pts, split
                )
                pos = np.searchsorted(known_ids, inst).clip(
                    0, max(len(known_ids) - 1, 0)
                )
                cls = np.where(inst > 0, known_classes[pos], 0)
                data = np.stack(
                    [
                        inst.astype(np.uint32),
                        cls.astype(np.uint32),
                        np.round(np.nan_to_num(unc, nan=0.0) * 254).astype(np.uint32),
                    ]
                )
                if invalid is not None:
                    data[:, invalid] = INSTANCE_NODATA
                dst.write(data, window=window)
                found.update(int(i) for i in np.unique(inst[inst > 0]))
                if (inst > 0).any():
                    frames.append(
                        instance_polygons(
                            inst, grid.window_transform(window), grid.crs, classes=cls
                        )
                    )
        written.append(paths.raster)
        _warn_missing(known_ids, found, points, paths.raster)
        polygons = _dissolve(frames, grid.crs)
        write_polygons(polygons, paths.polygons)
        written.append(paths.polygons)
        item = output_item(paths.raster, item_id=stem, source_paths=[label])
        _polygons_asset(item, paths.polygons)
        write_item(item, paths.item)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return paths


def _warn_missing(
    ids: np.ndarray, found: set[int], points: str | os.PathLike[str], raster: Path
) -> None:
    """Warn about object points whose instance got no pixel (never silently empty)."""
    missing = sorted(set(int(i) for i in ids) - found)
    if missing:
        shown = ', '.join(str(i) for i in missing[:5]) + (
            ', ...' if len(missing) > 5 else ''
        )
        warnings.warn(
            f'{points}: {len(missing)} of {len(ids)} object points (ids {shown}) got '
            f'no pixel in {raster.name}: the model calls their pixels background or '
            'gives them to a nearer point, and they are missing from the polygons; '
            'check that each point sits on its object.',
            stacklevel=3,
        )


def _predict_block(
    task: PointInstanceTask,
    src: ImageSource,
    grid: RasterGrid,
    window: Window,
    halo: int,
    pts: InstancePoints,
    split: Literal['learned', 'geodesic'] = 'geodesic',
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Instances, uncertainty and nodata mask of a block's centre."""
    h, w = int(window.height), int(window.width)
    outer = grid.with_halo(window, halo)
    rc, take = pts.in_window(outer)
    bg = pts.background[take]
    (r0, _), (c0, _) = window.toranges()
    (o0, _), (p0, _) = outer.toranges()
    centre = (slice(r0 - o0, r0 - o0 + h), slice(c0 - p0, c0 - p0 + w))
    if not (~bg).any():  # no object here: all background, certain; no network call
        _, invalid = src.read(window)
        return np.zeros((h, w), np.int64), np.zeros((h, w), np.float32), invalid
    image, invalid = src.read(outer)
    x = image.astype(np.float32)
    if invalid is not None:
        x[:, invalid] = np.nan
    pred = task.predict_instances(x, rc, pts.ids[take], bg, split=split)
    inner_invalid = None if invalid is None else invalid[centre]
    return pred.instances[centre], pred.uncertainty[centre], inner_invalid


# ---------------------------------------------------------------- stage 2


@dataclass
class RasterObjects:
    """Objects detected over a raster (:func:`detect_instances`), ids 1..K.

    .. versionadded:: 0.1

    Attributes:
        ids: ``(K,)`` int64 instance ids, 1..K.
        offsets: ``(K, 2)`` int64 raster (row, col) of each mask crop's top-left.
        masks: K bool mask crops.
        scores: ``(K,)`` float detection scores.
        labels: ``(K,)`` int64 classes.
        shape: the raster's ``(height, width)``.
    """

    ids: np.ndarray
    offsets: np.ndarray
    masks: list[np.ndarray]
    scores: np.ndarray
    labels: np.ndarray
    shape: tuple[int, int]

    def __len__(self) -> int:
        """Number of objects."""
        return len(self.ids)


def paint_objects(
    objects: RasterObjects, window: Window
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance ids, classes and scores of a window of the raster.

    Objects are painted lower scores first, so the best one wins where masks
    overlap.

    .. versionadded:: 0.1

    Returns:
        ``(h, w)`` int64 ids (0 background), int64 classes and float32 scores (0
        on background).
    """
    (r0, r1), (c0, c1) = window.toranges()
    h, w = r1 - r0, c1 - c0
    inst = np.zeros((h, w), np.int64)
    cls = np.zeros((h, w), np.int64)
    score = np.zeros((h, w), np.float32)
    if not len(objects):
        return inst, cls, score
    sizes = np.array([m.shape for m in objects.masks], dtype=np.int64)
    top, left = objects.offsets[:, 0], objects.offsets[:, 1]
    near = (
        (top < r1) & (top + sizes[:, 0] > r0) & (left < c1) & (left + sizes[:, 1] > c0)
    )
    for k in sorted(np.flatnonzero(near), key=lambda i: (objects.scores[i], -i)):
        m = objects.masks[k]
        rr0, cc0 = max(int(top[k]), r0), max(int(left[k]), c0)
        rr1 = min(int(top[k]) + m.shape[0], r1)
        cc1 = min(int(left[k]) + m.shape[1], c1)
        part = m[rr0 - top[k] : rr1 - top[k], cc0 - left[k] : cc1 - left[k]]
        region = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        inst[region][part] = objects.ids[k]
        cls[region][part] = objects.labels[k]
        score[region][part] = objects.scores[k]
    return inst, cls, score


def detect_instances(
    task: MaskRCNNTask,
    image_path: str | os.PathLike[str] | ImageSource,
    block: int = 512,
    halo: int = 64,
    score_threshold: float | None = None,
    merge_iou: float = 0.5,
    progress: bool = False,
) -> RasterObjects:
    """Objects of a whole raster, stitched over blocks (see the module doc).

    .. versionadded:: 0.1

    Args:
        task: the trained Mask R-CNN.
        image_path: imagery raster (raw values, bands as in training), or an open
            :class:`~geosparse.io.source.ImageSource`.
        block: block size in pixels.
        halo: context read around each block, pixels (at least an object's
            diameter).
        score_threshold: lowest detection score kept (default: the task's).
        merge_iou: box IoU above which two blocks' detections are one object.
        progress: show a progress bar.

    Returns:
        The objects, ids 1..K in raster order.

    Raises:
        ValueError: for ``block <= 0`` or ``halo < 0``.
    """
    import torch
    from torchvision.ops import nms

    if block <= 0 or halo < 0:
        raise ValueError(f'block={block}, halo={halo}: need block > 0 and halo >= 0.')
    src = (
        image_path
        if isinstance(image_path, ImageSource)
        else ImageSource.open(image_path)
    )
    grid = src.grid
    offsets: list[tuple[int, int]] = []
    masks: list[np.ndarray] = []
    scores: list[float] = []
    labels: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []
    windows = grid.blocks(block)
    for window in progress_bar(
        windows, desc='instances', unit='block', enabled=progress
    ):
        (r0, r1), (c0, c1) = window.toranges()
        outer = grid.with_halo(window, halo)
        (o0, _), (p0, _) = outer.toranges()
        image, invalid = src.read(outer)
        x = torch.from_numpy(image.astype(np.float32))
        if invalid is not None:
            x[:, torch.from_numpy(invalid)] = 0.0
        det = task.detect(x[None], score_threshold)[0]
        for k in range(len(det.scores)):
            bx0, by0, bx1, by1 = (float(v) for v in det.boxes[k])
            cy, cx = o0 + (by0 + by1) / 2, p0 + (bx0 + bx1) / 2
            if not (r0 <= cy < r1 and c0 <= cx < c1):
                continue  # another block's core holds its centre
            m = det.masks[k]
            if invalid is not None:
                m = m & ~invalid
            rows = np.flatnonzero(m.any(1))
            cols = np.flatnonzero(m.any(0))
            if not len(rows):
                continue
            crop = m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            top, left = o0 + int(rows[0]), p0 + int(cols[0])
            offsets.append((top, left))
            masks.append(np.ascontiguousarray(crop))
            scores.append(float(det.scores[k]))
            labels.append(int(det.labels[k]))
            boxes.append((left, top, left + crop.shape[1], top + crop.shape[0]))
    shape = (grid.height, grid.width)
    if not masks:
        return RasterObjects(
            np.zeros(0, np.int64),
            np.zeros((0, 2), np.int64),
            [],
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            shape,
        )
    keep = nms(
        torch.tensor(boxes, dtype=torch.float32),
        torch.tensor(scores, dtype=torch.float32),
        merge_iou,
    ).numpy()
    off = np.asarray(offsets, dtype=np.int64)[keep]
    order = np.lexsort((off[:, 1], off[:, 0]))
    keep = keep[order]
    return RasterObjects(
        ids=np.arange(1, len(keep) + 1, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.int64)[keep],
        masks=[masks[k] for k in keep],
        scores=np.asarray(scores, dtype=np.float32)[keep],
        labels=np.asarray(labels, dtype=np.int64)[keep],
        shape=shape,
    )


def detection_spec(properties: dict[str, Property] | None = None) -> OutputSpec:
    """The :class:`~geosparse.io.spec.OutputSpec` of a stage-2 instance COG.

    .. versionadded:: 0.1
    """
    return OutputSpec(
        task=MaskRCNNTask.__name__,
        kind='instances',
        bands=(
            BandSpec('instance', 'object id, unique over the raster (0: background)'),
            BandSpec('class', "the object's class (0: background)"),
            BandSpec(
                'uncertainty',
                "1 - the detection score of the pixel's object (0 on background); "
                'stored as round(254 u)',
                scale=1 / 254,
            ),
        ),
        dtype='uint32',
        nodata=INSTANCE_NODATA,
        categorical=True,
        properties=dict(properties or {}),
    )


def predict_detected_instances(
    task: MaskRCNNTask,
    image_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    block: int = 512,
    halo: int = 64,
    score_threshold: float | None = None,
    merge_iou: float = 0.5,
    progress: bool = True,
    properties: dict[str, Property] | None = None,
) -> InstanceOutputs:
    """Instance masks, polygons and a STAC Item of a raster, without points.

    The outputs of :func:`predict_instances` (see the module doc), from a stage-2
    Mask R-CNN: the COG's bands ``instance``, ``class`` and ``uncertainty`` (1 -
    score), the polygons with columns ``instance``, ``class``, ``score``,
    ``area``, ``pixels``. Written atomically: ``out_dir`` holds all three or none.

    .. versionadded:: 0.1

    Args:
        task: the trained Mask R-CNN.
        image_path: imagery raster (raw values, bands as in training).
        out_dir: output folder.
        name: output name stem (default: the raster's stem).
        block: block size in pixels.
        halo: context around each block, pixels (at least an object's diameter).
        score_threshold: lowest detection score kept (default: the task's).
        merge_iou: see :func:`detect_instances`.
        progress: show a progress bar.
        properties: further provenance (e.g. ``checkpoint``).

    Returns:
        The paths written.

    Raises:
        ValueError: for a raster without a CRS or with other bands than the
            model's, or ``out_dir`` a file (one line naming the file and the fix).
    """
    import pandas as pd

    image_path = Path(image_path)
    label = str(image_path)
    src = ImageSource.open(image_path)
    grid = src.grid
    if grid.crs is None:
        raise ValueError(
            f'{label}: the raster has no CRS; assign one (e.g. `gdal_edit.py -a_srs '
            'EPSG:32618 FILE`) and run again.'
        )
    in_channels = task.hparams.get('in_channels')
    if in_channels is not None and src.count != in_channels:
        raise ValueError(
            f'{label}: {src.count} bands, but the model was trained on {in_channels}; '
            'pass imagery with the training bands.'
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f'out_dir {out}: is a file; give a folder for the outputs.')
    objects = detect_instances(
        task, src, block, halo, score_threshold, merge_iou, progress
    )
    threshold = (
        task.hparams['score_threshold'] if score_threshold is None else score_threshold
    )
    stem = f'{output_stem(name or image_path.stem)}_instances'
    paths = InstanceOutputs(
        raster=out / f'{stem}.tif',
        polygons=out / f'{stem}.gpkg',
        item=out / f'{stem}.json',
    )
    spec = detection_spec(
        {
            'objects': len(objects),
            'score_threshold': float(threshold),
            'merge_iou': merge_iou,
            'block': block,
            'halo': halo,
            **(properties or {}),
        }
    )
    created = not out.exists()
    written: list[Path] = []
    try:
        frames = []
        with cog_writer(
            paths.raster,
            count=spec.count,
            height=grid.height,
            width=grid.width,
            dtype=spec.dtype,
            crs=grid.crs,
            transform=grid.transform,
            nodata=spec.nodata,
            **spec.cog_options(),
        ) as dst:
            for window in grid.blocks(block):
                inst, cls, score = paint_objects(objects, window)
                unc = np.where(inst > 0, 1.0 - score, 0.0)
                data = np.stack(
                    [
                        inst.astype(np.uint32),
                        cls.astype(np.uint32),
                        np.round(unc * 254).astype(np.uint32),
                    ]
                )
                _, invalid = src.read(window)
                if invalid is not None:
                    data[:, invalid] = INSTANCE_NODATA
                dst.write(data, window=window)
                if (inst > 0).any():
                    frames.append(
                        instance_polygons(
                            inst, grid.window_transform(window), grid.crs, classes=cls
                        )
                    )
        written.append(paths.raster)
        polygons = _dissolve(frames, grid.crs)
        by_id = pd.Series(objects.scores.astype(np.float64), index=objects.ids)
        polygons.insert(
            2, 'score', by_id.reindex(polygons['instance']).to_numpy(np.float64)
        )
        write_polygons(polygons, paths.polygons)
        written.append(paths.polygons)
        item = output_item(paths.raster, item_id=stem, source_paths=[label])
        _polygons_asset(item, paths.polygons)
        write_item(item, paths.item)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return paths
