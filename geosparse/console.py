"""Console output of the command line, the demo and the benchmarks, in one place.

Three things:

* :func:`quiet`: a context in which third-party libraries keep to themselves:
  Lightning's information lines (``GPU available``, tips, ``Trainer.fit stopped``),
  and known third-party warnings a user cannot act on, are hidden; geosparse's own
  warnings (about the user's input) still show. With ``verbose=True`` nothing is
  hidden and geosparse's debug log (e.g. the datasets' CRS and resolution changes)
  goes to stderr as well.
* :func:`progress`: a tqdm progress bar on stderr that stays short in a log file
  (stderr not a terminal: one update every :data:`LOG_INTERVAL` seconds at most).
* :func:`describe_output`: one line about a written map: class fractions,
  value ranges, or the number of objects, read from the file (decimated when large).

It imports no other geosparse layer above :mod:`geosparse.io`, so every layer may
use it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sqlite3
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    'LOG_INTERVAL',
    'MAX_SIDE',
    'NOISY_WARNINGS',
    'describe_output',
    'progress',
    'quiet',
    'verbose_option',
]

T = TypeVar('T')

logger = logging.getLogger('geosparse')

#: Seconds between two updates of a progress bar written to a file or a pipe.
LOG_INTERVAL = 30.0

#: Larger rasters are summarised from a decimated read of at most this side.
MAX_SIDE = 1024

#: Third-party warnings hidden by :func:`quiet`: ``(message regex, category)``.
#: Each is about the libraries' own code or a choice geosparse made for the user.
NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # lightning's _pytree on torch >= 2.9: an internal API of torch, Lightning's to fix
    (r'.*isinstance\(treespec, LeafSpec\)` is deprecated', Warning),
    # geosparse loads windows in the main process on purpose (GDAL handles)
    (r'.*does not have many workers', Warning),
    (r'.*GPU available but not used', Warning),
    # Lightning's note when the number of steps ends the epoch early
    (
        r'.*The number of training batches \(\d+\) is smaller than the logging interval',
        Warning,
    ),
    # TorchGeo 0.10 renames samplers and helpers that 0.8.1 (also supported) lacks the
    # new names of; its own code calls the old helpers too
    (r'Use (torchgeo|geopandas)\.\S+ instead', DeprecationWarning),
    # pandas 3.1 deprecates `inplace`, which TorchGeo's dataset code uses
    (r'.*The inplace keyword in .* is deprecated', Warning),
    # torchmetrics, when a class never occurs in a brief run
    (r'.*No positive samples in targets', Warning),
    # affine 3 deprecates `Affine * Affine`, which rasterio's own transform helpers
    # (from_origin, ...) still use; rasterio's to change, once per block in predict
    (r'Use `@` matmul instead of `\*` mul operator', PendingDeprecationWarning),
)

#: Loggers whose INFO lines :func:`quiet` hides (WARNING and above still show).
CHATTY_LOGGERS = (
    'lightning.pytorch',
    'lightning.fabric',
    'lightning_fabric',
    'pytorch_lightning',
)


def verbose_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--verbose`` (the value of :func:`quiet`'s ``verbose``) to a script's parser.

    .. versionadded:: 0.1

    Args:
        parser: the script's argument parser.
    """
    parser.add_argument(
        '--verbose',
        action='store_true',
        help="show the libraries' information lines and warnings",
    )


@contextlib.contextmanager
def quiet(verbose: bool = False, lightning: bool = True) -> Iterator[None]:
    """Hide third-party information lines and known noisy warnings inside the block.

    Warning filters and logger levels come back on exit. geosparse's own warnings
    and errors are never hidden.

    .. versionadded:: 0.1

    Args:
        verbose: hide nothing, and show geosparse's debug log on stderr.
        lightning: quieten Lightning (imported here if it is not yet: its import
            would reset its logger's level).

    Yields:
        Nothing.
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        ours = logging.getLogger('geosparse')
        saved_ours = ours.level
        stack.callback(ours.setLevel, saved_ours)
        if verbose:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter('%(name)s: %(message)s'))
            ours.addHandler(handler)
            stack.callback(ours.removeHandler, handler)
            ours.setLevel(logging.DEBUG)
            yield
            return
        for pattern, category in NOISY_WARNINGS:
            warnings.filterwarnings('ignore', message=pattern, category=category)
        if lightning:
            # Its import sets its logger's level: import it before changing that.
            importlib.import_module('lightning.pytorch')
        for name in CHATTY_LOGGERS:
            log = logging.getLogger(name)
            stack.callback(log.setLevel, log.level)
            log.setLevel(logging.WARNING)
        yield


def _interactive() -> bool:
    isatty = getattr(sys.stderr, 'isatty', None)
    return bool(isatty and isatty())


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    unit: str = 'it',
    total: int | None = None,
    enabled: bool = True,
    **kwargs: Any,
) -> Any:
    """A tqdm bar on stderr; in a file or pipe, one update per :data:`LOG_INTERVAL`.

    .. versionadded:: 0.1

    Args:
        iterable: what to iterate (or None and call ``update``).
        desc: the bar's label.
        unit: the unit of one step.
        total: the number of steps (default ``len(iterable)``).
        enabled: False: no bar at all (an inert tqdm).
        **kwargs: further tqdm arguments.

    Returns:
        The tqdm object.
    """
    from tqdm.auto import tqdm

    options: dict[str, Any] = dict(
        desc=desc, unit=unit, total=total, disable=not enabled, file=sys.stderr
    )
    if not _interactive():
        options.update(mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL)
    options.update(kwargs)
    return tqdm(iterable, **options)


def _percent(value: float) -> str:
    if value == 0:
        return '0 %'
    if value < 0.01:
        return '<1 %'
    return f'{100 * value:.0f} %'


def _read(path: Path, band: int) -> tuple[np.ma.MaskedArray, bool]:
    """A band as a masked array (nodata masked), decimated to MAX_SIDE if larger."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        h, w = src.height, src.width
        scale = max(h, w) / MAX_SIDE
        if scale <= 1:
            data = src.read(band, masked=True)
            return data, False
        shape = (max(1, round(h / scale)), max(1, round(w / scale)))
        data = src.read(
            band, masked=True, out_shape=shape, resampling=Resampling.nearest
        )
        return data, True


