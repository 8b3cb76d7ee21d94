r"""Whole-raster prediction of any geosparse or TorchGeo task, written as a COG.

The flow is predictor → blocks → COG → STAC item: a
:class:`~geosparse.inference.Predictor` turns the trained task into a block function,
:func:`~geosparse.inference.blocks.predict_blocks` runs it block by block with a halo (so where
the model's receptive field fits inside the halo, the result equals one forward pass
over the whole raster) and streams the blocks into a COG, and
:func:`~geosparse.stac.output_item` describes the COG as a STAC Item.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pystac
import torch

from ..io.raster import file_checksum, read_coarse_on_grid
from ..io.source import ImageSource
from ..io.spec import Property
from ..stac import asset_href, output_item, search_items, write_item
from ..trainers.heads import CLASS_COLORS
from ..trainers.lsr import LabelSuperResolutionTask
from .blocks import OutputFile, predict_blocks
from .predictor import OVERVIEW_PIXELS, Predictor

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    'CLASS_COLORS',
    'PredictionJob',
    'PredictionReport',
    'further_path',
    'mosaic_job',
    'output_complete',
    'output_stem',
    'predict_landcover',
    'predict_raster',
    'probability_path',
    'raster_jobs',
    'read_coarse_on_grid',
    'run_jobs',
    'stac_jobs',
]


def further_path(out_path: str | os.PathLike[str], kind: str) -> Path:
    """Path of a further output file of ``kind`` beside the main COG.

    A predictor's further specs (:attr:`~geosparse.inference.Predictor.specs` after
    the first) are written as ``<stem>_<kind>.tif``, e.g. the class probabilities.

    .. versionadded:: 0.1
    """
    out = Path(out_path)
    return out.with_name(f'{out.stem}_{kind}{out.suffix}')


def probability_path(out_path: str | os.PathLike[str]) -> Path:
    """Path of the class-probabilities COG beside a class map.

    .. versionadded:: 0.1
    """
    return further_path(out_path, 'probabilities')


def _reveal_on(
    predictor: Predictor, src: ImageSource, label: str
) -> tuple[Predictor, int]:
    """The predictor with only the revealed points that lie on the imagery.

    Points off the raster cannot reach any block; they are dropped (with a warning)
    so that the output's tags count the points actually used.

    Returns:
        The predictor and how many points were dropped.

    Raises:
        ValueError: if no point lies on the imagery.
    """
    assert predictor.conditioning is not None
    points = predictor.conditioning.points
    assert points is not None
    xy, values = points.xy, points.values
    inside = src.grid.contains(xy) & np.isfinite(xy).all(1)
    if not inside.any():
        raise ValueError(
            f'none of the {len(values)} revealed points lies on {label}; check their '
            'CRS (--points-crs; a GeoJSON without a CRS is read as longitude and '
            'latitude) and that they cover this raster.'
        )
    outside = int((~inside).sum())
    if outside:
        warnings.warn(
            f'{label}: {outside} of {len(values)} revealed points lie off the raster '
            'and are not used (the output tags count the points used).',
            stacklevel=3,
        )
    points = points.subset(inside)
    xy, values = points.xy, points.values
    # Points on one pixel with different values: the GP can only read the
    # difference as noise (the re-fit raises the noise to match).
    rows, cols, _ = src.grid.pixel_of(xy)
    cells = np.stack([rows, cols], 1)
    _, first, groups = np.unique(cells, axis=0, return_index=True, return_inverse=True)
    groups = groups.reshape(-1)
    spread = np.zeros(len(first))
    np.maximum.at(spread, groups, np.abs(values - values[first][groups]))
    if (spread > 0).any():
        warnings.warn(
            f'{label}: {int((spread > 0).sum())} pixels hold revealed points with '
            'different values (closer together than a pixel); the GP reads the '
            'difference as noise, which widens the std: merge or remove the '
            'duplicates.',
            stacklevel=3,
        )
    return predictor.with_points(points), outside


def predict_raster(
    predictor: Predictor,
    source: str | os.PathLike[str] | ImageSource,
    out_path: str | os.PathLike[str],
    coarse_path: str | os.PathLike[str] | None = None,
    block: int = 512,
    halo: int = 32,
    threads: int | None = None,
    scheduler: str | Client = 'threads',
    progress: bool = True,
) -> Path:
    """Predict one raster (or mosaic) with a predictor and write its COG.

    .. versionadded:: 0.1

    Args:
        predictor: the model and its output bands.
        source: imagery raster or :class:`~geosparse.io.source.ImageSource`.
        out_path: output COG (atomic).
        coarse_path: coarse labels, for predictors that use them
            (:attr:`Predictor.uses_coarse`), and for matching the radiometry in
            the raster's land-cover composition
            (:attr:`Predictor.coarse_radiometry`); ignored otherwise.
        block: block size in pixels.
        halo: context kept around each block and discarded.
        threads: threads of the local threaded scheduler (default: one per core;
            each block runs its model on one torch thread, see
            :attr:`Predictor.torch_threads`).
        scheduler: ``threads``, ``synchronous`` or a :class:`distributed.Client`.
        progress: show a progress bar.

    Returns:
        ``out_path`` (with :attr:`Predictor.probabilities`, the class probabilities
        are in :func:`probability_path` beside it).

    Raises:
        ValueError: if the imagery's band count differs from the model's, the
            coarse raster does not overlap it, or no revealed point lies on it.
    """
    src = source if isinstance(source, ImageSource) else ImageSource.open(source)
    predictor = predictor.for_crs(src.grid.crs)
    if predictor.in_channels is not None and src.count != predictor.in_channels:
        raise ValueError(
            f'{", ".join(src.paths)}: {src.count} bands, but the model was trained on '
            f'{predictor.in_channels}; pass imagery with the training bands.'
        )
    label = ', '.join(src.paths)
    tags: dict[str, Property] = {}
    # Coarse labels serve the prior combination, and the radiometry matching
    # (the training imagery mixed in this raster's land-cover composition).
    radiometry_coarse: list[np.ndarray] | None = None
    if coarse_path is not None and (
        predictor.uses_coarse or predictor.coarse_radiometry
    ):
        cover = src.grid.coverage(coarse_path)
        if cover == 0:
            raise ValueError(
                f'--coarse {coarse_path} does not overlap {label}; give the coarse '
                'labels of this area, or leave --coarse out.'
            )
        tags.update(coarse=Path(coarse_path).name, coarse_coverage=round(cover, 4))
        # One read on the decimated grid serves the code check and the composition.
        overview = read_coarse_on_grid(coarse_path, src.grid.decimated(OVERVIEW_PIXELS))
        if predictor.uses_coarse:
            predictor.check_coarse(coarse_path, src.grid, values=overview)
        if predictor.coarse_radiometry:
            radiometry_coarse = [overview]
    if predictor.reveal is not None:
        predictor, outside = _reveal_on(predictor, src, label)
        tags['revealed_points_outside'] = outside
    # With radiometry 'match' (or 'auto' and far from the training imagery), this
    # raster's bands are mapped onto the training's (before the network is read at
    # the known points, so that it is the map's network there).
    predictor = predictor.matched(src, coarse=radiometry_coarse)
    # With Predictor.refit, the kernel is re-fitted on this raster's known points;
    # in any case the network mean at them is computed once, for every block.
    predictor = predictor.refitted(src, block, halo, progress=progress)
    if predictor.radiometry_report is not None:
        report = dict(predictor.radiometry_report)
        if predictor.shift is not None:
            report.update(predictor.shift.summary())
        tags['radiometry'] = json.dumps(report)
    elif predictor.shift is not None:
        tags['radiometry'] = json.dumps(predictor.shift.summary())
    main, *further = [spec.with_properties(**tags) for spec in predictor.specs]
    extra = [
        OutputFile(further_path(out_path, spec.kind), spec.count, spec.cog_options())
        for spec in further
    ]
    # The predictor sets torch's (process-wide) thread count for its blocks; the
    # caller's setting comes back afterwards.
    torch_threads = torch.get_num_threads()
    try:
        return predict_blocks(
            src,
            predictor,
            out_path,
            count=main.count,
            dtype=main.dtype,
            nodata=main.nodata,
            coarse_path=coarse_path if predictor.uses_coarse else None,
            block=block,
            halo=halo,
            threads=threads or os.cpu_count() or 1,
            scheduler=scheduler,
            progress=progress,
            cog=main.cog_options(),
            extra_outputs=extra,
        )
    finally:
        torch.set_num_threads(torch_threads)


def predict_landcover(
    task: LabelSuperResolutionTask,
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    coarse_path: str | os.PathLike[str] | None = None,
    block: int = 512,
    halo: int = 32,
    threads: int | None = None,
    progress: bool = True,
    probabilities: bool = False,
) -> dict[str, Any]:
    """Predict a land-cover map with uncertainty from an in-memory LSR task.

    Band 1 ``class`` (uint8, colour table and class names; 255 nodata), band 2
    ``uncertainty`` (normalised entropy, uint8 with scale 1/254), then the class
    probabilities if asked for (:class:`~geosparse.inference.Predictor`).

    .. versionadded:: 0.1

    Args:
        task: trained model.
        image_path: imagery raster (raw digital numbers, as in training).
        out_path: output COG.
        coarse_path: optional coarse labels, combined with the network
            (:meth:`~geosparse.trainers.LabelSuperResolutionTask.combine`).
        block: block size in pixels.
        halo: context kept around each block and discarded.
        threads: dask threads (default: one per core).
        progress: show a progress bar.
        probabilities: also write one probability band per class.

    Returns:
        ``{"path": out_path}``.
    """
    predictor = Predictor(task, probabilities=probabilities)
    path = predict_raster(
        predictor,
        image_path,
        out_path,
        coarse_path=coarse_path,
        block=block,
        halo=halo,
        threads=threads,
        progress=progress,
    )
    return {'path': path}


@dataclass
class PredictionJob:
    """One output to make: its name, source rasters, coarse raster, source items.

    .. versionadded:: 0.1

    Attributes:
        name: output name stem (``<name>_<suffix>.tif``).
        paths: imagery rasters (one, or several for a mosaic).
        coarse: coarse label raster, or None.
        items: source STAC items (``derived_from`` links of the output item).
        error: why the job cannot run (reported as its failure), or None.
    """

    name: str
    paths: list[str]
    coarse: str | None = None
    items: list[pystac.Item] = field(default_factory=list)
    error: str | None = None


@dataclass
class PredictionReport:
    """What :func:`run_jobs` did: outputs written, skipped and failed.

    .. versionadded:: 0.1
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


