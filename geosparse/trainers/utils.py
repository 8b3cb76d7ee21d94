"""Helpers shared by the demo, the benchmarks and the tests."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torchmetrics import MetricCollection

from ..compat import window_bounds
from ..console import progress as progress_bar

__all__ = [
    'FiniteTraining',
    'StepProgress',
    'brief_trainer',
    'datamodule_hparams',
    'log_epoch_metrics',
]


def datamodule_hparams(module: LightningModule) -> Mapping[str, Any]:
    """The hyperparameters of the data module attached to ``module``'s trainer.

    Empty when the module has no trainer, the trainer no data module, or the data
    module no hyperparameters (safe before and outside ``fit``).

    .. versionadded:: 0.1
    """
    trainer = getattr(module, '_trainer', None)
    hparams = getattr(getattr(trainer, 'datamodule', None), 'hparams', None)
    return hparams if isinstance(hparams, Mapping) else {}


class FiniteTraining(LightningModule):
    """Task mixin: NaN or infinite training pixels are nodata; a NaN loss stops training.

    Without it one NaN pixel makes the loss NaN, then the weights, and training ends
    "successfully" with a useless model. Non-finite pixels (declared nodata comes as
    NaN, :class:`~geosparse.datasets.ImageryDataset`) are set to 0 for the network
    and their labels are excluded from the loss (:meth:`exclude_pixels`), so a window
    without any finite pixel contributes no label; a batch of such windows only, or
    a task that cannot exclude labels, stops training with a message naming the
    imagery. Put this class before the task's base class.

    .. versionadded:: 0.1
    """

    _warned_non_finite = False

    def _imagery(self) -> str:
        """The training imagery, as the data module names it (or a generic phrase)."""
        paths = datamodule_hparams(self).get('image_paths')
        if paths is None:
            return 'the training imagery'
        return (
            ', '.join(map(str, paths))
            if isinstance(paths, list | tuple)
            else str(paths)
        )

    def exclude_pixels(self, batch: dict[str, Any], bad: Tensor) -> bool:
        """Remove the labels at ``bad`` ``(B, H, W)`` pixels from the loss.

        The default handles point labels (``points`` in pixels, ``valid``): points
        on a bad pixel become invalid. Tasks with label rasters override it.

        Returns:
            False if the batch holds labels this method cannot exclude.
        """
        if 'points' not in batch or 'valid' not in batch:
            return False
        points, h, w = batch['points'], bad.shape[-2], bad.shape[-1]
        rows = points[..., 0].long().clamp(0, h - 1)
        cols = points[..., 1].long().clamp(0, w - 1)
        index = torch.arange(len(bad), device=bad.device)[:, None]
        batch['valid'] = batch['valid'] & ~bad[index, rows, cols]
        return True

    def _window(self, batch: dict[str, Any], i: int) -> str:
        if 'bounds' not in batch:
            return ''
        xmin, ymin, xmax, ymax = window_bounds(batch['bounds'][i])
        return f' (x {xmin:.1f}..{xmax:.1f}, y {ymin:.1f}..{ymax:.1f})'

    def on_validation_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """As :meth:`on_train_batch_start`: nodata pixels are left out of the scores."""
        self._leave_out_non_finite(batch, batch_idx)

    def on_test_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """As :meth:`on_train_batch_start`: nodata pixels are left out of the scores."""
        self._leave_out_non_finite(batch, batch_idx)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Make NaN and infinite pixels nodata before the step.

        Raises:
            ValueError: naming the imagery, the window and the fix, if every window
                of the batch has no finite pixel or the task cannot exclude the
                labels.
        """
        self._leave_out_non_finite(batch, batch_idx)

    def _leave_out_non_finite(self, batch: Any, batch_idx: int) -> None:
        """Zero the non-finite pixels of ``batch`` and exclude their labels (in place)."""
        image = batch.get('image') if isinstance(batch, dict) else None
        if not isinstance(image, Tensor) or not image.is_floating_point():
            return
        finite = torch.isfinite(image).all(1)
        if bool(finite.all()):
            return
        empty = ~finite.flatten(1).any(1)
        bad = ~finite
        if bool(empty.all()) or not self.exclude_pixels(batch, bad):
            i = int(
                (empty if bool(empty.all()) else bad.flatten(1).any(1)).nonzero()[0, 0]
            )
            what = (
                'has no finite pixel'
                if bool(empty.all())
                else 'holds NaN or infinite pixels'
            )
            raise ValueError(
                f'{self._imagery()}: a training window{self._window(batch, i)} {what}'
                f'{" (as every window of the batch)" if bool(empty.all()) else ""}; '
                'train on the area with data, or fill the pixels (e.g. with '
                'gdal_calc.py or rio calc) before training.'
            )
        batch['image'] = torch.where(finite[:, None], image, torch.zeros_like(image))
        if not self._warned_non_finite:
            self._warned_non_finite = True
            warnings.warn(
                f'{self._imagery()}: nodata, NaN or infinite training pixels (e.g. '
                f'{int(bad.sum())} in batch {batch_idx}) are left out: set to 0 for '
                'the network and their labels out of the loss.',
                stacklevel=2,
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


class StepProgress(Callback):
    """One progress bar over all training steps, on stderr, with the latest loss.

    Unlike Lightning's bar (one per epoch, on stdout), it keeps stdout for results,
    and written to a file or pipe it updates once per
    :data:`~geosparse.console.LOG_INTERVAL` seconds at most.

    Args:
        desc: the bar's label.
    """

    def __init__(self, desc: str = 'train') -> None:
        super().__init__()
        self.desc = desc
        self._bar: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open the bar (total: ``max_steps``, else the epochs' batches if known)."""
        total: int | None = trainer.max_steps if trainer.max_steps > 0 else None
        if total is None:
            batches = trainer.num_training_batches
            if isinstance(batches, int) and trainer.max_epochs:
                total = batches * trainer.max_epochs
        self._bar = progress_bar(
            desc=self.desc, unit='step', total=total, initial=trainer.global_step
        )

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Advance by one step, showing the training loss."""
        if self._bar is None:
            return
        loss = outputs.get('loss') if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and loss.numel() == 1:
            self._bar.set_postfix(loss=f'{float(loss.detach()):.4g}', refresh=False)
        self._bar.update(trainer.global_step - self._bar.n)
        if self._bar.total is not None and self._bar.n >= self._bar.total:
            self._close()  # before Lightning says why training stopped

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the bar."""
        self._close()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Close the bar before the error is reported."""
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def brief_trainer(
    max_steps: int, progress: bool = False, val_batches: int | float = 0, **kwargs: Any
) -> Trainer:
    """A CPU Trainer for a fixed number of steps, without logger or checkpoints.

    .. versionadded:: 0.1

    Args:
        max_steps: optimiser steps (one epoch at most).
        progress: show one progress bar of the steps on stderr
            (:class:`StepProgress`; Lightning's own bar stays off).
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
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=val_batches,
        num_sanity_val_steps=0,
    )
    if progress:
        options['callbacks'] = [*kwargs.pop('callbacks', []), StepProgress()]
    options.update(kwargs)
    return Trainer(**options)


def log_epoch_metrics(module: LightningModule, metrics: MetricCollection) -> None:
    """Log an epoch's metrics as floats and reset them; nothing if none were updated.

    .. versionadded:: 0.1
    """
    try:
        values = metrics.compute()
    except (ValueError, RuntimeError):  # nothing was updated
        metrics.reset()
        return
    module.log_dict({k: float(v) for k, v in values.items()})
    metrics.reset()
