"""The ``geosparse`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ['main']

EPILOG = textwrap.dedent(
    """\
    Training runs through TorchGeo's own command line, e.g.:
      torchgeo fit --config examples/configs/lsr_synthetic.yaml

    Examples:
      geosparse demo                      # synthetic scene -> map COG + PNG
      geosparse predict --checkpoint geosparse-demo/lsr.ckpt --out maps/ IMAGE.tif
      geosparse count maps/trees.tif --cell 64 --out counts.tif
      geosparse priors show nlcd-landcover4
      geosparse priors estimate --coarse nlcd.tif --fine lc.tif --out table.csv
    """
)


def _demo(args: argparse.Namespace) -> int:
    from .console import describe_output
    from .demo import run_demo

    res = run_demo(
        args.out,
        size=args.size,
        steps=args.steps,
        seed=args.seed,
        progress=not args.quiet,
    )
    cog = res['cog']
    print(f'geosparse demo wrote {Path(args.out)} in {res["seconds"]:.0f} s:')
    print(f'  land-cover map (COG, bands class + uncertainty): {cog}')
    print(f'    {describe_output(cog)}')
    print(f'  STAC item of the map: {res["item"]}')
    print(f'  quicklook: {res["png"]}')
    print(f'  checkpoint: {res["checkpoint"]}')
    print(
        f'accuracy against the synthetic truth: {res["acc"]:.3f} '
        f'(mIoU {res["miou"]:.3f})'
    )
    return 0


def _fail(msg: str) -> int:
    """Report bad input in one line; exit status 2."""
    print(f'geosparse: error: {msg}', file=sys.stderr)
    return 2


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, refused in one line otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if value < low:
            raise argparse.ArgumentTypeError(f'must be at least {low} (got {value})')
        return value

    return parse


def _floats(text: str | None) -> list[float] | None:
    return None if text is None else [float(v) for v in text.split(',')]


def _predict(args: argparse.Namespace) -> int:
    from .inference import Predictor
    from .inference.predict import mosaic_job, raster_jobs, run_jobs, stac_jobs

    if bool(args.inputs) == bool(args.stac):
        return _fail('give input rasters or --stac URL (one of the two).')
    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        return _fail(f'--checkpoint {ckpt}: no such file.')
    kind = _instance_kind(ckpt, args)
    if kind == 'points':
        return _predict_instances(args, ckpt)
    if kind == 'detections':
        return _predict_detections(args, ckpt)
    if args.calibrate:  # the old leave-one-out rescaling, now part of --refit
        if not args.reveal or not args.refit:
            return _fail(
                '--calibrate is replaced by --refit, which needs known points '
                '(--reveal) and cannot go with --no-refit.'
            )
        print(
            'geosparse: --calibrate is replaced by --refit (on by default), which '
            're-fits the whole kernel on the known points; drop --calibrate.',
            file=sys.stderr,
        )
    if args.drift is not None and not (args.reveal and args.refit):
        print(
            f'geosparse: --drift {args.drift} is unused: it sets the trend of the '
            're-fit, which needs --reveal and cannot go with --no-refit.',
            file=sys.stderr,
        )
    reveal = None
    if args.reveal:
        from .io.points import read_points

        if not args.value:
            return _fail('--reveal needs --value (the column of the known values).')
        try:
            reveal = read_points(
                args.reveal, args.value, 'EPSG:4326', args.x, args.y, args.points_crs
            )
        except ValueError as err:
            return _fail(f'--reveal {err}')
    refit_on = None
    if args.refit_on:
        from .io.points import read_points

        if not args.reveal:
            return _fail(
                '--refit-on names the points to fit the kernel on; give the points '
                'to condition on as --reveal too.'
            )
        try:
            refit_on = read_points(
                args.refit_on, args.value, 'EPSG:4326', args.x, args.y, args.points_crs
            )
        except ValueError as err:
            return _fail(f'--refit-on {err}')
    try:
        predictor = Predictor(
            checkpoint=ckpt,
            task_class=args.task,
            probabilities=args.probabilities,
            mean=_floats(args.mean),
            std=_floats(args.std),
            class_names=args.class_names.split(',') if args.class_names else None,
            reveal=reveal,
            reveal_crs='EPSG:4326' if reveal is not None else None,
            kernel={
                k: v
                for k, v in (
                    ('lengthscale', args.lengthscale),
                    ('variance', args.kernel_variance),
                    ('noise', args.noise),
                )
                if v is not None
            },
            kernel_family=args.kernel_family,
            refit=args.refit,
            refit_on=refit_on,
            drift=args.drift or 'auto',
            radiometry=args.radiometry,
            radiometry_threshold=args.radiometry_threshold,
            trust_checkpoint=args.trust_checkpoint,
        )
    except ValueError as err:
        return _fail(
            f'--checkpoint {err}' if str(err).startswith(str(ckpt)) else str(err)
        )
    except Exception as err:
        return _fail(
            f'--checkpoint {ckpt}: cannot load the model ({type(err).__name__}: '
            f"{err}). Pass a checkpoint of a geosparse task or of TorchGeo's "
            'SemanticSegmentation/PixelwiseRegression task (from `geosparse demo`, '
            '`torchgeo fit` or Trainer.save_checkpoint).'
        )
    if args.points:
        print(
            f'geosparse: warning: --points {args.points} is not used: the '
            f'checkpoint holds a {predictor.task_name}; only a PointInstanceTask '
            'turns points into instances.',
            file=sys.stderr,
        )
    if args.coarse and not (predictor.uses_coarse or predictor.coarse_radiometry):
        why = (
            'its prior_weight is 0 (the default: the network alone, which did better '
            'on held-out patches) and it keeps no per-class training histograms or '
            '--radiometry is off; train with prior_weight > 0 to combine the map '
            'with coarse labels'
            if predictor.landcover
            else 'which does not take coarse labels (only LabelSuperResolutionTask '
            'does)'
        )
        print(
            f'geosparse: warning: --coarse {args.coarse} is not used: the '
            f'checkpoint holds a {predictor.task_name}, {why}.',
            file=sys.stderr,
        )
    try:
        if args.stac:
            jobs = stac_jobs(
                args.stac,
                asset=args.asset,
                coarse=args.coarse,
                collections=args.collections,
                bbox=args.bbox,
                datetime=args.datetime,
                ids=args.ids,
                max_items=args.max_items,
            )
        else:
            jobs = raster_jobs(args.inputs, args.coarse)
    except RuntimeError as err:
        return _fail(str(err))
    if args.mosaic:
        jobs = mosaic_job(jobs)
    with contextlib.ExitStack() as stack:
        scheduler: Any = 'threads'
        if args.scheduler or args.workers:
            from distributed import Client, LocalCluster

            if args.scheduler:
                scheduler = stack.enter_context(Client(args.scheduler))
            else:
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=args.workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                    )
                )
                scheduler = stack.enter_context(Client(cluster))
        try:
            report = run_jobs(
                predictor,
                jobs,
                args.out,
                suffix=args.suffix,
                mosaic=args.mosaic,
                block=args.block or 512,
                halo=32 if args.halo is None else args.halo,
                threads=args.threads,
                scheduler=scheduler,
                resume=args.resume,
                progress=not args.quiet,
                log=lambda line: print(
                    line, file=sys.stderr if 'FAILED' in line else sys.stdout
                ),
            )
        except ValueError as err:  # raised before any work: the outputs' plan
            return _fail(str(err))
    _summarise(report.written)
    if report.failures:
        print(
            f'geosparse: {len(report.failures)} of {len(jobs)} outputs failed:',
            file=sys.stderr,
        )
        for line in report.failures:
            print(f'  {line}', file=sys.stderr)
        return 1
    return 0


def _summarise(written: Sequence[Path]) -> None:
    """What each written map holds: class fractions, value ranges or objects."""
    from .console import describe_output

    if not written:
        return
    print(f'wrote {len(written)} map{"s" if len(written) > 1 else ""}:')
    for path in written:
        try:
            text = describe_output(path)
        except Exception as err:  # a summary must never fail the command
            text = f'(no summary: {type(err).__name__}: {err})'
        print(f'  {path}: {text}')


def _instance_kind(ckpt: Path, args: argparse.Namespace) -> str | None:
    """``'points'`` for a PointInstanceTask, ``'detections'`` for a MaskRCNNTask.

    A checkpoint that cannot be read answers None: the general path reports why.
    """
    from .inference.checkpoints import checkpoint_task_class
    from .trainers.instances import PointInstanceTask
    from .trainers.maskrcnn import MaskRCNNTask

    try:
        cls = checkpoint_task_class(ckpt, args.task, args.trust_checkpoint)
    except Exception:
        return None
    if not isinstance(cls, type):
        return None
    if issubclass(cls, PointInstanceTask):
        return 'points'
    if issubclass(cls, MaskRCNNTask):
        return 'detections'
    return None


def _instance_stems(args: argparse.Namespace) -> dict[str, str] | str:
    """Output stem -> input raster, or the error message of two inputs on one stem."""
    from .inference.predict import output_stem

    stems: dict[str, str] = {}
    for path in args.inputs:
        stem = output_stem(Path(path).stem)
        if stem in stems:
            return (
                f'{stems[stem]} and {path} would both write {stem}_instances.tif in '
                f'--out {args.out}; predict them into separate --out folders, or '
                'rename one.'
            )
        stems[stem] = path
    return stems


def _run_instances(
    args: argparse.Namespace, stems: dict[str, str], run: Callable[[str, str], Any]
) -> int:
    """Run ``run(path, stem)`` on each input; report outputs, warnings and failures."""
    import warnings

    from rasterio.errors import RasterioIOError

    from .inference.predict import output_complete

    failures = []
    written: list[Path] = []
    for stem, path in stems.items():
        item = Path(args.out) / f'{stem}_instances.json'
        if args.resume and output_complete(item):
            print(f'{path}: skipped (resume: {item} is complete)')
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            try:
                out = run(path, stem)
            except (ValueError, OSError, RasterioIOError) as err:
                out, text = None, str(err)
                text = text.removeprefix(f'{path}: ')
        for warning in caught:
            print(f'geosparse: warning: {warning.message}', file=sys.stderr)
        if out is None:
            failures.append(f'{path}: {text}')
            print(f'{path}: FAILED: {text}', file=sys.stderr)
            continue
        print(f'{path} -> {out.raster} (+ {out.polygons.name}, {out.item.name})')
        written.append(out.raster)
    _summarise(written)
    if failures:
        print(
            f'geosparse: {len(failures)} of {len(stems)} outputs failed:',
            file=sys.stderr,
        )
        for line in failures:
            print(f'  {line}', file=sys.stderr)
        return 1
    return 0


def _load_instance_checkpoint(
    args: argparse.Namespace, ckpt: Path, unused: dict[str, Any], what: str
) -> tuple[Any, dict[str, str]] | int:
    """What both instance predictions do first: checks, warnings, stems and the task.

    ``unused``: options this checkpoint ignores (warned about when given), ``what``:
    the reason printed with them. Returns ``(task, stems)``, or the exit status of a
    failure already reported.
    """
    from .inference.checkpoints import load_task

    if args.stac or args.mosaic:
        option = '--stac' if args.stac else '--mosaic'
        return _fail(
            f'{option} is not supported for instance checkpoints yet; pass the input '
            'rasters one by one.'
        )
    for option, value in unused.items():
        if value:
            print(
                f'geosparse: warning: {option} {value} is not used: {what}',
                file=sys.stderr,
            )
    stems = _instance_stems(args)
    if isinstance(stems, str):
        return _fail(stems)
    try:
        task = load_task(ckpt, args.task, args.trust_checkpoint)
    except ValueError as err:
        return _fail(
            f'--checkpoint {err}' if str(err).startswith(str(ckpt)) else str(err)
        )
    return task, stems


def _predict_detections(args: argparse.Namespace, ckpt: Path) -> int:
    """``geosparse predict`` for a stage-2 MaskRCNNTask: instances without points."""
    from .inference.instances import predict_detected_instances
    from .trainers.maskrcnn import MaskRCNNTask

    loaded = _load_instance_checkpoint(
        args,
        ckpt,
        {'--points': args.points, '--coarse': args.coarse, '--reveal': args.reveal},
        'the checkpoint holds a MaskRCNNTask (stage 2), which finds the objects '
        'without points.',
    )
    if isinstance(loaded, int):
        return loaded
    task, stems = loaded
    assert isinstance(task, MaskRCNNTask)

    def run(path: str, stem: str) -> Any:
        return predict_detected_instances(
            task,
            path,
            args.out,
            name=stem,
            block=args.block or 512,
            halo=64 if args.halo is None else args.halo,
            score_threshold=args.min_score,
            progress=not args.quiet,
            properties={'checkpoint': ckpt.name},
        )

    return _run_instances(args, stems, run)


def _predict_instances(args: argparse.Namespace, ckpt: Path) -> int:
    """``geosparse predict`` for a PointInstanceTask: masks and polygons from points."""
    from .inference.instances import predict_instances
    from .trainers.instances import PointInstanceTask

    if not args.points:
        return _fail(
            f'--checkpoint {ckpt} holds a PointInstanceTask, which turns one point per '
            'object into instance masks: pass --points FILE (GeoPackage, GeoJSON, '
            'CSV, ...) with a point on each object.'
        )
    loaded = _load_instance_checkpoint(
        args,
        ckpt,
        {'--coarse': args.coarse, '--reveal': args.reveal},
        'the checkpoint holds a PointInstanceTask, which takes only --points.',
    )
    if isinstance(loaded, int):
        return loaded
    task, stems = loaded
    assert isinstance(task, PointInstanceTask)

    def run(path: str, stem: str) -> Any:
        return predict_instances(
            task,
            path,
            args.points,
            args.out,
            name=stem,
            block=args.block,  # default: the training window (see predict_instances)
            halo=args.halo,
            id_column=args.id_column,
            class_column=args.class_column,
            background_column=args.background_column,
            progress=not args.quiet,
            x=args.x,
            y=args.y,
            points_crs=args.points_crs,
            properties={'checkpoint': ckpt.name},
            split=args.split,
        )

    return _run_instances(args, stems, run)


def _count(args: argparse.Namespace) -> int:
    import rasterio.errors

    from .inference.count_maps import count_map, count_summary

    try:
        summary = count_summary(args.map)
        if summary.valid == 0:
            raise ValueError(
                f'{args.map}: every pixel is nodata (NaN), nothing to count; check '
                "the imagery's nodata value and predict it again."
            )
        where = ''
        if summary.valid < summary.pixels:
            where = (
                f' over the {100 * (1 - summary.nodata_fraction):.1f} % of its pixels '
                f'with data ({100 * summary.nodata_fraction:.1f} % nodata, not counted)'
            )
        print(
            f'{args.map}: {summary.total:.1f} ± {summary.std:.1f} objects (1 sd){where}'
        )
        if args.out:
            try:
                path = count_map(args.map, args.out, args.cell)
            except OSError as err:
                if isinstance(err, rasterio.errors.RasterioIOError):
                    raise
                raise ValueError(
                    f'--out {args.out}: cannot write there ({err.strerror or err}); '
                    'give a file in a folder you can write to.'
                ) from err
            print(f'counts per {args.cell} x {args.cell} pixels: {path}')
    except (ValueError, rasterio.errors.RasterioIOError) as err:
        print(f'geosparse: error: {err}', file=sys.stderr)
        return 2
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

    from .priors import JointDistribution

    try:
        codes = [int(c) for c in args.fine_codes.split(',')]
    except ValueError:
        return _fail(
            f'--fine-codes {args.fine_codes}: give integers separated by commas '
            '(the fine raster values, e.g. 1,2,3,4).'
        )
    names = args.fine_names.split(',') if args.fine_names else None
    if names and len(names) != len(codes):
        return _fail(
            f'--fine-names has {len(names)} names but --fine-codes {len(codes)} codes.'
        )
    if len(args.fine) != len(args.coarse):
        return _fail(
            f'--fine has {len(args.fine)} rasters but --coarse {len(args.coarse)}; '
            'give one coarse raster per fine raster, in the same order.'
        )
    for option, paths in (('--fine', args.fine), ('--coarse', args.coarse)):
        for path in paths:
            if not os.path.isfile(path):
                return _fail(f'{option} {path}: no such file.')
            if Path(path).resolve() == Path(args.out).resolve():
                return _fail(
                    f'--out {args.out} is the {option} raster and would be replaced '
                    'by the table; give another file, e.g. table.csv.'
                )
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    for fine_path, coarse_path in zip(args.fine, args.coarse, strict=True):
        try:
            pair = _read_label_pair(fine_path, coarse_path, args)
        except ValueError as err:
            return _fail(str(err))
        pairs.append(pair)
    if len(pairs) == 1:
        coarse, fine, block = pairs[0]
    else:  # blocks of every pair apart: ids offset, or one per pair and class
        coarse = np.concatenate([c.ravel() for c, _, _ in pairs])
        fine = np.concatenate([f.ravel() for _, f, _ in pairs])
        ids, offset = [], 0
        for c, _, b in pairs:
            own = np.unique(c, return_inverse=True)[1] if b is None else b
            ids.append(np.where(own < 0, -1, own + offset).ravel())  # -1: nodata
            offset += int(own.max()) + 1
        block = np.concatenate(ids)
    table = JointDistribution.estimate(
        coarse,
        fine,
        fine_codes=codes,
        fine_names=names,
        coarse_nodata=args.coarse_nodata,
        fine_nodata=args.fine_nodata,
        block_ids=block,
    )
    filled = ''
    if args.fill:
        try:
            full = table.filled_from(JointDistribution.load(args.fill))
        except ValueError as err:
            return _fail(f'--fill {args.fill}: {err}')
        filled = f', {full.num_coarse - table.num_coarse} filled from {args.fill}'
        table = full
    table.to_csv(args.out)
    print(
        f'wrote {args.out}: {table.num_coarse} coarse x {table.num_fine} fine classes'
        + (f' from {len(pairs)} raster pairs' if len(pairs) > 1 else '')
        + filled
    )
    return 0


def _read_label_pair(
    fine_path: str, coarse_path: str, args: argparse.Namespace
) -> tuple[Any, Any, Any]:
    """Coarse codes on a fine raster's grid, its fine codes and the block ids.

    Returns:
        ``(coarse, fine, block)`` of one shape; ``block`` is None with
        ``--blocks regions`` (each coarse class one block).

    Raises:
        ValueError: a one-line message naming the files and the fix.
    """
    import warnings

    import numpy as np
    import rasterio

    from .datasets.coarse import CoarseLabels, class_codes

    try:
        with rasterio.open(fine_path) as src:
            fine = class_codes(
                src.read(1), args.fine_nodata, fine_path, 'fine', '--fine-nodata'
            )
            crs, res, b = src.crs, src.res, src.bounds
        coarse_ds = CoarseLabels(
            coarse_path, crs=crs, res=res, nodata=args.coarse_nodata, blocks=args.blocks
        )
    except (rasterio.errors.RasterioIOError, ValueError) as err:
        raise ValueError(f'--fine {fine_path} / --coarse {coarse_path}: {err}') from err
    q = (slice(b.left, b.right), slice(b.bottom, b.top), slice(None))
    try:
        with warnings.catch_warnings():  # an all-nodata window: the estimate says so
            warnings.simplefilter('ignore', UserWarning)
            sample = coarse_ds[q]
    except IndexError as err:
        raise ValueError(
            f'--coarse {coarse_path} does not overlap --fine {fine_path}; they must '
            'cover one area.'
        ) from err
    except ValueError as err:  # NaN without a nodata code, fractional codes
        raise ValueError(f'--coarse: {err}') from err
    coarse = sample['coarse'].numpy()
    block = sample.get('block')
    fine = fine[: coarse.shape[0], : coarse.shape[1]]
    if fine.shape != coarse.shape:
        raise ValueError(
            f'--coarse {coarse_path} covers only part of --fine {fine_path} '
            f'({coarse.shape[0]} x {coarse.shape[1]} of {fine.shape[0]} x '
            f'{fine.shape[1]} pixels); give coarse labels of the whole raster.'
        )
    return coarse, fine, None if block is None else np.asarray(block)


def _console_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``--verbose`` and ``--quiet``, accepted before or after the command."""
    # A command's copy sets the value only when given, so that `geosparse -v demo`
    # and `geosparse demo -v` both work.
    default: Any = False if top else argparse.SUPPRESS
    group = parser.add_argument_group('console') if not top else parser
    group.add_argument(
        '-v',
        '--verbose',
        action='store_true',
        default=default,
        help="show the libraries' information lines (Lightning's, ...), their "
        "warnings, and geosparse's debug log (e.g. datasets' CRS changes)",
    )
    group.add_argument(
        '-q',
        '--quiet',
        action='store_true',
        default=default,
        help='no progress bars (the summary of what was written still shows)',
    )


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
    _console_options(parser, top=True)
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
    demo.add_argument(
        '--size',
        type=_int_at_least(128),
        default=512,
        help='scene side (pixels, at least the 128-pixel training window)',
    )
    demo.add_argument(
        '--steps', type=_int_at_least(1), default=60, help='training steps'
    )
    demo.add_argument('--seed', type=int, default=0)
    _console_options(demo)
    demo.set_defaults(func=_demo)

    pred = sub.add_parser(
        'predict',
        help='predict COGs with uncertainty (+ STAC items) from a checkpoint',
        description=(
            'Load a checkpoint of a geosparse task (e.g. from `geosparse demo` or '
            "`torchgeo fit`) or of TorchGeo's SemanticSegmentationTask or "
            'PixelwiseRegressionTask, and predict every input raster, or every item '
            'a STAC API search returns, block by block with dask: each block is read '
            'with a halo, predicted, cropped to its centre and streamed into a '
            'Cloud-Optimized GeoTIFF <out>/<name>_<suffix>.tif, described by a STAC '
            'Item <out>/<name>_<suffix>.json beside it. Segmentation writes band 1 '
            'class (colour table) and band 2 uncertainty (normalised entropy), and '
            'with --probabilities the class probabilities in '
            '<name>_<suffix>_probabilities.tif; regression writes the mean, and with '
            '--reveal the Gaussian-process posterior mean and std given known points; '
            'a PointInstanceTask (instances from one point per object) takes --points '
            'and writes <name>_instances.tif (bands instance, class, uncertainty), '
            '<name>_instances.gpkg (one polygon per object) and the STAC Item '
            '<name>_instances.json; a stage-2 MaskRCNNTask (trained on those '
            'masks) writes the same files without --points, ids numbered over the '
            'whole raster. Outputs are written atomically; a failed input is reported and the '
            'others go on; the exit status is 1 if any failed.'
        ),
        epilog=textwrap.dedent(
            """\
            Examples:
              geosparse predict --checkpoint lsr.ckpt naip1.tif naip2.tif \\
                  --coarse nlcd.tif --out maps/
              geosparse predict --checkpoint lsr.ckpt --out maps/ \\
                  --stac http://127.0.0.1:7822 --collections naip \\
                  --bbox -76.6 38.9 -76.5 39.0 --datetime 2018 --asset image \\
                  --coarse nlcd --mosaic --workers 2
              geosparse predict --checkpoint inst.ckpt image.tif \\
                  --points trees.gpkg --id-column tree_id --class-column species \\
                  --out instances/
              geosparse predict --checkpoint stage2.ckpt new_image.tif \\
                  --out found/
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pred.add_argument(
        'inputs', nargs='*', help='imagery rasters (bands as in training)'
    )
    pred.add_argument('--checkpoint', required=True, help='Lightning checkpoint')
    pred.add_argument(
        '--out',
        required=True,
        help='output folder: NAME_SUFFIX.tif and NAME_SUFFIX.json per input, NAME the '
        'file stem or STAC item id with characters other than letters, digits, '
        '".", "_" and "-" replaced by "_"; two inputs that would share a name are an '
        'error before any work starts',
    )
    stac = pred.add_argument_group('STAC search (instead of input rasters)')
    stac.add_argument('--stac', metavar='URL', help='STAC API root URL')
    stac.add_argument('--collections', nargs='+', help='collection ids')
    stac.add_argument(
        '--bbox',
        nargs=4,
        type=float,
        metavar=('W', 'S', 'E', 'N'),
        help='bounding box in WGS84 degrees',
    )
    stac.add_argument(
        '--datetime', help='instant or interval, e.g. 2018-01-01/2018-12-31'
    )
    stac.add_argument('--ids', nargs='+', help='item ids')
    stac.add_argument('--max-items', type=int, help='stop after this many items')
    stac.add_argument(
        '--asset', default='image', help='asset key of the imagery (default: image)'
    )
    pred.add_argument(
        '--coarse',
        help='coarse labels for models that use them (label super-resolution): a '
        'raster (any CRS), or with --stac an asset key of each item. Their shares '
        "in the raster's area set the land-cover mix of the training radiometry "
        'that --radiometry matches onto; with a prior_weight > 0 they are also '
        'combined with the map',
    )
    pred.add_argument(
        '--mosaic',
        action='store_true',
        help='one output over the union of all inputs (first input wins in overlaps)',
    )
    pred.add_argument(
        '--probabilities',
        action='store_true',
        help='segmentation: add one probability band per class',
    )
    model = pred.add_argument_group('model')
    model.add_argument(
        '--task',
        help='task class (package.module.Class) if the checkpoint does not tell',
    )
    model.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='unpickle everything the checkpoint holds and import the task class it '
        'names. Off by default: checkpoints are read as weights and plain data, '
        'because a pickle can run code; only for files you trust',
    )
    model.add_argument(
        '--mean',
        help="TorchGeo tasks: per-band means of the training datamodule's "
        'normalisation, comma separated (default 0)',
    )
    model.add_argument(
        '--std', help='TorchGeo tasks: per-band divisors, comma separated (default 255)'
    )
    model.add_argument('--class-names', help='class names, comma separated')
    model.add_argument(
        '--radiometry',
        choices=['auto', 'match', 'off'],
        default='auto',
        help='for checkpoints that keep the band distributions of their training '
        'imagery (label super-resolution): match maps each input raster band by '
        'band onto them (histogram matching), so that a very different acquisition '
        '(sensor, season, colour balancing) looks like the training one; it also '
        'moves the values of rasters whose land cover differs in proportion from '
        'the training imagery. auto (default) matches only a raster whose bands lie '
        'far from the training imagery (displacement above --radiometry-threshold) '
        'and says so in the tags; off: raw values as they are',
    )
    model.add_argument(
        '--radiometry-threshold',
        type=float,
        default=0.5,
        metavar='D',
        help='auto: largest band displacement (mean quantile distance over the '
        'training 5-95%% range) still predicted raw (default 0.5)',
    )
    gp = pred.add_argument_group(
        'known points (regression)',
        'Condition the map on known values: the output is the Gaussian-process '
        'posterior mean and std given the known points (NPP-GP). Each block is '
        "conditioned on every point within the kernel's reach, in it or not, with "
        'the network mean at each point computed on the block that holds it: the '
        'blocks agree whatever the halo.',
    )
    gp.add_argument(
        '--reveal', metavar='POINTS', help='points file (GPKG, GeoJSON, CSV, ...)'
    )
    gp.add_argument('--value', help='column of the known values')
    gp.add_argument('--lengthscale', type=float, help='kernel length-scale (CRS units)')
    gp.add_argument('--kernel-variance', type=float, help='kernel variance')
    gp.add_argument(
        '--kernel-family',
        # geosparse.gp.kernels.FAMILIES, spelt out to keep torch out of --help.
        choices=['rbf', 'matern12', 'matern32', 'matern52'],
        help="kernel shape (default: the NPP checkpoint's, else rbf); Matérn "
        'kernels are rougher, as usual in geostatistics',
    )
    gp.add_argument(
        '--noise', type=float, help='observation noise variance (default 0)'
    )
    gp.add_argument(
        '--refit',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='before predicting, re-fit the kernel length-scale, variance, noise and '
        'a trend (see --drift) on the known points by maximum likelihood (one '
        'extra network pass over the blocks that hold points): the std then '
        'matches errors at new places, and where the network says little the map '
        'becomes kriging of the points. The trained (or given) kernel is the '
        'start, and is kept with a warning below 8 points. --no-refit uses it as '
        'it is (default: --refit)',
    )
    gp.add_argument(
        '--drift',
        choices=['auto', 'bands', 'network', 'kriging'],
        help="with --refit: the re-fitted trend's terms. bands: a + b * network + "
        'c . image bands, so that where the network is weak the map is regression '
        'kriging on the bands; network: a + b * network alone; kriging: a + c . '
        'image bands, the network left out (universal kriging of every known '
        'point); auto: bands and network (and kriging, with --refit-on) each '
        'fitted, and the map their mixture with the kernel as trained (the network '
        'as the trend), weighted by how well each predicts the '
        'known points (those of --refit-on) left out in turn from all the others '
        '(stacking), so a network that predicts new points worse than the bands '
        'steps aside; the tags list the weights (default: auto)',
    )
    gp.add_argument(
        '--refit-on',
        metavar='POINTS',
        help='fit the kernel on these points (same --value column) instead of the '
        '--reveal ones: reveal every known point, the training points too, and fit '
        'on those the network was not trained on, whose residuals are honest; the '
        'map then uses all the labels, as kriging of all of them would',
    )
    gp.add_argument(
        '--calibrate',
        action='store_true',
        help=argparse.SUPPRESS,  # replaced by --refit (the default)
    )
    gp.add_argument('--points-crs', help='CRS of CSV coordinates (default EPSG:4326)')
    gp.add_argument('--x', help='CSV x / longitude column (default x or lon)')
    gp.add_argument('--y', help='CSV y / latitude column (default y or lat)')
    inst = pred.add_argument_group(
        'instances from points (PointInstanceTask checkpoints)',
        'Put one point on each object (any CRS; CSVs take --x, --y, --points-crs) '
        'and the checkpoint turns every point into the mask of its object: each '
        'pixel goes to the nearest point by the learned distance, or to the '
        "background. The instance band holds the point's id, so ids are yours and "
        'agree across blocks; make --halo larger than an object so that an object '
        'on a block edge is seen whole. Background points (--background-column) '
        'tell the model what is not an object.',
    )
    inst.add_argument(
        '--points',
        metavar='FILE',
        help='one point per object (GeoPackage, GeoJSON, GeoParquet, CSV)',
    )
    inst.add_argument(
        '--id-column',
        help='instance ids, integers >= 1 written to the instance band and the '
        'polygons (default: row number + 1)',
    )
    inst.add_argument(
        '--class-column', help='object classes, integers >= 1 (default: 1)'
    )
    inst.add_argument(
        '--background-column',
        help='column whose true values (1, true, yes) mark background points',
    )
    inst.add_argument(
        '--min-score',
        type=float,
        help='stage-2 (MaskRCNNTask) checkpoints: lowest detection score kept '
        "(default: the checkpoint's score_threshold)",
    )
    inst.add_argument(
        '--split',
        choices=['auto', 'learned', 'geodesic'],
        default='auto',
        help="how the model's foreground is divided between the objects: the "
        'learned distance (the query nearest each pixel), or the geodesic distance '
        'on image edges (PSPS-style); auto (default) takes the learned split for '
        'distances trained with the region-colour term (colour_scale set, the '
        'default) and the geodesic for older checkpoints, each the better one in '
        'benchmarks/point_instances.py when its default was chosen',
    )
    model.add_argument('--suffix', help='output name suffix (default: by task)')
    run = pred.add_argument_group('blocks and scheduling')
    run.add_argument(
        '--block',
        type=_int_at_least(1),
        help='block size (pixels; default 512, and for point-instance checkpoints '
        'the size of the windows they were trained on)',
    )
    run.add_argument(
        '--halo',
        type=_int_at_least(0),
        help='context around each block (pixels; default 32; for instances 64, or a '
        "quarter of the block from points; it should exceed an object's diameter)",
    )
    run.add_argument(
        '--threads',
        type=_int_at_least(1),
        help='threads of the local dask scheduler (default: one per core; each block '
        'runs on one torch thread, so the bytes never depend on the thread count)',
    )
    run.add_argument(
        '--workers',
        type=_int_at_least(1),
        help='run the blocks on a dask LocalCluster of N single-threaded processes',
    )
    run.add_argument(
        '--scheduler',
        metavar='ADDRESS',
        help='run the blocks on an existing dask.distributed scheduler '
        '(tcp://host:8786)',
    )
    run.add_argument(
        '--resume',
        action='store_true',
        help='skip inputs whose outputs are complete (the COGs match the SHA-256 '
        'recorded in their STAC Item); incomplete ones are done again',
    )
    _console_options(pred)
    pred.set_defaults(func=_predict)

    count = sub.add_parser(
        'count',
        help='count objects in a predicted density or point map',
        description=(
            'Print the number of objects in a map that `geosparse predict` wrote '
            'with a DensityTask (the sum of the density) or PointMapTask checkpoint '
            '(its detections), with its standard deviation, and with --out write '
            'a COG of counts per cell of --cell pixels (band 1) and their standard '
            'deviations (band 2), with the share of each cell that has data (band '
            '3; NaN pixels are nodata, not counted, and a cell without data is NaN). '
            'The std is Poisson for a density and '
            'Poisson-binomial over the cell probabilities for a point map, times '
            "the map's count_dispersion tag: the dispersion the task fitted on its "
            "validation windows to cover the network's own error (1 when it had "
            'none). Example: geosparse count out/scene.tif --cell 64 --out '
            'counts.tif'
        ),
    )
    count.add_argument('map', help='density or probability COG from predict')
    count.add_argument(
        '--cell', type=_int_at_least(1), default=32, help='cell side in pixels'
    )
    count.add_argument('--out', help='COG of counts per cell')
    _console_options(count)
    count.set_defaults(func=_count)

    priors = sub.add_parser(
        'priors', help='joint distributions of coarse and fine classes'
    )
    psub = priors.add_subparsers(dest='priors_command', required=True)
    show = psub.add_parser('show', help='print a table (built-in name or CSV)')
    show.add_argument('table', nargs='?', default='nlcd-landcover4')
    _console_options(show)
    show.set_defaults(func=_priors_show)
    est = psub.add_parser(
        'estimate',
        help='estimate a table from paired coarse and fine rasters',
        description=textwrap.fill(
            'Count the fine classes inside every coarse block and write, per coarse '
            'class, the mean and std of each fine-class fraction. The coarse raster '
            'may be in any CRS and resolution: it is reprojected onto the fine grid '
            'and, with --blocks grid, every coarse pixel is one block. Several '
            'pairs (--coarse and --fine in the same order) are pooled into one table.',
            79,
        ),
        epilog=textwrap.dedent(
            """\
            Examples:
              geosparse priors estimate --coarse nlcd.tif --fine lc.tif --out mine.csv
              geosparse priors estimate --coarse a_nlcd.tif b_nlcd.tif --fine a_lc.tif b_lc.tif --out mine.csv

            Train with it: LabelSuperResolutionTask(priors='mine.csv'), or
            priors: mine.csv in a torchgeo fit config.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    est.add_argument(
        '--coarse',
        required=True,
        nargs='+',
        help='coarse label raster(s) (e.g. NLCD), one per --fine raster',
    )
    est.add_argument(
        '--fine',
        required=True,
        nargs='+',
        help='fine label raster(s); several are pooled into one table, each pair '
        'keeping its own blocks',
    )
    est.add_argument('--out', required=True, help='output CSV')
    est.add_argument('--fine-codes', default='1,2,3,4', help='fine raster values')
    est.add_argument(
        '--fine-names',
        default='water,forest,field,impervious',
        help='names of the fine classes, in the order of --fine-codes',
    )
    est.add_argument(
        '--coarse-nodata',
        type=int,
        default=0,
        help='coarse code meaning "no label", left out; NaN becomes it (default: 0)',
    )
    est.add_argument(
        '--fine-nodata',
        type=int,
        default=0,
        help='fine code meaning "no label", left out; NaN becomes it (default: 0)',
    )
    est.add_argument(
        '--blocks',
        choices=('grid', 'cells', 'regions'),
        default='grid',
        help='grid: coarse pixels; cells: 30 m cells (coarse already on the fine '
        'grid); regions: one block per coarse class',
    )
    est.add_argument(
        '--fill',
        metavar='TABLE',
        help='add the rows of this table (a built-in name such as nlcd-landcover4, '
        'or a CSV) for the coarse classes the rasters do not hold, so that the '
        'table covers coarse labels of the area to map that the labelled area lacks',
    )
    _console_options(est)
    est.set_defaults(func=_priors_estimate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    .. versionadded:: 0.1
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from .console import quiet
    from .priors import PriorError

    try:
        # Lightning is quietened only for the commands that train or load models.
        with quiet(args.verbose, lightning=args.command in ('demo', 'predict')):
            return int(args.func(args))
    except PriorError as err:
        print(f'geosparse: error: {err}', file=sys.stderr)
        return 2


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
