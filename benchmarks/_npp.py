"""Shared pieces of the Neural Point Process benchmarks (not a public module).

Training runs :class:`~geosparse.trainers.NPPTask` with its own loss and optimiser
(:meth:`NPPTask.compute_loss`, :meth:`NPPTask.configure_optimizers`) over batches held
in memory, without Lightning's logging, so that many small runs fit in minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geosparse.trainers import NPPTask

Batch = dict[str, Tensor]


def scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """MSE, MAE and R² (global, :math:`1 - SS_{res} / SS_{tot}` about the truth's mean)."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    if pred.shape != true.shape or pred.size == 0:
        raise ValueError(
            f'need matching non-empty arrays, got {pred.shape}, {true.shape}'
        )
    resid = true - pred
    ss_tot = float(np.square(true - true.mean()).sum())
    return {
        'mse': float(np.square(resid).mean()),
        'mae': float(np.abs(resid).mean()),
        'r2': 1.0 - float(np.square(resid).sum()) / ss_tot if ss_tot > 0 else math.nan,
    }


def train(
    task: NPPTask,
    batches: Callable[[np.random.Generator], Iterable[Batch]],
    epochs: int,
    seed: int = 0,
) -> float:
    """Train ``task`` for ``epochs`` passes of ``batches(rng)``; returns the last epoch's mean loss.

    Batches hold ``image``, ``points``, ``values`` ``(B, N, 1)`` and ``valid``; batches
    without a valid point are skipped (as :meth:`NPPTask.training_step` does).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    conf = task.configure_optimizers()
    opt: torch.optim.Optimizer = conf['optimizer']
    task.train()
    last = math.nan
    for _ in range(epochs):
        losses = []
        for batch in batches(rng):
            if not bool(batch['valid'].any()):
                continue
            loss = task.compute_loss(batch, task(batch['image']))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        last = float(np.mean(losses)) if losses else math.nan
    task.eval()
    return last


def make_task(**kwargs: Any) -> NPPTask:
    """An :class:`NPPTask` with the benchmarks' defaults (no pretrained weights)."""
    return NPPTask(weights=None, **kwargs)
