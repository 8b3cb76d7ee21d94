r"""Instance masks from one point per object: learned distance against hand-crafted ones.

Methods, all giving one mask per point (an instance is its point):

- ``voronoi``: every foreground pixel takes its nearest point
  (:func:`~geosparse.instances.voronoi_instances`);
- ``geodesic``: the point at the smallest geodesic distance on an image-edge cost,
  PSPS-style (:func:`~geosparse.instances.geodesic_instances`);
- ``ot``: entropic optimal transport of equal label masses from the points onto the
  foreground pixels at that geodesic cost, Point2Mask-style
  (:func:`~geosparse.instances.transport_instances`);
- ``learned``: :class:`~geosparse.trainers.PointInstanceTask` (ECCV 2024 learnable
  distance) trained through :class:`~geosparse.datamodules.PointInstanceDataModule`
  and Lightning on the scene's own points (stage 1 is transductive, as in the paper):
  the pixels its foreground head calls objects take the object query at the smallest
  learned distance.

``learned`` is predicted as users get it, by ``geosparse predict``'s block predictor
(:func:`~geosparse.inference.instances.predict_instances`) with blocks of the
training window size (``--block``, ``--halo``: the distance trained on windows of
128 pixels did worse on whole 900-pixel scenes, whose windows hold many more
queries). The foreground of ``voronoi``, ``geodesic`` and ``ot`` comes, as the issue asks,
from a foreground/background head trained on the same points, windows and steps. By
default (``--foreground auto``) that is the learned task's own foreground head when
``learned`` is run (a U-Net of its own, trained in the same steps with the same loss
as :class:`~geosparse.trainers.PointForegroundTask`), so that every method divides one
foreground and the table compares the splits; their ``seconds`` then include the
learned task's training and prediction. Without ``learned``, ``auto`` trains a
:class:`~geosparse.trainers.PointForegroundTask` (the distance's U-Net with two
classes, cross-entropy at the points and the same pairwise colour term), which
``--foreground head`` asks for always (a second network, trained on the same windows:
the methods then also differ by their foregrounds). ``--foreground truth`` gives every
method the true foreground (the learned method then splits it by its distances among
the object queries), which isolates the split.

The learned task's objects are the pixels its head calls objects that lie within
its stuff margin (``--stuff-margin``, the task's ``stuff_margin``, default
:data:`~geosparse.trainers.instances.STUFF_MARGIN`): the learned distance bounds
each object to where its point reaches. The baselines divide the head's foreground
without the margin (``learned_head_only``: the learned split of that foreground),
as the issue defines them; ``learned_geodesic`` is the learned foreground divided
by the geodesic, which is what ``geosparse predict --split geodesic`` gives
(``learned`` is its default for a distance with the region-colour term).

``learned_queries`` (when ``learned`` runs with its foreground head and the
foreground is not the truth): the same trained distance read as the paper reads it,
every pixel to its nearest query, thing or stuff, so that the stuff queries and the
hand-crafted term bound each object instead of the head (the task's
``foreground='queries'``). ``--also-margins D ...`` reads it again with other stuff
margins (``learned_margin_D``), to choose one without retraining.

``stage2`` (not in the default methods): TorchGeo's Mask R-CNN
(:class:`~geosparse.trainers.MaskRCNNTask`) trained on the learned pseudo masks,
scored with no points on imagery it never saw: a new generated scene (seed + 1000),
or the right half of a real raster when trained on its left half. Its segments are
matched to the true objects (IoU > 0.5) before ``instance_iou``.

Points: one per polygon, a random interior point per seed (``--points`` gives them
instead; each is matched to the polygon containing it), and ``--background-points``
random points outside every polygon (points for the "stuff", as panoptic point
supervision has; 0: only learnable stuff queries).

Scores (:func:`~geosparse.instances.instance_scores`): ``instance_iou``, the mean IoU
between each point's mask and its own polygon; ``pq``, panoptic quality of the
instances at IoU 0.5; ``miou`` over background and objects. ``seconds`` is the
method's whole time (training included for ``learned``);
``seconds_per_megapixel`` the time to make the pseudo masks of the scene once the
points are known (inference for ``learned``). ``speed.train_step_over_segmentation``:
one learned-distance training step over one plain segmentation step (the same U-Net
with a 2-class head, cross-entropy at the points) on the same batch.

Scenes: ``--image RASTER --polygons FILE`` (real data, e.g.
``../shared/data/spacenet-atlanta``), or ``--synthetic`` (a generated scene of
touching objects of similar appearance,
:func:`~geosparse.datasets.synthetic.make_instance_scene`, a new scene per seed;
``--size``, ``--terraces`` and ``--isolated`` set its side and how many objects it
holds, e.g. ``--size 512 --terraces 16 --isolated 36`` for four times the objects at
the same density).

    python benchmarks/point_instances.py \
        --image ../shared/data/spacenet-atlanta/atlanta_pan.tif \
        --polygons ../shared/data/spacenet-atlanta/atlanta_buildings.gpkg
    python benchmarks/point_instances.py --synthetic

Prints one JSON object (and writes it atomically to ``--out``)::

    {"methods": {NAME: {"instance_iou", "pq", "miou", "seconds",
                        "seconds_per_megapixel", "per_seed": [...]}},
     "n_instances": int, "speed": {...}, "settings": {...}}
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import geopandas as gpd
import lightning
import numpy as np
import rasterio
import segmentation_models_pytorch as smp
import shapely
import torch
import torch.nn.functional as F

from geosparse.console import progress, quiet, verbose_option
from geosparse.datamodules import PointInstanceDataModule
from geosparse.datasets import InstancePolygons, match_points_to_polygons
from geosparse.datasets.synthetic import make_instance_scene
from geosparse.inference.instances import predict_instances
from geosparse.inference.stage2 import predict_stage2, train_stage2
from geosparse.instances import (
    EDGE_WEIGHT,
    geodesic_instances,
    instance_scores,
    point_components,
    transport_instances,
    voronoi_instances,
)
from geosparse.io.grid import apply_affine
from geosparse.io.raster import atomic_write_text
from geosparse.models.distance import standardise
from geosparse.trainers import PointForegroundTask, PointInstanceTask, brief_trainer
from geosparse.trainers.instances import STUFF_MARGIN

METHODS = ('voronoi', 'geodesic', 'ot', 'learned')
T = TypeVar('T', bound=lightning.LightningModule)
EXTRA_METHODS = ('stage2',)


def place_points(
    polygons: gpd.GeoDataFrame,
    bounds: tuple[float, float, float, float],
    n_background: int,
    seed: int,
) -> gpd.GeoDataFrame:
    """One random interior point per polygon and ``n_background`` points outside all."""
    rng = np.random.default_rng(seed)
    rows = []
    for inst, geom in zip(polygons['instance'], polygons.geometry, strict=True):
        minx, miny, maxx, maxy = geom.bounds
        for _ in range(10000):
            p = shapely.Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
            if geom.contains(p):
                break
        else:
            p = geom.representative_point()
        rows.append({'instance': int(inst), 'background': 0, 'geometry': p})
    union = shapely.union_all(list(polygons.geometry)).buffer(1.0)
    xmin, ymin, xmax, ymax = bounds
    found = 0
    while found < n_background:
        p = shapely.Point(rng.uniform(xmin, xmax), rng.uniform(ymin, ymax))
        if not union.contains(p):
            rows.append({'instance': 0, 'background': 1, 'geometry': p})
            found += 1
    return gpd.GeoDataFrame(rows, crs=polygons.crs)


def read_scene(image: Path) -> tuple[np.ndarray, Any, Any]:
    """The raster as float32 ``(C, H, W)`` (nodata NaN), its transform and CRS."""
    with rasterio.open(image) as src:
        data = src.read(masked=True).astype('float32').filled(np.nan)
        return data, src.transform, src.crs


def window_points(
    frame: gpd.GeoDataFrame, transform: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col) pixel coordinates, ids and background flags of points."""
    cols, rows = apply_affine(
        ~transform, frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy()
    )
    rc = np.stack([np.asarray(rows), np.asarray(cols)], 1)
    return rc, frame['instance'].to_numpy(), frame['background'].to_numpy() > 0