_UNSAFE = re.compile(r'[^A-Za-z0-9._-]+')


def output_stem(name: str) -> str:
    """A file-name stem made from an item id or an input's stem, safe in ``--out``.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` (so no
    slash, backslash or absolute path survives), leading and trailing dots, dashes and
    underscores are dropped (no hidden files, no ``..``), and the stem is cut at 128
    characters; an id with nothing left becomes ``item``.

    .. versionadded:: 0.1

    Args:
        name: a STAC item id or a file stem (from a stranger's catalogue).

    Returns:
        The stem.
    """
    return _UNSAFE.sub('_', name).strip('._-')[:128] or 'item'


def output_complete(meta: str | os.PathLike[str]) -> bool:
    """Whether an output's STAC Item and every file it lists are whole.

    The item must parse, list a ``data`` asset, and each asset's file must exist with
    the SHA-256 recorded in its ``file:checksum``
    (:func:`~geosparse.io.raster.file_checksum`; :func:`~geosparse.stac.output_item`
    records it). A truncated, empty or foreign
    file fails.

    .. versionadded:: 0.1

    Args:
        meta: the item JSON beside the output COG.

    Returns:
        True if the output can be kept by ``--resume``.
    """
    meta = Path(meta)
    try:
        assets = json.loads(meta.read_text())['assets']
        if 'data' not in assets:
            return False
        for asset in assets.values():
            path = meta.parent / Path(asset['href']).name
            checksum = asset['file:checksum']
            if not path.is_file() or checksum != file_checksum(path):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def raster_jobs(
    paths: Sequence[str | os.PathLike[str]], coarse: str | None = None
) -> list[PredictionJob]:
    """One job per raster, named by the file stem (:func:`output_stem`).

    .. versionadded:: 0.1
    """
    return [PredictionJob(output_stem(Path(p).stem), [str(p)], coarse) for p in paths]


