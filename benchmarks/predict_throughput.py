"""Throughput and memory of block-wise prediction to COG, as ratios inside one run.

The model is a label super-resolution U-Net (ResNet-18, random weights: the speed
does not depend on them) saved as a checkpoint; the imagery is random 4-band uint8.
Prints one JSON object:

- ``end_to_end_over_forward``: megapixels per second of ``predict_raster`` (read,
  model, class + uncertainty, staged GeoTIFF, COG with overviews) divided by the
  model's pure forward throughput on the same windows (halo included) already in
  memory (target >= 0.85). Forward and end-to-end runs alternate, best of
  ``--repeats`` each.
- ``memory_4x_over_1x``: peak resident memory of a whole prediction process for a
  raster 4 times larger (2x the side) divided by that of the base raster (target
  <= 1.15), each run in its own process, median of ``--memory-repeats`` runs each.
- ``threaded_seconds`` and ``local_cluster_seconds``: the same base job on dask's
  threaded scheduler and on a 2-worker LocalCluster (single-threaded workers; the
  cluster's start-up is reported apart, as ``local_cluster_startup_seconds``).

    python benchmarks/predict_throughput.py [--size 1536] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from geosparse.console import quiet, verbose_option
from geosparse.inference import Predictor
from geosparse.inference.predict import predict_raster
from geosparse.io.raster import atomic_write_text
from geosparse.io.source import ImageSource
from geosparse.trainers import LabelSuperResolutionTask
from geosparse.trainers.heads import forward_padded, pad_multiple


def write_checkpoint(path: Path) -> None:
    torch.manual_seed(0)
    task = LabelSuperResolutionTask(backbone='resnet18')
    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)


def write_raster(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    profile = dict(
        driver='GTiff',
        count=4,
        height=size,
        width=size,
        dtype='uint8',
        crs='EPSG:32618',
        transform=from_origin(360000, 4310000, 1, 1),
        photometric='MINISBLACK',
        tiled=True,
        blockxsize=512,
        blockysize=512,
    )
    with rasterio.open(path, 'w', **profile) as dst:
        for r in range(0, size, 512):
            h = min(512, size - r)
            dst.write(
                rng.integers(0, 255, (4, h, size), dtype=np.uint8),
                window=Window(0, r, size, h),
            )


def forward_seconds(pred: Predictor, raster: Path, block: int, halo: int) -> float:
    """Pure model forward time over the prediction's windows, already in memory."""
    src = ImageSource.open(raster)
    inputs = []
    grid = src.grid  # the prediction's own blocks and halos
    for w in grid.blocks(block):
        image, _ = src.read(grid.with_halo(w, halo))
        inputs.append(torch.from_numpy(image[None].astype(np.float32)))
    t0 = time.perf_counter()
    task = pred.task  # the network alone: normalise, pad, forward
    with torch.no_grad():
        for x in inputs:
            forward_padded(task.model, task.normalize(x), pad_multiple(task.hparams))
    return time.perf_counter() - t0


def vm_hwm_mb() -> float:
    """Peak resident memory of this process in MB.

    VmHWM is reset at exec, unlike ru_maxrss, which a child inherits from the
    process that forked it.
    """
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
    raise RuntimeError('VmHWM not in /proc/self/status (Linux only).')


def child(args: argparse.Namespace) -> None:
    """One whole prediction in this process; prints its peak memory in MB."""
    pred = Predictor(checkpoint=args.checkpoint)
    predict_raster(
        pred,
        args.child,
        args.child_out,
        block=args.block,
        halo=args.halo,
        progress=False,
    )
    print(json.dumps({'peak_rss_mb': vm_hwm_mb()}))


