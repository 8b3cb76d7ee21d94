"""Make the instances page's picture: SpaceNet buildings from one click each.

Crops the right half of the shared SpaceNet Atlanta tile (columns 450-899, the docs'
held-out half), places one random interior point per building and as many background
points (``benchmarks/point_instances.py``'s placement, seed 0), trains a
``PointInstanceTask`` on them (the benchmark's defaults: 300 steps of 4 windows of
128 px), runs ``geosparse predict --points`` (its defaults) and draws the image with the
true footprints and the points, the instance map, and its uncertainty::

    python docs/scripts/instances_figure.py [DATA_DIR] [--out docs/_static/instances_spacenet.png]

``DATA_DIR`` defaults to ``$GEOSPARSE_DATA_DIR`` or ``../shared/data``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import geopandas as gpd
import lightning
import matplotlib.pyplot as plt
import numpy as np
import rasterio
import shapely
from _figures import ROOT, parse, require, save  # docs/scripts/_figures.py

from geosparse.datamodules import PointInstanceDataModule
from geosparse.instances.metrics import instance_scores
from geosparse.trainers import PointInstanceTask, brief_trainer

sys.path.insert(0, str(ROOT / 'benchmarks'))
import point_instances as bench  # the benchmark's point placement, crop and truth

COLUMNS = slice(450, 900)


def main() -> None:
    args, data = parse(__doc__, 'instances_spacenet', 300)
    tile = data / 'spacenet-atlanta' / 'atlanta_pan.tif'
    footprints = data / 'spacenet-atlanta' / 'atlanta_buildings.gpkg'
    require(tile, footprints)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        image = bench.crop(tile, t / 'right.tif', COLUMNS)
        pixels, transform, crs = bench.read_scene(image)
        h, w = pixels.shape[-2:]
        polygons = gpd.read_file(footprints).to_crs(crs)
        polygons['instance'] = bench.polygon_ids(polygons, 'building_id')
        box = shapely.box(*rasterio.transform.array_bounds(h, w, transform))
        polygons['geometry'] = polygons.geometry.intersection(box)
        polygons = polygons[polygons.geometry.area > 0]
        left, bottom, right, top = box.bounds
        points = bench.place_points(
            polygons, (left, bottom, right, top), len(polygons), seed=0
        )
        points_path = t / 'points.gpkg'
        points.to_file(points_path)
        lightning.seed_everything(0, verbose=False)
        dm = PointInstanceDataModule(
            str(image),
            str(points_path),
            id_column='instance',
            background_column='background',
            patch_size=128,
            batch_size=4,
            length=4 * args.steps,
            seed=0,
        )
        task = PointInstanceTask(in_channels=pixels.shape[0])
        trainer = brief_trainer(args.steps, progress=True)
        trainer.fit(task, dm)
        ckpt = t / 'instances.ckpt'
        trainer.save_checkpoint(ckpt)
        subprocess.run(
            ['geosparse', '-q', 'predict', '--checkpoint', str(ckpt), str(image),
             '--points', str(points_path), '--id-column', 'instance',
             '--background-column', 'background', '--out', str(t / 'maps')],
            check=True,
        )
        raster = next((t / 'maps').glob('*_instances.tif'))
        with rasterio.open(raster) as f:
            ids = f.read(1).astype(np.int64)
            ids[f.read_masks(1) == 0] = 0
            band = 1 + list(f.descriptions).index('uncertainty')
            uncertainty = f.read(band, masked=True).astype(float).filled(np.nan)
            uncertainty *= f.scales[band - 1]
        truth = bench.truth_raster(polygons, pixels, transform, crs)
    objects = points[points['background'] == 0]
    scores = instance_scores(ids, truth, point_ids=objects['instance'].to_numpy())
    inverse = ~transform
    pc, pr = inverse * (objects.geometry.x.to_numpy(), objects.geometry.y.to_numpy())

    fig, ax = plt.subplots(1, 3, figsize=(13, 7.6), constrained_layout=True)
    grey = pixels[0]
    lo, hi = np.nanpercentile(grey, [1, 99])
    extent = (left, right, bottom, top)
    for a in ax[:2]:
        a.imshow(grey, cmap='gray', vmin=lo, vmax=hi, extent=extent)
    polygons.boundary.plot(ax=ax[0], color='cyan', lw=1)
    ax[0].plot(*(transform * (pc, pr)), 'o', ms=4, color='red')
    ax[0].set_title(f'SpaceNet Atlanta, right half:\n{len(objects)} footprints, one click each')
    shown = np.ma.masked_equal(ids, 0)
    rng = np.random.default_rng(0)
    colours = rng.permutation(int(ids.max()) + 1)
    ax[1].imshow(np.ma.array(colours[ids], mask=shown.mask), cmap='tab20',
                 alpha=0.6, extent=extent, interpolation='nearest')
    polygons.boundary.plot(ax=ax[1], color='cyan', lw=0.8)
    ax[1].set_title(
        f'instances (geosparse predict):\nIoU {scores["instance_iou"]:.2f}, '
        f'PQ {scores["pq"]:.2f}'
    )
    im = ax[2].imshow(uncertainty, cmap='magma', vmin=0, vmax=1, extent=extent)
    ax[2].set_title('uncertainty:\nexp(-margin of the two nearest queries)')
    fig.colorbar(im, ax=ax[2], shrink=0.8)
    save(
        fig,
        ax,
        args.out,
        f'held-out half, instance IoU {scores["instance_iou"]:.3f}, '
        f'PQ {scores["pq"]:.3f}, {len(objects)} buildings',
    )


if __name__ == '__main__':
    main()