def stac_jobs(
    url: str,
    asset: str = 'image',
    coarse: str | None = None,
    collections: Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    ids: Sequence[str] | None = None,
    max_items: int | None = None,
) -> list[PredictionJob]:
    """One job per item of a STAC API search (:func:`~geosparse.stac.search_items`).

    .. versionadded:: 0.1

    Args:
        url: STAC API root.
        asset: asset key of the imagery.
        coarse: coarse labels: an asset key of each item, or a raster path.
        collections: collection ids.
        bbox: WGS84 bounding box.
        datetime: instant or interval.
        ids: item ids.
        max_items: stop after this many items.

    Returns:
        The jobs; an item without the asset is a job that fails with a message
        naming the item and its keys.

    Raises:
        RuntimeError: if the search fails or matches no items.
    """
    items = search_items(url, collections, bbox, datetime, ids, max_items)
    if not items:
        raise RuntimeError(
            f'--stac {url}: the search matched no items '
            '(check --collections, --bbox, --datetime and --ids).'
        )
    jobs = []
    for item in items:
        job = PredictionJob(output_stem(item.id), [], None, [item])
        try:
            job.paths = [asset_href(item, asset)]
            if coarse and not Path(coarse).is_file():
                job.coarse = asset_href(item, coarse, '--coarse')  # an asset key
            else:
                job.coarse = coarse
        except KeyError as err:
            job.error = str(err.args[0])
        jobs.append(job)
    return jobs


def mosaic_job(
    jobs: Sequence[PredictionJob], name: str = 'mosaic'
) -> list[PredictionJob]:
    """Merge jobs into one mosaic job (jobs that cannot run stay apart, failing).

    The coarse raster is kept when all jobs share one (else None).

    .. versionadded:: 0.1
    """
    good = [j for j in jobs if j.error is None]
    coarse = {j.coarse for j in good}
    merged = PredictionJob(
        name,
        [p for j in good for p in j.paths],
        coarse.pop() if len(coarse) == 1 else None,
        [i for j in good for i in j.items],
    )
    return [merged, *[j for j in jobs if j.error is not None]]