def peak_rss_mb(cmd: list[str]) -> float:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f'{cmd}: exit status {res.returncode}: {res.stderr[-2000:]}')
    return float(json.loads(res.stdout.strip().splitlines()[-1])['peak_rss_mb'])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=1536, help='base raster side')
    parser.add_argument('--block', type=int, default=512)
    parser.add_argument('--halo', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--memory-repeats', type=int, default=3)
    parser.add_argument('--out', type=Path)
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--child-out', help=argparse.SUPPRESS)
    parser.add_argument('--checkpoint', help=argparse.SUPPRESS)
    verbose_option(parser)
    args = parser.parse_args(argv)
    with quiet(args.verbose):
        if args.child:
            child(args)
            return

        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            ckpt = root / 'lsr.ckpt'
            write_checkpoint(ckpt)
            base, big = root / 'base.tif', root / 'big.tif'
            write_raster(base, args.size)
            write_raster(big, 2 * args.size, seed=1)
            pred = Predictor(checkpoint=ckpt)
            megapixels = args.size**2 / 1e6

            # Forward only vs end to end, alternating, best of N each.
            fwd, e2e = [], []
            predict_raster(
                pred,
                base,
                root / 'warm.tif',
                block=args.block,
                halo=args.halo,
                progress=False,
            )
            for i in range(args.repeats):
                fwd.append(forward_seconds(pred, base, args.block, args.halo))
                t0 = time.perf_counter()
                predict_raster(
                    pred,
                    base,
                    root / f'e2e{i}.tif',
                    block=args.block,
                    halo=args.halo,
                    progress=False,
                )
                e2e.append(time.perf_counter() - t0)

            # Peak memory of a whole run, base vs 4x the pixels, each in a new process.
            def run(raster: Path) -> float:
                return peak_rss_mb(
                    [
                        sys.executable,
                        __file__,
                        '--child',
                        str(raster),
                        '--child-out',
                        str(root / f'{raster.stem}_mem.tif'),
                        '--checkpoint',
                        str(ckpt),
                        '--block',
                        str(args.block),
                        '--halo',
                        str(args.halo),
                    ]
                )

            # Peak memory varies by ~10 % between identical runs (allocator arenas), so
            # each size is run several times, alternating, and the medians compared.
            mems: dict[str, list[float]] = {'1x': [], '4x': []}
            for _ in range(args.memory_repeats):
                mems['1x'].append(run(base))
                mems['4x'].append(run(big))
            mem_1x, mem_4x = (
                statistics.median(mems['1x']),
                statistics.median(mems['4x']),
            )

            # Threaded scheduler vs a 2-worker LocalCluster on the same job.
            from distributed import Client, LocalCluster

            t0 = time.perf_counter()
            predict_raster(
                pred,
                base,
                root / 'threads.tif',
                block=args.block,
                halo=args.halo,
                progress=False,
            )
            threaded = time.perf_counter() - t0
            t0 = time.perf_counter()
            with (
                LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                ) as cluster,
                Client(cluster) as client,
            ):
                startup = time.perf_counter() - t0
                t0 = time.perf_counter()
                predict_raster(
                    pred,
                    base,
                    root / 'cluster.tif',
                    block=args.block,
                    halo=args.halo,
                    scheduler=client,
                    progress=False,
                )
                clustered = time.perf_counter() - t0
            same = (root / 'threads.tif').read_bytes() == (
                root / 'cluster.tif'
            ).read_bytes()

        result = {
            'end_to_end_over_forward': round(min(fwd) / min(e2e), 3),
            'end_to_end_megapixels_per_second': round(megapixels / min(e2e), 3),
            'forward_megapixels_per_second': round(megapixels / min(fwd), 3),
            'memory_4x_over_1x': round(mem_4x / mem_1x, 3),
            'peak_rss_mb_1x': round(mem_1x, 1),
            'peak_rss_mb_4x': round(mem_4x, 1),
            'peak_rss_mb_runs': {k: [round(v) for v in vs] for k, vs in mems.items()},
            'threaded_seconds': round(threaded, 2),
            'local_cluster_seconds': round(clustered, 2),
            'local_cluster_startup_seconds': round(startup, 2),
            'cluster_bytes_equal_threaded': same,
            'size': args.size,
            'block': args.block,
            'halo': args.halo,
            'torch_threads': torch.get_num_threads(),
            'cpu_count': os.cpu_count(),
        }
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            atomic_write_text(args.out, text + '\n')


if __name__ == '__main__':
    main()
