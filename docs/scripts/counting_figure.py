"""Make the counting page's picture: Kootenay tree tops, a density map, counts with sds.

Trains a ``DensityTask`` (MSE, the benchmark's settings: 300 steps of 8 windows of
64 px, seed 0) on the top 70 % of the shared Kootenay orthophoto, predicts the whole
image with ``geosparse predict``, counts it in cells of 32 px with ``geosparse count``
and draws the image with the tree tops, the density and, for the cells of the held-out
bottom band, the predicted count with its 1-sd bar against the true one::

    python docs/scripts/counting_figure.py [DATA_DIR] [--out docs/_static/counting_kootenay.png]

``DATA_DIR`` defaults to ``$GEOSPARSE_DATA_DIR`` or ``../shared/data``.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import geopandas as gpd
import lightning
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from _figures import parse, require, save  # docs/scripts/_figures.py

from geosparse.datamodules import CountingDataModule
from geosparse.trainers import DensityTask, brief_trainer

CELL = 32
TRAIN_FRACTION = 0.7


def main() -> None:
    args, data = parse(__doc__, 'counting_kootenay', 300)
    image = data / 'kootenay-trees' / 'kootenayOrtho.tif'
    points = data / 'kootenay-trees' / 'kootenayTrees.gpkg'
    require(image, points)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        lightning.seed_everything(0)
        dm = CountingDataModule(
            str(image),
            str(points),
            patch_size=64,
            batch_size=8,
            length=8 * args.steps,
            split=(TRAIN_FRACTION, 0.0, 1 - TRAIN_FRACTION),
            eval_size=CELL,
            cache_dir=str(t / 'cache'),
            seed=0,
        )
        task = DensityTask(loss='mse', sigma=2.0)
        trainer = brief_trainer(args.steps, progress=True)
        trainer.fit(task, dm)
        ckpt = t / 'mse.ckpt'
        trainer.save_checkpoint(ckpt)
        subprocess.run(
            ['geosparse', '-q', 'predict', '--checkpoint', str(ckpt), str(image),
             '--out', str(t / 'maps')],
            check=True,
        )
        density_path = next((t / 'maps').glob('*.tif'))
        subprocess.run(
            ['geosparse', '-q', 'count', str(density_path), '--cell', str(CELL),
             '--out', str(t / 'counts.tif')],
            check=True,
        )
        with rasterio.open(image) as f:
            rgb = f.read([1, 2, 3]).transpose(1, 2, 0)
            crs, inverse = f.crs, ~f.transform
        with rasterio.open(density_path) as f:
            density = f.read(1).astype(float)
        with rasterio.open(t / 'counts.tif') as f:
            count, sd = f.read(1), f.read(2)
    tops = gpd.read_file(points).to_crs(crs)
    cols, rows = inverse * (tops.geometry.x.to_numpy(), tops.geometry.y.to_numpy())
    inside = (rows >= 0) & (rows < rgb.shape[0]) & (cols >= 0) & (cols < rgb.shape[1])
    rows, cols = rows[inside], cols[inside]
    truth, _, _ = np.histogram2d(
        rows,
        cols,
        bins=[np.arange(0, count.shape[0] * CELL + 1, CELL),
              np.arange(0, count.shape[1] * CELL + 1, CELL)],
    )
    # Held-out cells: wholly below the training band (those of the last row and
    # column are cut by the image's edge, for truth and prediction alike).
    top = int(np.ceil(TRAIN_FRACTION * rgb.shape[0] / CELL))
    held = (slice(top, None), slice(None))
    c, s, y = count[held].ravel(), sd[held].ravel(), truth[held].ravel()
    mae = float(np.abs(c - y).mean())
    within = float((np.abs(c - y) <= s).mean())

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    band = TRAIN_FRACTION * rgb.shape[0]
    ax[0].imshow(rgb)
    ax[0].plot(cols, rows, '.', ms=3, color='yellow')
    ax[0].axhline(band, color='white', lw=1, ls='--')
    ax[0].set_title(f'Kootenay 0.5 m, {len(rows)} tree tops; held out below the line')
    im = ax[1].imshow(density, cmap='viridis')
    ax[1].axhline(band, color='white', lw=1, ls='--')
    ax[1].set_title('density (trees per pixel), MSE, 300 steps')
    fig.colorbar(im, ax=ax[1], shrink=0.8)
    ax[2].errorbar(y, c, yerr=s, fmt='o', ms=4, capsize=2)
    hi = max(y.max(), (c + s).max()) + 2
    ax[2].plot([0, hi], [0, hi], color='grey', lw=1)
    ax[2].set_xlabel(f'true trees per {CELL} px cell')
    ax[2].set_ylabel('predicted count (bar: 1 sd)')
    ax[2].set_title(f'held-out cells: MAE {mae:.2f}, {within:.0%} within 1 sd')
    save(fig, ax[:2], args.out, f'{len(y)} held-out cells, MAE {mae:.2f}, within 1 sd {within:.2f}')


if __name__ == '__main__':
    main()
