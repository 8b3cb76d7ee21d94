"""The ``geosparse`` command line."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

__all__ = ['main']

EPILOG = textwrap.dedent(
    """\
    Training runs through TorchGeo's own command line, e.g.:
      torchgeo fit --config examples/configs/lsr_synthetic.yaml

    Examples:
      geosparse demo                      # synthetic scene -> map COG + PNG
      geosparse predict --checkpoint geosparse-demo/lsr.ckpt \
          geosparse-demo/scene/scene_naip.tif \
          --coarse geosparse-demo/scene/scene_nlcd.tif --out maps/
      geosparse priors show nlcd-landcover4
      geosparse priors estimate --coarse nlcd.tif --fine lc.tif --out table.csv
    """
)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    res = run_demo(args.out, size=args.size, steps=args.steps, seed=args.seed)
    print(f'land-cover map (COG, bands class + uncertainty): {res["cog"]}')
    print(f'quicklook: {res["png"]}')
    print(f'checkpoint: {res["checkpoint"]}')
    print(
        f'accuracy against the synthetic truth: {res["acc"]:.3f} '
        f'(mIoU {res["miou"]:.3f}) in {res["seconds"]:.0f} s'
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from .predict import predict_landcover
    from .trainers import LabelSuperResolutionTask

    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        print(f'geosparse: error: --checkpoint {ckpt}: no such file.', file=sys.stderr)
        return 2
    try:
        task = LabelSuperResolutionTask.load_from_checkpoint(ckpt, map_location='cpu')
    except Exception as err:
        print(
            f'geosparse: error: --checkpoint {ckpt}: not a LabelSuperResolutionTask '
            f'checkpoint ({type(err).__name__}: {err}). Pass a checkpoint from '
            '`geosparse demo`, `torchgeo fit` or benchmarks/lsr_chesapeake.py.',
            file=sys.stderr,
        )
        return 2
    out_dir = Path(args.out)
    failures: list[str] = []
    for item in args.inputs:
        src = Path(item)
        dst = out_dir / f'{src.stem}_landcover.tif'
        if args.resume and dst.exists():
            print(f'{src}: skipped (--resume, {dst} exists)')
            continue
        try:
            if not src.is_file():
                raise FileNotFoundError(f'no such file: {src}')
            predict_landcover(
                task,
                src,
                dst,
                coarse_path=args.coarse,
                block=args.block,
                halo=args.halo,
                workers=args.workers,
                progress=not args.quiet,
            )
        except Exception as err:  # one failed item must not stop the others
            failures.append(f'{src}: {err}')
            print(f'{src}: FAILED: {err}', file=sys.stderr)
            continue
        print(f'{src} -> {dst}')
    if failures:
        print(
            f'geosparse: {len(failures)} of {len(args.inputs)} inputs failed:',
            file=sys.stderr,
        )
        for line in failures:
            print(f'  {line}', file=sys.stderr)
        return 1
    return 0


def _priors_show(args: argparse.Namespace) -> int:
    from .priors import JointDistribution

    table = JointDistribution.load(args.table)
    width = max(len(n) for n in table.coarse_names)
    head = ' '.join(f'{n:>16}' for n in table.fine_names)
    print(f'{"code":>5} {"coarse class":<{width}} {head}')
    for i, code in enumerate(table.coarse_codes):
        cells = ' '.join(
            f'{table.eta[i, j]:>7.2f} ± {table.rho[i, j]:<6.2f}'
            for j in range(table.num_fine)
        )
        print(f'{code:>5} {table.coarse_names[i]:<{width}} {cells}')
    return 0


def _priors_estimate(args: argparse.Namespace) -> int:
    import numpy as np
    import rasterio

    from .datasets.coarse import CoarseLabels
    from .priors import JointDistribution

    codes = [int(c) for c in args.fine_codes.split(',')]
    names = args.fine_names.split(',') if args.fine_names else None
    if names and len(names) != len(codes):
        raise SystemExit(
            f'--fine-names has {len(names)} names but --fine-codes {len(codes)} codes.'
        )
    with rasterio.open(args.fine) as src:
        fine = src.read(1)
        crs, res, b = src.crs, src.res, src.bounds
    coarse_ds = CoarseLabels(
        args.coarse, crs=crs, res=res, nodata=args.coarse_nodata, blocks=args.blocks
    )
    q = (slice(b.left, b.right), slice(b.bottom, b.top), slice(None))
    try:
        sample = coarse_ds[q]
    except IndexError:
        raise SystemExit(
            f'{args.coarse} does not overlap {args.fine}; they must cover one area.'
        ) from None
    coarse = sample['coarse'].numpy()
    block = sample.get('block')
    table = JointDistribution.estimate(
        coarse,
        fine[: coarse.shape[0], : coarse.shape[1]],
        fine_codes=codes,
        fine_names=names,
        coarse_nodata=args.coarse_nodata,
        fine_nodata=args.fine_nodata,
        block_ids=None if block is None else np.asarray(block),
    )
    table.to_csv(args.out)
    print(
        f'wrote {args.out}: {table.num_coarse} coarse x {table.num_fine} fine classes'
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog='geosparse',
        description='Dense per-pixel maps with uncertainty from sparse or coarse labels.',
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument('--version', action='version', version=__version__)
    sub = parser.add_subparsers(dest='command', required=True)

    demo = sub.add_parser(
        'demo',
        help='synthetic scene -> label super-resolution -> land-cover COG + PNG',
        description=(
            'Build a synthetic NAIP-like scene with NLCD-like 30 m labels in '
            'EPSG:5070, train a label super-resolution network from the coarse '
            'labels alone for a few steps, and write the 1 m land-cover map as a '
            'Cloud-Optimized GeoTIFF (band 1 class, band 2 uncertainty) with a PNG '
            'quicklook. Takes about a minute on a laptop CPU.'
        ),
    )
    demo.add_argument('--out', default='geosparse-demo', help='output folder')
    demo.add_argument('--size', type=int, default=512, help='scene side (pixels)')
    demo.add_argument('--steps', type=int, default=60, help='training steps')
    demo.add_argument('--seed', type=int, default=0)
    demo.set_defaults(func=_demo)

    pred = sub.add_parser(
        'predict',
        help='predict land-cover COGs (class + uncertainty) from a checkpoint',
        description=(
            'Load a LabelSuperResolutionTask checkpoint (from `geosparse demo`, '
            '`torchgeo fit` or benchmarks/lsr_chesapeake.py --save-checkpoint) and '
            'predict every input raster block by block with dask: each block is read '
            'with a halo, predicted, cropped to its centre and streamed into a '
            'Cloud-Optimized GeoTIFF <out>/<name>_landcover.tif (band 1 class with a '
            'colour table, band 2 uncertainty = normalised entropy). Outputs are '
            'written atomically; a failed input is reported and the others go on; '
            'the exit status is 1 if any input failed.'
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pred.add_argument(
        'inputs', nargs='+', help='imagery rasters (bands as in training)'
    )
    pred.add_argument('--checkpoint', required=True, help='Lightning checkpoint')
    pred.add_argument('--out', required=True, help='output folder')
    pred.add_argument(
        '--coarse',
        help='coarse label raster (any CRS), combined with the network where it '
        'covers the input',
    )
    pred.add_argument('--block', type=int, default=512, help='block size (pixels)')
    pred.add_argument(
        '--halo', type=int, default=32, help='context around each block (pixels)'
    )
    pred.add_argument('--workers', type=int, default=1, help='dask threads')
    pred.add_argument(
        '--resume', action='store_true', help='skip inputs whose output exists'
    )
    pred.add_argument('--quiet', action='store_true', help='no progress bar')
    pred.set_defaults(func=_predict)

    priors = sub.add_parser(
        'priors', help='joint distributions of coarse and fine classes'
    )
    psub = priors.add_subparsers(dest='priors_command', required=True)
    show = psub.add_parser('show', help='print a table (built-in name or CSV)')
    show.add_argument('table', nargs='?', default='nlcd-landcover4')
    show.set_defaults(func=_priors_show)
    est = psub.add_parser(
        'estimate',
        help='estimate a table from paired coarse and fine rasters',
        description=(
            'Count the fine classes inside every coarse block and write, per coarse '
            'class, the mean and std of each fine-class fraction. The coarse raster '
            'may be in any CRS and resolution: it is reprojected onto the fine grid '
            'and, with --blocks grid, every coarse pixel is one block.'
        ),
    )
    est.add_argument('--coarse', required=True, help='coarse label raster (e.g. NLCD)')
    est.add_argument('--fine', required=True, help='fine label raster')
    est.add_argument('--out', required=True, help='output CSV')
    est.add_argument('--fine-codes', default='1,2,3,4', help='fine raster values')
    est.add_argument('--fine-names', default='water,forest,field,impervious')
    est.add_argument('--coarse-nodata', type=int, default=0)
    est.add_argument('--fine-nodata', type=int, default=0)
    est.add_argument(
        '--blocks',
        choices=('grid', 'cells', 'regions'),
        default='grid',
        help='grid: coarse pixels; cells: 30 m cells (coarse already on the fine '
        'grid); regions: one block per coarse class',
    )
    est.set_defaults(func=_priors_estimate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .priors import PriorError

    try:
        return int(args.func(args))
    except PriorError as err:
        print(f'geosparse: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
