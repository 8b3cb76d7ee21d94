"""Helpers shared by the demo, the benchmarks and the tests."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from torchmetrics import MetricCollection

__all__ = ['brief_trainer', 'log_epoch_metrics']


def brief_trainer(
    max_steps: int, progress: bool = False, val_batches: int | float = 0, **kwargs: Any
) -> Trainer:
    """A CPU Trainer for a fixed number of steps, without logger or checkpoints.

    Args:
        max_steps: optimiser steps (one epoch at most).
        progress: show the progress bar.
        val_batches: validation batches per epoch (0: no validation).
        **kwargs: further :class:`~lightning.pytorch.Trainer` arguments.

    Returns:
        The trainer.
    """
    options: dict[str, Any] = dict(
        accelerator='cpu',
        max_steps=max_steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        limit_val_batches=val_batches,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return Trainer(**options)


def log_epoch_metrics(module: LightningModule, metrics: MetricCollection) -> None:
    """Log an epoch's metrics as floats and reset them; nothing if none were updated."""
    try:
        values = metrics.compute()
    except (ValueError, RuntimeError):  # nothing was updated
        metrics.reset()
        return
    module.log_dict({k: float(v) for k, v in values.items()})
    metrics.reset()
