r"""Counting a large scene through ``geosparse predict`` and ``geosparse count``, in bounded memory.

A :class:`~geosparse.trainers.DensityTask` (TorchGeo U-Net, ResNet-18, random init)
is trained briefly on a generated tree scene
(:func:`~geosparse.datasets.make_object_scene`), and the scene is tiled into a raster
of ``--size`` x ``--size`` pixels (written strip by strip, so building it takes
bounded memory too; the true count is the scene's times the tiles). Then, each
in its own process, as a user runs them:

- ``geosparse predict --checkpoint density.ckpt big.tif --out DIR`` (dask blocks,
  staged GeoTIFF, COG with overviews, STAC Item), on the large raster and on a
  ``--base`` raster cut from it;
- ``geosparse count DIR/big.tif --cell 64 --out counts.tif``.

Prints one JSON object (and writes it atomically to ``--out``):

- ``end_to_end_over_forward``: megapixels per second of the whole ``geosparse
  predict`` process on the large raster (start-up, reading, the model, writing)
  over the model's pure forward throughput on the same blocks with their halos,
  already in memory (``forward_megapixels_per_second``, measured on the first
  ``--forward-blocks`` blocks);
- ``predict_peak_rss_mb`` and ``predict_memory_large_over_base``: peak resident
  memory of the predict process on the large raster, and over that on the base
  raster (bounded memory: near 1 although the large raster has
  ``(size / base)²`` times the pixels);
- ``count_seconds``, ``count_peak_rss_mb``, and the counts: ``predicted`` with its
  ``std`` (Poisson) against ``truth``.

    python benchmarks/counting_scale.py [--size 8192] [--base 2048] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import rasterio
import torch
from predict_throughput import vm_hwm_mb  # benchmarks/ is on the path of a script
from rasterio.windows import Window

from geosparse.console import quiet, verbose_option
from geosparse.datamodules import CountingDataModule
from geosparse.datasets import make_object_scene
from geosparse.inference import Predictor
from geosparse.io.raster import atomic_write_text
from geosparse.io.source import ImageSource
from geosparse.trainers import DensityTask, brief_trainer
from geosparse.trainers.heads import forward_padded, pad_multiple


def train(scene: Any, root: Path, steps: int) -> Path:
    """A briefly trained density checkpoint (MSE loss, the scene's points)."""
    lightning.seed_everything(0, workers=True)
    dm = CountingDataModule(
        str(scene.image),
        str(scene.points),
        patch_size=64,
        batch_size=8,
        length=8 * steps,
        split=(1.0, 0.0, 0.0),
        cache_dir=str(root / 'cache'),
    )
    task = DensityTask(loss='mse', sigma=2.0)
    trainer = brief_trainer(steps)
    trainer.fit(task, dm)
    ckpt = root / 'density.ckpt'
    trainer.save_checkpoint(ckpt)
    return ckpt


def tile(src_path: Path, out: Path, size: int) -> int:
    """Tile ``src_path`` into a ``size`` x ``size`` GeoTIFF strip by strip; the tiles."""
    with rasterio.open(src_path) as src:
        scene = src.read()
        profile = src.profile
    _, h, w = scene.shape
    profile.update(
        height=size,
        width=size,
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress='deflate',
        photometric='MINISBLACK',
    )
    reps = -(-size // w)
    with rasterio.open(out, 'w', **profile) as dst:
        for r in range(0, size, h):
            rows = min(h, size - r)
            strip = np.tile(scene[:, :rows], (1, 1, reps))[:, :, :size]
            dst.write(strip, window=Window(0, r, size, rows))
    return (size // h) * (size // w)  # whole tiles only


#: ``geosparse predict``'s block and halo for a counting checkpoint (its defaults).
BLOCK, HALO = 512, 32


def forward_megapixels_per_second(ckpt: Path, raster: Path, blocks: int) -> float:
    """Pure model forward over the first ``blocks`` prediction blocks, in memory."""
    pred = Predictor(checkpoint=ckpt)
    src = ImageSource.open(raster)
    block, halo = BLOCK, HALO
    grid = src.grid
    inputs, pixels = [], 0
    for i, w in enumerate(grid.blocks(block)):
        if i == blocks:
            break
        image, _ = src.read(grid.with_halo(w, halo))
        inputs.append(torch.from_numpy(image[None].astype(np.float32)))
        pixels += w.height * w.width
    task = pred.task
    with torch.no_grad():
        forward_padded(
            task.model, task.normalize(inputs[0]), pad_multiple(task.hparams)
        )
        t0 = time.perf_counter()
        for x in inputs:
            forward_padded(task.model, task.normalize(x), pad_multiple(task.hparams))
    return pixels / 1e6 / (time.perf_counter() - t0)


def child(report: str, argv: list[str]) -> None:
    """Run ``geosparse ARGV`` (the CLI's own ``main``) here; write its peak memory."""
    from geosparse.cli import main as geosparse_main

    code = geosparse_main(argv)
    Path(report).write_text(json.dumps({'code': code, 'peak_rss_mb': vm_hwm_mb()}))
    sys.exit(code)


def timed_process(args: list[str], root: Path) -> tuple[float, float, str]:
    """Seconds, peak resident memory (MB) and stdout of ``geosparse ARGS`` in a new process.

    The peak is the child's VmHWM: ``ru_maxrss`` would include the memory this
    process had when it forked. The output goes to files, not pipes, which a
    child could fill while this waits.
    """
    report = root / 'child.json'
    cmd = [sys.executable, __file__, '--child', str(report), '--', *args]
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        t0 = time.perf_counter()
        code = subprocess.run(cmd, stdout=out, stderr=err, text=True).returncode
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        printed, errors = out.read(), err.read()
    if code != 0:
        raise RuntimeError(f'geosparse {" ".join(args)} failed: {errors[-2000:]}')
    peak = float(json.loads(report.read_text())['peak_rss_mb'])
    return seconds, peak, printed


def run(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Build the scene and the model, predict and count, measure."""
    scene = make_object_scene(
        root / 'scene', size=a.scene, n=a.scene**2 // 400, radius=3.0, seed=0
    )
    ckpt = train(scene, root, a.steps)
    big, base = root / 'big.tif', root / 'base.tif'
    tiles = tile(scene.image, big, a.size)
    tile(scene.image, base, a.base)
    fwd = forward_megapixels_per_second(ckpt, big, a.forward_blocks)
    measures: dict[str, tuple[float, float, str]] = {}
    for name, raster in (('base', base), ('large', big)):
        measures[name] = timed_process(
            [
                'predict',
                '--checkpoint',
                str(ckpt),
                str(raster),
                '--out',
                str(root / name),
                '--block',
                str(BLOCK),
                '--halo',
                str(HALO),
                '--quiet',
            ],
            root,
        )
    [density] = (root / 'large').glob('*.tif')  # big_regression.tif
    count_s, count_mb, printed = timed_process(
        ['count', str(density), '--cell', '64', '--out', str(root / 'counts.tif')],
        root,
    )
    with rasterio.open(root / 'counts.tif') as src:
        counts = src.read()
    seconds, peak_mb, _ = measures['large']
    megapixels = a.size**2 / 1e6
    return {
        'end_to_end_over_forward': round(megapixels / seconds / fwd, 3),
        'end_to_end_megapixels_per_second': round(megapixels / seconds, 3),
        'forward_megapixels_per_second': round(fwd, 3),
        'predict_seconds': round(seconds, 1),
        'predict_peak_rss_mb': round(peak_mb, 1),
        'predict_peak_rss_mb_base': round(measures['base'][1], 1),
        'predict_memory_large_over_base': round(peak_mb / measures['base'][1], 3),
        'count_seconds': round(count_s, 2),
        'count_peak_rss_mb': round(count_mb, 1),
        'count_printed': printed.strip(),
        'counts': {
            'predicted': float(counts[0].sum()),
            'std': float(np.sqrt((counts[1].astype(np.float64) ** 2).sum())),
            'truth_whole_tiles': scene.count * tiles,
            'cells': list(counts.shape[1:]),
        },
        'size': a.size,
        'base': a.base,
        'megapixels': megapixels,
        'torch_threads': torch.get_num_threads(),
        'cpu_count': os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, run, print and write the JSON."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--size', type=int, default=8192, help='large raster side (px)')
    p.add_argument('--base', type=int, default=2048, help='base raster side (px)')
    p.add_argument('--scene', type=int, default=512, help='generated tile side (px)')
    p.add_argument('--steps', type=int, default=100, help='training steps')
    p.add_argument(
        '--forward-blocks', type=int, default=8, help='blocks timed for the forward'
    )
    p.add_argument('--out', type=Path, help='also write the JSON here')
    p.add_argument('--child', help=argparse.SUPPRESS)
    verbose_option(p)
    argv = sys.argv[1:] if argv is None else argv
    if '--child' in argv:  # one geosparse command, measured (timed_process)
        i = argv.index('--')
        child(argv[argv.index('--child') + 1], argv[i + 1 :])
    a = p.parse_args(argv)
    if a.base > a.size or a.scene > a.base:
        p.error('--scene <= --base <= --size.')
    with quiet(a.verbose), tempfile.TemporaryDirectory() as tmp:
        result = run(a, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        atomic_write_text(a.out, text + '\n')
    return result


if __name__ == '__main__':
    main()
