"""Shared pieces of the Neural Point Process benchmarks (not a public module).

Training fits :class:`~geosparse.trainers.NPPTask` with Lightning
(:func:`~geosparse.trainers.brief_trainer`: no logger, checkpoints or progress bar),
so that many small runs fit in minutes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from lightning.pytorch import seed_everything
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

from geosparse.kernels import RBFKernel
from geosparse.losses import NPPLoss
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


def fit_static_kernel(
    resid: list[tuple[Tensor, Tensor]],
    lengthscales: Iterable[float],
    noise_fractions: Iterable[float] = (0.01, 0.1, 0.3),
    family: str = 'rbf',
) -> tuple[float, float, float]:
    r"""Static RBF parameters :math:`(\ell, s^2, \sigma_0^2)` that maximise the GP likelihood of residuals.

    A grid search over ``lengthscales`` and noise fractions of the total variance
    :math:`v` (the mean squared residual): :math:`s^2 = (1 - f) v`,
    :math:`\sigma_0^2 = f v`; the likelihood is summed over images.

    Args:
        resid: per image, ``(P, 2)`` point coordinates and ``(P,)`` residuals of a
            network on validation data.
        lengthscales: candidate :math:`\ell` in pixels.
        noise_fractions: candidate :math:`f`.
        family: kernel family (:func:`geosparse.kernels.stationary`).

    Returns:
        The best :math:`(\ell, s^2, \sigma_0^2)`.
    """
    total = torch.cat([r for _, r in resid]).double()
    v = float(total.square().mean())
    # One padded batch; NPPLoss gives the mean negative log-likelihood per point.
    n = max(len(r) for _, r in resid)
    coords = torch.zeros(len(resid), n, 2, dtype=torch.float64)
    target = torch.zeros(len(resid), n, dtype=torch.float64)
    valid = torch.zeros(len(resid), n, dtype=torch.bool)
    for i, (pts, r) in enumerate(resid):
        coords[i, : len(r)], target[i, : len(r)], valid[i, : len(r)] = pts, r, True
    best = (math.inf, (1.0, v, 0.1 * v))
    with torch.no_grad():
        for ell in lengthscales:
            for f in noise_fractions:
                s2, n2 = (1 - f) * v, f * v
                loss = NPPLoss(
                    RBFKernel(ell, s2, learnable=False), n2, learn_noise=False
                )
                nll = float(loss(torch.zeros_like(target), target, coords, valid))
                if nll < best[0]:
                    best = (nll, (float(ell), s2, n2))
    return best[1]


def make_task(**kwargs: Any) -> NPPTask:
    """An :class:`NPPTask` with the benchmarks' defaults.

    No pretrained weights, and a constant learning rate: without validation the
    plateau scheduler watches the training loss, with a patience it never reaches.
    """
    task = NPPTask(weights=None, **{'patience': 10**9, **kwargs})
    task.monitor = 'train_loss'
    return task
