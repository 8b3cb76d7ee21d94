"""Shared pieces of the Neural Point Process benchmarks (not a public module).

Training fits :class:`~geosparse.trainers.NPPTask` with Lightning
(:func:`~geosparse.trainers.brief_trainer`: no logger, checkpoints or progress bar),
so that many small runs fit in minutes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

from geosparse.trainers import NPPTask, brief_trainer


def scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MSE, MAE and R² (global, :math:`1 - SS_{res} / SS_{tot}`), by torchmetrics."""
    p = torch.from_numpy(np.asarray(pred, dtype=np.float64).ravel())
    y = torch.from_numpy(np.asarray(true, dtype=np.float64).ravel())
    if p.shape != y.shape or p.numel() == 0:
        raise ValueError(
            f'need matching non-empty arrays, got {tuple(p.shape)}, {tuple(y.shape)}'
        )
    constant = bool((y == y[0]).all())  # R² undefined (also for one value)
    return {
        'mse': float(mean_squared_error(p, y)),
        'mae': float(mean_absolute_error(p, y)),
        'r2': math.nan if constant else float(r2_score(p, y)),
    }


def train(
    task: NPPTask,
    loader: DataLoader[dict[str, Any]],
    epochs: int = 1,
    seed: int = 0,
) -> None:
    """Fit ``task`` through Lightning for ``epochs`` passes of ``loader``.

    Batches hold ``image``, ``points``, ``values`` ``(B, N, 1)`` and ``valid``
    (:func:`~geosparse.datasets.collate_points`); :meth:`NPPTask.training_step`
    skips batches without a valid point.
    """
    seed_everything(seed, workers=True, verbose=False)
    trainer = brief_trainer(epochs * len(loader), max_epochs=epochs)
    trainer.fit(task, train_dataloaders=loader)
    task.eval()


def make_task(**kwargs: Any) -> NPPTask:
    """An :class:`NPPTask` with the benchmarks' defaults.

    No pretrained weights, and a constant learning rate: without validation the
    plateau scheduler watches the training loss, with a patience it never reaches.
    """
    task = NPPTask(weights=None, **{'patience': 10**9, **kwargs})
    task.monitor = 'train_loss'
    return task
