r"""Point-supervised counting as TorchGeo tasks: density regression and point maps.

Both tasks take batches of :class:`~geosparse.datamodules.CountingDataModule`
(``image``, ``points`` ``(B, N, 2)`` in window pixels, ``valid``, ``labelled`` and,
for GST, each point's Gaussian covariance in ``covariances`` ``(B, N, 3)``), already
augmented by the data module (its ``train_aug`` flips images, points and
covariances together), and score counts per window (``*_count_mae``,
``*_count_rmse``).

- :class:`DensityTask`: the network's output is a density :math:`\zeta \ge 0`
  (objects per pixel, :math:`\zeta = \mathrm{softplus}(f(x)) / s`), the count of a
  window is :math:`\sum \zeta`. Losses: ``mse`` against Gaussian-smoothed point maps
  (the classic baseline), ``bayesian`` (Bayesian Loss+, Ma et al., ICCV 2019) and
  ``gst`` (2D Gaussians Spatial Transport, Shang and Hong), both
  :func:`~geosparse.losses.transport_loss` with their kernels, and ``ot``, DM-Count's
  loss (Wang et al., NeurIPS 2020; :func:`~geosparse.losses.dm_count_loss`): the
  iterative optimal transport that GST replaces by a precomputed kernel.
- :class:`PointMapTask`: the output is a logit map; Point-to-Region loss
  (:func:`~geosparse.losses.p2r_loss`, Lin, Zhao and Chan, CVPR 2025) on the
  network's output average-pooled to cells of ``stride`` pixels (the paper's network
  outputs a down-sampled map, where a cell holds at most one object); the count is
  the number of cells with :math:`\sigma(\hat y) > 0.5`. With unlabelled windows in
  the batch (``labelled = False``) it trains semi-supervised as in the paper: an EMA
  teacher (:class:`~geosparse.teacher.EMATeacher`) sees the weakly augmented window
  (the data module's flips) and gives pseudo-points with confidences
  (:func:`~geosparse.teacher.pseudo_points`: its cells above ``pseudo_threshold``,
  by default the count threshold, so that the pseudo-points are what the teacher
  counts); the student sees a strongly augmented view (colour jitter, noise, cut-out)
  of the same window and is trained on them with the P2R loss, weighted by the ramp
  :func:`~geosparse.teacher.unlabelled_weight`. Cells in no pseudo-point's region are
  negatives weighted by the teacher's confidence that they are empty,
  :math:`1 - p^t_j` (``pseudo_background``), the pseudo-labels' confidence carried to
  the background as well as to the regions. Deviation for short CPU budgets: the
  teacher is made only after ``warmup_steps`` supervised steps (the paper trains for
  hundreds of epochs, where an average from the first step is harmless; over a few
  hundred steps it averages untrained weights and gives noise).

Counts come with a standard deviation (:meth:`_CountingTask.count_std`, scored by
:class:`~geosparse.metrics.CountCoverage` as ``*_count_within_1sd`` and ``_2sd``):

- density: objects as a Poisson process of intensity :math:`\zeta`, so a window's
  count has variance :math:`\phi \sum \zeta` (:math:`\phi` = ``count_dispersion``,
  1 for Poisson; a quasi-Poisson :math:`\phi > 1` widens it);
- point map: each cell holds an object independently with probability
  :math:`p_c = \sigma(\hat y_c)`, so the number of objects is Poisson-binomial with
  variance :math:`\sum_c p_c (1 - p_c)`.

Both describe the scatter of objects given the map, not the network's own error,
which dominates after a short training. So both variances are multiplied by a
dispersion :math:`\phi` (``count_dispersion``), and with ``fit_dispersion`` (the
default) every validation epoch re-estimates it from the validation windows'
errors, as a quasi-Poisson model does (the Pearson estimator of the dispersion,
McCullagh and Nelder, *Generalized Linear Models*, 2nd ed., 1989, in ratio form):

.. math::
    \hat\phi = \max\Big(1, \frac{\sum_w (c_w - \hat c_w)^2}{\sum_w v_w}\Big),

with :math:`c_w` a window's true count, :math:`\hat c_w` the predicted one and
:math:`v_w` its model variance at :math:`\phi = 1`, both from the network the
checkpoint keeps (the EMA teacher of semi-supervised P2R, which predicts). The
checkpoint keeps the fitted :math:`\phi` and the map's ``count_dispersion`` tag
carries it to ``geosparse count``. It assumes the error grows with the variance as
it does at the validation windows' size; without validation windows :math:`\phi`
stays as given. The benchmark reports how often the truth falls inside.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from ..compat import PixelwiseRegression
from ..gaussians import GaussianFit, clamp_scales
from ..io.spec import BandSpec, OutputSpec, Property
from ..losses.p2r import p2r_loss, peak_map
from ..losses.transport import (
    bayesian_kernel,
    dm_count_loss,
    gst_kernel,
    transport_loss,
)
from ..metrics import CountBias, CountCoverage
from ..teacher import (
    EMATeacher,
    frozen_norm_statistics,
    pseudo_points,
    unlabelled_weight,
)
from .heads import forward_padded, pad_multiple
from .utils import FiniteTraining, log_epoch_metrics

__all__ = ['DensityTask', 'PointMapTask', 'smoothed_point_map']


def smoothed_point_map(points: Tensor, shape: tuple[int, int], sigma: float) -> Tensor:
    """A point map (one per object) smoothed by a Gaussian of ``sigma`` pixels.

    Mass that the Gaussian spreads beyond the window is lost (as in the usual
    density-map targets); a map of an interior point sums to 1.

    .. versionadded:: 0.1
    """
    h, w = shape
    grid = np.zeros((h, w))
    if len(points):
        p = points.detach().cpu().numpy()
        r = np.clip(np.floor(p[:, 0]).astype(int), 0, h - 1)
        c = np.clip(np.floor(p[:, 1]).astype(int), 0, w - 1)
        np.add.at(grid, (r, c), 1.0)
    return torch.from_numpy(gaussian_filter(grid, sigma, mode='constant')).float()


def _deprecated_flip(task: str, flip: bool | None) -> None:
    """Warn that ``flip`` is ignored: random flips are the data module's now.

    Old checkpoints hold ``flip`` in their hyperparameters, so it is still accepted.
    ``flip=True`` matches the data module's default (``augment=True``): a
    :class:`DeprecationWarning`; ``flip=False`` asked for something that now needs
    ``augment=False`` on the data module: a :class:`FutureWarning`, shown to users.
    """
    if flip is None:
        return
    warnings.warn(
        f'{task}(flip={flip}) is deprecated and ignored: random flips are now the '
        "data module's, CountingDataModule(augment=...) (default True)"
        + ('; pass augment=False there to train without flips.' if not flip else '.'),
        FutureWarning if not flip else DeprecationWarning,
        stacklevel=3,
    )


def _labelled_mask(batch: dict[str, Any]) -> Tensor:
    """``(B,)`` which windows of a batch are labelled (all, without ``labelled``)."""
    n = batch['image'].shape[0]
    return batch.get('labelled', torch.ones(n, dtype=torch.bool))


def _windows(batch: dict[str, Any], index: Tensor) -> dict[str, Any]:
    """The windows ``index`` of a batch: every per-window tensor and list, indexed."""
    n = batch['image'].shape[0]
    rows = index.tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.ndim and value.shape[0] == n:
            out[key] = value[index]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[i] for i in rows]
        else:
            out[key] = value
    return out


class _CountingTask(FiniteTraining, PixelwiseRegression):
    """Shared parts: normalisation, count metrics, optimiser."""

    def configure_metrics(self) -> None:
        """Count MAE, RMSE and bias (mean signed error) over the windows of an epoch."""
        metrics = MetricCollection(
            {
                'count_mae': MeanAbsoluteError(),
                'count_rmse': MeanSquaredError(squared=False),
                'count_bias': CountBias(),
            }
        )
        self.train_metrics = metrics.clone(prefix='train_')
        self.val_metrics = metrics.clone(prefix='val_')
        self.test_metrics = metrics.clone(prefix='test_')
        self.val_coverage = CountCoverage()
        self.test_coverage = CountCoverage()
        #: Sums of the dispersion's estimator over a validation epoch (error, variance).
        self._dispersion_sums = (0.0, 0.0)

    def configure_optimizers(self) -> Any:
        """AdamW with a plateau scheduler on ``val_loss`` (skipped without validation)."""
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams['lr'])
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, patience=self.hparams['patience']
        )
        return {
            'optimizer': optimizer,
            'lr_scheduler': {
                'scheduler': scheduler,
                'monitor': 'val_loss',
                'strict': False,
            },
        }

    def normalize(self, x: Tensor) -> Tensor:
        """:math:`x / s` with :math:`s` = ``input_scale``."""
        return x.float() / self.hparams['input_scale']

    def count(self, out: Tensor) -> Tensor:
        """``(B,)`` counts of the network outputs ``out``."""
        raise NotImplementedError

    def count_variance(self, out: Tensor) -> Tensor:
        r"""``(B,)`` the model variance of the counts of ``out`` at :math:`\phi = 1`."""
        raise NotImplementedError

    @property
    def dispersion(self) -> float:
        r""":math:`\phi`: ``count_dispersion``, fitted on validation windows or given."""
        return float(self.hparams.get('count_dispersion', 1.0))

    def count_std(self, out: Tensor) -> Tensor:
        r"""``(B,)`` :math:`\sqrt{\phi\, v}`: standard deviations of the counts (module doc)."""
        return (self.dispersion * self.count_variance(out)).clamp_min(0).sqrt()

    def exclude_pixels(self, batch: dict[str, Any], bad: Tensor) -> bool:
        """Drop the points on ``bad`` pixels and keep ``bad`` for the loss.

        The loss then covers only pixels with data (:meth:`data_pixels`): a hole
        in the imagery is neither "no object here" nor counted.
        """
        batch['nodata_pixels'] = bad
        return super().exclude_pixels(batch, bad)

    def data_pixels(self, batch: dict[str, Any]) -> Tensor | None:
        """``(B, 1, H, W)`` float, 1 where the imagery has data (None: everywhere)."""
        bad = batch.get('nodata_pixels')
        return None if bad is None else (~bad[:, None]).float()

    def without_nodata(self, out: Tensor, batch: dict[str, Any]) -> Tensor:
        """``out`` with the pixels without data left out of the count (as ``geosparse count`` does)."""
        return out

    def point_lists(self, batch: dict[str, Any]) -> list[Tensor]:
        """Per sample, its ``(N_b, 2)`` valid points."""
        return [p[v] for p, v in zip(batch['points'], batch['valid'], strict=True)]

    def _score(
        self,
        batch: dict[str, Any],
        out: Tensor,
        prefix: str,
        counts: Tensor | None = None,
    ) -> None:
        lab = _labelled_mask(batch)
        if not bool(lab.any()):
            return
        out = self.without_nodata(out, batch)
        truth = batch['valid'].sum(1).float()
        metrics = getattr(self, f'{prefix}_metrics')
        pred = self.count(out.detach()) if counts is None else counts.detach()
        metrics.update(pred[lab], truth[lab])
        if prefix != 'train':
            coverage = getattr(self, f'{prefix}_coverage')
            coverage.update(pred[lab], truth[lab], self.count_std(out.detach())[lab])

    def compute_loss(self, batch: dict[str, Any], out: Tensor) -> Tensor:
        """Loss of the labelled samples of a batch."""
        raise NotImplementedError

    def training_step(  # type: ignore[override]  # Lightning skips a None loss
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor | None:
        """The loss on the labelled windows."""
        out = self(batch['image'])
        loss = self.compute_loss(batch, out)
        if loss is None:
            return None
        self.log('train_loss', loss, batch_size=out.shape[0])
        self._score(batch, out, 'train')
        return loss

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Count metrics on validation windows; ``val_loss`` is their count MAE.

        ``val_loss`` is the same measure for every loss (GST's kernel would need
        Gaussians fitted to the validation points too), used by the plateau
        scheduler; it scores the trained model (the student of a semi-supervised
        task), whose learning rate it steers. The count metrics
        (``val_count_mae``, ``val_count_rmse``), the coverage of the count's
        standard deviation and the dispersion's sums score the network that
        will predict (:meth:`predicting_output`: the EMA teacher with
        ``predict_with='teacher'``), so that they describe what a checkpoint
        gives.
        """
        out = self(batch['image'])
        truth = batch['valid'].sum(1).float()
        masked = self.without_nodata(out, batch)
        pred = self.count(masked)
        loss = (pred - truth).abs().mean()
        self.log('val_loss', loss, batch_size=out.shape[0])
        kept = self.predicting_output(batch['image'], out)
        if kept is out:  # masked and counted once
            kept, kept_pred = masked, pred
        else:
            kept = self.without_nodata(kept, batch)
            kept_pred = self.count(kept)
        self._score(batch, kept, 'val', kept_pred)
        lab = _labelled_mask(batch)
        if bool(lab.any()):  # the sums of the dispersion's estimator
            err = float((kept_pred - truth)[lab].square().sum())
            var = float(self.count_variance(kept.detach())[lab].sum())
            sums = self._dispersion_sums
            self._dispersion_sums = (sums[0] + err, sums[1] + var)

    def predicting_output(self, images: Tensor, out: Tensor) -> Tensor:
        """The output of the network that will predict, given the model's ``out``.

        The model itself here; the dispersion is fitted on it.
        """
        return out

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Count metrics on test windows."""
        out = self(batch['image'])
        self._score(batch, out, 'test')

    def _log_epoch(self, prefix: str) -> None:
        log_epoch_metrics(self, getattr(self, f'{prefix}_metrics'))
        coverage = getattr(self, f'{prefix}_coverage', None)
        if coverage is not None and coverage.update_count:
            values = coverage.compute()
            self.log_dict({f'{prefix}_{k}': float(v) for k, v in values.items()})
            coverage.reset()

    def on_train_epoch_end(self) -> None:
        """Log training count metrics."""
        self._log_epoch('train')

    def on_validation_epoch_end(self) -> None:
        r"""Log validation count metrics; with ``fit_dispersion``, re-fit :math:`\phi`."""
        self._log_epoch('val')
        err, var = self._dispersion_sums
        self._dispersion_sums = (0.0, 0.0)
        trainer = self._trainer
        sanity = trainer is not None and trainer.sanity_checking
        if self.hparams.get('fit_dispersion', False) and var > 0 and not sanity:
            phi = max(1.0, err / var)
            self.hparams['count_dispersion'] = phi  # saved with the checkpoint
            self.log('val_count_dispersion', phi)

    def on_test_epoch_end(self) -> None:
        """Log test count metrics."""
        self._log_epoch('test')

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """The output map (density; or probability and detections)."""
        return self.output_map(batch['image'])

    def output_map(self, image: Tensor) -> Tensor:
        """The map written by prediction, from raw imagery."""
        raise NotImplementedError

    # ------------------------------------------------------------- output head
    def output_specs(
        self, names: Sequence[str] | None = None, probabilities: bool = False
    ) -> tuple[OutputSpec, ...]:
        """The one file of the count map (:meth:`_bands`), float32 with NaN nodata.

        Args:
            names: band names (default: the task's).
            probabilities: not used (no classes).

        Returns:
            One spec.
        """
        bands, props = self._bands()
        if names is not None:
            if len(names) != len(bands):
                raise ValueError(
                    f'class_names has {len(names)} names but the model has '
                    f'{len(bands)} outputs.'
                )
            bands = [
                BandSpec(n, b.definition) for n, b in zip(names, bands, strict=True)
            ]
        return (
            OutputSpec(
                task=type(self).__name__,
                kind='regression',
                bands=tuple(bands),
                dtype='float32',
                nodata=float('nan'),
                names=tuple(b.name for b in bands),
                properties=props,
            ),
        )

    def _bands(self) -> tuple[list[BandSpec], dict[str, Property]]:
        raise NotImplementedError

    def predict_window(
        self, image: Tensor, coarse: Tensor | None = None, probabilities: bool = False
    ) -> Tensor:
        """The count map's bands ``(K, h, w)`` of a raw window ``(1, C, h, w)``.

        :meth:`output_map` of the window padded to the network's downsampling
        factor, cropped back (:func:`~geosparse.trainers.heads.forward_padded`), so
        the point map's cells are those of the padded window, as in training.
        """
        with torch.no_grad():
            return forward_padded(self.output_map, image, pad_multiple(self.hparams))[0]


class DensityTask(_CountingTask):
    """Density regression from points: MSE, Bayesian Loss or GST (module doc).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        model: Literal['unet', 'deeplabv3+', 'fcn'] = 'unet',
        backbone: str = 'resnet18',
        weights: bool | None = None,
        in_channels: int = 3,
        num_filters: int = 64,
        loss: Literal['mse', 'bayesian', 'gst', 'ot'] = 'gst',
        sigma: float = 4.0,
        cutoff: float = 3.0,
        background_ratio: float = 0.15,
        gst_background: Literal['cutoff', 'growing'] = 'growing',
        gst_background_ratio: float = 0.015,
        gst_scale_range: tuple[float, float] | None = None,
        ot_reg: float = 1.0,
        ot_iterations: int = 100,
        ot_stride: int = 2,
        ot_weight: float = 0.1,
        tv_weight: float = 0.01,
        count_dispersion: float = 1.0,
        fit_dispersion: bool = True,
        density_scale: float = 100.0,
        input_scale: float = 255.0,
        flip: bool | None = None,
        lr: float = 1e-3,
        patience: int = 10,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
    ) -> None:
        r"""Initialise the task.

        Args:
            model: network (TorchGeo names); one output channel at full resolution.
            backbone: encoder of ``unet``/``deeplabv3+``.
            weights: pretrained encoder weights; off by default (no downloads).
            in_channels: image bands.
            num_filters: width of the ``fcn`` model.
            loss: ``mse`` (smoothed point maps), ``bayesian`` (BL+), ``gst``
                (needs the data module's ``gaussians=True``) or ``ot`` (DM-Count:
                count, Sinkhorn OT and total-variation terms).
            sigma: pixels: std of the ``mse`` targets' smoothing and of Bayesian
                Loss's Gaussians.
            cutoff: GST: Mahalanobis radius of the background term.
            background_ratio: Bayesian Loss: :math:`d` as a fraction of the window.
            gst_background: GST: the background term,
                :func:`~geosparse.losses.gst_kernel`'s ``background``: ``growing``,
                as in the authors' public code (the default since 0.2), or
                ``cutoff``, a constant per Gaussian (the default of 0.1).
            gst_background_ratio: GST: :math:`r` of the ``growing`` background.
            gst_scale_range: GST: ``(lo, hi)``: each fitted Gaussian's axis stds
                are clamped to :math:`[lo\,\sigma, hi\,\sigma]` in the kernel, as the
                authors' code clamps them to [8, 20] px beside Bayesian Loss's
                8 px (``post_min``, ``post_max``), i.e. ``(1, 2.5)``; ``None``
                keeps the fit's stds.
            ot_reg: ``ot``: entropic regularisation in pixels²
                (:func:`~geosparse.losses.ot_loss`).
            ot_iterations: ``ot``: Sinkhorn iterations (DM-Count's 100).
            ot_stride: ``ot``: pixels per transport cell (DM-Count transports on
                its stride-8 output; 2 keeps cells below the size of small trees
                and costs a quarter of stride 1).
            ot_weight: ``ot``: weight of the OT term (DM-Count's 0.1).
            tv_weight: ``ot``: weight of the total-variation term (DM-Count's 0.01).
            count_dispersion: :math:`\phi`, the variance of a count over its
                Poisson variance (1: Poisson); the starting value when
                ``fit_dispersion`` re-fits it.
            fit_dispersion: re-estimate :math:`\phi` on the validation windows at
                every validation epoch (module doc); without validation windows it
                stays ``count_dispersion``.
            density_scale: :math:`s`; the network predicts :math:`s\,\zeta`, of order
                one where the objects are.
            input_scale: raw imagery is divided by this.
            flip: deprecated and ignored (old checkpoints hold it): random flips
                are the data module's ``augment``.
            lr: learning rate.
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
        if gst_scale_range is not None and not (
            len(gst_scale_range) == 2 and 0 < gst_scale_range[0] <= gst_scale_range[1]
        ):
            raise ValueError(
                f'gst_scale_range={gst_scale_range!r}: give (lo, hi) with '
                "0 < lo <= hi, in units of sigma (the authors' code: (1, 2.5)), or "
                'None.'
            )
        _deprecated_flip('DensityTask', flip)

    def configure_losses(self) -> None:
        """Check the loss name.

        Raises:
            ValueError: for an unknown loss.
        """
        if self.hparams['loss'] not in ('mse', 'bayesian', 'gst', 'ot'):
            raise ValueError(
                f"loss={self.hparams['loss']!r}: choose 'mse', 'bayesian', 'gst' or "
                "'ot'."
            )

    def forward(self, x: Tensor) -> Tensor:
        """Density ``(B, 1, H, W)`` in objects per pixel, from raw imagery."""
        return F.softplus(self.model(self.normalize(x))) / self.hparams['density_scale']

    def output_map(self, image: Tensor) -> Tensor:
        """The density (objects per pixel)."""
        return self(image)

    def _bands(self) -> tuple[list[BandSpec], dict[str, Property]]:
        band = BandSpec(
            'density', 'objects per pixel; its sum over an area is the count there'
        )
        return [band], {'counting': 'density', 'count_dispersion': self.dispersion}

    def without_nodata(self, out: Tensor, batch: dict[str, Any]) -> Tensor:
        """The density, 0 where the imagery has no data."""
        data = self.data_pixels(batch)
        return out if data is None else out * data

    def count(self, out: Tensor) -> Tensor:
        """Sum of the density per window."""
        return out.sum(dim=(1, 2, 3))

    def count_variance(self, out: Tensor) -> Tensor:
        r""":math:`\sum \zeta` per window (Poisson, module doc)."""
        return self.count(out)

    def sample_loss(
        self,
        density: Tensor,
        points: Tensor,
        covs: Tensor | None,
        data: Tensor | None = None,
    ) -> Tensor:
        """Loss of one window ``(H, W)`` with its points (and GST covariances).

        Args:
            density: the window's density.
            points: its points in pixels.
            covs: their GST covariances.
            data: ``(H, W)``, 1 where the imagery has data; elsewhere the density
                is left out (the transport losses see no mass there, ``mse``
                averages over the pixels with data).

        Raises:
            ValueError: for ``gst`` without covariances.
        """
        h, w = density.shape
        hp = self.hparams
        s = hp['density_scale']
        if data is not None:
            density = density * data
        if hp['loss'] == 'mse':
            target = smoothed_point_map(points, (h, w), hp['sigma']).to(density)
            err = (s * (density - target)).square()
            if data is None:
                return err.mean()
            return (err * data).sum() / data.sum().clamp_min(1)
        if hp['loss'] == 'ot':
            return dm_count_loss(
                density,
                points,
                hp['ot_reg'],
                hp['ot_iterations'],
                hp['ot_weight'],
                hp['tv_weight'],
                hp['ot_stride'],
            )
        if len(points) == 0:  # all the mass belongs to the background
            return density.sum()
        if hp['loss'] == 'bayesian':
            kernel = bayesian_kernel(
                points, (h, w), 1, hp['sigma'], hp['background_ratio']
            )
        else:
            kernel = self.gst_window_kernel(points, covs, (h, w))
        return transport_loss(density, kernel.to(density.device))

    def gst_covariances(self, covs: Tensor | None) -> np.ndarray:
        """``(N, 2, 2)`` covariances of a window's points, as GST's kernel uses them.

        From the data module's ``(N, 3)`` columns (``cov_rr``, ``cov_rc``,
        ``cov_cc``), with ``gst_scale_range`` applied.

        Raises:
            ValueError: without covariances (the data module's ``gaussians=False``).
        """
        hp = self.hparams
        if covs is None or covs.shape[-1] < 3 or not bool(torch.isfinite(covs).all()):
            raise ValueError(
                "loss='gst' needs each point's fitted Gaussian: build the data "
                'module with gaussians=True (CountingDataModule).'
            )
        c = covs.detach().double().cpu().numpy()
        cov = np.stack([c[:, [0, 1]], c[:, [1, 2]]], 1)
        scale_range = hp.get('gst_scale_range')
        if scale_range is not None:
            cov = clamp_scales(cov, *(float(r) * hp['sigma'] for r in scale_range))
        return cov

    def gst_window_kernel(
        self, points: Tensor, covs: Tensor | None, shape: tuple[int, int]
    ) -> Tensor:
        """GST's kernel of one window from its points and their fitted covariances.

        Raises:
            ValueError: without covariances (the data module's ``gaussians=False``).
        """
        hp = self.hparams
        cov = self.gst_covariances(covs)
        fit = GaussianFit(
            points.detach().double().cpu().numpy(),
            cov,
            np.zeros((len(cov), 1)),
            np.zeros(1),
            shape,
        )
        return gst_kernel(
            fit,
            1,
            hp['cutoff'],
            background=hp.get('gst_background', 'growing'),
            background_ratio=hp.get('gst_background_ratio', 0.015),
        )

    def compute_loss(self, batch: dict[str, Any], out: Tensor) -> Tensor:
        """Mean :meth:`sample_loss` over the labelled windows (None if there are none)."""
        lab = _labelled_mask(batch)
        losses = []
        covariances = batch.get('covariances')
        data = self.data_pixels(batch)
        for i in torch.nonzero(lab).flatten().tolist():
            ok = batch['valid'][i]
            covs = covariances[i][ok] if covariances is not None else None
            losses.append(
                self.sample_loss(
                    out[i, 0],
                    batch['points'][i][ok],
                    covs,
                    None if data is None else data[i, 0],
                )
            )
        if not losses:
            return None  # type: ignore[return-value]
        return torch.stack(losses).mean()


class PointMapTask(_CountingTask):
    """Point maps from points with the P2R loss, optionally semi-supervised (module doc).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        model: Literal['unet', 'deeplabv3+', 'fcn'] = 'unet',
        backbone: str = 'resnet18',
        weights: bool | None = None,
        in_channels: int = 3,
        num_filters: int = 64,
        radius: float = 8.0,
        stride: int = 4,
        pos_weight: float = 2.0,
        threshold: float = 0.5,
        rule: Literal['cells', 'peaks'] = 'cells',
        ema_decay: float = 0.99,
        pseudo_threshold: float | None = None,
        pseudo_background: Literal['certain', 'confidence'] = 'confidence',
        pseudo_window: int = 3,
        pseudo_flips: bool = False,
        predict_with: Literal['teacher', 'student'] = 'teacher',
        unlabelled_weight: float = 1.0,
        strong_view_statistics: bool = True,
        shared_forward: bool = True,
        warmup_steps: int = 100,
        ramp_steps: int = 200,
        count_dispersion: float = 1.0,
        fit_dispersion: bool = True,
        input_scale: float = 255.0,
        flip: bool | None = None,
        lr: float = 1e-3,
        patience: int = 10,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
    ) -> None:
        r"""Initialise the task.

        Args:
            model: network (TorchGeo names); one logit channel at full resolution.
            backbone: encoder of ``unet``/``deeplabv3+``.
            weights: pretrained encoder weights; off by default (no downloads).
            in_channels: image bands.
            num_filters: width of the ``fcn`` model.
            radius: P2R region radius in pixels (about an object's radius).
            stride: pixels per cell of the logit map (the network's full-resolution
                output is average-pooled), about an object's size so that a cell
                holds at most one object, as with the paper's down-sampled output.
            pos_weight: extra weight of the positive pixel of each region.
            threshold: probability above which a cell counts as an object.
            rule: ``cells``: every cell above ``threshold`` is an object (the
                paper's rule, for a stride at which a cell holds at most one object);
                ``peaks``: only local maxima above it (for fine strides, where a
                confident cell's neighbours pass the threshold too).
            ema_decay: semi-supervised: the teacher's EMA decay.
            pseudo_threshold: semi-supervised: minimum teacher probability of a
                pseudo-point (default ``threshold``: the teacher's pseudo-points are
                the objects it counts). A stricter threshold teaches the student to
                count fewer objects than its teacher does, and the EMA teacher then
                follows it down.
            pseudo_background: semi-supervised: weight of the unlabelled cells in
                no pseudo-point's region: ``confidence`` (default), the teacher's
                confidence that the cell is empty, :math:`1 - p^t_j`, so that
                objects the teacher saw but did not trust are not pushed to
                "nothing here" at full weight; ``certain``, 1 (as for annotations).
            pseudo_window: semi-supervised: pseudo-points are the teacher's local
                maxima in windows of this many cells (odd; 1: every cell above the
                threshold). Two neighbouring cells above the threshold are most
                often one object; as two pseudo-points they teach the student to
                see two, the teacher follows, and the count runs away.
            pseudo_flips: semi-supervised: the teacher's cell probabilities are
                the mean over the four flips :math:`g` of each weak window (none,
                horizontal, vertical, both),
                :math:`\bar p^t = \frac{1}{4}\sum_g g^{-1}\sigma(f_t(g\,x))`, before
                the pseudo-points and the background weights are taken from them
                (test-time augmentation of the teacher; four teacher forwards).
                Off by default: on the Kootenay validation condition it tied the
                single view (the counting page of the docs).
            predict_with: semi-supervised: which network the trained task keeps
                for prediction: ``teacher`` (default), the EMA average, copied into
                the model when training ends and written as the model in every
                checkpoint; or ``student``. Without a teacher (no unlabelled
                windows) the model is the only network.
            unlabelled_weight: semi-supervised: weight of the unlabelled loss after
                the ramp.
            strong_view_statistics: semi-supervised: whether the student's forward
                on the strongly augmented unlabelled views moves its BatchNorm
                running statistics (which the EMA teacher averages and predicts
                with); ``False`` keeps them to the weakly augmented windows
                (:func:`~geosparse.teacher.frozen_norm_statistics`).
            shared_forward: semi-supervised: the student's supervised forward takes
                the whole batch, the weak views of the unlabelled windows with the
                labelled ones (``True``), or the labelled windows alone (``False``).
                The unlabelled weak views carry no loss (the student learns from
                their strong views); in the shared forward they only enter the
                BatchNorm statistics that the labelled windows are normalised with.
            warmup_steps: semi-supervised: supervised steps before the teacher is
                made (a copy of the student then) and the unlabelled loss starts; an
                average of an untrained network's early weights gives noise, not
                pseudo-points.
            ramp_steps: semi-supervised: steps of the Gaussian ramp-up after the
                warm-up.
            count_dispersion: :math:`\phi`, the variance of a count over its
                Poisson-binomial variance; the starting value when
                ``fit_dispersion`` re-fits it.
            fit_dispersion: re-estimate :math:`\phi` on the validation windows at
                every validation epoch (module doc; the teacher's errors when it
                is the network kept for prediction, :meth:`predicting_output`).
            input_scale: raw imagery is divided by this.
            flip: deprecated and ignored (old checkpoints hold it): the weak
                augmentation (random flips) is the data module's ``augment``.
            lr: learning rate.
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
            loss='p2r',
            lr=lr,
            patience=patience,
            freeze_backbone=freeze_backbone,
            freeze_decoder=freeze_decoder,
        )
        if predict_with not in ('teacher', 'student'):
            raise ValueError(
                f"predict_with={predict_with!r}: use 'teacher' or 'student'."
            )
        if pseudo_window < 1 or pseudo_window % 2 == 0:
            raise ValueError(f'pseudo_window={pseudo_window} must be odd and >= 1.')
        if pseudo_background not in ('certain', 'confidence'):
            raise ValueError(
                f"pseudo_background={pseudo_background!r}: use 'certain' or "
                "'confidence'."
            )
        self._teacher: EMATeacher | None = None
        _deprecated_flip('PointMapTask', flip)

    def configure_losses(self) -> None:
        """Nothing to build: :func:`~geosparse.losses.p2r_loss` is a function."""

    @property
    def pseudo_window(self) -> int:
        """Local-maximum window of the pseudo-points (1 in checkpoints made before it)."""
        return int(self.hparams.get('pseudo_window', 1))

    @property
    def pseudo_threshold(self) -> float:
        """The teacher's minimum probability of a pseudo-point (``threshold`` unless set)."""
        value = self.hparams.get('pseudo_threshold')
        return float(self.hparams['threshold'] if value is None else value)

    @property
    def teacher(self) -> EMATeacher:
        """The EMA teacher (made from the student on first use; not checkpointed)."""
        if self._teacher is None:
            object.__setattr__(
                self, '_teacher', EMATeacher(self.model, self.hparams['ema_decay'])
            )
        assert self._teacher is not None
        return self._teacher

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, 1, ceil(H / stride), ceil(W / stride))`` from raw imagery."""
        return self.pool(self.model(self.normalize(x)))

    def predicting_output(self, images: Tensor, out: Tensor) -> Tensor:
        """The teacher's logits when it will predict (``predict_with='teacher'``).

        So the dispersion is fitted on the errors of the network that the
        checkpoint keeps, not on the student's.
        """
        if not self._predicts_with_teacher():
            return out
        with torch.no_grad():
            return self.pool(self.teacher(self.normalize(images)))

    def pool(self, logits: Tensor) -> Tensor:
        """Full-resolution logits average-pooled to cells of ``stride`` pixels."""
        s = int(self.hparams['stride'])
        return F.avg_pool2d(logits, s, ceil_mode=True) if s > 1 else logits

    def data_cells(self, batch: dict[str, Any]) -> Tensor | None:
        """``(B, 1, h, w)``: 1 for cells with a pixel of data, else 0 (None: all)."""
        data = self.data_pixels(batch)
        return None if data is None else (self.pool(data) > 0).float()

    def without_nodata(self, out: Tensor, batch: dict[str, Any]) -> Tensor:
        """Logits of cells without data at -10⁴ (probability 0: not counted)."""
        cells = self.data_cells(batch)
        return out if cells is None else out.masked_fill(cells == 0, -1e4)

    def cell_points(self, points: Tensor) -> Tensor:
        """Pixel ``(row, col)`` positions in cell units of the logit map."""
        return points / self.hparams['stride']

    def output_map(self, image: Tensor) -> Tensor:
        """``(B, 2, H, W)`` maps of raw imagery (:meth:`maps_from_logits`)."""
        return self.maps_from_logits(self.model(self.normalize(image)))

    def _bands(self) -> tuple[list[BandSpec], dict[str, Property]]:
        bands = [
            BandSpec(
                'probability',
                'object probability of the cell of stride x stride pixels',
            ),
            BandSpec(
                'detection',
                'detections: 1 at the centre of each cell above the threshold '
                'tag; their sum over an area is the count there',
            ),
        ]
        props: dict[str, Property] = {
            'counting': 'point map',
            'threshold': self.hparams['threshold'],
            'stride': int(self.hparams['stride']),
            'count_dispersion': self.dispersion,
        }
        return bands, props

    def maps_from_logits(self, logits: Tensor) -> Tensor:
        r"""``(B, 2, H, W)`` from full-resolution network outputs ``(B, 1, H, W)``.

        Band 0: the cell probability :math:`\sigma(\hat y)` repeated over the cell's
        pixels; band 1: 1 at the centre pixel of each detected cell
        (:meth:`detections`), so that its sum over any area is the count there.
        """
        h, w = logits.shape[-2:]
        s = int(self.hparams['stride'])
        cells = self.pool(logits)
        prob = torch.sigmoid(cells)
        full = prob.repeat_interleave(s, -2).repeat_interleave(s, -1)[..., :h, :w]
        det = torch.zeros_like(logits)
        b, _, r, c = torch.nonzero(self.detections(cells), as_tuple=True)
        det[
            b, 0, (r * s + s // 2).clamp(max=h - 1), (c * s + s // 2).clamp(max=w - 1)
        ] = 1
        return torch.cat([full, det], 1)

    def count(self, out: Tensor) -> Tensor:
        """Detections per window (:meth:`detections`)."""
        return self.detections(out).sum(dim=(1, 2, 3)).float()

    def count_variance(self, out: Tensor) -> Tensor:
        r""":math:`\sum_c p_c (1 - p_c)` per window (Poisson-binomial, module doc)."""
        p = torch.sigmoid(out.float())
        return (p * (1 - p)).sum(dim=(1, 2, 3))

    def detections(self, out: Tensor) -> Tensor:
        """Boolean detections of logit maps: cells above ``threshold`` (``rule='cells'``, the paper's) or local maxima above it (``rule='peaks'``)."""
        prob = torch.sigmoid(out)
        if self.hparams['rule'] == 'peaks':
            return peak_map(prob, self.hparams['threshold'])
        return prob > self.hparams['threshold']

    def compute_loss(self, batch: dict[str, Any], out: Tensor) -> Tensor:
        """P2R loss of the labelled windows (None if there are none)."""
        lab = _labelled_mask(batch)
        idx = torch.nonzero(lab).flatten()
        if len(idx) == 0:
            return None  # type: ignore[return-value]
        points = [self.cell_points(p) for p in self.point_lists(batch)]
        hp = self.hparams
        cells = self.data_cells(batch)
        return p2r_loss(
            out[idx],
            [points[i] for i in idx.tolist()],
            hp['radius'] / hp['stride'],
            None,
            hp['pos_weight'],
            cell_weight=None if cells is None else cells[idx, 0],
        )

    def strong(self, image: Tensor) -> Tensor:
        """Strong photometric augmentation of raw images (the student's view).

        Per image: brightness and contrast jitter of up to 30 %, Gaussian noise of
        3 % of the range, and one cut-out square of a quarter of the side filled with
        the image mean. Geometry is unchanged, so the teacher's pseudo-points stay
        in place.
        """
        x = image.float()
        b = x.shape[0]
        scale = self.hparams['input_scale']
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = 1 + 0.6 * (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
        bright = 0.6 * (torch.rand(b, 1, 1, 1, device=x.device) - 0.5) * mean
        x = (x - mean) * contrast + mean + bright
        x = x + 0.03 * scale * torch.randn_like(x)
        h, w = x.shape[-2:]
        ch, cw = max(h // 4, 1), max(w // 4, 1)
        for i in range(b):
            r = int(torch.randint(h - ch + 1, (1,)))
            c = int(torch.randint(w - cw + 1, (1,)))
            x[i, :, r : r + ch, c : c + cw] = mean[i]
        return x

    @torch.no_grad()
    def pseudo_labels(
        self, images: Tensor
    ) -> tuple[list[Tensor], list[Tensor], float | list[Tensor]]:
        """The teacher's pseudo-labels of raw (weakly augmented) images.

        Returns:
            Per image, the pseudo-points ``(P, 2)`` in cell units and their
            confidences ``(P,)`` (:func:`~geosparse.teacher.pseudo_points` at
            ``pseudo_threshold`` and ``pseudo_window``), and the weight of the cells
            in no pseudo-region: per image an ``(h, w)`` map :math:`1 - p^t` with
            ``pseudo_background='confidence'``, else 1.
        """
        x = self.normalize(images)
        if self.hparams.get('pseudo_flips', False):
            prob = torch.stack(
                [
                    torch.sigmoid(
                        self.pool(self.teacher(x.flip(dims)).flip(dims)).float()
                    )
                    for dims in ((), (-1,), (-2,), (-2, -1))
                ]
            ).mean(0)
            logits = torch.logit(prob.clamp(1e-6, 1 - 1e-6))[:, 0]
        else:
            logits = self.pool(self.teacher(x))[:, 0]
        points, confidence = [], []
        for t in logits:
            p, c = pseudo_points(t, self.pseudo_threshold, self.pseudo_window)
            points.append(p)
            confidence.append(c)
        background: float | list[Tensor] = 1.0
        if self.hparams.get('pseudo_background', 'certain') == 'confidence':
            background = [1 - torch.sigmoid(t.float()) for t in logits]
        return points, confidence, background

    def training_step(  # type: ignore[override]  # Lightning skips a None loss
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor | None:
        """P2R on labelled windows plus the ramped pseudo-point loss on unlabelled ones."""
        lab = _labelled_mask(batch)
        unl = torch.nonzero(~lab).flatten()
        scored = batch
        if len(unl) and not self.hparams.get('shared_forward', True):
            scored = _windows(batch, torch.nonzero(lab).flatten())
        out = self(scored['image'])
        sup = self.compute_loss(scored, out)
        loss = sup
        hp = self.hparams
        warm = self.global_step >= hp['warmup_steps']
        if len(unl) and hp['unlabelled_weight'] > 0 and warm:
            weak = batch['image'][unl]
            pts, conf, background = self.pseudo_labels(weak)
            keep = not hp.get('strong_view_statistics', True)
            with frozen_norm_statistics(self.model) if keep else nullcontext():
                student = self(self.strong(weak))
            cells = self.data_cells(batch)
            unsup = p2r_loss(
                student,
                pts,
                hp['radius'] / hp['stride'],
                conf,
                hp['pos_weight'],
                background,
                None if cells is None else cells[unl, 0],
            )
            wt = unlabelled_weight(
                self.global_step - hp['warmup_steps'],
                hp['ramp_steps'],
                hp['unlabelled_weight'],
            )
            self.log('train_unlabelled_loss', unsup, batch_size=len(unl))
            self.log(
                'train_pseudo_points',
                float(sum(len(p) for p in pts)) / len(pts),
                batch_size=len(unl),
            )
            loss = wt * unsup if sup is None else sup + wt * unsup
        if loss is None:
            return None
        self.log('train_loss', loss, batch_size=out.shape[0])
        self._score(scored, out, 'train')
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Move the teacher after every student step (when there is one)."""
        if self._teacher is not None:
            self._teacher.update(self.model)

    def _predicts_with_teacher(self) -> bool:
        return (
            self._teacher is not None
            and self.hparams.get('predict_with', 'student') == 'teacher'
        )

    def on_train_end(self) -> None:
        """With ``predict_with='teacher'``, the model becomes the EMA teacher."""
        if self._predicts_with_teacher():
            assert self._teacher is not None
            self.model.load_state_dict(self._teacher.model.state_dict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With ``predict_with='teacher'``, checkpoints hold the teacher as the model."""
        super().on_save_checkpoint(checkpoint)
        if self._predicts_with_teacher():
            assert self._teacher is not None
            state = checkpoint['state_dict']
            for key, value in self._teacher.model.state_dict().items():
                state[f'model.{key}'] = value.detach().clone()
