r"""Task mixin: remember the radiometry of the training imagery.

A model trained on one acquisition meets another one at prediction: a different
sensor, sun, season or colour balancing changes every band's values while the land
cover stays. During training the mixin counts a histogram of every band of the
imagery the network sees (after the data module's augmentation), with ``BINS`` bins
from 0 to the task's ``input_scale`` (values outside go to the end bins). The
checkpoint keeps it. With ``radiometry='match'`` (or ``auto``, the default, for a
raster whose bands lie far from these distributions) the predictor
(:class:`~geosparse.inference.Predictor`) then maps each raster's bands onto them
before the network sees them, by histogram matching
(:class:`~geosparse.datasets.RadiometricShift`): for band :math:`b` with
distribution :math:`F_b` on the raster and :math:`R_b` in training,
:math:`x \mapsto R_b^{-1}(F_b(x))`.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

__all__ = ['RadiometryReference']

#: Histogram bins per band.
BINS = 1024


class RadiometryReference(LightningModule):
    """Count each band's raw values in training; give them back as quantiles.

    Call :meth:`init_radiometry` once the band count is known. Put this class
    before the task's base class.

    .. versionadded:: 0.1
    """

    radiometry_counts: Tensor
    radiometry_scale: float = 255.0

    def init_radiometry(self, bands: int, scale: float) -> None:
        """Register the ``(bands, BINS)`` histogram buffer (saved in checkpoints)."""
        self.radiometry_scale = float(scale)
        self.register_buffer(
            'radiometry_counts', torch.zeros(bands, BINS, dtype=torch.float64)
        )

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
        """Count the imagery of a training batch, as the network sees it.

        That is after the data module's augmentation: with
        :class:`~geosparse.transforms.RandomRadiometry` the reference is the
        (wider) distribution the network was trained on.
        """
        image = batch.get('image') if isinstance(batch, dict) else None
        counts = getattr(self, 'radiometry_counts', None)
        if (
            isinstance(image, Tensor)
            and counts is not None
            and image.shape[1] == counts.shape[0]
        ):
            x = image.detach().to(counts.device, torch.float64).transpose(0, 1)
            x = x.reshape(x.shape[0], -1)
            finite = torch.isfinite(x)
            idx = (x / self.radiometry_scale * (BINS - 1)).round().clamp(0, BINS - 1)
            for b in range(x.shape[0]):
                counts[b] += torch.bincount(
                    idx[b][finite[b]].long(), minlength=BINS
                ).to(counts.dtype)
        # NaN pixels (nodata) were left out above; FiniteTraining then zeroes them.
        return super().on_train_batch_start(batch, batch_idx)

    def reference_quantiles(self, quantiles: int = 101) -> np.ndarray | None:
        """``(bands, quantiles)`` raw values at evenly spaced quantiles, or None.

        None before training (or for a checkpoint made before this was counted).
        """
        counts = getattr(self, 'radiometry_counts', None)
        if counts is None or float(counts.sum()) == 0:
            return None
        values = np.arange(BINS) / (BINS - 1) * self.radiometry_scale
        q = np.linspace(0.0, 1.0, quantiles)
        out = []
        for row in counts.cpu().numpy():
            cdf = np.cumsum(row) / row.sum()
            keep = row > 0  # strictly increasing cdf
            out.append(np.interp(q, cdf[keep], values[keep]))
        return np.stack(out)

    def reference_resolution(self) -> float:
        """Width of one histogram bin: the finest spread the reference can resolve."""
        return self.radiometry_scale / (BINS - 1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Accept checkpoints made before the histogram existed (no reference)."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get('state_dict', {})
        counts = getattr(self, 'radiometry_counts', None)
        if counts is not None and 'radiometry_counts' not in state:
            state['radiometry_counts'] = torch.zeros_like(counts)
