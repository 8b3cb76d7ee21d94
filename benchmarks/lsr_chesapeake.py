"""Label super-resolution on real Chesapeake patches (NAIP + NLCD -> 4-class land cover).

Three protocols of Malkin et al. (ICLR 2019), each trained with the same network,
budget and seed and scored with the no-learning baseline ``nlcd-argmax`` (each NLCD
code mapped to its most likely fine class) on the evaluation patches:

* ``cross-tile`` (the paper's HR/SR models applied to a new region): lsr,
  soft-naive, hard-naive and hr (fine labels, the upper bound of the recipe) trained
  on ``--train``, scored on ``--eval``;
* ``target-sr`` (the paper's SR rows, Table 1: "trained on test geographical
  regions, without using high-resolution labels"): lsr and the naive losses trained
  on the imagery and coarse labels of the evaluation patches themselves, scored on
  them. ``--train`` and ``--eval`` the same folder means this protocol alone.
  ``hr-target`` trains the same recipe on the evaluation patches' own fine labels:
  an oracle, not a method (those labels are what the others lack), the recipe's
  upper bound on the target, which says whether a target-sr goal can be met there;
* ``hr+sr``: ``hr`` trained on the fine labels of ``--fine`` (another region; by
  default ``--train``) alone is the paper's HR-only row; ``hr+lsr`` adds the coarse
  labels of the evaluation patches (cross-entropy where fine labels exist, the lsr
  loss where coarse ones do). The target imagery is first mapped onto the ``--fine``
  imagery when it comes from another acquisition (``--harmonize``, :func:`harmonize`).

``--holdout ID ...`` splits one folder (``--train``) into training patches and the
held-out patches whose names hold ``_ID_``. ``--shift RASTER`` simulates a second
acquisition: the evaluation patches go through the per-band quantile map from the
training imagery to the pixels of ``RASTER``, real imagery of another acquisition
(:class:`geosparse.datasets.RadiometricShift`); their labels are unchanged. A
trained method's predictor maps the evaluation imagery back onto the training
imagery when it lies far from it (``--radiometry auto``), onto the training
radiometry mixed in the evaluation patches' own NLCD shares (``--match-reference
nlcd``, what ``geosparse predict --coarse`` does); ``pooled_reference`` holds the
same networks' scores with the pooled reference.

It prints one JSON object::

    {"protocols": {NAME: {"methods": {METHOD: {"acc", "miou", "iou", "developed"}},
                          "seeds": {...}}},
     "goals": {...}, "shift": {...} | null, "harmonized": {...} | null,
     "trained_on": {PROTOCOL: {METHOD: {"fine_labels", "evaluation_patches"}}},
     "data": {...},
     "displacement": {"eval", "train_patch_max"}, "steps", "seconds"}

mIoU is over the fine classes present in the evaluation truth; ``developed`` holds
the scores over pixels whose NLCD class is developed (21-24, the paper's headline),
or says that there are too few. With several ``--seeds`` every trained method is
run once per seed; ``methods`` holds the mean over the seeds and ``seeds`` each
seed's result. ``goals`` checks lsr >= nlcd-argmax + 0.02 and lsr > soft-naive
(cross-tile, target-sr) and hr+lsr > hr (hr+sr) on the means. A folder holds
``*_naip.tif``, ``*_nlcd.tif`` and ``*_lc.tif`` triples (NLCD already resampled onto
the NAIP grid, so blocks are the regions of one NLCD class within a window).

Example (one fold of the shared tile, under a second acquisition)::

    python benchmarks/lsr_chesapeake.py --train ../shared/data/chesapeake-wv2014/train \
        --holdout 06 07 --shift ../shared/data/naip-samples/m_3211605_ne_11_060_20200415.tif
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback, WeightAveraging
from torchmetrics.functional.classification import binary_auroc

from geosparse.console import progress, quiet, verbose_option
from geosparse.datamodules import LabelSuperResolutionDataModule
from geosparse.datasets import (
    RadiometricShift,
    harmonize_folder,
    sample_rasters,
    shift_folder,
)
from geosparse.inference import Predictor
from geosparse.io.raster import atomic_path, atomic_write_raster, atomic_write_text
from geosparse.metrics import LandCoverMetrics, scores_from_confusion
from geosparse.priors import NLCD_DEVELOPED, JointDistribution, PriorError
from geosparse.trainers import LabelSuperResolutionTask, brief_trainer

PROTOCOLS = {
    'cross-tile': ('lsr', 'soft-naive', 'hard-naive', 'hr'),
    'target-sr': ('lsr', 'soft-naive', 'hard-naive', 'hr-target'),
    'hr+sr': ('hr', 'hr+lsr'),
}
METHODS = tuple(dict.fromkeys(m for ms in PROTOCOLS.values() for m in ms))
#: Fewest labelled pixels in NLCD developed classes (21-24) to report their scores.
MIN_DEVELOPED = 5000


def triples(folder: Path) -> list[tuple[Path, Path, Path]]:
    """The (naip, nlcd, lc) files of a folder."""
    out = []
    for naip in sorted(folder.glob('*_naip.tif')):
        stem = str(naip)[: -len('_naip.tif')]
        nlcd, lc = Path(stem + '_nlcd.tif'), Path(stem + '_lc.tif')
        if not (nlcd.exists() and lc.exists()):
            sys.exit(f'{naip}: missing {nlcd.name} or {lc.name} beside it.')
        out.append((naip, nlcd, lc))
    if not out:
        sys.exit(f'{folder}: no *_naip.tif files; pass a folder of Chesapeake triples.')
    return out


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def displacement(
    train_data: list[tuple[Path, Path, Path]], eval_data: list[tuple[Path, Path, Path]]
) -> dict[str, list[float]]:
    """Per band, how far the imagery lies from the training imagery's (pooled pixels).

    :meth:`geosparse.datasets.RadiometricShift.displacement` of the evaluation
    patches (pooled) onto the training patches (pooled), and of each training patch
    onto all of them: what ``radiometry='auto'`` compares with its threshold, here
    from the patches' own pixels rather than a network's training windows.
    """
    train = sample_rasters([t[0] for t in train_data])

    def moved(images: list[np.ndarray]) -> list[float]:
        shift = RadiometricShift.fit(images, train)
        return [round(float(d), 3) for d in shift.displacement()]

    return {
        'eval': moved(sample_rasters([t[0] for t in eval_data])),
        'train_patch_max': [
            max(v) for v in zip(*(moved([image]) for image in train), strict=True)
        ],
    }


def evaluate(
    task: LabelSuperResolutionTask | None,
    data: list[tuple[Path, Path, Path]],
    table: JointDistribution,
    diagnose: bool = False,
    radiometry: str = 'auto',
    alternative: bool = True,
    fit: bool = False,
    reference: str = 'nlcd',
) -> dict[str, Any]:
    """Scores of a task (or of nlcd-argmax when ``task`` is None) on whole patches.

    ``reference`` (``--match-reference``): ``nlcd`` matches onto the training
    radiometry mixed in the evaluation patches' own NLCD composition
    (``Predictor.matched(..., coarse=...)``), ``pooled`` onto the pooled one.

    With ``fit`` (and a task), ``coarse_fit`` holds :func:`coarse_fit` of the same
    predictor: how well its map agrees with the coarse labels alone.

    With ``radiometry='match'`` the predictor maps the evaluation imagery, all its
    patches pooled as one acquisition, onto the training imagery's band
    distributions (:meth:`geosparse.inference.Predictor.matched`); with ``auto``
    (the predictor's default) only if they lie far from them, and ``radiometry``
    gives the decision and the displacements. With ``alternative``,
    ``alternative`` holds the same network's scores with the other decision
    (``off`` if the imagery was matched, else ``match``).

    With ``diagnose``, also ``by_coarse``: for each NLCD code of the evaluation
    patches, its pixel count, the prior eta_z, the fine-class fractions
    of the truth, of the final map and (for a task) the network's mean probabilities
    before the combination with the prior. This shows whether the network meets the
    block statistics it was trained to match, and where the prior is off. For a
    task, ``ranking_auc`` gives per fine class of the truth the one-vs-rest ROC AUC
    of the network's probability (:func:`ranking_auc`).
    """
    metrics = LandCoverMetrics(table.num_fine, list(table.fine_names))
    predictor = None
    decision = None
    if task is not None:
        predictor = Predictor(task, torch_threads=None, radiometry=radiometry)  # type: ignore[arg-type]
        predictor = predictor.matched(
            [read(t[0]).astype(np.float64) for t in data],
            coarse=[read(t[1])[0] for t in data] if reference == 'nlcd' else None,
        )
        decision = predictor.radiometry_report
    lut = np.full(256, -1, dtype=np.int64)
    lut[table.fine_codes] = np.arange(table.num_fine)
    amap = table.argmax_map()
    fallback = int(np.argmax(table.eta.mean(0)))
    coarse_all: list[np.ndarray] = []
    truth_all: list[np.ndarray] = []
    map_all: list[np.ndarray] = []
    network_all: list[np.ndarray] = []
    for naip, nlcd, lc in data:
        image, coarse, fine = read(naip), read(nlcd)[0], read(lc)[0]
        truth = torch.from_numpy(lut[fine])
        if predictor is None:
            pred = np.vectorize(lambda c: amap.get(int(c), fallback))(coarse)
            pred_t = torch.from_numpy(pred.astype(np.int64))
        else:  # the class band of the package's predictor
            image = image.astype(np.float32)
            pred_t = torch.from_numpy(predictor(image, coarse)[0].astype(np.int64))
            if diagnose:  # the network's own probabilities, before the prior
                seen = image if predictor.shift is None else predictor.shift(image)
                raw = predictor.task.window_probabilities(torch.from_numpy(seen[None]))
                network_all.append(raw.reshape(table.num_fine, -1).numpy())
        developed = torch.from_numpy(np.isin(coarse, NLCD_DEVELOPED))
        metrics.update(pred_t, truth, developed)
        if diagnose:
            coarse_all.append(coarse.ravel())
            truth_all.append(truth.numpy().ravel())
            map_all.append(pred_t.numpy().ravel())
    out = scores_from_confusion(metrics.cm, list(table.fine_names))
    out['developed'] = developed_scores(metrics.cm_sub, list(table.fine_names))
    if predictor is not None and decision is not None:
        out['radiometry'] = decision
    if predictor is not None and fit:
        out['coarse_fit'] = coarse_fit(predictor, data)
    if predictor is not None and alternative and reference == 'nlcd':
        # The same network matched onto the pooled reference: what the mixture changes.
        pooled = evaluate(
            task,
            data,
            table,
            radiometry=radiometry,
            alternative=False,
            reference='pooled',
        )
        out['pooled_reference'] = {
            'radiometry': pooled.get('radiometry'),
            'acc': pooled['acc'],
            'miou': pooled['miou'],
        }
    if predictor is not None and alternative:
        # The same network with the other decision: what matching changes.
        other = 'off' if predictor.shift is not None else 'match'
        alt = evaluate(
            task, data, table, radiometry=other, alternative=False, reference=reference
        )
        out['alternative'] = {
            'radiometry': other,
            'acc': alt['acc'],
            'miou': alt['miou'],
        }
    if diagnose:
        truth_cat = np.concatenate(truth_all)
        network = np.concatenate(network_all, axis=1) if network_all else None
        out['by_coarse'] = coarse_fractions(
            table,
            np.concatenate(coarse_all),
            truth_cat,
            np.concatenate(map_all),
            network,
        )
        if network is not None:
            out['ranking_auc'] = {
                name: auc
                for k, name in enumerate(table.fine_names)
                if (auc := ranking_auc(network[k], truth_cat == k, truth_cat >= 0))
                is not None
            }
    return out


def developed_scores(cm: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """Scores over the pixels of NLCD developed classes, or why there are none.

    The paper's headline metric. Reported only with at least ``MIN_DEVELOPED``
    labelled pixels in those classes; otherwise ``note`` says so.
    """
    pixels = int(cm.sum())
    if pixels < MIN_DEVELOPED:
        return {
            'pixels': pixels,
            'note': f'fewer than {MIN_DEVELOPED} labelled pixels in NLCD 21-24',
        }
    return {'pixels': pixels, **scores_from_confusion(cm, names)}


def ranking_auc(
    score: np.ndarray, positive: np.ndarray, valid: np.ndarray
) -> float | None:
    """Area under the ROC curve of ``score`` for ``positive`` among ``valid`` pixels.

    torchmetrics' exact binary AUROC (ties count a half): the probability that a
    random positive pixel scores above a random negative one (0.5: no ranking).
    None when either group is empty. With ``--diagnose`` it shows whether the
    network separates a class at all, apart from its calibration.
    """
    y = positive[valid]
    if y.all() or not y.any():
        return None
    auc = binary_auroc(torch.from_numpy(score[valid]), torch.from_numpy(y).long())
    return round(float(auc), 4)


def coarse_fractions(
    table: JointDistribution,
    coarse: np.ndarray,
    truth: np.ndarray,
    pred: np.ndarray,
    network: np.ndarray | None,
) -> dict[str, dict[str, Any]]:
    """Fine-class fractions per coarse code (``--diagnose``).

    Args:
        table: the joint distribution (its eta is the ``prior`` row).
        coarse: ``(P,)`` coarse codes of the evaluated pixels.
        truth: ``(P,)`` fine class indices of the truth, ``-1`` nodata.
        pred: ``(P,)`` fine class indices of the final map.
        network: ``(L, P)`` network probabilities before the prior, or None.

    Returns:
        For each code: ``pixels``, ``prior`` (None for codes outside the table),
        ``truth`` (over labelled pixels), ``map`` and (with ``network``) ``network``.
    """
    n = table.num_fine
    rows = dict(zip(table.coarse_codes, table.eta, strict=True))
    out = {}
    for code in np.unique(coarse):
        m = coarse == code
        t = truth[m][truth[m] >= 0]
        row: dict[str, Any] = {
            'pixels': int(m.sum()),
            'prior': rows[code].round(3).tolist() if code in rows else None,
            'truth': (np.bincount(t, minlength=n) / max(t.size, 1)).round(3).tolist(),
            'map': (np.bincount(pred[m], minlength=n) / m.sum()).round(3).tolist(),
        }
        if network is not None:
            row['network'] = network[:, m].mean(axis=1).round(3).tolist()
        out[str(code)] = row
    return out


def mean_scores(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean acc, mIoU and per-class IoU of several runs of one method."""
    classes = sorted({c for r in runs for c in r['iou']})
    out: dict[str, Any] = {
        'acc': float(np.mean([r['acc'] for r in runs])),
        'miou': float(np.mean([r['miou'] for r in runs])),
        'iou': {
            c: float(np.mean([r['iou'][c] for r in runs if c in r['iou']]))
            for c in classes
        },
    }
    if all('radiometry' in r for r in runs):  # auto: how often it matched
        out['radiometry_matched'] = float(
            np.mean([r['radiometry']['matched'] for r in runs])
        )
    if all('alternative' in r for r in runs):
        out['alternative'] = {
            'radiometry': runs[0]['alternative']['radiometry'],
            **{
                k: float(np.mean([r['alternative'][k] for r in runs]))
                for k in ('acc', 'miou')
            },
        }
    if all('pooled_reference' in r for r in runs):  # --match-reference nlcd
        out['pooled_reference'] = {
            'radiometry_matched': float(
                np.mean([r['pooled_reference']['radiometry']['matched'] for r in runs])
            ),
            **{
                k: float(np.mean([r['pooled_reference'][k] for r in runs]))
                for k in ('acc', 'miou')
            },
        }
    dev = [r['developed'] for r in runs if 'miou' in r['developed']]
    out['developed'] = (
        {
            'pixels': dev[0]['pixels'],
            'acc': float(np.mean([d['acc'] for d in dev])),
            'miou': float(np.mean([d['miou'] for d in dev])),
        }
        if dev
        else runs[0]['developed']
    )
    if 'ranking_auc' in runs[0]:
        out['ranking_auc'] = {
            c: round(float(np.mean([r['ranking_auc'][c] for r in runs])), 4)
            for c in runs[0]['ranking_auc']
        }
    if all('budgets' in r for r in runs):  # --select-steps
        out['selected'] = [r['selected'] for r in runs]
        out['budgets'] = {
            step: {
                'miou': float(np.mean([r['budgets'][step]['miou'] for r in runs])),
                'coarse_fit': {
                    k: float(
                        np.mean([r['budgets'][step]['coarse_fit'][k] for r in runs])
                    )
                    for k in runs[0]['budgets'][step]['coarse_fit']
                },
            }
            for step in runs[0]['budgets']
        }
    if 'by_coarse' in runs[0]:  # fractions averaged over the seeds
        out['by_coarse'] = {
            code: {
                k: v
                if k in ('pixels', 'prior')
                else np.mean([r['by_coarse'][code][k] for r in runs], axis=0)
                .round(3)
                .tolist()
                for k, v in row.items()
            }
            for code, row in runs[0]['by_coarse'].items()
        }
    return out


def train(
    method: str,
    folder: Path,
    steps: int,
    seed: int,
    args: argparse.Namespace,
    fine: bool = True,
) -> tuple[LabelSuperResolutionTask, Trainer]:
    """Train one method on a folder of triples (``fine=False``: no fine labels read)."""
    seed_everything(seed, workers=True)
    dm = LabelSuperResolutionDataModule(
        image_paths=str(folder),
        coarse_paths=str(folder),
        fine_paths=str(folder) if fine else None,
        image_glob='*_naip.tif',
        coarse_glob='*_nlcd.tif',
        fine_glob='*_lc.tif',
        coarse_blocks=args.blocks,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        length=steps * args.batch_size,
        val_fraction=0.0,
        balance=args.balance,
        radiometric=args.radiometric,
        seed=seed,
    )
    task = LabelSuperResolutionTask(
        model=args.model,
        backbone='resnet18',
        standardize=args.standardize,
        coarse_balance=args.coarse_balance,
        loss='hr' if method == 'hr-target' else method,  # type: ignore[arg-type]
        lr=args.lr,
        prior_weight=args.prior_weight,
        hr_weight=args.hr_weight,
        hr_coarse=args.hr_coarse,
        naive_warmup=args.naive_warmup,
        var_floor=args.var_floor,
        var_floor_scale=args.var_floor_scale,
        lsr_variant=args.lsr_variant,
        prior_rule=args.prior_rule,
        priors=args.priors,
    )
    callbacks: list[Callback] = []
    if args.average_from > 0:
        callbacks.append(TailAverage(int(args.average_from * steps)))
    if args.select_steps:
        callbacks.append(Snapshots(args.select_steps))
    trainer = brief_trainer(steps, callbacks=callbacks)
    trainer.fit(task, datamodule=dm)
    task.eval()
    return task, trainer


class TailAverage(WeightAveraging):
    """Uniform average of the weights (and BatchNorm statistics) from step ``start``.

    SWA-style averaging at a constant learning rate (Izmailov et al. 2018; dense
    averaging for domain shift, SWAD, Cha et al. 2021). The radiometry histogram the
    task counts is kept as counted, not averaged.
    """

    def __init__(self, start: int) -> None:
        super().__init__(use_buffers=True)
        self.start = start

    def should_update(
        self, step_idx: int | None = None, epoch_idx: int | None = None
    ) -> bool:
        """Average the steps from ``start`` on."""
        return step_idx is not None and step_idx >= self.start

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        """Put the average in the model, but for the radiometry histogram.

        The histogram goes into the averaged copy too, which a checkpoint saved after
        training holds as its ``state_dict``.
        """
        counts = getattr(pl_module, 'radiometry_counts', None)
        kept = None if counts is None else counts.clone()
        super().on_train_end(trainer, pl_module)
        if kept is not None:
            pl_module.radiometry_counts.copy_(kept)
            average = getattr(self._average_model, 'module', None)
            if average is not None:
                average.radiometry_counts.copy_(kept)


def link(files: list[Path], folder: Path) -> Path:
    """A folder of symbolic links to ``files``."""
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return folder


def split_holdout(folder: Path, holdout: list[str], work: Path) -> tuple[Path, Path]:
    """Training and held-out folders of one folder's triples (``_ID_`` in the name)."""
    data = triples(folder)
    held = [t for t in data if any(f'_{i}_' in t[0].name for i in holdout)]
    rest = [t for t in data if t not in held]
    if not held or not rest:
        sys.exit(
            f'--holdout {" ".join(holdout)}: matches {len(held)} of the {len(data)} '
            f'patches in {folder}; give ids (the NN of *_NN_naip.tif) of some, not all.'
        )
    flat = [[f for t in ts for f in t] for ts in (rest, held)]
    return link(flat[0], work / 'train'), link(flat[1], work / 'eval')


def hr_sr_folder(fine: Path, target: Path, work: Path) -> Path:
    """Fine-label patches beside the target patches, whose fine labels are nodata.

    ``hr+lsr`` then learns from the fine labels where they exist and from the coarse
    labels of every patch (the paper's HR+SR: high-resolution labels of one region,
    low-resolution labels of the region to map).
    """
    out = link([f for t in triples(fine) for f in t], work / 'hr+sr')
    for naip, nlcd, lc in triples(target):
        if (out / naip.name).exists():
            sys.exit(f'{naip.name} is in both --fine and the evaluation patches.')
        for f in (naip, nlcd):
            (out / f.name).symlink_to(f.resolve())
        with rasterio.open(lc) as src:
            profile = src.profile
            empty = np.zeros((1, src.height, src.width), dtype=src.dtypes[0])
        atomic_write_raster(out / lc.name, empty, profile)  # fine nodata (0)
    return out


def train_priors(data: list[tuple[Path, Path, Path]], out: Path) -> Path:
    """The joint distribution of the training patches' fine labels (``--priors train``).

    30 m cells as blocks, and the built-in rows for the coarse classes the patches
    lack (``geosparse priors estimate --blocks cells --fill nlcd-landcover4``).
    """
    from geosparse.cli import main as geosparse_main

    args = ['priors', 'estimate', '--blocks', 'cells', '--fill', 'nlcd-landcover4']
    args += ['--quiet', '--out', str(out), '--coarse', *(str(t[1]) for t in data)]
    args += ['--fine', *(str(t[2]) for t in data)]
    with contextlib.redirect_stdout(io.StringIO()):
        if geosparse_main(args) != 0:
            sys.exit(
                f'--priors train: could not estimate a table from {data[0][0].parent}.'
            )
    return out


def harmonize(fine: Path, target: Path, work: Path, mode: str) -> dict[str, Any]:
    """Map the target imagery onto the fine-label imagery before hr+lsr trains on it.

    :func:`geosparse.datasets.harmonize_folder` of the target patches onto the
    ``--fine`` patches, into ``work/target-harmonized``: with ``mode='auto'`` only
    if some band's displacement exceeds the threshold by which the predictor's
    ``radiometry='auto'`` matches a raster. The network then learns the fine and
    coarse labels in one radiometry, and the predictor maps the raw target onto it.
    """
    report = harmonize_folder(target, fine, work / 'target-harmonized', mode)
    report.pop('out', None)
    return report


def coarse_fit(
    predictor: Any,
    data: list[tuple[Path, Path, Path]],
    window: int = 128,
) -> dict[str, float]:
    r"""How well a network's fine map agrees with the coarse labels alone.

    Scores that need no fine label, to choose a training budget on the evaluation
    patches (``--select-steps``). Each patch is cut into ``window``-pixel windows
    (the training windows' size); in each, every NLCD region is a block :math:`b`
    of coarse class :math:`z_b`, :math:`\mu_b` the network's mean probabilities over
    it (before the combination with the prior, which reads the coarse labels) and
    :math:`f_b` the fractions of the predictor's class band (the map users get):

    * ``lsr_nll``: the task's own label-counting loss on :math:`\mu_b`
      (:class:`geosparse.losses.StatisticsMatchingLoss`, Malkin et al. Eq. 4-7, its
      block weights and balance) averaged over the windows;
    * ``fraction_l1``: :math:`\sum_b |B_b|\,\lVert\mu_b-\eta_{z_b}\rVert_1 /
      \sum_b |B_b|`, the pixel-weighted L1 distance between each region's mean
      probabilities and the joint distribution's row;
    * ``map_l1``: the same distance for the map's fractions :math:`f_b`.

    Args:
        predictor: a :class:`geosparse.inference.Predictor` of the task (its
            ``task``, radiometric ``shift`` and class band are read).
        data: the evaluation triples (the fine labels are not read).
        window: window size in pixels.

    Returns:
        ``{'lsr_nll', 'fraction_l1', 'map_l1'}``; lower is better.
    """
    task = predictor.task
    eta = task.lsr_loss.eta
    nll: list[float] = []
    l1 = {'fraction_l1': 0.0, 'map_l1': 0.0}
    pixels = 0
    for naip, nlcd, _ in data:
        image, coarse = read(naip).astype(np.float32), read(nlcd)[0]
        seen = image if predictor.shift is None else predictor.shift(image)
        probs = task.window_probabilities(torch.from_numpy(seen[None]))[0]
        classes = torch.from_numpy(predictor(image, coarse)[0].astype(np.int64))
        onehot = torch.nn.functional.one_hot(classes, eta.shape[1]).permute(2, 0, 1)
        index = task.coarse_index(torch.from_numpy(coarse.astype(np.int64)))
        h, w = index.shape
        for r in range(0, h, window):
            for c in range(0, w, window):
                p = probs[:, r : r + window, c : c + window]
                z = index[r : r + window, c : c + window]
                if not bool((z >= 0).any()):
                    continue
                with torch.no_grad():
                    loss = task.lsr_loss(p.clamp_min(1e-8).log()[None], z[None])
                nll.append(float(loss))
                f = onehot[:, r : r + window, c : c + window].float()
                for k in z[z >= 0].unique().tolist():
                    m = z == k
                    n = int(m.sum())
                    for name, q in (('fraction_l1', p), ('map_l1', f)):
                        l1[name] += (
                            float((q[:, m].mean(dim=1) - eta[k]).abs().sum()) * n
                        )
                    pixels += n
    nan = float('nan')
    return {
        'lsr_nll': float(np.mean(nll)) if nll else nan,
        **{k: v / pixels if pixels else nan for k, v in l1.items()},
    }


class Snapshots(Callback):
    """Copies of a module's ``state_dict`` after the listed optimiser steps."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Keep a copy when the step just taken is one of ``steps``."""
        if trainer.global_step in self.steps:
            self.states[trainer.global_step] = {
                k: v.detach().clone() for k, v in pl_module.state_dict().items()
            }


def select_budget(
    task: LabelSuperResolutionTask,
    trainer: Trainer,
    data: list[tuple[Path, Path, Path]],
    table: JointDistribution,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Score every budget of ``--select-steps`` and keep the best by the coarse fit.

    Every snapshot and the final model are scored on the evaluation patches (fine
    labels, for the record) and by :func:`coarse_fit` (coarse labels only); the
    budget with the lowest ``--select-by`` criterion is the method's result, with
    ``budgets`` holding all of them and ``selected`` the step chosen. The task is
    left with the selected weights.
    """
    snaps = next(c for c in trainer.callbacks if isinstance(c, Snapshots))  # type: ignore[attr-defined]
    final = {k: v.detach().clone() for k, v in task.state_dict().items()}
    states = dict(snaps.states) | {args.steps: final}
    budgets: dict[int, dict[str, Any]] = {}
    for step in sorted(states):
        task.load_state_dict(states[step])
        budgets[step] = evaluate(
            task,
            data,
            table,
            args.diagnose,
            args.radiometry,
            fit=True,
            reference=args.match_reference,
        )
    best = min(budgets, key=lambda s: budgets[s]['coarse_fit'][args.select_by])
    task.load_state_dict(states[best])
    out = dict(budgets[best])
    out['selected'] = best
    out['budgets'] = {
        str(s): {'miou': b['miou'], 'acc': b['acc'], 'coarse_fit': b['coarse_fit']}
        for s, b in budgets.items()
    }
    return out


def goals(results: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """The issue's goals, checked on the mean mIoU of each protocol."""
    out: dict[str, bool] = {}
    for name in ('cross-tile', 'target-sr'):
        m = results.get(name, {}).get('methods', {})
        if {'lsr', 'nlcd-argmax'} <= set(m):
            out[f'{name}: lsr >= nlcd-argmax + 0.02'] = bool(
                m['lsr']['miou'] >= m['nlcd-argmax']['miou'] + 0.02
            )
        if {'lsr', 'soft-naive'} <= set(m):
            out[f'{name}: lsr > soft-naive'] = bool(
                m['lsr']['miou'] > m['soft-naive']['miou']
            )
    m = results.get('hr+sr', {}).get('methods', {})
    if {'hr', 'hr+lsr'} <= set(m):
        out['hr+sr: hr+lsr > hr'] = bool(m['hr+lsr']['miou'] > m['hr']['miou'])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='Protocols: cross-tile, target-sr, hr+sr (see the module docstring).',
    )
    parser.add_argument('--train', type=Path, required=True)
    parser.add_argument(
        '--eval',
        type=Path,
        help='evaluation patches; the same folder as --train means target-sr alone',
    )
    parser.add_argument(
        '--holdout',
        nargs='+',
        metavar='ID',
        help='evaluate on the patches of --train whose names hold _ID_, train on the '
        'others (instead of --eval)',
    )
    parser.add_argument(
        '--fine',
        type=Path,
        help='fine-label patches of another region for hr+sr (default: --train)',
    )
    parser.add_argument(
        '--shift',
        type=Path,
        metavar='RASTER',
        help='simulate a second acquisition: map the evaluation imagery band by band '
        "onto this raster's distribution (real imagery of another acquisition)",
    )
    parser.add_argument(
        '--protocols',
        nargs='+',
        choices=tuple(PROTOCOLS),
        help='default: all that the folders allow',
    )
    parser.add_argument('--steps', type=int, default=150, help='optimiser steps')
    parser.add_argument('--out', type=Path, help='also write the JSON here')
    parser.add_argument('--save-checkpoint', type=Path, help='lsr model checkpoint')
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0],
        help='one run per seed; the JSON reports the mean and each seed',
    )
    parser.add_argument(
        '--select-steps',
        type=int,
        nargs='+',
        metavar='N',
        help='also keep the weights after these steps (each below --steps) and '
        'report, per method and seed, the budget whose map best fits the evaluation '
        "patches' coarse labels (--select-by; no fine label used), with every "
        "budget's scores under budgets",
    )
    parser.add_argument(
        '--select-by',
        default='lsr_nll',
        choices=('lsr_nll', 'fraction_l1', 'map_l1'),
        help='criterion of --select-steps: lsr_nll (default), the label-counting '
        'loss on the evaluation windows; fraction_l1, the L1 distance of each NLCD '
        "region's mean probabilities to the joint distribution's row; map_l1, the "
        'same for the fractions of the predicted map',
    )
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--patch-size', type=int, default=128)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument(
        '--average-from',
        type=float,
        default=0.0,
        help='average the weights uniformly over the steps after this fraction of '
        'the budget (SWA-style); 0: off, the last weights',
    )
    parser.add_argument(
        '--naive-warmup',
        type=int,
        default=0,
        metavar='N',
        help='lsr: train the first N steps with the soft-naive loss, then the '
        "label-counting loss (the task's naive_warmup); 0: off",
    )
    parser.add_argument('--balance', type=float, default=1.0)
    parser.add_argument(
        '--radiometric',
        type=float,
        default=0.0,
        help='strength of the random tone curve per band in training '
        '(RandomRadiometry); 0: off',
    )
    parser.add_argument(
        '--radiometry',
        default='auto',
        choices=('auto', 'match', 'off'),
        help="auto (default, the predictor's): map the evaluation imagery (all "
        "patches pooled) onto the training imagery's band distributions only if it "
        'lies far from them; match: always; off: raw values. The other decision is '
        'reported as "alternative"',
    )
    parser.add_argument(
        '--match-reference',
        default='nlcd',
        choices=('pooled', 'nlcd'),
        help='what the evaluation imagery is matched onto when it is: nlcd '
        "(default, what geosparse predict --coarse does), the training windows' "
        "band distributions per NLCD class mixed in the evaluation patches' own "
        'NLCD shares (the scores with the pooled reference are reported beside, '
        "as pooled_reference); pooled, the training windows' distributions as "
        'they came (without coarse labels)',
    )
    parser.add_argument(
        '--harmonize',
        default='auto',
        choices=('auto', 'match', 'off'),
        help='hr+sr: map the target imagery onto the --fine imagery (per-band '
        'quantiles) before hr+lsr trains on both; auto (default): only if it lies '
        "far from it (the predictor's rule); match: always; off: the raw target",
    )
    parser.add_argument(
        '--hr-weight',
        type=float,
        default=1.0,
        help='hr+lsr: weight of the fine-label cross-entropy beside the lsr term',
    )
    parser.add_argument(
        '--hr-coarse',
        choices=['all', 'unlabelled'],
        default='all',
        help='hr+lsr: the lsr term on every pixel with a coarse label (all) or only '
        "where no fine label is (unlabelled: the paper's target region alone)",
    )
    parser.add_argument(
        '--prior-weight',
        type=float,
        default=0.0,
        help='gamma of the Bayes combination with the NLCD label at evaluation; 0 '
        '(default): the network alone',
    )
    parser.add_argument(
        '--prior-rule',
        default='bayes',
        choices=('bayes', 'product', 'fractions'),
        help='how every trained method is combined with the NLCD prior at '
        'evaluation: bayes (default), product, or fractions (each NLCD region of a '
        "patch gets the prior's fine-class fractions, by the network's ranking)",
    )
    parser.add_argument('--var-floor', type=float, default=0.03)
    parser.add_argument(
        '--priors',
        default='nlcd-landcover4',
        help="the tasks' joint distribution: a built-in name (default "
        'nlcd-landcover4, Maryland 2013), a CSV of `geosparse priors estimate`, or '
        'train: estimated from the fine labels of the --train patches (after '
        '--holdout; never the evaluation patches) in 30 m cells, with the built-in '
        'rows for the coarse classes they lack (`geosparse priors estimate --blocks '
        'cells --fill nlcd-landcover4`); with a table other than the built-in the '
        'JSON also scores nlcd-argmax-priors, the NLCD map read through it',
    )
    parser.add_argument(
        '--lsr-variant',
        default='gaussian',
        choices=('gaussian', 'interval', 'kl'),
        help="the lsr loss: gaussian (default, the paper's Eq. 7); interval (the "
        "authors' released code: no penalty within eta +- rho); kl (an ablation)",
    )
    parser.add_argument(
        '--var-floor-scale',
        default='block',
        choices=('block', 'pixel'),
        help="block: var_floor is added to the block variance (the authors' code; "
        'for large blocks it switches the confidence term off); pixel: it bounds '
        'the mean per-pixel variance',
    )
    parser.add_argument(
        '--blocks',
        default='regions',
        choices=('regions', 'cells'),
        help="blocks: whole NLCD regions of a window (default, as in the authors' "
        'code) or their 30 m cells',
    )
    parser.add_argument(
        '--model',
        default='local',
        choices=('local', 'unet'),
        help='local (default): per-pixel perceptron on the bands and the local '
        'brightness and texture (15 px receptive field); unet: U-Net with a '
        'ResNet-18 encoder, as in the paper',
    )
    parser.add_argument(
        '--standardize',
        default='none',
        choices=('none', 'sample'),
        help='none (default): raw bands / 255 (the local model standardises its '
        'features with training statistics); sample: each band of each window '
        'standardised on its own',
    )
    parser.add_argument(
        '--coarse-balance',
        default='batch',
        choices=('batch', 'none'),
        help='batch (default): every NLCD class of a batch weighs the same in the '
        "lsr and naive losses; none: blocks weighted by size (authors' code)",
    )
    parser.add_argument(
        '--methods',
        default=','.join(METHODS),
        help='comma-separated; each protocol runs those of its methods listed here',
    )
    parser.add_argument(
        '--diagnose',
        action='store_true',
        help='add by_coarse: per NLCD code, the prior, truth, map and network '
        'fine-class fractions on the evaluation patches; and ranking_auc: per fine '
        'class, the ROC AUC of the network probability against the truth',
    )
    verbose_option(parser)
    args = parser.parse_args(argv)
    with quiet(args.verbose):
        if len(set(args.seeds)) != len(args.seeds):
            parser.error(f'--seeds {args.seeds}: give each seed once.')
        if (args.eval is None) == (args.holdout is None):
            parser.error('give either --eval DIR or --holdout ID ...')
        try:
            own = JointDistribution.load(
                'nlcd-landcover4' if args.priors == 'train' else args.priors
            )
        except (PriorError, OSError) as err:
            parser.error(f'--priors {args.priors}: {err}')
        if args.priors == 'train' and args.eval is not None:
            same = Path(args.eval).resolve() == Path(args.train).resolve()
            if same:
                parser.error(
                    '--priors train with --eval = --train would estimate the table '
                    'from the evaluation patches: give --holdout, or another --train.'
                )
        scored = list(JointDistribution.builtin('nlcd-landcover4').fine_codes)
        if list(own.fine_codes) != scored:
            parser.error(
                f'--priors {args.priors}: fine codes {list(own.fine_codes)}; the '
                f'benchmark scores the fine classes {scored} (Chesapeake).'
            )
        if args.select_steps and not all(0 < n < args.steps for n in args.select_steps):
            parser.error(
                f'--select-steps {args.select_steps}: give steps between 0 and '
                f'--steps {args.steps} (the final model is always a candidate).'
            )
        if args.select_steps and len(set(args.select_steps)) < len(args.select_steps):
            parser.error(f'--select-steps {args.select_steps}: give each step once.')
        if args.select_steps and args.save_checkpoint:
            parser.error(
                '--select-steps and --save-checkpoint: choose one (the checkpoint '
                "would pair the selected weights with the last step's optimiser)."
            )
        if args.select_steps and args.average_from:
            parser.error('--select-steps and --average-from: choose one.')
        if not 0 <= args.average_from < 1:
            parser.error(
                f'--average-from {args.average_from}: give a fraction of the steps in '
                '[0, 1) (0: off); at 1 or more no step would be averaged.'
            )
        if not 0 <= args.naive_warmup < args.steps:
            parser.error(
                f'--naive-warmup {args.naive_warmup}: give a number of steps in '
                f'[0, --steps {args.steps}) (0: off).'
            )
        methods = args.methods.split(',')
        unknown = sorted(set(methods) - set(METHODS))
        if unknown:
            parser.error(f'--methods: unknown {unknown}; choose from {METHODS}.')
        warnings.filterwarnings('ignore')
        torch.set_num_threads(os.cpu_count() or 1)
        with tempfile.TemporaryDirectory(prefix='lsr-bench-') as tmp:
            run(args, methods, Path(tmp), own)


