r"""Neural Point Processes as a TorchGeo task: pixel-wise regression from sparse points.

Shi et al., "Neural Point Processes for Pixel-wise Regression". The network maps an
image to a dense map :math:`m = f(x)`; it is trained only at labelled points, with
either the Gaussian-process likelihood of :obj:`~geosparse.gp.NPPLoss`
(``loss='npp'``) or plain MSE at the points (``loss='mse'``, the paper's baseline).
The kernel, the noise and the loss are the objects of :mod:`geosparse.gp`. At
prediction, :func:`~geosparse.gp.posterior_map` conditions the map on
revealed points and gives a standard deviation for every pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from ..compat import PixelwiseRegression
from ..gp import (
    ContextKernel,
    GaussianNoise,
    KernelFamily,
    KernelParams,
    MarginalLikelihood,
    StationaryKernel,
    posterior_map,
)
from ..io.spec import BandSpec, OutputSpec
from .heads import forward_padded, pad_multiple
from .utils import FiniteTraining, log_epoch_metrics

__all__ = ['NPPTask', 'point_values']


def point_values(out: Tensor, points: Tensor) -> Tensor:
    """Values of ``(B, 1, H, W)`` maps at ``(B, N, 2)`` (row, col) points: ``(B, N)``.

    .. versionadded:: 0.1
    """
    b, _, h, w = out.shape
    rows = points[..., 0].floor().long().clamp(0, h - 1)
    cols = points[..., 1].floor().long().clamp(0, w - 1)
    flat = out[:, 0].reshape(b, h * w)
    return flat.gather(1, rows * w + cols)


class NPPTask(FiniteTraining, PixelwiseRegression):
    """Pixel-wise regression trained at sparse points, with a GP likelihood.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        model: Literal['unet', 'deeplabv3+', 'fcn'] = 'unet',
        backbone: str = 'resnet18',
        weights: bool | None = None,
        in_channels: int = 4,
        num_filters: int = 64,
        loss: Literal['npp', 'mse'] = 'npp',
        kernel: Literal['static', 'learnable', 'context'] = 'learnable',
        kernel_family: KernelFamily = 'rbf',
        lengthscale: float = 3.0,
        variance: float = 1.0,
        noise: float = 0.1,
        learn_noise: bool = True,
        input_scale: float = 255.0,
        target_scale: float = 1.0,
        lr: float = 1e-3,
        kernel_lr: float = 1e-2,
        patience: int = 10,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
    ) -> None:
        r"""Initialise the task.

        Args:
            model: network (TorchGeo names); one output channel.
            backbone: encoder of ``unet``/``deeplabv3+``.
            weights: pretrained encoder weights; off by default (no downloads).
            in_channels: image bands.
            num_filters: width of the ``fcn`` model.
            loss: ``npp`` (GP negative log-likelihood) or ``mse`` (at the points).
            kernel: ``static`` (fixed :math:`\ell, s^2`), ``learnable`` or
                ``context`` (regressed from the image).
            kernel_family: ``rbf`` (the paper's) or a Matérn
                (:func:`~geosparse.gp.stationary`).
            lengthscale: :math:`\ell` in pixels (initial value unless static).
            variance: :math:`s^2` in squared target units (after ``target_scale``).
            noise: :math:`\sigma_0^2` (initial value when learnable).
            learn_noise: optimise :math:`\sigma_0^2`.
            input_scale: raw imagery is divided by this.
            target_scale: labels are divided by this for training (outputs are
                multiplied back).
            lr: learning rate of the network.
            kernel_lr: learning rate of the kernel and noise parameters (a handful
                of scalars that must follow the shrinking residuals of the network;
                at the network's rate they lag far behind). The context-aware
                kernel's head trains at ``lr`` except its output bias.
            patience: plateau patience of the scheduler.
            freeze_backbone: freeze the encoder.
            freeze_decoder: freeze the decoder.
        """
        super().__init__(
            model=model,
            backbone=backbone,
            weights=weights,
            in_channels=in_channels,
            num_outputs=1,
            num_filters=num_filters,
            loss=loss,
            lr=lr,
            patience=patience,
            freeze_backbone=freeze_backbone,
            freeze_decoder=freeze_decoder,
        )

    def configure_optimizers(self) -> Any:
        """AdamW with two groups (network at ``lr``, GP parameters at ``kernel_lr``).

        Returns:
            Optimizer and plateau scheduler, as in TorchGeo's tasks.
        """
        # Scalar GP parameters (RBF raw values, noise, the context head's output
        # bias) at kernel_lr; the context head's weights are a network: at lr.
        gp = [p for p in self.npp_loss.parameters() if p.ndim <= 1 and p.numel() <= 2]
        ids = {id(p) for p in gp}
        rest = [p for p in self.parameters() if id(p) not in ids]
        groups = [{'params': rest, 'lr': self.hparams['lr']}]
        if gp:
            groups.append({'params': gp, 'lr': self.hparams['kernel_lr']})
        optimizer = torch.optim.AdamW(groups)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, patience=self.hparams['patience']
        )
        return {
            'optimizer': optimizer,
            'lr_scheduler': {'scheduler': scheduler, 'monitor': self.monitor},
        }

    def configure_losses(self) -> None:
        """Build the kernel and the loss.

        Raises:
            ValueError: for an unknown loss or kernel.
        """
        hp = self.hparams
        if hp['loss'] not in ('npp', 'mse'):
            raise ValueError(f"loss={hp['loss']!r}: choose 'npp' or 'mse'.")
        kernel: nn.Module
        family = hp.get('kernel_family', 'rbf')  # older checkpoints: the RBF
        if hp['kernel'] == 'context':
            kernel = ContextKernel(
                hp['in_channels'], hp['lengthscale'], hp['variance'], family=family
            )
        elif hp['kernel'] in ('static', 'learnable'):
            kernel = StationaryKernel(
                hp['lengthscale'],
                hp['variance'],
                learnable=hp['kernel'] == 'learnable',
                family=family,
            )
        else:
            raise ValueError(
                f"kernel={hp['kernel']!r}: choose 'static', 'learnable' or 'context'."
            )
        noise = GaussianNoise(hp['noise'], learnable=hp['learn_noise'])
        self.npp_loss = MarginalLikelihood(kernel, noise)

    def configure_metrics(self) -> None:
        """MSE, MAE and R² over all points (and dense truth pixels) of an epoch."""
        metrics = MetricCollection(
            {'mse': MeanSquaredError(), 'mae': MeanAbsoluteError(), 'r2': R2Score()}
        )
        self.train_metrics = metrics.clone(prefix='train_')
        self.val_metrics = metrics.clone(prefix='val_')
        self.test_metrics = metrics.clone(prefix='test_')
        self.val_dense = metrics.clone(prefix='val_dense_')
        self.test_dense = metrics.clone(prefix='test_dense_')

    @property
    def kernel(self) -> nn.Module:
        """The GP kernel."""
        return self.npp_loss.kernel

    @property
    def kernel_family(self) -> str:
        """``rbf`` or a Matérn (:func:`~geosparse.gp.stationary`)."""
        return str(self.hparams.get('kernel_family', 'rbf'))

    def normalize(self, x: Tensor) -> Tensor:
        """:math:`x / s` with :math:`s` = ``input_scale``."""
        return x.float() / self.hparams['input_scale']

    def forward(self, x: Tensor) -> Tensor:
        """Mean map ``(B, 1, H, W)`` in target units from raw imagery."""
        return self.model(self.normalize(x)) * self.hparams['target_scale']

    def compute_loss(self, batch: dict[str, Any], out: Tensor) -> Tensor:
        """Loss at the batch's points (``points``, ``values``, ``valid``)."""
        scale = self.hparams['target_scale']
        pred = point_values(out, batch['points']) / scale
        target = batch['values'][..., 0] / scale
        valid = batch['valid']
        if self.hparams['loss'] == 'mse':
            n = valid.sum().clamp(min=1)
            return ((pred - target).square() * valid).sum() / n
        return self.npp_loss(
            pred, target, batch['points'], valid, context=self.normalize(batch['image'])
        )

    def _step(self, batch: dict[str, Any], prefix: str) -> Tensor | None:
        out = self(batch['image'])
        valid = batch['valid']
        if not bool(valid.any()):
            return None
        loss = self.compute_loss(batch, out)
        size = out.shape[0]
        self.log(f'{prefix}_loss', loss, batch_size=size)
        metrics = getattr(self, f'{prefix}_metrics')
        pred = point_values(out, batch['points'])[valid]
        metrics.update(pred.detach(), batch['values'][..., 0][valid])  # (preds, target)
        dense = getattr(self, f'{prefix}_dense', None)
        if dense is not None and 'mask' in batch:
            truth = batch['mask'].float().reshape(out.shape)
            ok = torch.isfinite(truth)
            dense.update(out.detach()[ok], truth[ok])
        return loss

    def training_step(  # type: ignore[override]  # Lightning skips a None loss
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor | None:
        """NPP or MSE loss at the labelled points of the batch."""
        return self._step(batch, 'train')

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Loss and metrics at the held-out points."""
        self._step(batch, 'val')

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loss and metrics at the test points."""
        self._step(batch, 'test')

    def _log_epoch(self, prefix: str) -> None:
        for name in (f'{prefix}_metrics', f'{prefix}_dense'):
            metrics = getattr(self, name, None)
            if metrics is not None:
                log_epoch_metrics(self, metrics)

    def on_train_epoch_end(self) -> None:
        """Log training metrics."""
        self._log_epoch('train')

    def on_validation_epoch_end(self) -> None:
        """Log validation metrics."""
        self._log_epoch('val')

    def on_test_epoch_end(self) -> None:
        """Log test metrics."""
        self._log_epoch('test')

    def kernel_params(self, image: Tensor) -> KernelParams:
        r"""The GP of one raw image ``(1, C, H, W)``: :math:`\ell` in pixels, :math:`s^2, \sigma_0^2` in target units."""
        with torch.no_grad():
            ell, var = self.kernel.params(self.normalize(image), image.shape[0])  # type: ignore[operator]
            noise = float(self.npp_loss.noise.variance)
        scale2 = self.hparams['target_scale'] ** 2
        return KernelParams(
            self.kernel_family, float(ell[0]), float(var[0]) * scale2, noise * scale2
        )

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """``(B, 2, H, W)``: mean and std, the GP posterior given revealed points.

        Points are taken from ``points``/``values``/``valid`` when the batch has
        them; otherwise the std is the prior :math:`s`.
        """
        image = batch['image']
        out = self(image)
        results = []
        for i in range(out.shape[0]):
            params = self.kernel_params(image[i : i + 1])
            if 'points' in batch:
                ok = batch['valid'][i]
                pts, vals = batch['points'][i][ok], batch['values'][i][ok][:, 0]
            else:
                pts, vals = torch.zeros(0, 2), torch.zeros(0)
            mean, std = posterior_map(out[i, 0].double(), pts, vals, params)
            results.append(torch.stack([mean, std]).float())
        return torch.stack(results)

    # ------------------------------------------------------------- output head
    def output_specs(
        self, names: Sequence[str] | None = None, probabilities: bool = False
    ) -> tuple[OutputSpec, ...]:
        """The network's mean map (float32, NaN nodata).

        Prediction conditions it on revealed points with the task's GP
        (:meth:`kernel_params`) and adds the ``std`` band
        (:mod:`geosparse.inference.conditioning`).

        Args:
            names: the output's name (default ``output_0``).
            probabilities: not used.

        Returns:
            One spec.
        """
        names = ('output_0',) if names is None else tuple(names)
        if len(names) != 1:
            raise ValueError(
                f'class_names has {len(names)} names but the model has 1 output.'
            )
        return (
            OutputSpec(
                task=type(self).__name__,
                kind='regression',
                bands=(BandSpec('mean', 'network mean'),),
                dtype='float32',
                nodata=float('nan'),
                names=names,
            ),
        )

    def predict_window(
        self, image: Tensor, coarse: Tensor | None = None, probabilities: bool = False
    ) -> Tensor:
        """The mean map ``(1, h, w)`` in target units of a raw window ``(1, C, h, w)``."""
        with torch.no_grad():
            return forward_padded(self, image, pad_multiple(self.hparams))[0]
