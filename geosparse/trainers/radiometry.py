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

Matching a raster onto the training histogram also forces the training imagery's
land-cover composition on it, which is another raster's only by chance (and, with
balanced sampling, the training windows' composition is not even the training
tiles'). So a task may count the histograms per stratum :math:`z` as well (the
coarse class of each pixel, for label super-resolution: :math:`H_{z,b}`), and the
predictor then matches onto their mixture in the raster's own composition
:math:`\pi_z` (the share of its coarse labels in class :math:`z`),

.. math:: R_b = \sum_z \pi_z \frac{H_{z,b}}{\sum H_{z,b}},

over the strata the task saw (:math:`\pi` renormalised over them): the
training imagery's radiometry as it would look with the raster's land cover, so
that the map corrects the acquisition and not the land cover (our addition).

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

    def init_radiometry(self, bands: int, scale: float, strata: int = 0) -> None:
        """Register the histogram buffers (saved in checkpoints).

        Args:
            bands: image bands.
            scale: raw value of the last bin.
            strata: with ``strata > 0``, also count ``(strata, bands, BINS)``
                histograms per stratum of :meth:`radiometry_strata`.
        """
        self.radiometry_scale = float(scale)
        self.register_buffer(
            'radiometry_counts', torch.zeros(bands, BINS, dtype=torch.float64)
        )
        if strata > 0:
            self.register_buffer(
                'radiometry_strata_counts',
                torch.zeros(strata, bands, BINS, dtype=torch.float64),
            )

    def radiometry_strata(self, batch: dict[str, Any]) -> Tensor | None:
        """``(B, H, W)`` stratum of each pixel of a training batch (-1: none).

        None (the default): the histograms are not counted per stratum.
        """
        return None

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
            self._count_strata(batch, idx.long(), finite)
        # NaN pixels (nodata) were left out above; FiniteTraining then zeroes them.
        return super().on_train_batch_start(batch, batch_idx)

    def _count_strata(self, batch: dict[str, Any], idx: Tensor, finite: Tensor) -> None:
        """Add a batch's pixels to the per-stratum histograms (bins ``idx``)."""
        per = getattr(self, 'radiometry_strata_counts', None)
        if per is None:
            return
        strata = self.radiometry_strata(batch)
        if strata is None:
            return
        image = batch['image']
        if tuple(strata.shape) != (image.shape[0], *image.shape[2:]):
            raise ValueError(
                f'radiometry_strata gave shape {tuple(strata.shape)} for images of '
                f'shape {tuple(image.shape)}; it must be (batch, height, width).'
            )
        s = strata.to(per.device).reshape(-1).long()
        n = per.shape[0]
        for b in range(idx.shape[0]):
            keep = finite[b] & (s >= 0) & (s < n)
            key = s[keep] * BINS + idx[b][keep]
            per[:, b] += (
                torch.bincount(key, minlength=n * BINS).to(per.dtype).view(n, BINS)
            )

    def reference_quantiles(
        self, quantiles: int = 101, composition: np.ndarray | None = None
    ) -> np.ndarray | None:
        r"""``(bands, quantiles)`` raw values at evenly spaced quantiles, or None.

        None before training (or for a checkpoint made before this was counted).

        Args:
            quantiles: number of quantiles, from 0 to 1.
            composition: ``(strata,)`` shares :math:`\pi_z` of the imagery to
                match: the reference is then the mixture of the per-stratum
                histograms in these shares (the module doc), over the strata
                counted in training; without per-stratum histograms, or if
                none of the strata with a share was counted, the pooled one.
        """
        counts = getattr(self, 'radiometry_counts', None)
        if counts is None or float(counts.sum()) == 0:
            return None
        hist = counts.cpu().numpy()
        mixed = self.radiometry_mixture(composition)
        if mixed is not None:
            hist = mixed
        values = np.arange(BINS) / (BINS - 1) * self.radiometry_scale
        q = np.linspace(0.0, 1.0, quantiles)
        out = []
        for row in hist:
            cdf = np.cumsum(row) / row.sum()
            keep = row > 0  # strictly increasing cdf
            out.append(np.interp(q, cdf[keep], values[keep]))
        return np.stack(out)

    def radiometry_mixture(self, composition: np.ndarray | None) -> np.ndarray | None:
        """``(bands, BINS)`` per-stratum histograms mixed in ``composition``, or None.

        None without a composition, without per-stratum histograms, or where no
        stratum with a share was counted.
        """
        per = getattr(self, 'radiometry_strata_counts', None)
        if composition is None or per is None:
            return None
        w = np.asarray(composition, dtype=np.float64).reshape(-1)
        if w.size != per.shape[0]:
            raise ValueError(
                f'composition has {w.size} shares; the task counted '
                f'{per.shape[0]} strata.'
            )
        h = per.cpu().numpy()
        totals = h.sum(axis=2)  # (strata, bands)
        seen = (totals > 0).all(axis=1) & (w > 0) & np.isfinite(w)
        if not seen.any():
            return None
        norm = h[seen] / totals[seen][:, :, None]
        return np.einsum('s,sbk->bk', w[seen] / w[seen].sum(), norm)

    def reference_resolution(self) -> float:
        """Width of one histogram bin: the finest spread the reference can resolve."""
        return self.radiometry_scale / (BINS - 1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Accept checkpoints made before the histogram existed (no reference)."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get('state_dict', {})
        for name in ('radiometry_counts', 'radiometry_strata_counts'):
            buf = getattr(self, name, None)
            if buf is not None and name not in state:
                state[name] = torch.zeros_like(buf)
