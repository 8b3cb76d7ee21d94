r"""Whole-raster prediction of any geosparse or TorchGeo task, written as a COG.

The flow is predictor → blocks → COG → STAC item: a
:class:`~geosparse.predictors.Predictor` turns the trained task into a block function,
:func:`~geosparse.blocks.predict_blocks` runs it block by block with a halo (so where
the model's receptive field fits inside the halo, the result equals one forward pass
over the whole raster) and streams the blocks into a COG, and
:func:`~geosparse.stac.output_item` describes the COG as a STAC Item.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blocks import OutputFile, predict_blocks
from .io.raster import read_coarse_on_grid
from .io.source import ImageSource
from .predictors import CLASS_COLORS, Predictor
from .trainers.lsr import LabelSuperResolutionTask

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    'CLASS_COLORS',
    'predict_landcover',
    'predict_raster',
    'probability_path',
    'read_coarse_on_grid',
]


def probability_path(out_path: str | os.PathLike[str]) -> Path:
    """Path of the class-probabilities COG beside a class map."""
    out = Path(out_path)
    return out.with_name(f'{out.stem}_probabilities{out.suffix}')


def predict_raster(
    predictor: Predictor,
    source: str | os.PathLike[str] | ImageSource,
    out_path: str | os.PathLike[str],
    coarse_path: str | os.PathLike[str] | None = None,
    block: int = 512,
    halo: int = 32,
    threads: int = 1,
    scheduler: str | Client = 'threads',
    progress: bool = True,
) -> Path:
    """Predict one raster (or mosaic) with a predictor and write its COG.

    Args:
        predictor: the model and its output bands.
        source: imagery raster or :class:`~geosparse.io.source.ImageSource`.
        out_path: output COG (atomic).
        coarse_path: coarse labels, for predictors that use them
            (:attr:`Predictor.uses_coarse`); ignored otherwise.
        block: block size in pixels.
        halo: context kept around each block and discarded.
        threads: threads of the local threaded scheduler.
        scheduler: ``threads``, ``synchronous`` or a :class:`distributed.Client`.
        progress: show a progress bar.

    Returns:
        ``out_path`` (with :attr:`Predictor.probabilities`, the class probabilities
        are in :func:`probability_path` beside it).

    Raises:
        ValueError: if the imagery's band count differs from the model's.
    """
    src = source if isinstance(source, ImageSource) else ImageSource.open(source)
    if predictor.in_channels is not None and src.count != predictor.in_channels:
        raise ValueError(
            f'{", ".join(src.paths)}: {src.count} bands, but the model was trained on '
            f'{predictor.in_channels}; pass imagery with the training bands.'
        )
    extra = []
    if predictor.count > predictor.main_count:
        extra.append(
            OutputFile(
                probability_path(out_path),
                predictor.count - predictor.main_count,
                predictor.probability_options(),
            )
        )
    return predict_blocks(
        src,
        predictor,
        out_path,
        count=predictor.main_count,
        dtype=predictor.dtype,
        nodata=predictor.nodata,
        coarse_path=coarse_path if predictor.uses_coarse else None,
        block=block,
        halo=halo,
        threads=threads,
        scheduler=scheduler,
        progress=progress,
        cog=predictor.cog_options(),
        extra_outputs=extra,
    )


def predict_landcover(
    task: LabelSuperResolutionTask,
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    coarse_path: str | os.PathLike[str] | None = None,
    block: int = 512,
    halo: int = 32,
    threads: int = 1,
    progress: bool = True,
    probabilities: bool = False,
) -> dict[str, Any]:
    """Predict a land-cover map with uncertainty from an in-memory LSR task.

    Band 1 ``class`` (uint8, colour table and class names; 255 nodata), band 2
    ``uncertainty`` (normalised entropy, uint8 with scale 1/254), then the class
    probabilities if asked for (:class:`~geosparse.predictors.Predictor`).

    Args:
        task: trained model.
        image_path: imagery raster (raw digital numbers, as in training).
        out_path: output COG.
        coarse_path: optional coarse labels, combined with the network
            (:meth:`LabelSuperResolutionTask.combine`).
        block: block size in pixels.
        halo: context kept around each block and discarded.
        threads: dask threads.
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
