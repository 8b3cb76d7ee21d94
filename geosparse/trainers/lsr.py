"""Label super-resolution as a TorchGeo task."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compat import SemanticSegmentation
from ..errors import InputError
from ..io.spec import OutputSpec
from ..losses import HardNaiveLoss, SoftNaiveLoss, StatisticsMatchingLoss
from ..losses.balance import CoarseBalance
from ..metrics import LandCoverMetrics
from ..models import LocalContextNet
from ..priors import NLCD_DEVELOPED, JointDistribution, PriorError
from .heads import class_bands, class_specs, forward_padded, pad_multiple
from .radiometry import RadiometryReference
from .utils import FiniteTraining, datamodule_hparams

__all__ = [
    'LabelSuperResolutionTask',
    'combine_with_prior',
    'match_fractions',
]

LossName = Literal['lsr', 'soft-naive', 'hard-naive', 'hr', 'hr+lsr']


def combine_with_prior(
    probs: Tensor,
    coarse: Tensor,
    eta: Tensor,
    weight: float = 1.0,
    eps: float = 0.01,
    marginal: Tensor | None = None,
) -> Tensor:
    r"""Combine the network's class probabilities with the coarse label's prior.

    Where the coarse label :math:`z` of a pixel is known, Bayes' rule with the image
    and the coarse label conditionally independent given the fine class gives

    .. math::
        p(l \mid x, z) \propto p(l \mid x)\,\frac{p(l \mid z)}{p(l)}
        \approx p(l \mid x)\left(\frac{\eta_{l,z} + \epsilon}{\pi_l}\right)^{\gamma},

    where :math:`\pi_l` (``marginal``) is the fine-class distribution the network was
    trained under (without it, :math:`\pi` is uniform and this is the plain product
    of experts :math:`p(l \mid x)\,\eta_{l,z}^{\gamma}`). Dividing by :math:`\pi`
    keeps the dominant class of the training data from being counted twice, once
    in the network and once in :math:`\eta`. :math:`\gamma` is ``weight`` (0 returns
    ``probs``); pixels with ``coarse < 0`` keep the network's probabilities.

    .. versionadded:: 0.1

    Args:
        probs: ``(B, L, H, W)`` probabilities.
        coarse: ``(B, H, W)`` coarse class index, negative for nodata.
        eta: ``(Z, L)`` prior mean fractions.
        weight: exponent :math:`\gamma`.
        eps: floor on :math:`\eta` so that no class is ruled out.
        marginal: ``(L,)`` training marginal :math:`\pi` of the fine classes.

    Returns:
        ``(B, L, H, W)`` probabilities.
    """
    if weight == 0:
        return probs
    valid = coarse >= 0
    ratio = eta[coarse.clamp(min=0)] + eps  # B, H, W, L
    if marginal is not None:
        pi = marginal.to(ratio.dtype).clamp(min=0) + eps
        ratio = ratio / (pi / pi.sum())
    prior = ratio**weight
    prior = torch.where(valid[..., None], prior, torch.ones_like(prior))
    out = probs * prior.permute(0, 3, 1, 2).to(probs.dtype)
    return out / out.sum(dim=1, keepdim=True).clamp(min=1e-12)


def match_fractions(
    probs: Tensor,
    coarse: Tensor,
    eta: Tensor,
    eps: float = 0.01,
    iters: int = 50,
) -> Tensor:
    r"""Shift the probabilities so that each coarse region holds its prior fractions.

    For every sample and every coarse class :math:`z` present in it, with :math:`R`
    the pixels of that class (a region, the block of the ``regions`` training
    mode), per-class offsets :math:`\beta` are found such that

    .. math::
        \frac{1}{|R|}\sum_{i\in R}\operatorname{softmax}(\log p_i + \beta)
        = \tilde\eta_z, \qquad
        \tilde\eta_{l,z} = \frac{\eta_{l,z}+\epsilon}{\sum_k (\eta_{k,z}+\epsilon)},

    by the fixed-point (Sinkhorn) iteration
    :math:`\beta \leftarrow \beta + \log\tilde\eta_z - \log \bar p(\beta)`.
    The result keeps the network's ranking of pixels within a region and takes the
    region's class fractions from the joint distribution: the statistics that the
    lsr loss matches in training are imposed exactly at inference. It suits networks
    trained on coarse labels, whose scores are calibrated only through block
    statistics; it is wrong where the prior is (its fractions replace the
    network's). Pixels with ``coarse < 0`` keep their probabilities. Not from the
    paper: an addition of geosparse (``prior_rule='fractions'``).

    .. versionadded:: 0.1

    Args:
        probs: ``(B, L, H, W)`` probabilities.
        coarse: ``(B, H, W)`` coarse class index, negative for nodata.
        eta: ``(Z, L)`` prior mean fractions.
        eps: floor on :math:`\eta` so that no class is ruled out.
        iters: fixed-point iterations.

    Returns:
        ``(B, L, H, W)`` probabilities.
    """
    out = probs.clone()
    logp = probs.clamp(min=1e-8).log()
    for b in range(probs.shape[0]):
        for z in coarse[b].unique().tolist():
            if z < 0:
                continue
            m = coarse[b] == z
            lp = logp[b][:, m]  # L, N
            target = eta[z].to(lp.dtype) + eps
            log_target = (target / target.sum()).log()
            beta = torch.zeros_like(log_target)
            for _ in range(iters):
                mean = (lp + beta[:, None]).softmax(dim=0).mean(dim=1)
                beta = beta + log_target - mean.clamp(min=1e-12).log()
            out[b][:, m] = (lp + beta[:, None]).softmax(dim=0)
    return out


class LabelSuperResolutionTask(
    RadiometryReference, FiniteTraining, SemanticSegmentation
):
    r"""Segmentation trained from coarse labels and a coarse-to-fine joint distribution.

    Losses (``loss``):

    * ``lsr``: label counting + statistics matching
      (:class:`~geosparse.losses.StatisticsMatchingLoss`; Malkin et al., ICLR 2019);
    * ``soft-naive`` / ``hard-naive``: cross-entropy against :math:`\eta_z` or its
      argmax at every pixel;
    * ``hr``: cross-entropy on fine labels (an upper bound when they exist);
    * ``hr+lsr``: :math:`\lambda\,\mathrm{CE}_{hr} + \mathrm{LSR}`, each term over
      the pixels that carry its labels (the paper's HR+SR: fine labels from one
      region, coarse labels from the region to map; fine nodata elsewhere).

    Batches carry ``image`` (raw digital numbers), ``coarse`` (raw coarse codes),
    optionally ``block`` (coarse-pixel ids) and ``mask`` (raw fine codes). The task
    maps codes to class indices with the joint distribution, normalises the input
    itself (``input_scale`` and per-sample standardisation), so a checkpoint predicts
    from raw imagery exactly as in training. At validation, test and prediction the
    network's probabilities are combined with the coarse label where one is given
    (:func:`combine_with_prior`, exponent ``prior_weight``).

    .. versionadded:: 0.1
    """

    eta: Tensor
    coarse_lut: Tensor
    fine_lut: Tensor
    eval_subset: Tensor
    coarse_seen: Tensor
    fine_seen: Tensor

    def __init__(
        self,
        model: Literal[
            'unet', 'deeplabv3+', 'fcn', 'upernet', 'segformer', 'local'
        ] = 'local',
        backbone: str = 'resnet18',
        weights: bool | str | None = None,
        in_channels: int = 4,
        # A JointDistribution is accepted too; it stays out of the annotation, which
        # LightningCLI (jsonargparse) reads to parse configs: with a class in it, a
        # CSV path would be read as the file's text.
        priors: str | Mapping[str, Any] = 'nlcd-landcover4',
        loss: LossName = 'lsr',
        lsr_variant: Literal['gaussian', 'interval', 'kl'] = 'gaussian',
        var_floor: float = 0.03,
        var_floor_scale: Literal['block', 'pixel'] = 'block',
        coarse_class_weights: Sequence[float] | None = None,
        coarse_balance: CoarseBalance = 'batch',
        block_size_power: float = 1.0,
        hr_weight: float = 1.0,
        hr_coarse: Literal['all', 'unlabelled'] = 'all',
        naive_warmup: int = 0,
        coarse_nodata: int | None = 0,
        fine_nodata: int | None = 0,
        eval_coarse_classes: Sequence[int] = NLCD_DEVELOPED,
        prior_weight: float = 0.0,
        prior_rule: Literal['bayes', 'product', 'fractions'] = 'bayes',
        input_scale: float = 255.0,
        standardize: Literal['sample', 'none'] = 'none',
        num_filters: int = 64,
        local_scales: Sequence[int] = (5, 15),
        lr: float = 1e-3,
        patience: int = 10,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
    ) -> None:
        r"""Initialise the task.

        Args:
            model: segmentation model (smp / TorchGeo names), or ``local``: a
                per-pixel perceptron on the bands and the local brightness and
                texture (:class:`~geosparse.models.LocalContextNet`, receptive field
                ``max(local_scales)`` pixels; our addition), which on few training
                tiles cannot learn the context of wrong coarse labels.
            backbone: encoder of the model.
            weights: pretrained encoder weights; off by default (no downloads).
            in_channels: image bands.
            priors: built-in joint distribution name, CSV path, a
                :class:`~geosparse.priors.JointDistribution`, or its
                :meth:`~geosparse.priors.JointDistribution.to_dict` mapping
                (checkpoints store the mapping).
            loss: ``lsr``, ``soft-naive``, ``hard-naive``, ``hr`` or ``hr+lsr``.
            lsr_variant: ``gaussian`` (Eq. 7), ``interval`` or ``kl``.
            var_floor: :math:`\epsilon` in the log-variance term.
            var_floor_scale: ``block`` (floor on the block variance, the authors'
                code) or ``pixel`` (floor on the mean per-pixel variance, which keeps
                the confidence term active in large blocks); see
                :class:`~geosparse.losses.StatisticsMatchingLoss`.
            coarse_class_weights: weight per coarse class (table order).
            coarse_balance: ``batch`` gives every coarse class present in a batch
                the same total weight in the lsr and naive losses
                (:mod:`geosparse.losses.balance`; our addition); ``none`` weighs
                blocks by size as the authors' code.
            block_size_power: exponent of the block size in the block weights of
                the lsr loss (``size_power`` of
                :class:`~geosparse.losses.StatisticsMatchingLoss`).
            hr_weight: :math:`\lambda` of the fine-label term in ``hr+lsr``.
            hr_coarse: pixels of the lsr term in ``hr+lsr``: ``all`` that carry a
                coarse label, or ``unlabelled``: only those without a fine label
                (the paper's HR+SR uses the coarse labels of the target region
                alone).
            naive_warmup: with ``loss='lsr'``, train the first this many optimiser
                steps with the soft-naive loss (:class:`~geosparse.losses.SoftNaiveLoss`)
                and the label-counting loss after them (our addition; 0, the
                default, is the paper's lsr from the first step).
            coarse_nodata: coarse code meaning "no label".
            fine_nodata: fine code meaning "no label".
            eval_coarse_classes: coarse codes of the ``dev_`` metrics.
            prior_weight: :math:`\gamma` of :func:`combine_with_prior` at inference.
            prior_rule: ``bayes`` divides by the fine-class marginal seen in
                training (:meth:`training_marginal`); ``product`` does not;
                ``fractions`` gives every coarse region of a sample its prior
                fractions, keeping the network's ranking (:func:`match_fractions`;
                ``prior_weight`` only switches it on or off).
            input_scale: raw values are divided by this first.
            standardize: ``sample`` standardises each band of each sample.
            num_filters: width of the ``fcn`` model, and of the hidden layers of
                the ``local`` model.
            local_scales: odd window sizes of the ``local`` model's features.
            lr: learning rate.
            patience: plateau patience of the scheduler.
            freeze_backbone: freeze the encoder.
            freeze_decoder: freeze the decoder.
        """
        table = JointDistribution.load(priors)
        priors = table.to_dict()
        self.table = table
        num_classes = table.num_fine
        super().__init__(
            model=model,  # type: ignore[arg-type]  # "local" is built here
            backbone=backbone,
            weights=weights,
            in_channels=in_channels,
            task='multiclass',
            num_classes=num_classes,
            num_filters=num_filters,
            loss=loss,  # type: ignore[arg-type]
            lr=lr,
            patience=patience,
            freeze_backbone=freeze_backbone,
            freeze_decoder=freeze_decoder,
        )

    # ----------------------------------------------------------------- setup
    def configure_models(self) -> None:
        """Complete the hyperparameters, then build the model.

        Under LightningCLI, ``save_hyperparameters`` records only the arguments of
        the config file; the derived values (number of classes, the resolved joint
        distribution, defaults of this class) are filled in here so that every
        checkpoint carries the full table and loads without the original CSV.
        """
        for name, param in inspect.signature(
            LabelSuperResolutionTask
        ).parameters.items():
            if (
                name not in self.hparams
                and param.default is not inspect.Parameter.empty
            ):
                self.hparams[name] = param.default
        self.hparams.update(
            priors=self.table.to_dict(),
            num_classes=self.table.num_fine,
            task='multiclass',
            num_labels=None,
            ignore_index=None,
            class_weights=None,
        )
        if self.hparams['model'] == 'local':
            self.model = LocalContextNet(
                self.hparams['in_channels'],
                self.table.num_fine,
                scales=self.hparams['local_scales'],
                hidden=self.hparams['num_filters'],
            )
            return
        super().configure_models()

    def configure_losses(self) -> None:
        """Build the criterion and the code lookup tables."""
        table = self.table
        eta = torch.tensor(table.eta, dtype=torch.float32)
        rho = torch.tensor(table.rho, dtype=torch.float32)
        self.register_buffer('eta', eta)
        n_codes = max(max(table.coarse_codes), 255) + 1
        coarse_lut = torch.full((n_codes,), -2, dtype=torch.long)
        coarse_lut[torch.tensor(table.coarse_codes)] = torch.arange(table.num_coarse)
        nodata = self.hparams['coarse_nodata']
        if nodata is not None and 0 <= nodata < n_codes:
            coarse_lut[nodata] = -1
        self.register_buffer('coarse_lut', coarse_lut)
        n_fine = max(max(table.fine_codes), 255) + 1
        fine_lut = torch.full((n_fine,), -2, dtype=torch.long)
        fine_lut[torch.tensor(table.fine_codes)] = torch.arange(table.num_fine)
        fnod = self.hparams['fine_nodata']
        if fnod is not None and 0 <= fnod < n_fine:
            fine_lut[fnod] = -1
        self.register_buffer('fine_lut', fine_lut)
        # Label counts seen in training: the marginal of the Bayes combination.
        self.register_buffer('coarse_seen', torch.zeros(table.num_coarse))
        self.register_buffer('fine_seen', torch.zeros(table.num_fine))
        # The training imagery's histogram: predictions match rasters onto it.
        self.init_radiometry(
            self.hparams['in_channels'], self.hparams['input_scale'], table.num_coarse
        )
        sub = [
            c for c in self.hparams['eval_coarse_classes'] if c in table.coarse_codes
        ]
        self.register_buffer(
            'eval_subset', torch.tensor([table.coarse_codes.index(c) for c in sub])
        )
        weights = self.hparams['coarse_class_weights']
        cw = None if weights is None else torch.tensor(weights, dtype=torch.float32)
        if cw is not None and cw.numel() != table.num_coarse:
            raise PriorError(
                f'coarse_class_weights has {cw.numel()} values but the joint '
                f'distribution has {table.num_coarse} coarse classes.'
            )
        loss: str = self.hparams['loss']
        self.lsr_loss = StatisticsMatchingLoss(
            eta,
            rho,
            variant=self.hparams['lsr_variant'],
            var_floor=self.hparams['var_floor'],
            var_floor_scale=self.hparams['var_floor_scale'],
            class_weights=cw,
            size_power=self.hparams['block_size_power'],
            balance=self.hparams['coarse_balance'],
        )
        self.soft_naive = SoftNaiveLoss(eta, self.hparams['coarse_balance'])
        self.hard_naive = HardNaiveLoss(eta, self.hparams['coarse_balance'])
        rule = self.hparams['prior_rule']
        if rule not in ('bayes', 'product', 'fractions'):
            raise ValueError(
                f'prior_rule={rule!r}: choose bayes, product or fractions.'
            )
        warmup = self.hparams.get('naive_warmup', 0)
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(
                f'naive_warmup={warmup!r}: give a number of optimiser steps >= 0 '
                '(0: no warm-up).'
            )
        if self.hparams.get('hr_coarse', 'all') not in ('all', 'unlabelled'):
            raise ValueError(
                f'hr_coarse={self.hparams["hr_coarse"]!r}: choose all (every pixel '
                'with a coarse label) or unlabelled (only pixels without a fine label).'
            )
        if loss not in ('lsr', 'soft-naive', 'hard-naive', 'hr', 'hr+lsr'):
            raise ValueError(
                f'loss={loss!r}: choose lsr, soft-naive, hard-naive, hr or hr+lsr.'
            )
        self.criterion: nn.Module = self.lsr_loss

    def configure_metrics(self) -> None:
        """Land-cover metrics for validation and test."""
        names = list(self.table.fine_names)
        self.val_scores = LandCoverMetrics(self.table.num_fine, names)
        self.test_scores = LandCoverMetrics(self.table.num_fine, names)

    def setup(self, stage: str) -> None:
        """Check that the data module marks "no label" with the task's codes.

        The data module turns NaN and out-of-footprint pixels into its
        ``coarse_nodata``/``fine_nodata``; the task ignores its own. Two different
        codes would make every nodata pixel an unknown code (or a class).

        Raises:
            InputError: if the attached data module's nodata codes differ.
        """
        super().setup(stage)
        dm_hparams = datamodule_hparams(self)
        for name in ('coarse_nodata', 'fine_nodata'):
            if name in dm_hparams and dm_hparams[name] != self.hparams[name]:
                raise InputError(
                    f'{name}: the data module uses {dm_hparams[name]!r} and the task '
                    f'{self.hparams[name]!r}; give both the same value (in a config: '
                    f'data.init_args.{name} and model.init_args.{name}).'
                )

    def on_train_epoch_end(self) -> None:
        """Nothing to log: ``train_loss`` is logged every step, without metrics."""

    def exclude_pixels(self, batch: dict[str, Any], bad: Tensor) -> bool:
        """Make ``bad`` pixels coarse and fine nodata (and of no block).

        Returns:
            False if a label raster in the batch has no nodata value to mark them.
        """
        for key, nodata in (
            ('coarse', self.hparams['coarse_nodata']),
            ('mask', self.hparams['fine_nodata']),
        ):
            if key in batch:
                if nodata is None:
                    return False
                batch[key] = batch[key].masked_fill(bad, nodata)
        if 'block' in batch:
            batch['block'] = batch['block'].masked_fill(bad, -1)
        return True

    def radiometry_strata(self, batch: dict[str, Any]) -> Tensor | None:
        """The coarse-table row of each pixel (``-1`` nodata): histograms per class."""
        coarse = batch.get('coarse')
        if not isinstance(coarse, Tensor):
            return None
        if coarse.ndim == 4 and coarse.shape[1] == 1:
            coarse = coarse[:, 0]
        return self.coarse_index(coarse, 'training batch')

    def radiometry_composition(self, coarse: Sequence[np.ndarray]) -> np.ndarray:
        """``(num_coarse,)`` share of each coarse class in rasters of coarse codes.

        For :meth:`reference_quantiles`: nodata and codes outside the joint
        distribution are left out (all zeros if nothing is left).
        """
        lut = self.coarse_lut.cpu().numpy()
        shares = np.zeros(self.table.num_coarse)
        for codes in coarse:
            c = np.asarray(codes)
            c = c[np.isfinite(c)].astype(np.int64) if c.dtype.kind == 'f' else c
            c = c[(c >= 0) & (c < lut.size)].astype(np.int64)
            rows = lut[c]
            shares += np.bincount(rows[rows >= 0], minlength=shares.size)
        total = shares.sum()
        return shares / total if total > 0 else shares

    #: Metric watched by the learning-rate scheduler (always logged, even when a
    #: run has no validation data).
    monitor = 'train_loss'

    # ------------------------------------------------------------- helpers
    def normalize(self, x: Tensor) -> Tensor:
        r"""Scale raw imagery and (``standardize='sample'``) standardise it.

        :math:`x' = (x/s - \bar{x})/\max(\mathrm{sd}(x/s), 10^{-2})`, the mean and
        standard deviation taken per band over each sample's pixels.
        """
        x = x.float() / self.hparams['input_scale']
        if self.hparams['standardize'] == 'sample':
            mean = x.mean(dim=(-2, -1), keepdim=True)
            std = x.std(dim=(-2, -1), keepdim=True).clamp(min=1e-2)
            x = (x - mean) / std
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, L, H, W)`` from raw imagery ``(B, C, H, W)``."""
        return super().forward(self.normalize(x))

    def coarse_index(self, coarse: Tensor, source: str = 'batch') -> Tensor:
        """Map raw coarse codes to table rows (``-1`` nodata).

        Raises:
            PriorError: if a code is neither nodata nor in the table.
        """
        codes = coarse.long()
        if bool(((codes < 0) | (codes >= self.coarse_lut.numel())).any()):
            bad = codes[(codes < 0) | (codes >= self.coarse_lut.numel())]
            self.table.check_codes(bad.unique().cpu().numpy(), source)
        idx = self.coarse_lut[codes.clamp(0, self.coarse_lut.numel() - 1)]
        if bool((idx == -2).any()):
            self.table.check_codes(codes[idx == -2].unique().cpu().numpy(), source)
        return idx

    def fine_index(self, mask: Tensor, source: str = 'batch') -> Tensor:
        """Map raw fine codes to class indices (``-1`` nodata)."""
        codes = mask.long().clamp(0, self.fine_lut.numel() - 1)
        idx = self.fine_lut[codes]
        if bool((idx == -2).any()):
            bad = sorted(codes[idx == -2].unique().tolist())
            raise PriorError(
                f'{source}: fine labels hold values {bad} that are neither nodata '
                f'({self.hparams["fine_nodata"]}) nor fine codes '
                f'{self.table.fine_codes}.'
            )
        return idx

    def label_indices(
        self, batch: Mapping[str, Any]
    ) -> tuple[Tensor | None, Tensor | None]:
        """Coarse-table rows and fine class indices of a batch (``-1`` nodata)."""
        coarse = self.coarse_index(batch['coarse']) if 'coarse' in batch else None
        fine = self.fine_index(batch['mask']) if 'mask' in batch else None
        return coarse, fine

    def compute_loss(
        self,
        batch: Mapping[str, Any],
        logits: Tensor,
        labels: tuple[Tensor | None, Tensor | None] | None = None,
    ) -> Tensor | None:
        """The configured loss of a batch, or None if it carries no usable label.

        ``labels`` are :meth:`label_indices` of the batch, when already computed.
        """
        name: str = self.hparams['loss']
        coarse, fine = self.label_indices(batch) if labels is None else labels
        needs_coarse = name != 'hr'
        needs_fine = name.startswith('hr')
        if needs_coarse and coarse is None:
            raise KeyError(f"loss={name!r} needs 'coarse' labels in the batch.")
        if needs_fine and fine is None:
            raise KeyError(f"loss={name!r} needs fine labels ('mask') in the batch.")
        if (
            name == 'hr+lsr'
            and self.hparams.get('hr_coarse', 'all') == 'unlabelled'
            and coarse is not None
            and fine is not None
        ):  # the coarse term only where no fine label is
            coarse = torch.where(fine >= 0, torch.full_like(coarse, -1), coarse)
        has_coarse = coarse is not None and bool((coarse >= 0).any())
        has_fine = fine is not None and bool((fine >= 0).any())
        blocks = batch.get('block')
        if name == 'hr+lsr':  # each term where its labels exist (HR+SR)
            terms = []
            if has_fine:
                hr = self.hr_loss(logits, fine)  # type: ignore[arg-type]
                terms.append(self.hparams['hr_weight'] * hr)
            if has_coarse:
                terms.append(self.lsr_loss(logits, coarse, blocks))
            return torch.stack(terms).sum() if terms else None
        if (needs_coarse and not has_coarse) or (needs_fine and not has_fine):
            return None
        match name:
            case 'lsr' if self.training and self.global_step < self.hparams.get(
                'naive_warmup', 0
            ):
                return self.soft_naive(logits, coarse)
            case 'lsr':
                return self.lsr_loss(logits, coarse, blocks)
            case 'soft-naive':
                return self.soft_naive(logits, coarse)
            case 'hard-naive':
                return self.hard_naive(logits, coarse)
            case _:
                return self.hr_loss(logits, fine)  # type: ignore[arg-type]

    @staticmethod
    def hr_loss(logits: Tensor, fine: Tensor) -> Tensor:
        """Pixel cross-entropy on fine labels (``-1`` ignored)."""
        target = torch.where(fine >= 0, fine, torch.full_like(fine, -100))
        return F.cross_entropy(logits.float(), target, ignore_index=-100)

    def training_marginal(self) -> Tensor | None:
        r"""Fine-class distribution :math:`\pi` the network was trained under.

        For losses on fine labels, the frequency of the fine labels seen in
        training; for losses on coarse labels, :math:`\pi_l = \sum_z f_z\,\eta_{l,z}`
        with :math:`f_z` the frequency of the coarse labels seen (after any balanced
        sampling, which is what the network saw). None before training.
        """
        if self.hparams['loss'].startswith('hr') and float(self.fine_seen.sum()) > 0:
            return self.fine_seen / self.fine_seen.sum()
        total = float(self.coarse_seen.sum())
        if total == 0:
            return None
        return (self.coarse_seen / total) @ self.eta

    def combine(self, probs: Tensor, coarse: Tensor) -> Tensor:
        """Apply :func:`combine_with_prior` (or :func:`match_fractions`)."""
        if self.hparams['prior_rule'] == 'fractions':
            if self.hparams['prior_weight'] == 0:
                return probs
            return match_fractions(probs, coarse, self.eta)
        marginal = None
        if self.hparams['prior_rule'] == 'bayes':
            marginal = self.training_marginal()
        return combine_with_prior(
            probs, coarse, self.eta, self.hparams['prior_weight'], marginal=marginal
        )

    def predict_probs(self, batch: Mapping[str, Any]) -> Tensor:
        """Class probabilities of a batch, combined with the coarse prior where given.

        :meth:`window_probabilities` of ``image`` (and ``coarse``).
        """
        return self.window_probabilities(batch['image'], batch.get('coarse'))

    @torch.no_grad()
    def _count_labels(self, coarse: Tensor | None, fine: Tensor | None) -> None:
        if coarse is not None:
            idx = coarse[coarse >= 0]
            self.coarse_seen += torch.bincount(idx, minlength=self.table.num_coarse)
        if fine is not None:
            idx = fine[fine >= 0]
            self.fine_seen += torch.bincount(idx, minlength=self.table.num_fine)

    # ------------------------------------------------------------- steps
    def training_step(  # type: ignore[override]  # Lightning skips a None loss
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor | None:
        """Loss of a training batch; batches without labels are skipped with a warning."""
        logits = self(batch['image'])
        labels = self.label_indices(batch)
        loss = self.compute_loss(batch, logits, labels)
        self._count_labels(*labels)
        if loss is None:
            warnings.warn(
                f'training batch {batch_idx} holds no labelled pixel (all nodata); '
                'skipped.',
                stacklevel=2,
            )
            return None
        self.log('train_loss', loss, batch_size=logits.shape[0])
        return loss

    def _eval_step(self, batch: Any, scores: LandCoverMetrics, prefix: str) -> None:
        logits = self(batch['image'])
        coarse, fine = labels = self.label_indices(batch)
        loss = self.compute_loss(batch, logits, labels)
        if loss is not None:
            self.log(f'{prefix}_loss', loss, batch_size=logits.shape[0])
        if fine is None:
            return
        probs = logits.softmax(dim=1)
        subset = None
        if coarse is not None:
            probs = self.combine(probs, coarse)
            subset = torch.isin(coarse, self.eval_subset)
        scores.update(probs.argmax(dim=1), fine, subset)

    def _log_scores(self, scores: LandCoverMetrics, prefix: str) -> None:
        if int(scores.cm.sum()) == 0:
            return
        out = scores.compute()
        flat = {f'{prefix}_{k}': v for k, v in out.items() if isinstance(v, float)}
        flat.update({f'{prefix}_iou_{k}': v for k, v in out['iou'].items()})
        self.log_dict({k: v for k, v in flat.items() if v == v})
        scores.reset()

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Loss and metrics (the latter when fine labels are present)."""
        self._eval_step(batch, self.val_scores, 'val')

    def on_validation_epoch_end(self) -> None:
        """Log validation scores."""
        self._log_scores(self.val_scores, 'val')

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loss and metrics (the latter when fine labels are present)."""
        self._eval_step(batch, self.test_scores, 'test')

    def on_test_epoch_end(self) -> None:
        """Log test scores."""
        self._log_scores(self.test_scores, 'test')

    def predict_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """Class probabilities (combined with the coarse prior where given)."""
        return self.predict_probs(batch)

    # ------------------------------------------------------------- output head
    #: The head combines the network with coarse labels (``--coarse``).
    uses_coarse = True

    def output_specs(
        self, names: Sequence[str] | None = None, probabilities: bool = False
    ) -> tuple[OutputSpec, ...]:
        """A class map of the fine classes (:func:`~geosparse.trainers.heads.class_specs`).

        Args:
            names: class names (default: the joint distribution's fine classes).
            probabilities: also write one probability band per class.

        Returns:
            The class map's spec (and the probabilities').
        """
        return class_specs(
            type(self).__name__,
            self.table.fine_names if names is None else names,
            probabilities,
        )

    def predict_window(
        self, image: Tensor, coarse: Tensor | None = None, probabilities: bool = False
    ) -> Tensor:
        r"""Class and uncertainty bands of a raw window, with the coarse prior.

        :math:`p(l \mid x)` from the network (:meth:`normalize`, then the padded
        forward), combined with the coarse labels where given and
        ``prior_weight > 0`` (:meth:`combine`), then
        :func:`~geosparse.trainers.heads.class_bands`.

        Args:
            image: ``(1, C, h, w)`` raw imagery.
            coarse: ``(1, h, w)`` raw coarse codes on the window's pixels, or None.
            probabilities: add one probability band per class.

        Returns:
            ``(2 [+ L], h, w)`` uint8 bands.
        """
        return class_bands(self.window_probabilities(image, coarse)[0], probabilities)

    def window_probabilities(
        self, image: Tensor, coarse: Tensor | None = None
    ) -> Tensor:
        r"""Class probabilities ``(B, L, h, w)`` of raw windows, as prediction makes them.

        :math:`p(l \mid x)` of the network on the windows padded to its downsampling
        factor (:func:`~geosparse.trainers.heads.pad_multiple`), combined with the coarse labels (:meth:`combine`)
        where ``coarse`` is given and ``prior_weight > 0``.
        """
        x = self.normalize(image)
        with torch.no_grad():
            p = forward_padded(self.model, x, pad_multiple(self.hparams)).softmax(dim=1)
            if coarse is not None and self.hparams['prior_weight'] > 0:
                p = self.combine(p, self.coarse_index(coarse.long()))
        return p
