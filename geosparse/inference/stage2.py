"""Stage 2 of instances from points, from Python: train on pseudo masks, predict.

:func:`train_stage2` fits :class:`~geosparse.trainers.MaskRCNNTask` on imagery and
its pseudo masks (:class:`~geosparse.datamodules.PseudoMaskDataModule`) for a fixed
number of steps, as ``torchgeo fit --config examples/configs/instances_stage2.yaml``
does; :func:`predict_stage2` gives the instance map of a new raster
(:func:`~geosparse.inference.instances.detect_instances`, block by block), with no
points. Benchmarks call them to score stage 2 on scenes it was not trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lightning
import numpy as np
import rasterio
from rasterio.windows import Window

from ..datamodules.pseudo import PseudoMaskDataModule
from ..trainers.maskrcnn import MaskRCNNTask
from ..trainers.utils import brief_trainer
from .instances import detect_instances, paint_objects

__all__ = ['predict_stage2', 'train_stage2']


def train_stage2(
    image_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    masks_path: str | os.PathLike[str],
    steps: int = 100,
    patch_size: int = 128,
    batch_size: int = 4,
    seed: int = 0,
    max_uncertainty: float | None = None,
    progress: bool = False,
    **task_args: Any,
) -> MaskRCNNTask:
    """Train a stage-2 Mask R-CNN on imagery and its pseudo masks.

    .. versionadded:: 0.1

    Args:
        image_path: imagery raster(s).
        masks_path: pseudo masks (the instance COG of ``geosparse predict
            --points``), an instance raster, or polygons.
        steps: optimiser steps (``steps * batch_size`` random windows).
        patch_size: window side in pixels.
        batch_size: windows per step.
        seed: seeds the weights, the windows and the flips.
        max_uncertainty: see :class:`~geosparse.datamodules.PseudoMaskDataModule`.
        progress: show a progress bar of the steps.
        **task_args: :class:`~geosparse.trainers.MaskRCNNTask` arguments; default
            the example config's (``resnet18``, ``fpn_channels=64``,
            ``roi_samples=128``, ``lr=3e-4``), ``in_channels`` the imagery's bands.

    Returns:
        The trained task, in evaluation mode.
    """
    paths = (
        [str(image_path)]
        if isinstance(image_path, str | os.PathLike)
        else [str(p) for p in image_path]
    )
    with rasterio.open(paths[0]) as src:
        bands = src.count
    args: dict[str, Any] = {
        'backbone': 'resnet18',
        'in_channels': bands,
        'fpn_channels': 64,
        'roi_samples': 128,
        'lr': 3e-4,
        **task_args,
    }
    lightning.seed_everything(seed, verbose=False)
    task = MaskRCNNTask(**args)
    data = PseudoMaskDataModule(
        paths,
        str(masks_path),
        max_uncertainty=max_uncertainty,
        patch_size=patch_size,
        batch_size=batch_size,
        length=steps * batch_size,
        seed=seed,
    )
    brief_trainer(steps, progress=progress).fit(task, datamodule=data)
    return task.eval()


def predict_stage2(
    task: MaskRCNNTask,
    image_path: str | os.PathLike[str],
    block: int = 512,
    halo: int = 64,
    score_threshold: float | None = None,
) -> np.ndarray:
    """The ``(H, W)`` instance-id map (uint32, 0 background) of a raster.

    .. versionadded:: 0.1

    Args:
        task: a trained stage-2 task.
        image_path: imagery raster (bands as in training).
        block: block size in pixels.
        halo: context around each block (at least an object's diameter).
        score_threshold: lowest detection score kept (default: the task's).
    """
    objects = detect_instances(task, image_path, block, halo, score_threshold)
    h, w = objects.shape
    inst, _, _ = paint_objects(objects, Window(0, 0, w, h))
    return inst.astype(np.uint32)