def _valid(data: np.ma.MaskedArray) -> np.ndarray:
    values = np.asarray(data.compressed(), dtype=np.float64)
    return values[np.isfinite(values)]


def class_fractions(
    path: str | os.PathLike[str], band: int = 1
) -> tuple[dict[int, float], bool]:
    """Fraction of the valid pixels of each class value of a class band.

    Returns:
        ``{value: fraction}`` in value order, and whether the raster was decimated.
    """
    data, decimated = _read(Path(path), band)
    values = _valid(data).astype(np.int64)
    if values.size == 0:
        return {}, decimated
    codes, counts = np.unique(values, return_counts=True)
    return (
        {int(c): float(n) / values.size for c, n in zip(codes, counts, strict=True)},
        decimated,
    )


def _polygon_count(path: Path) -> int | None:
    """Features of a geosparse GeoPackage (layer ``instances``), None if unreadable."""
    if path.suffix.lower() != '.gpkg' or not path.is_file():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f'file:{path}?mode=ro', uri=True)
        ) as db:
            (n,) = db.execute('SELECT COUNT(*) FROM "instances"').fetchone()
    except sqlite3.Error:
        return None
    return int(n)


def _total(path: Path, band: int) -> float:
    """Sum of a band, block by block (the count of a counting map)."""
    import rasterio

    total = 0.0
    with rasterio.open(path) as src:
        for _, window in src.block_windows(band):
            total += float(np.nansum(src.read(band, window=window), dtype=np.float64))
    return total


def describe_output(path: str | os.PathLike[str]) -> str:
    """One line about a map geosparse wrote, read from the file itself.

    Class maps give each class's share of the valid pixels, regression maps each
    band's range and mean (the ``std`` bands' range), counting maps the number of
    objects too, instance maps the number of objects. Rasters larger than
    :data:`MAX_SIDE` on a side are read decimated (nearest), which the line says.

    .. versionadded:: 0.1

    Args:
        path: a COG written by ``geosparse predict`` or the demo.

    Returns:
        The description, without the path.
    """
    import rasterio

    from .io.spec import OutputSpec

    path = Path(path)
    spec = OutputSpec.read(path)
    with rasterio.open(path) as src:
        names = list(src.descriptions)
        scales = list(src.scales)
        tags = src.tags()
    kind = spec.kind if spec is not None else tags.get('kind')
    decimated = False
    if kind == 'segmentation':
        fractions, decimated = class_fractions(path, 1)
        labels = list(spec.names) if spec is not None and spec.names else []
        parts = [
            f'{labels[c] if 0 <= c < len(labels) else c} {_percent(f)}'
            for c, f in fractions.items()
        ]
        text = ', '.join(parts) if parts else 'no valid pixel'
    elif kind == 'instances':
        data, decimated = _read(path, 1)
        objects = _polygon_count(path.with_suffix('.gpkg'))
        covered = float((_valid(data) > 0).mean()) if data.count() else 0.0
        text = (
            f'{objects} objects (polygons), ' if objects is not None else ''
        ) + f'{_percent(covered)} of the pixels on objects'
    else:
        parts = []
        for i, name in enumerate(names, start=1):
            data, decimated = _read(path, i)
            values = _valid(data) * scales[i - 1]
            label = name or f'band {i}'
            if values.size == 0:
                parts.append(f'{label}: no valid pixel')
            elif label.startswith('std') or label == 'uncertainty':
                parts.append(f'{label} {values.min():.4g}..{values.max():.4g}')
            else:
                parts.append(
                    f'{label} {values.min():.4g}..{values.max():.4g} '
                    f'(mean {values.mean():.4g})'
                )
        text = ', '.join(parts)
        counting = tags.get('counting')
        if counting in ('density', 'point map'):
            text += f'; {_total(path, 1 if counting == "density" else 2):.1f} objects'
    if decimated:
        text += f' (from a {MAX_SIDE}-pixel overview)'
    return text
