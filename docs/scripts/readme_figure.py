"""Make the README's picture: a real NAIP patch, its land-cover map and uncertainty.

Trains label super-resolution on six of the shared Chesapeake (West Virginia) patches
with ``benchmarks/lsr_chesapeake.py`` (the README's Python example, at its default
settings), predicts a seventh, held-out patch with ``geosparse predict`` (its
defaults: the patch's bands matched onto the training imagery's) and draws image, map
and uncertainty side by side::

    python docs/scripts/readme_figure.py [DATA_DIR] [--out docs/_static/lsr_real_map.png]

``DATA_DIR`` defaults to ``$GEOSPARSE_DATA_DIR`` or ``../shared/data``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.colors import ListedColormap

ROOT = Path(__file__).resolve().parents[2]
HELD_OUT = '07'  # with 06 also held out: the 06/07 fold of the docs' table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('data', nargs='?', type=Path)
    parser.add_argument('--out', type=Path, default=ROOT / 'docs/_static/lsr_real_map.png')
    parser.add_argument('--steps', type=int, default=150)
    args = parser.parse_args()
    data = args.data or Path(os.environ.get('GEOSPARSE_DATA_DIR', ROOT.parent / 'shared/data'))
    src = data / 'chesapeake-wv2014' / 'train'
    if not src.is_dir():
        sys.exit(f'{src}: not found; give the shared data folder as the first argument')
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / 'train').mkdir()
        (t / 'eval').mkdir()
        for f in sorted(src.glob('*.tif')):
            held = f'_{HELD_OUT}_' in f.name or '_06_' in f.name
            (t / ('eval' if held else 'train') / f.name).symlink_to(f)
        ckpt = t / 'lsr.ckpt'
        subprocess.run(
            [sys.executable, str(ROOT / 'benchmarks/lsr_chesapeake.py'), '--train',
             str(t / 'train'), '--eval', str(t / 'eval'), '--methods', 'lsr',
             '--protocols', 'cross-tile',
             '--steps', str(args.steps), '--save-checkpoint', str(ckpt), '--out',
             str(t / 'scores.json')],
            check=True,
        )
        naip = next(src.glob(f'*_{HELD_OUT}_naip.tif'))
        subprocess.run(
            ['geosparse', 'predict', '--checkpoint', str(ckpt), str(naip), '--out',
             str(t / 'maps')],
            check=True,
        )
        cog = next((t / 'maps').glob('*.tif'))
        with rasterio.open(naip) as f:
            rgb = f.read([1, 2, 3]).transpose(1, 2, 0)
        with rasterio.open(cog) as f:
            cls, unc = f.read(1), f.read(2).astype(float)
            colours = f.colormap(1)
            names = json.loads(f.tags().get('class_names', '[]'))
            scale = float(f.scales[1] or 1.0)
            nodata = f.nodatavals[1]
        with rasterio.open(str(naip).replace('_naip', '_lc')) as f:
            truth = f.read(1)
    unc = np.where(unc == nodata, np.nan, unc * scale) if nodata is not None else unc * scale
    k = int(cls[cls < 255].max()) + 1
    cmap = ListedColormap([np.array(colours[i][:3]) / 255 for i in range(k)])
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.3), constrained_layout=True)
    ax[0].imshow(rgb)
    ax[0].set_title('NAIP 1 m (held out)')
    ax[1].imshow(np.ma.masked_equal(cls, 255), cmap=cmap, vmin=-0.5, vmax=k - 0.5,
                 interpolation='nearest')
    valid = truth > 0
    acc = float((cls[valid] == truth[valid] - 1).mean())
    ax[1].set_title('land cover from 30 m NLCD labels')
    im = ax[2].imshow(unc, cmap='magma', vmin=0, vmax=1)
    ax[2].set_title('uncertainty (normalised entropy)')
    fig.colorbar(im, ax=ax[2], shrink=0.8)
    present = [int(c) for c in np.unique(cls) if c < k]
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in present]
    labels = [names[i] if i < len(names) else str(i) for i in present]
    ax[1].legend(handles, labels, loc='lower left', fontsize=8, framealpha=0.8)
    for a in ax:
        a.set_axis_off()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f'{args.out}: classes {np.unique(cls).tolist()}, truth {np.unique(truth).tolist()}, '
          f'pixel agreement with the fine labels {acc:.3f}')


if __name__ == '__main__':
    main()
