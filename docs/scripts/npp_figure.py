"""Make the Neural Point Processes page's picture: canopy height from sparse points.

Samples ``--points`` random pixels of the shared Kootenay canopy height model (seed 0)
as field measurements, trains an ``NPPTask`` on the orthophoto and those points, then
runs ``geosparse predict --reveal`` with the same points (its defaults: the kernel and
trend re-fitted on them) and draws the points on the image, the canopy height model,
the posterior mean and the posterior standard deviation::

    python docs/scripts/npp_figure.py [DATA_DIR] [--out docs/_static/npp_kootenay.png]

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
from shapely.geometry import Point

from geosparse.datamodules import NPPDataModule
from geosparse.trainers import NPPTask, brief_trainer


def main() -> None:
    args, data = parse(__doc__, 'npp_kootenay', 300, {'--points': 200})
    ortho = data / 'kootenay-trees' / 'kootenayOrtho.tif'
    chm_path = data / 'kootenay-trees' / 'kootenayCHM.tif'
    require(ortho, chm_path)
    with rasterio.open(ortho) as f:
        rgb = f.read([1, 2, 3]).transpose(1, 2, 0)
        crs, transform = f.crs, f.transform
    with rasterio.open(chm_path) as f:
        chm = f.read(1, masked=True).astype(float).filled(np.nan)
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(np.isfinite(chm))
    pick = rng.choice(len(rows), args.points, replace=False)
    rows, cols = rows[pick], cols[pick]
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    points = gpd.GeoDataFrame(
        {'height': chm[rows, cols]},
        geometry=[Point(x, y) for x, y in zip(xs, ys, strict=True)],
        crs=crs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        points_path = t / 'heights.gpkg'
        points.to_file(points_path)
        lightning.seed_everything(0, verbose=False)
        dm = NPPDataModule(
            str(ortho),
            str(points_path),
            'height',
            patch_size=64,
            batch_size=8,
            length=8 * args.steps,
            seed=0,
        )
        task = NPPTask(in_channels=3, target_scale=10.0)
        trainer = brief_trainer(args.steps, progress=True, val_batches=2)
        trainer.fit(task, dm)
        ckpt = t / 'npp.ckpt'
        trainer.save_checkpoint(ckpt)
        subprocess.run(
            ['geosparse', '-q', 'predict', '--checkpoint', str(ckpt), str(ortho),
             '--reveal', str(points_path), '--value', 'height', '--out',
             str(t / 'maps')],
            check=True,
        )
        raster = next((t / 'maps').glob('*.tif'))
        with rasterio.open(raster) as f:
            names = list(f.descriptions)
            bands = f.read(masked=True).astype(float).filled(np.nan)
            scales = f.scales
    mean = bands[0] * scales[0]
    std = bands[names.index('std') if 'std' in names else 1] * scales[1]
    away = np.isfinite(chm) & np.isfinite(mean)
    away[rows, cols] = False
    rmse = float(np.sqrt(np.mean((mean[away] - chm[away]) ** 2)))
    constant = float(np.sqrt(np.mean((chm[rows, cols].mean() - chm[away]) ** 2)))

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.9), constrained_layout=True)
    ax[0].imshow(rgb)
    ax[0].plot(cols, rows, '.', ms=3, color='red')
    ax[0].set_title(f'Kootenay 0.5 m, {args.points} measured heights')
    hi = float(np.nanpercentile(chm, 99))
    for a, image, title in (
        (ax[1], chm, 'canopy height model (truth), m'),
        (ax[2], mean, f'posterior mean, m (RMSE {rmse:.2f}; mean of points {constant:.2f})'),
    ):
        im = a.imshow(image, cmap='viridis', vmin=0, vmax=hi)
        a.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax[1:3], shrink=0.8)
    im = ax[3].imshow(std, cmap='magma')
    ax[3].plot(cols, rows, '.', ms=2, color='white')
    ax[3].set_title('posterior std, m (white: the points)')
    fig.colorbar(im, ax=ax[3], shrink=0.8)
    save(
        fig,
        ax,
        args.out,
        f"RMSE {rmse:.3f} m away from the points, the points' mean {constant:.3f} m; "
        f'bands {names}',
    )


if __name__ == '__main__':
    main()
