r"""Whole-raster prediction of a label super-resolution model, written as a COG.

The raster is predicted block by block with a halo (:mod:`geosparse.blocks`), so
where the model's receptive field fits inside the halo, the result equals one
forward pass over the whole raster. The output COG has
band 1 ``class`` (uint8, with colour table and class names; 255 = nodata) and band 2
``uncertainty``: the normalised entropy :math:`-\\sum_l p_l \\log p_l / \\log L` in
0..1, stored as uint8 with scale 1/254 (255 = nodata).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import rasterio
import torch

from .blocks import predict_blocks
from .io.raster import read_coarse_on_grid
from .trainers.lsr import LabelSuperResolutionTask, normalised_entropy

__all__ = ['CLASS_COLORS', 'predict_landcover', 'read_coarse_on_grid']

#: Colours of the fine classes by name (others get grey).
CLASS_COLORS: dict[str, tuple[int, int, int, int]] = {
    'water': (0, 112, 255, 255),
    'forest': (38, 115, 0, 255),
    'field': (163, 255, 115, 255),
    'impervious': (156, 156, 156, 255),
}


def predict_landcover(
    task: LabelSuperResolutionTask,
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    coarse_path: str | os.PathLike[str] | None = None,
    block: int = 512,
    halo: int = 32,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict a land-cover map with uncertainty and write it as a COG, block by block.

    Runs :func:`~geosparse.blocks.predict_blocks` (dask blocks with a halo, streamed
    into the COG).

    Args:
        task: trained model.
        image_path: imagery raster (raw digital numbers, as in training).
        out_path: output COG.
        coarse_path: optional coarse labels, combined with the network
            (:meth:`LabelSuperResolutionTask.combine`).
        block: block size in pixels.
        halo: context kept around each block and discarded.
        workers: dask threads.
        progress: show a progress bar.

    Returns:
        ``{"path": out_path}``.

    Raises:
        ValueError: if the raster's band count differs from the model's.
    """
    task.eval()
    with rasterio.open(image_path) as src:
        bands = src.count
    if bands != task.hparams['in_channels']:
        raise ValueError(
            f'{image_path}: {bands} bands, but the model was trained on '
            f'{task.hparams["in_channels"]}; pass imagery with the training bands.'
        )

    def fn(image: np.ndarray, coarse: np.ndarray | None) -> np.ndarray:
        batch = {'image': torch.from_numpy(image[None])}
        if coarse is not None:
            batch['coarse'] = torch.from_numpy(coarse[None].astype(np.int64))
        with torch.no_grad():
            probs = task.predict_probs(batch)
        classes = probs[0].argmax(0).numpy().astype(np.uint8)
        unc = normalised_entropy(probs)[0].numpy()
        unc8 = np.round(np.clip(unc, 0, 1) * 254).astype(np.uint8)
        return np.stack([classes, unc8])

    names = list(task.table.fine_names)
    colormap = {
        i: CLASS_COLORS.get(n, (128, 128, 128, 255)) for i, n in enumerate(names)
    }
    path = predict_blocks(
        image_path,
        fn,
        out_path,
        count=2,
        dtype='uint8',
        nodata=255,
        coarse_path=coarse_path,
        block=block,
        halo=halo,
        workers=workers,
        progress=progress,
        cog={
            'descriptions': ['class', 'uncertainty'],
            'colormap': colormap,
            'tags': {'task': type(task).__name__, 'class_names': json.dumps(names)},
            'band_tags': [
                {'class_names': json.dumps(names)},
                {'definition': 'normalised entropy of the class probabilities, 0..1'},
            ],
            'scales': [1.0, 1 / 254],
            'categorical': True,
        },
    )
    return {'path': path}