def polygon_ids(polygons: gpd.GeoDataFrame, column: str | None) -> np.ndarray:
    """The polygons' instance ids: ``column``, else ``instance``, else row number + 1."""
    if column is None and 'instance' in polygons:
        column = 'instance'
    if column is None:
        return np.arange(1, len(polygons) + 1)
    return polygons[column].to_numpy().astype(np.int64)


def user_points(
    path: str, polygons: gpd.GeoDataFrame, polygons_path: Path
) -> gpd.GeoDataFrame:
    """Given points, each taking the id of the polygon that holds it (package's matcher)."""
    frame = gpd.read_file(path).to_crs(polygons.crs)
    if 'background' not in frame:
        frame['background'] = 0
    ids = match_points_to_polygons(
        frame[frame['background'] == 0],
        polygons[['instance', 'geometry']],
        points_path=path,
        polygons_path=str(polygons_path),
    )
    frame['instance'] = 0
    frame.loc[frame['background'] == 0, 'instance'] = ids
    # points in no polygon were warned about by the matcher; they are not scored
    return frame[(frame['background'] != 0) | (frame['instance'] > 0)]


def truth_raster(
    polygons: gpd.GeoDataFrame, image: np.ndarray, transform: Any, crs: Any
) -> np.ndarray:
    """The polygons (column ``instance``) rasterised on the grid by the package's dataset."""
    h, w = image.shape[-2:]
    frame = polygons[['instance', 'geometry']]
    ds = InstancePolygons(frame, id_column='instance', crs=crs, res=transform.a)
    xmin, ymax = transform.c, transform.f
    xmax, ymin = xmin + w * transform.a, ymax + h * transform.e
    sample = ds[xmin:xmax, ymin:ymax]
    return np.asarray(sample['instances']).reshape(h, w)


