"""Helpers shared by the demo, the benchmarks and the tests."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from torchmetrics import MetricCollection

from ..compat import window_bounds

__all__ = ['FiniteTraining', 'brief_trainer', 'log_epoch_metrics']


class FiniteTraining(LightningModule):
    """Task mixin: training stops at NaN or infinite imagery or loss, with the reason.

    Without it a NaN pixel makes the loss NaN, the weights NaN, and training ends
    "successfully" with a useless model. Put it before the task's base class.
    """

    def _imagery(self) -> str:
        """The training imagery, as the data module names it (or a generic phrase)."""
        trainer = getattr(self, '_trainer', None)
        dm = getattr(trainer, 'datamodule', None) if trainer is not None else None
        hp = getattr(dm, 'hparams', {}) or {}
        paths = hp.get('image_paths')
        if paths is None:
            return 'the training imagery'
        return (
            ', '.join(map(str, paths))
            if isinstance(paths, list | tuple)
            else str(paths)
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Refuse a batch whose imagery holds NaN or infinite values.

        Raises:
            ValueError: naming the imagery, the window and the fix.
        """
        image = batch.get('image') if isinstance(batch, dict) else None
        if not isinstance(image, Tensor) or not image.is_floating_point():
            return
        ok = torch.isfinite(image).flatten(1).all(1)
        if bool(ok.all()):
            return
        i = int((~ok).nonzero()[0, 0])
        where = ''
        if 'bounds' in batch:
            xmin, ymin, xmax, ymax = window_bounds(batch['bounds'][i])
            where = f' (window x {xmin:.1f}..{xmax:.1f}, y {ymin:.1f}..{ymax:.1f})'
        raise ValueError(
            f'{self._imagery()}: a training window{where} holds NaN or infinite '
            "pixels; fill them or set them to the rasters' nodata value (e.g. with "
            'gdal_calc.py or rio calc) before training.'
        )

    def on_before_backward(self, loss: Tensor) -> None:
        """Stop at a non-finite loss instead of training on into NaN weights.

        Raises:
            FloatingPointError: naming the step and the imagery.
        """
        if not bool(torch.isfinite(loss.detach()).all()):
            raise FloatingPointError(
                f'{self._imagery()}: train_loss is {float(loss.detach())} at step '
                f'{self.global_step}; check the imagery and labels for extreme values, '
                'or lower the learning rate (lr).'
            )


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