def run(
    args: argparse.Namespace,
    methods: list[str],
    work: Path,
    table: JointDistribution,
) -> None:
    """Build the protocols' folders, train, score and print the JSON.

    ``table`` is ``--priors`` as ``main`` loaded and checked it (with ``train``,
    the table is estimated here, once the training patches are known).
    """
    if args.holdout:
        train_dir, eval_dir = split_holdout(args.train, args.holdout, work)
    else:
        train_dir, eval_dir = args.train, args.eval
    same = train_dir.resolve() == eval_dir.resolve()
    train_data = triples(train_dir)
    priors_from: list[str] | None = None
    priors_given = args.priors
    if args.priors == 'train':
        args.priors = str(train_priors(train_data, work / 'priors-train.csv'))
        priors_from = [t[2].name for t in train_data]
        table = JointDistribution.load(args.priors)
    shift = None
    if args.shift is not None:
        shift = RadiometricShift.from_files([t[0] for t in train_data], [args.shift])
        shift_folder(eval_dir, work / 'target', shift)
        eval_dir = work / 'target'
    eval_data = triples(eval_dir)
    default = ['target-sr', 'hr+sr'] if args.fine else ['target-sr']
    protocols = args.protocols or (default if same else list(PROTOCOLS))
    protocols = [p for p in protocols if set(PROTOCOLS[p]) & set(methods)]
    if same and 'cross-tile' in protocols:
        sys.exit('--train and --eval are one folder: cross-tile needs other patches.')
    if same and 'hr+sr' in protocols and not args.fine:
        sys.exit('hr+sr with --train = --eval needs fine labels of elsewhere: --fine.')
    fine_dir = args.fine or train_dir
    folders = {'cross-tile': train_dir, 'target-sr': eval_dir}
    harmonized = None
    if 'hr+sr' in protocols:
        target = eval_dir
        if args.harmonize != 'off':
            harmonized = harmonize(fine_dir, eval_dir, work, args.harmonize)
            if harmonized['matched']:
                target = work / 'target-harmonized'
        folders['hr+sr'] = hr_sr_folder(fine_dir, target, work)
    builtin = JointDistribution.builtin('nlcd-landcover4')
    start = time.perf_counter()
    plan = [(p, m) for p in protocols for m in PROTOCOLS[p] if m in methods]
    per_seed: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in protocols}
    # What each run learns from: fine labels or not, the evaluation patches or not.
    trained_on: dict[str, dict[str, dict[str, bool]]] = {p: {} for p in protocols}
    bar = progress(desc='runs', unit='run', total=len(args.seeds) * len(plan))
    for seed in args.seeds:
        done: dict[tuple[str, Path], dict[str, Any]] = {}
        for protocol, method in plan:
            bar.set_postfix_str(f'seed {seed} {protocol} {method}')
            hr_only = (protocol, method) == ('hr+sr', 'hr')
            folder = fine_dir if hr_only else folders[protocol]
            key = (method, folder.resolve())
            fine = protocol != 'target-sr' or method == 'hr-target'
            trained_on[protocol][method] = {
                'fine_labels': fine,
                'evaluation_patches': folder.resolve() == eval_dir.resolve(),
            }
            if key not in done:  # hr on --train is both cross-tile's and hr+sr's
                task, trainer = train(method, folder, args.steps, seed, args, fine)
                if args.select_steps:
                    done[key] = select_budget(task, trainer, eval_data, builtin, args)
                else:
                    done[key] = evaluate(
                        task,
                        eval_data,
                        builtin,
                        args.diagnose,
                        args.radiometry,
                        reference=args.match_reference,
                    )
                if method == 'lsr' and args.save_checkpoint and seed == args.seeds[0]:
                    with atomic_path(args.save_checkpoint, suffix='.ckpt') as tmp:
                        trainer.save_checkpoint(tmp)
            per_seed[protocol].setdefault(str(seed), {})[method] = done[key]
            bar.write(f'{seed} {protocol} {method} {json.dumps(done[key])}', sys.stderr)
            bar.update(1)
    bar.close()
    baseline = evaluate(None, eval_data, builtin, args.diagnose)
    extra_baselines: dict[str, Any] = {}
    if args.priors != 'nlcd-landcover4':
        extra_baselines['nlcd-argmax-priors'] = evaluate(
            None, eval_data, table, args.diagnose
        )
    results: dict[str, dict[str, Any]] = {}
    for protocol in protocols:
        runs = per_seed[protocol]
        names = [m for m in PROTOCOLS[protocol] if m in methods]
        scores = {m: mean_scores([r[m] for r in runs.values()]) for m in names}
        entry: dict[str, Any] = {
            'methods': scores | {'nlcd-argmax': baseline} | extra_baselines
        }
        if len(args.seeds) > 1:
            entry['seeds'] = runs
        results[protocol] = entry
    out: dict[str, Any] = {
        'protocols': results,
        'goals': goals(results),
        'shift': None if shift is None else shift.summary(),
        'data': {
            'train': [t[0].name for t in train_data],
            'eval': [t[0].name for t in eval_data],
            'fine': [t[0].name for t in triples(fine_dir)],
        },
        'displacement': displacement(train_data, eval_data),
        'harmonized': harmonized,
        'trained_on': trained_on,
        'steps': args.steps,
        'average_from': args.average_from,
        'naive_warmup': args.naive_warmup,
        'hr_coarse': args.hr_coarse,
        'priors': {'given': priors_given, 'estimated_from': priors_from},
        'match_reference': args.match_reference,
        'select_steps': args.select_steps,
        'select_by': args.select_by if args.select_steps else None,
        'seconds': round(time.perf_counter() - start, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + '\n')


if __name__ == '__main__':
    main()