def matched(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``pred`` with each segment renamed to the true id it overlaps best (IoU > 0.5).

    Points-free predictions (stage 2) carry ids of their own; once matched, each
    true object's IoU with its segment is what ``instance_iou`` averages, and
    unmatched segments keep distinct ids above the true ones (false positives).
    """
    out = np.zeros_like(truth)
    spare = int(truth.max()) + 1
    for k in np.unique(pred[pred > 0]):
        seg = pred == k
        ids, counts = np.unique(truth[seg], return_counts=True)
        best, inter = 0, 0
        for t, n in zip(ids, counts, strict=True):
            if t and n > inter:
                best, inter = int(t), int(n)
        iou = inter / (seg.sum() + (truth == best).sum() - inter) if best else 0.0
        if iou > 0.5 and not (out == best).any():
            out[seg] = best
        else:
            out[seg] = spare
            spare += 1
    return out


def crop(src_path: Path, dst_path: Path, cols: slice) -> Path:
    """Write the columns ``cols`` of a raster to ``dst_path`` (georeferenced)."""
    with rasterio.open(src_path) as src:
        window = rasterio.windows.Window(
            cols.start, 0, cols.stop - cols.start, src.height
        )
        profile = src.profile | {
            'width': window.width,
            'transform': src.window_transform(window),
        }
        profile.pop('blockxsize', None)
        profile.pop('blockysize', None)
        profile['tiled'] = False
        data = src.read(window=window)
    with rasterio.open(dst_path, 'w', **profile) as dst:
        dst.write(data)
    return dst_path


def stage2_scores(
    image_path: Path,
    polygons_path: Path,
    pseudo: Path,
    a: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """Stage 2 trained on the learned pseudo masks, scored on imagery it never saw.

    Generated scenes: trained on the scene's pseudo masks, scored on a new scene
    (seed + 1000) with no points. Real data: trained on the left half of the
    pseudo masks, scored on the right half of the raster with no points.
    """
    t0 = time.perf_counter()
    if a.synthetic:
        new = make_instance_scene(
            work / f'heldout{a.seed}',
            size=a.size,
            seed=a.seed + 1000,
            terraces=a.terraces,
            isolated=a.isolated,
        )
        train_image, train_masks = image_path, pseudo
        test_image, test_polygons = new.image, new.polygons
    else:
        with rasterio.open(image_path) as src:
            half = src.width // 2
            width = src.width
        left, right = slice(0, half), slice(half, width)
        train_image = crop(image_path, work / f'left_{a.seed}.tif', left)
        train_masks = crop(pseudo, work / f'left_masks_{a.seed}.tif', left)
        test_image = crop(image_path, work / f'right_{a.seed}.tif', right)
        test_polygons = polygons_path
    task = train_stage2(
        train_image,
        train_masks,
        steps=a.stage2_steps,
        patch_size=a.patch_size,
        batch_size=a.batch_size,
        seed=a.seed,
    )
    train = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = predict_stage2(
        task, test_image, block=a.patch_size, halo=a.patch_size // 4
    ).astype(np.int64)
    infer = time.perf_counter() - t0
    image, transform, crs = read_scene(test_image)
    polygons = gpd.read_file(test_polygons).to_crs(crs)
    polygons['instance'] = polygon_ids(polygons, None if a.synthetic else a.polygon_id)
    truth = truth_raster(polygons, image, transform, crs)
    scores = instance_scores(matched(pred, truth), truth)
    return {
        'instance_iou': float(scores['instance_iou']),
        'pq': float(scores['pq']),
        'miou': float(scores['miou']),
        'seconds': train + infer,
        'seconds_per_megapixel': infer / (truth.size / 1e6),
        'n_objects': int(len(np.unique(truth)) - 1),
        'n_detected': int(len(np.unique(pred)) - 1),
    }


def fit_on_points(
    make_task: Callable[[], T],
    image_path: Path,
    points_path: Path,
    a: argparse.Namespace,
) -> tuple[T, PointInstanceDataModule]:
    """Build and fit a task on the scene's points: the same seeded windows for all."""
    lightning.seed_everything(a.seed, workers=True, verbose=False)
    dm = PointInstanceDataModule(
        str(image_path),
        str(points_path),
        id_column='instance',
        background_column='background',
        patch_size=a.patch_size,
        batch_size=a.batch_size,
        length=a.steps * a.batch_size,
        seed=a.seed,
    )
    task = make_task()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        brief_trainer(a.steps).fit(task, dm)
    return task, dm


def colour_kwargs(a: argparse.Namespace) -> dict[str, float | None]:
    """The task's ``colour_scale`` from ``--colour-scale`` (0: none; unset: default)."""
    if a.colour_scale is None:
        return {}
    return {'colour_scale': a.colour_scale or None}


def train_learned(
    image_path: Path, points_path: Path, channels: int, a: argparse.Namespace
) -> tuple[PointInstanceTask, PointInstanceDataModule]:
    """Stage 1 of the learned distance on the scene's points."""
    return fit_on_points(
        lambda: PointInstanceTask(
            in_channels=channels,
            rounds=a.rounds,
            aggregation=not a.no_aggregation,
            enhancement=not a.no_enhancement,
            scale=a.scale,
            prior=a.prior,
            edge_weight=a.edge_weight,
            pairwise_weight=a.pairwise_weight,
            separate_foreground=not a.shared_foreground,
            stuff_margin=a.stuff_margin,
            lr=a.lr,
            **colour_kwargs(a),
        ),
        image_path,
        points_path,
        a,
    )


def train_foreground(
    image_path: Path, points_path: Path, channels: int, a: argparse.Namespace
) -> PointForegroundTask:
    """The baselines' foreground head, on the same windows and points as learned."""
    task, _ = fit_on_points(
        lambda: PointForegroundTask(
            in_channels=channels, pairwise_weight=a.pairwise_weight, lr=a.lr
        ),
        image_path,
        points_path,
        a,
    )
    return task


def step_ratio(
    task: PointInstanceTask, dm: PointInstanceDataModule, repeats: int = 5
) -> dict[str, float]:
    """Seconds of a learned training step and of a plain segmentation step, same batch."""
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(batch, 0)
    hp = task.hparams
    seg = smp.Unet(
        encoder_name=hp['backbone'],
        encoder_weights=None,
        encoder_depth=3,
        decoder_channels=(64, 32, 16),
        in_channels=hp['in_channels'],
        classes=2,
    )
    task.train()
    opt_l = torch.optim.AdamW(task.parameters(), lr=1e-4)
    opt_s = torch.optim.AdamW(seg.parameters(), lr=1e-4)
    h, w = batch['image'].shape[-2:]
    pts = batch['points']
    rows = pts[..., 0].long().clamp(0, h - 1)
    cols = pts[..., 1].long().clamp(0, w - 1)
    target = torch.full((batch['image'].shape[0], h, w), -100, dtype=torch.long)
    for i in range(len(pts)):
        ok = batch['valid'][i]
        target[i, rows[i, ok], cols[i, ok]] = (batch['values'][i, ok, 2] < 0.5).long()

    def learned() -> None:
        out = task.forward_batch(batch)
        loss, _ = task.compute_loss(batch, out)
        loss.backward()
        opt_l.step()
        opt_l.zero_grad()

    def plain() -> None:
        loss = F.cross_entropy(
            seg(standardise(batch['image'])), target, ignore_index=-100
        )
        loss.backward()
        opt_s.step()
        opt_s.zero_grad()

    times = {}
    for name, fn in (('learned', learned), ('plain', plain)):
        fn()  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        times[name] = (time.perf_counter() - t0) / repeats
    return {
        'learned_step_seconds': times['learned'],
        'segmentation_step_seconds': times['plain'],
        'train_step_over_segmentation': times['learned'] / times['plain'],
    }


def run_seed(
    image_path: Path,
    polygons_path: Path,
    points: gpd.GeoDataFrame | None,
    a: argparse.Namespace,
    work: Path,
    speed: bool,
) -> dict[str, Any]:
    """Every method on one scene with one seed's points."""
    image, transform, crs = read_scene(image_path)
    polygons = gpd.read_file(polygons_path).to_crs(crs)
    polygons['instance'] = polygon_ids(polygons, a.polygon_id)
    h, w = image.shape[-2:]
    if a.columns:
        # Scored on those columns only: the polygons cut to them.
        box = shapely.box(*rasterio.transform.array_bounds(h, w, transform)[:4])
        polygons['geometry'] = polygons.geometry.intersection(box)
        polygons = polygons[polygons.geometry.area > 0]
    if a.points:
        points = user_points(a.points, polygons, polygons_path)
    bounds = (
        transform.c,
        transform.f + h * transform.e,
        transform.c + w * transform.a,
        transform.f,
    )
    if points is None:
        points = place_points(polygons, bounds, a.background_points, a.seed)
    points_path = work / f'points_{a.seed}.gpkg'
    points.to_file(points_path)
    truth = truth_raster(polygons, image, transform, crs)
    rc, ids, bg = window_points(points, transform)
    obj = ~bg
    megapixels = h * w / 1e6
    result: dict[str, Any] = {'seed': a.seed, 'methods': {}}

    masks: dict[str, tuple[np.ndarray, float, float]] = {}
    extra: dict[str, tuple[np.ndarray, float, float]] = {}
    foreground = truth > 0
    head_seconds = 0.0
    task: PointInstanceTask | None = None
    # Only the methods asked for are trained (the baselines' head does not need the
    # learned task, unless it lends them its foreground).
    if {'learned', 'stage2'} & set(a.methods) or a.foreground == 'learned':
        t0 = time.perf_counter()
        task, dm = train_learned(image_path, points_path, image.shape[0], a)
        train_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        if a.foreground != 'truth':
            # As users get it: geosparse's block predictor, blocks of the training
            # window size (windows of block + 2 halo pixels).
            def read_learned(name: str, **hparams: Any) -> tuple[np.ndarray, Path]:
                saved = {k: task.hparams[k] for k in hparams}
                task.hparams.update(hparams)
                try:
                    pred_out = predict_instances(
                        task,
                        image_path,
                        points_path,
                        work / f'pred_{name}_{a.seed}',
                        block=a.block or a.patch_size,
                        halo=a.halo if a.halo is not None else a.patch_size // 4,
                        id_column='instance',
                        background_column='background',
                        progress=False,
                        split='learned',
                    )
                finally:
                    task.hparams.update(saved)
                with rasterio.open(pred_out.raster) as src:
                    labels = src.read(1).astype(np.int64)
                    labels[src.read_masks(1) == 0] = 0
                return labels, pred_out.raster

            learned, learned_raster = read_learned('learned')
            learned_end = time.perf_counter()  # the other readings are not its time
            foreground = learned > 0
            if task.hparams['foreground'] == 'head':

                def timed(name: str, **hparams: Any) -> None:
                    t1 = time.perf_counter()
                    labels, _ = read_learned(name, **hparams)
                    make = time.perf_counter() - t1
                    extra[name] = (labels, train_seconds + make, make)

                # The other readings take the masks whole; --connected scores them
                # cut too (rows NAME_connected).
                whole = {'connected': False}
                if math.isfinite(task.hparams['stuff_margin']):
                    # The baselines divide the head's foreground, without the
                    # margin the learned distance adds to it.
                    timed('learned_head_only', stuff_margin=math.inf, **whole)
                    foreground = extra['learned_head_only'][0] > 0
                # The paper's own reading of the same distance: every pixel takes
                # its nearest query, thing or stuff.
                timed('learned_queries', foreground='queries', **whole)
                for margin in a.also_margins or ():
                    timed(f'learned_margin_{margin:g}', stuff_margin=margin, **whole)
                if a.connected and task.hparams['connected']:
                    # the learned masks as they were before the cut
                    timed('learned_whole', **whole)
        else:
            # The learned distance splits the true foreground: nearest object
            # query (one window over the scene, for the distance maps).
            pred = task.predict_instances(image, rc, ids, bg)
            d = pred.distances[-1]
            thing = pred.ids > 0
            nearest = np.argmin(np.where(thing[:, None, None], d, np.inf), 0)
            learned = np.where(foreground, pred.ids[nearest], 0)
            learned_end = time.perf_counter()
        infer = learned_end - t0
        masks['learned'] = (learned, train_seconds + infer, infer)
        if a.foreground == 'learned':
            head_seconds = train_seconds + infer  # the baselines' foreground
    if a.foreground == 'head':
        t0 = time.perf_counter()
        head = train_foreground(image_path, points_path, image.shape[0], a)
        foreground = head.predict_foreground(image)
        head_seconds = time.perf_counter() - t0
    finite = np.isfinite(image).all(0)
    foreground = foreground & finite
    clean = np.nan_to_num(image)
    splits: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        'voronoi': lambda fg: voronoi_instances((h, w), rc[obj], ids[obj], fg),
        'geodesic': lambda fg: geodesic_instances(
            clean, rc[obj], ids[obj], fg, edge_weight=a.edge_weight
        ),
        'ot': lambda fg: transport_instances(
            clean, rc[obj], ids[obj], fg, edge_weight=a.edge_weight
        ),
    }
    for name, split in splits.items():
        if name in a.methods:
            t0 = time.perf_counter()
            mask = split(foreground)
            dt = time.perf_counter() - t0
            masks[name] = (mask, head_seconds + dt, dt)
    learned_own = a.foreground == 'head' or 'learned_head_only' in extra
    if learned_own and 'learned' in masks and 'geodesic' in a.methods:
        # What geosparse predict --split geodesic gives: the learned foreground
        # divided by the geodesic.
        t0 = time.perf_counter()
        g = splits['geodesic'](masks['learned'][0] > 0)
        dt = time.perf_counter() - t0
        make = masks['learned'][2] + dt
        masks['learned_geodesic'] = (g, masks['learned'][1] + dt, make)
    masks.update(extra)
    if a.connected:
        # Every method's masks again, each instance cut to the connected piece that
        # holds its point (geosparse.instances.point_components).
        for name, (mask, seconds, make) in list(masks.items()):
            if (
                name == 'learned'
                and a.foreground != 'truth'
                and task is not None
                and task.hparams['connected']
            ):
                continue  # cut already (the task's connected)
            t0 = time.perf_counter()
            cut = point_components(mask, rc[obj], ids[obj])
            dt = time.perf_counter() - t0
            masks[f'{name}_connected'] = (cut, seconds + dt, make + dt)
    for name, (mask, seconds, make) in masks.items():
        base = name.removesuffix('_connected')
        if base not in a.methods and base not in ('learned_geodesic', *extra):
            continue
        scores = instance_scores(mask, truth, point_ids=ids[obj])
        result['methods'][name] = {
            'instance_iou': float(scores['instance_iou']),
            'pq': float(scores['pq']),
            'miou': float(scores['miou']),
            'seconds': float(seconds),
            'seconds_per_megapixel': float(make / megapixels),
        }
    if 'stage2' in a.methods and a.foreground != 'truth':
        result['methods']['stage2'] = stage2_scores(
            image_path, polygons_path, learned_raster, a, work
        )
    result['n_instances'] = int(obj.sum())
    if speed and task is not None:
        result['speed'] = step_ratio(task, dm)
    return result


