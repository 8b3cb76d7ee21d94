"""The built-in demo: synthetic scene -> brief LSR training -> land-cover COG + PNG."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from lightning.pytorch import seed_everything

from .datamodules import LabelSuperResolutionDataModule
from .datasets.synthetic import make_scene
from .inference import Predictor
from .inference.predict import CLASS_COLORS, predict_raster, read_coarse_on_grid
from .io.raster import atomic_path
from .metrics import LandCoverMetrics, scores_from_confusion
from .plot import plot_landcover
from .stac import output_item, write_item
from .trainers import LabelSuperResolutionTask, brief_trainer

__all__ = ['run_demo']


def run_demo(
    out_dir: str | os.PathLike[str] = 'geosparse-demo',
    size: int = 512,
    steps: int = 60,
    seed: int = 0,
    batch_size: int = 8,
    patch_size: int = 128,
    progress: bool = True,
) -> dict[str, Any]:
    """Build a synthetic scene, train label super-resolution briefly, map it.

    The scene has NAIP-like imagery in UTM 18N and NLCD-like labels at 30 m in
    EPSG:5070; blocks are the NLCD pixels themselves. The coarse labels train the
    network; the map is predicted from the imagery by the network alone (the task's
    default, ``prior_weight=0``) and written as a COG (class and uncertainty bands)
    with a PNG quicklook.

    .. versionadded:: 0.1

    Args:
        out_dir: output folder.
        size: scene side in 1 m pixels.
        steps: optimiser steps.
        seed: seed of the scene and the training.
        batch_size: windows per step.
        patch_size: window side in pixels.
        progress: show progress bars.

    Returns:
        Paths of the outputs and the accuracy against the synthetic truth.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    scene = make_scene(out / 'scene', size=size, seed=seed)
    seed_everything(seed, verbose=False)
    dm = LabelSuperResolutionDataModule(
        image_paths=str(scene.image),
        coarse_paths=str(scene.coarse),
        patch_size=patch_size,
        batch_size=batch_size,
        length=steps * batch_size,
        val_fraction=0.0,
        seed=seed,
    )
    # The task's defaults (a per-pixel model on the raw bands, the network alone at
    # prediction); 60 steps is a short schedule, so a larger learning rate.
    task = LabelSuperResolutionTask(loss='lsr', lr=1e-2)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', '.*does not have many workers.*')
        warnings.filterwarnings('ignore', '.*GPU available.*')
        trainer = brief_trainer(steps, progress=progress)
        trainer.fit(task, datamodule=dm)
    ckpt = out / 'lsr.ckpt'
    with atomic_path(ckpt, suffix='.ckpt') as tmp:
        trainer.save_checkpoint(tmp, weights_only=True)
    # The map goes through the same path as `geosparse predict`: the checkpoint,
    # blocks with a halo streamed into a COG, and a STAC Item beside it.
    cog = out / 'landcover.tif'
    predict_raster(
        Predictor(checkpoint=ckpt),
        scene.image,
        cog,
        coarse_path=scene.coarse,
        progress=progress,
    )
    item = write_item(
        output_item(cog, source_paths=[str(scene.image)]), cog.with_suffix('.json')
    )
    with rasterio.open(cog) as src:
        classes = src.read(1)
        unc = src.read(2) * src.scales[1]
    with rasterio.open(scene.image) as src:
        image = src.read()
    with rasterio.open(scene.fine) as src:
        fine = src.read(1).astype(np.int64) - 1
    coarse = read_coarse_on_grid(scene.coarse, scene.image)
    metrics = LandCoverMetrics(task.table.num_fine, list(task.table.fine_names))
    metrics.update(torch.from_numpy(classes.astype(np.int64)), torch.from_numpy(fine))
    scores = scores_from_confusion(metrics.cm, list(task.table.fine_names))
    names = list(task.table.fine_names)
    fig = plot_landcover(
        image,
        classes,
        names,
        [CLASS_COLORS[n] for n in names],
        uncertainty=unc,
        coarse=coarse,
        truth=fine,
        title=f'geosparse demo: label super-resolution, accuracy {scores["acc"]:.2f}',
    )
    png = out / 'landcover.png'
    with atomic_path(png, suffix='.png') as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    return {
        'cog': cog,
        'png': png,
        'checkpoint': ckpt,
        'item': item,
        'scene': scene,
        'acc': scores['acc'],
        'miou': scores['miou'],
        'seconds': time.perf_counter() - start,
    }
