r"""Whole-raster prediction of a label super-resolution model, written as a COG.

The raster is cut into windows with a halo; each window is predicted and only its
centre is kept (crop-centre), so where the model's receptive field fits inside the
halo, the result equals one forward pass over the whole raster. The output COG has
band 1 ``class`` (uint8, with colour table and class names; 255 = nodata) and band 2
``uncertainty``: the normalised entropy :math:`-\\sum_l p_l \\log p_l / \\log L` in
0..1, stored as uint8 with scale 1/254 (255 = nodata).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from tqdm.auto import tqdm

from .io.cog import write_cog
from .samplers.cover import cover_offsets
from .trainers.lsr import LabelSuperResolutionTask, normalised_entropy

__all__ = ['CLASS_COLORS', 'predict_landcover', 'read_coarse_on_grid']

#: Colours of the fine classes by name (others get grey).
CLASS_COLORS: dict[str, tuple[int, int, int, int]] = {
    'water': (0, 112, 255, 255),
    'forest': (38, 115, 0, 255),
    'field': (163, 255, 115, 255),
    'impervious': (156, 156, 156, 255),
}


def read_coarse_on_grid(
    coarse_path: str | os.PathLike[str], image_path: str | os.PathLike[str]
) -> np.ndarray:
    """Coarse codes reprojected (nearest) onto an image's grid.

    Args:
        coarse_path: coarse raster (any CRS and resolution).
        image_path: raster whose grid is the target.

    Returns:
        ``(H, W)`` coarse codes; outside the coarse raster: its nodata (or 0).
    """
    with rasterio.open(image_path) as img, rasterio.open(coarse_path) as src:
        nodata = src.nodata if src.nodata is not None else 0
        with WarpedVRT(
            src,
            crs=img.crs,
            transform=img.transform,
            width=img.width,
            height=img.height,
            resampling=Resampling.nearest,
            nodata=nodata,
        ) as vrt:
            return vrt.read(1)


def predict_landcover(
    task: LabelSuperResolutionTask,
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    coarse_path: str | os.PathLike[str] | None = None,
    window: int = 512,
    halo: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict a land-cover map with uncertainty and write it as a COG.

    Args:
        task: trained model.
        image_path: imagery raster (raw digital numbers, as in training).
        out_path: output COG.
        coarse_path: optional coarse labels, combined with the network
            (:func:`~geosparse.trainers.combine_with_prior`).
        window: window size in pixels.
        halo: context kept around each window's centre and discarded.
        progress: show a progress bar.

    Returns:
        ``{"path", "classes", "probs"}`` with the ``(L, H, W)`` probabilities.
    """
    task.eval()
    with rasterio.open(image_path) as src:
        image = src.read()
        crs, transform = src.crs, src.transform
        img_nodata = src.nodata
    if image.shape[0] != task.hparams['in_channels']:
        raise ValueError(
            f'{image_path}: {image.shape[0]} bands, but the model was trained on '
            f'{task.hparams["in_channels"]}.'
        )
    coarse = (
        None if coarse_path is None else read_coarse_on_grid(coarse_path, image_path)
    )
    _, h, w = image.shape
    n_cls = task.table.num_fine
    probs = np.zeros((n_cls, h, w), dtype=np.float32)
    step = max(window - 2 * halo, 1)
    rows, cols = cover_offsets(h, window, step), cover_offsets(w, window, step)
    jobs = [(int(r), int(c)) for r in rows for c in cols]
    for r, c in tqdm(jobs, desc='predict', disable=not progress, unit='window'):
        r1, c1 = min(r + window, h), min(c + window, w)
        batch: dict[str, torch.Tensor] = {
            'image': torch.from_numpy(image[None, :, r:r1, c:c1].astype(np.float32))
        }
        if coarse is not None:
            batch['coarse'] = torch.from_numpy(
                coarse[None, r:r1, c:c1].astype(np.int64)
            )
        with torch.no_grad():
            p = task.predict_probs(batch)[0].numpy()
        # Keep the centre: drop the halo except at the raster's edges.
        top = 0 if r == 0 else halo
        left = 0 if c == 0 else halo
        bottom = r1 - r if r1 == h else r1 - r - halo
        right = c1 - c if c1 == w else c1 - c - halo
        probs[:, r + top : r + bottom, c + left : c + right] = p[
            :, top:bottom, left:right
        ]
    classes = probs.argmax(0).astype(np.uint8)
    unc = normalised_entropy(torch.from_numpy(probs)[None])[0].numpy()
    unc8 = np.round(np.clip(unc, 0, 1) * 254).astype(np.uint8)
    if img_nodata is not None:
        invalid = (image == img_nodata).all(0)
        classes[invalid] = 255
        unc8[invalid] = 255
    names = list(task.table.fine_names)
    colormap = {
        i: CLASS_COLORS.get(n, (128, 128, 128, 255)) for i, n in enumerate(names)
    }
    write_cog(
        out_path,
        np.stack([classes, unc8]),
        crs,
        transform,
        nodata=255,
        descriptions=['class', 'uncertainty'],
        colormap=colormap,
        tags={'task': type(task).__name__, 'class_names': json.dumps(names)},
        band_tags=[
            {'class_names': json.dumps(names)},
            {'definition': 'normalised entropy of the class probabilities, 0..1'},
        ],
        scales=[1.0, 1 / 254],
        categorical=True,
    )
    return {'path': Path(out_path), 'classes': classes, 'probs': probs}