def run(a: argparse.Namespace) -> dict[str, Any]:
    """All seeds; means per method with the per-seed values."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for k, seed in enumerate(progress(a.seeds, desc='seeds', unit='seed')):
            one = argparse.Namespace(**{**vars(a), 'seed': seed})
            if a.synthetic:
                scene = make_instance_scene(
                    work / f'scene{seed}',
                    size=a.size,
                    seed=seed,
                    terraces=a.terraces,
                    isolated=a.isolated,
                )
                image_path, polygons_path = scene.image, scene.polygons
            else:
                image_path, polygons_path = Path(a.image), Path(a.polygons)
                if a.columns:
                    image_path = crop(
                        image_path, work / 'columns.tif', slice(*a.columns)
                    )
            runs.append(
                run_seed(image_path, polygons_path, None, one, work, speed=k == 0)
            )
    methods: dict[str, Any] = {}
    names = [*a.methods]
    for r in runs:
        names += [name for name in r['methods'] if name not in names]
    for name in names:
        per_seed = [
            {'seed': r['seed'], **r['methods'][name]}
            for r in runs
            if name in r['methods']
        ]
        if not per_seed:
            continue
        methods[name] = {
            key: float(np.mean([p[key] for p in per_seed]))
            for key in (
                'instance_iou',
                'pq',
                'miou',
                'seconds',
                'seconds_per_megapixel',
            )
        }
        methods[name]['per_seed'] = per_seed
    return {
        'methods': methods,
        'n_instances': runs[0]['n_instances'],
        'speed': runs[0].get('speed', {}),
        'settings': {k: v for k, v in vars(a).items() if k != 'out'},
    }


def n_polygons(a: argparse.Namespace) -> int:
    """How many polygons of ``--polygons`` reach the scored raster (``--columns``)."""
    polygons = gpd.read_file(a.polygons)
    if not a.columns:
        return len(polygons)
    with rasterio.open(a.image) as src:
        window = rasterio.windows.Window(
            a.columns[0], 0, a.columns[1] - a.columns[0], src.height
        )
        box = shapely.box(*rasterio.windows.bounds(window, src.transform))
        crs = src.crs
    return int((polygons.to_crs(crs).geometry.intersection(box).area > 0).sum())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, run, print and save the JSON."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--image', help='raster of the scene')
    p.add_argument('--polygons', help='object polygons of the scene (evaluation)')
    p.add_argument(
        '--polygon-id',
        help='id column of the polygons (default: instance, else row + 1)',
    )
    p.add_argument('--points', help='one point per object (default: placed per seed)')
    p.add_argument(
        '--columns',
        type=int,
        nargs=2,
        metavar=('START', 'STOP'),
        help='score on these pixel columns of --image only, the polygons cut to '
        'them (e.g. 450 900: the right half of the SpaceNet tile, held out from '
        'choices made on its left half)',
    )
    p.add_argument('--synthetic', action='store_true', help='generated scenes instead')
    p.add_argument('--size', type=int, default=256, help='synthetic scene side, pixels')
    p.add_argument(
        '--terraces',
        type=int,
        default=4,
        help='synthetic: rows of touching roofs attempted (scale with the area)',
    )
    p.add_argument(
        '--isolated', type=int, default=9, help='synthetic: isolated roofs attempted'
    )
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument(
        '--methods',
        nargs='+',
        default=list(METHODS),
        choices=METHODS + EXTRA_METHODS,
        help='methods to score; stage2 (Mask R-CNN trained on the learned pseudo '
        'masks, scored without points on a new generated scene or on the right half '
        'of the raster) is not in the default',
    )
    p.add_argument(
        '--stage2-steps', type=int, default=200, help='training steps of stage2'
    )
    p.add_argument(
        '--background-points',
        type=int,
        default=None,
        help='random points outside every polygon (default: one per object)',
    )
    p.add_argument(
        '--foreground',
        choices=('auto', 'head', 'learned', 'truth'),
        default='auto',
        help="foreground of the baselines: the learned task's own head (learned; "
        'auto when learned is run), a separate head trained on the same points '
        '(head: PointForegroundTask; auto otherwise), or the truth (which the '
        'learned distance then splits too)',
    )
    p.add_argument(
        '--steps',
        type=int,
        default=300,
        help="training steps of learned and of the baselines' foreground head "
        '(300: chosen on the tuning scenes 10-12 for the 15-minute budget, where 400 '
        'scored about 0.01 higher for every method; held out 400 scored 0.04 higher, '
        'one foreground in three failing at 300: train longer for maps you use)',
    )
    p.add_argument('--patch-size', type=int, default=128)
    p.add_argument(
        '--block', type=int, help='prediction block, pixels (default: --patch-size)'
    )
    p.add_argument('--halo', type=int, help='prediction halo (default: patch / 4)')
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--rounds', type=int, default=2)
    p.add_argument('--no-aggregation', action='store_true')
    p.add_argument('--no-enhancement', action='store_true')
    p.add_argument('--scale', type=float, default=32.0)
    p.add_argument(
        '--colour-scale',
        type=float,
        help="learned: the distance's region-colour term, in standard deviations of "
        "the window's bands (PointInstanceTask(colour_scale=...)); 0: none; default: "
        "the task's",
    )
    p.add_argument(
        '--shared-foreground',
        action='store_true',
        help="learned's foreground head as a 1 x 1 convolution of the distance's "
        "features (before 0.1's separate U-Net)",
    )
    p.add_argument(
        '--prior',
        choices=('geodesic', 'euclidean'),
        default='geodesic',
        help='hand-crafted term of the learned distance',
    )
    p.add_argument(
        '--edge-weight',
        type=float,
        default=EDGE_WEIGHT,
        help='edge cost weight of the geodesic (baselines and prior)',
    )
    p.add_argument(
        '--stuff-margin',
        type=float,
        default=STUFF_MARGIN,
        help="learned: the head's objects stay objects only within this margin of "
        "their nearest stuff query (PointInstanceTask's stuff_margin; inf: the head "
        'alone)',
    )
    p.add_argument(
        '--also-margins',
        type=float,
        nargs='+',
        metavar='D',
        help='learned: also read the same trained network with these stuff margins '
        '(rows learned_margin_D; to choose the margin without retraining)',
    )
    p.add_argument(
        '--connected',
        action='store_true',
        help="also score every method's masks with each instance cut to the "
        'connected piece that holds its point (rows NAME_connected; '
        "geosparse.instances.point_components, which the learned task's masks "
        'get by default), and the learned masks without it (learned_whole)',
    )
    p.add_argument('--pairwise-weight', type=float, default=1.0)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--out', help='also write the JSON here')
    verbose_option(p)
    a = p.parse_args(argv)
    if a.foreground == 'auto':
        a.foreground = 'learned' if 'learned' in a.methods else 'head'
    with quiet(a.verbose):
        if not a.synthetic and not (a.image and a.polygons):
            p.error('give --image and --polygons, or --synthetic')
        if a.columns:
            width = None
            if not a.synthetic:
                with rasterio.open(a.image) as src:
                    width = src.width
            if width is None or not 0 <= a.columns[0] < a.columns[1] <= width:
                p.error(
                    f'--columns START STOP ({a.columns[0]} {a.columns[1]}): two '
                    f'columns of --image, 0 <= START < STOP <= its width ({width}; '
                    'not with --synthetic)'
                )
        if a.also_margins and not all(m >= 0 for m in a.also_margins):
            p.error(f'--also-margins {a.also_margins}: give margins >= 0 (inf: none)')
        if a.background_points is None:
            a.background_points = (
                n_polygons(a) if a.polygons and not a.synthetic else 30
            )
        torch.set_num_threads(max(1, torch.get_num_threads()))
        result = run(a)
        text = json.dumps(result, indent=1)
        print(text)
        if a.out:
            atomic_write_text(a.out, text)
        return result


if __name__ == '__main__':
    main()