def run_jobs(
    predictor: Predictor,
    jobs: Sequence[PredictionJob],
    out_dir: str | os.PathLike[str],
    suffix: str | None = None,
    mosaic: bool = False,
    block: int = 512,
    halo: int = 32,
    threads: int | None = None,
    scheduler: str | Client = 'threads',
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> PredictionReport:
    """Predict every job into ``out_dir``: COG(s) and a STAC Item JSON each.

    Outputs are ``<name>_<suffix>.tif`` (+ ``_probabilities.tif``) and
    ``<name>_<suffix>.json``. A failing job is recorded with its message and the
    others go on; nothing partial is left at its outputs.

    .. versionadded:: 0.1

    Args:
        predictor: the model.
        jobs: from :func:`raster_jobs`, :func:`stac_jobs` or :func:`mosaic_job`.
        out_dir: output folder.
        suffix: output name suffix (default ``landcover`` for label
            super-resolution, else the predictor's kind).
        mosaic: read every job's rasters as one mosaic, even a single raster.
        block: block size in pixels.
        halo: context around each block.
        threads: threads of the local threaded scheduler (default: one per core;
            each block runs its model on one torch thread, see
            :attr:`Predictor.torch_threads`).
        scheduler: ``threads``, ``synchronous`` or a :class:`distributed.Client`.
        resume: skip jobs whose outputs are complete (:func:`output_complete`);
            others are done again.
        progress: progress bars.
        log: called with one line per job.

    Returns:
        The report.

    Raises:
        ValueError: before any work, if ``out_dir`` is a file, two jobs would
            write the same output (the message names both), or an output would
            replace an input raster.
    """
    suffix = suffix or ('landcover' if predictor.landcover else predictor.kind)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f'--out {out}: is a file; give a folder for the outputs.')
    targets: dict[Path, PredictionJob] = {}
    sources = {
        Path(p).resolve(): p
        for job in jobs
        for p in [*job.paths, *([job.coarse] if job.coarse else [])]
        if '://' not in p
    }
    for job in jobs:
        label = ', '.join(job.paths) or job.name
        dst = out / f'{output_stem(job.name)}_{output_stem(suffix)}.tif'
        if dst in targets:
            other = ', '.join(targets[dst].paths) or targets[dst].name
            raise ValueError(
                f'{other} and {label} would both write {dst.name} in --out {out}; '
                'predict them into separate --out folders, or rename one.'
            )
        outputs = [dst, dst.with_suffix('.json')]
        outputs += [further_path(dst, s.kind) for s in predictor.specs[1:]]
        for path in outputs:
            if path.resolve() in sources:
                raise ValueError(
                    f'{label}: its output {path} would replace the input '
                    f'{sources[path.resolve()]}; give another --out folder.'
                )
        targets[dst] = job
    report = PredictionReport()
    for dst, job in targets.items():
        label = ', '.join(job.paths) or job.name
        meta = dst.with_suffix('.json')
        extra: dict[str, Path] = {
            s.kind: further_path(dst, s.kind) for s in predictor.specs[1:]
        }
        if resume and output_complete(meta):
            log(f'{label}: skipped (resume: {dst} is complete)')
            report.skipped.append(dst)
            continue
        written = False
        try:
            if job.error is not None:
                raise ValueError(job.error)
            if len(job.paths) == 1 and not mosaic:
                source = ImageSource.open(job.paths[0])
            else:
                source = ImageSource.mosaic(job.paths)
            if source.grid.crs is None:
                raise ValueError(
                    f'{label}: the raster has no CRS; assign one (e.g. '
                    '`gdal_edit.py -a_srs EPSG:32618 FILE`) and run again.'
                )
            predict_raster(
                predictor,
                source,
                dst,
                coarse_path=job.coarse,
                block=block,
                halo=halo,
                threads=threads,
                scheduler=scheduler,
                progress=progress,
            )
            written = True
            item = output_item(
                dst,
                item_id=dst.stem,
                sources=job.items,
                source_paths=job.paths,
                extra_assets=extra,
            )
            write_item(item, meta)
        except Exception as err:  # one failed job must not stop the others
            if written:  # a COG without its item is no output: remove the pair
                for path in (dst, meta, *extra.values()):
                    path.unlink(missing_ok=True)
            text = str(err)
            text = text[len(label) + 2 :] if text.startswith(f'{label}: ') else text
            report.failures.append(f'{label}: {text}')
            log(f'{label}: FAILED: {text}')
            continue
        report.written.append(dst)
        log(f'{label} -> {dst} (+ {meta.name})')
    return report
