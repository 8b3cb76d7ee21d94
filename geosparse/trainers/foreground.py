r"""A foreground/background head trained on the same points as the instances.

The hand-crafted instance baselines (:func:`~geosparse.instances.voronoi_instances`,
:func:`~geosparse.instances.geodesic_instances`) divide a foreground mask between the
points; with one point per object and a few background points, that mask has to be
learnt from the same points. :class:`PointForegroundTask` is that head: the pixel
network of :class:`~geosparse.models.LearnableDistance` (the same U-Net, the same
per-window standardisation) with two output classes, background and object, trained
on batches of :class:`~geosparse.datamodules.PointInstanceDataModule` with

.. math::

   L = -\frac{1}{|P|} \sum_{p \in P} \log \mathrm{softmax}(z(p))_{y_p}
       + \beta\, L_\mathrm{pair}

the cross-entropy at the labelled points (:math:`y_p = 1` at an object's point,
0 at a background point) plus the same pairwise colour term as the learned distance
(:func:`~geosparse.losses.affinity_loss` on the two classes' logits as negative
distances, BoxInst's term: neighbours of similar colour take the same class), so
that the learnt distance and its baselines see the same supervision and the same
regulariser: they differ only in how they make instances of it.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..compat import BaseTask
from ..losses.instances import colour_similarity, foreground_loss
from ..models.distance import pixel_unet, run_padded, standardise
from .utils import FiniteTraining

__all__ = ['PointForegroundTask']


class PointForegroundTask(FiniteTraining, BaseTask):
    """Object/background segmentation from object and background points.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        in_channels: int = 3,
        backbone: str = 'resnet18',
        pairwise_weight: float = 1.0,
        pairwise_dilation: int = 2,
        pairwise_theta: float = 0.5,
        pairwise_threshold: float = 0.3,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        r"""Describe the head and its training.

        Args:
            in_channels: image bands.
            backbone: ResNet encoder of the U-Net (as the learned distance's).
            pairwise_weight: :math:`\beta`, weight of the pairwise term.
            pairwise_dilation: neighbour distance of the pairwise term, pixels.
            pairwise_theta: colour scale :math:`\theta` (standard deviations).
            pairwise_threshold: similarity above which neighbour pairs count.
            lr: AdamW learning rate.
            weight_decay: AdamW weight decay.
        """
        super().__init__()

    def configure_models(self) -> None:
        """The U-Net of the learned distance's pixel features, with two classes."""
        hp = self.hparams
        self.model = pixel_unet(hp['backbone'], hp['in_channels'], 2)

    def configure_optimizers(self) -> Any:
        """AdamW at a constant learning rate, as the learned distance."""
        return torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams['lr'],
            weight_decay=self.hparams['weight_decay'],
        )

    def forward(self, image: Tensor) -> Tensor:
        """``(B, 2, H, W)`` logits of a raw window (:func:`~geosparse.models.distance.run_padded`)."""
        return run_padded(self.model, image)

    def exclude_pixels(self, batch: dict[str, Any], bad: Tensor) -> bool:
        """Points on nodata pixels leave the loss; pairs there too."""
        batch['nodata'] = bad
        return super().exclude_pixels(batch, bad)

    def on_fit_start(self) -> None:
        """Refuse a data module without background points.

        Raises:
            ValueError: naming ``background_column``, if the data module has none
                (the cross-entropy would then only ever say "object").
        """
        dm = getattr(self.trainer, 'datamodule', None)
        hp = getattr(dm, 'hparams', None)
        if hp is not None and hp.get('background_column') is None:
            raise ValueError(
                'the foreground head needs background points as well as object '
                'points: give the data module a background_column (points outside '
                'every object).'
            )

    def compute_loss(self, batch: dict[str, Any], logits: Tensor) -> Tensor:
        """The loss of the module doc (:func:`~geosparse.losses.foreground_loss`)."""
        hp = self.hparams
        sim = colour_similarity(
            standardise(batch['image']), hp['pairwise_dilation'], hp['pairwise_theta']
        )
        nodata = batch.get('nodata')
        return foreground_loss(
            logits,
            batch['points'],
            batch['valid'],
            batch['values'][..., 2] > 0.5,
            sim,
            hp['pairwise_threshold'],
            None if nodata is None else ~nodata,
            hp['pairwise_weight'],
        )

    def training_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """One step of the loss of the module doc."""
        loss = self.compute_loss(batch, self(batch['image']))
        self.log('train_loss', loss, batch_size=batch['image'].shape[0])
        return loss

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Validation loss."""
        loss = self.compute_loss(batch, self(batch['image']))
        self.log('val_loss', loss, batch_size=batch['image'].shape[0])

    @torch.no_grad()
    def predict_foreground(self, image: Tensor | np.ndarray) -> np.ndarray:
        """``(H, W)`` bool objects of a raw ``(C, H, W)`` window (nodata: False)."""
        self.eval()
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(image), dtype=torch.float32, device=device)
        logits = self(x[None])[0]
        finite = torch.isfinite(x).all(0)
        return ((logits[1] > logits[0]) & finite).cpu().numpy()
