"""Label super-resolution on real Chesapeake patches (NAIP + NLCD -> 4-class land cover).

Trains lsr, soft-naive, hard-naive and hr (upper bound: fine labels) with the same
network, budget and seed on ``--train``, evaluates on ``--eval`` together with the
no-learning baseline ``nlcd-argmax`` (each NLCD code mapped to its most likely fine
class), and prints one JSON object::

    {"methods": {NAME: {"acc", "miou", "iou": {CLASS: float}}}, "steps", "seconds"}

mIoU is over the fine classes present in the evaluation truth. With several
``--seeds`` every trained method is run once per seed; ``methods`` then holds the
mean over the seeds (IoU of a class averaged over the seeds that scored it), and
``seeds`` the result of each seed. Short runs on a few patches vary a lot from seed
to seed, so compare methods over several seeds. A folder holds
``*_naip.tif``, ``*_nlcd.tif`` and ``*_lc.tif`` triples (NLCD already resampled onto
the NAIP grid, so blocks are the regions of one NLCD class within a window).

Example::

    python benchmarks/lsr_chesapeake.py \
        --train ../shared/data/chesapeake-wv2014/train --eval HELD_OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from lightning.pytorch import Trainer, seed_everything
from torchmetrics.functional.classification import binary_auroc

from geosparse.console import progress, quiet, verbose_option
from geosparse.datamodules import LabelSuperResolutionDataModule
from geosparse.inference import Predictor
from geosparse.io.raster import atomic_path, atomic_write_text
from geosparse.metrics import LandCoverMetrics, scores_from_confusion
from geosparse.priors import JointDistribution
from geosparse.trainers import LabelSuperResolutionTask, brief_trainer

METHODS = ('lsr', 'soft-naive', 'hard-naive', 'hr')


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


def evaluate(
    task: LabelSuperResolutionTask | None,
    data: list[tuple[Path, Path, Path]],
    table: JointDistribution,
    diagnose: bool = False,
) -> dict[str, Any]:
    """Scores of a task (or of nlcd-argmax when ``task`` is None) on whole patches.

    With ``diagnose``, also ``by_coarse``: for each NLCD code of the evaluation
    patches, its pixel count, the prior eta_z, the fine-class fractions
    of the truth, of the final map and (for a task) the network's mean probabilities
    before the combination with the prior. This shows whether the network meets the
    block statistics it was trained to match, and where the prior is off. For a
    task, ``ranking_auc`` gives per fine class of the truth the one-vs-rest ROC AUC
    of the network's probability (:func:`ranking_auc`).
    """
    metrics = LandCoverMetrics(table.num_fine, list(table.fine_names))
    predictor = None if task is None else Predictor(task, torch_threads=None)
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
                raw = predictor.task.window_probabilities(torch.from_numpy(image[None]))
                network_all.append(raw.reshape(table.num_fine, -1).numpy())
        metrics.update(pred_t, truth)
        if diagnose:
            coarse_all.append(coarse.ravel())
            truth_all.append(truth.numpy().ravel())
            map_all.append(pred_t.numpy().ravel())
    out = scores_from_confusion(metrics.cm, list(table.fine_names))
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
    if 'ranking_auc' in runs[0]:
        out['ranking_auc'] = {
            c: round(float(np.mean([r['ranking_auc'][c] for r in runs])), 4)
            for c in runs[0]['ranking_auc']
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
    method: str, folder: Path, steps: int, seed: int, args: argparse.Namespace
) -> tuple[LabelSuperResolutionTask, Trainer]:
    seed_everything(seed, workers=True)
    dm = LabelSuperResolutionDataModule(
        image_paths=str(folder),
        coarse_paths=str(folder),
        fine_paths=str(folder),
        image_glob='*_naip.tif',
        coarse_glob='*_nlcd.tif',
        fine_glob='*_lc.tif',
        coarse_blocks=args.blocks,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        length=steps * args.batch_size,
        val_fraction=0.0,
        balance=args.balance,
        seed=seed,
    )
    task = LabelSuperResolutionTask(
        model=args.model,
        backbone='resnet18',
        standardize=args.standardize,
        coarse_balance=args.coarse_balance,
        loss=method,  # type: ignore[arg-type]
        lr=args.lr,
        prior_weight=args.prior_weight,
        var_floor=args.var_floor,
        var_floor_scale=args.var_floor_scale,
        prior_rule=args.prior_rule,
    )
    trainer = brief_trainer(steps)
    trainer.fit(task, datamodule=dm)
    task.eval()
    return task, trainer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--train', type=Path, required=True)
    parser.add_argument('--eval', type=Path, required=True)
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
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--patch-size', type=int, default=128)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--balance', type=float, default=1.0)
    parser.add_argument(
        '--prior-weight',
        type=float,
        default=0.0,
        help='gamma of the Bayes combination with the NLCD label at evaluation; 0 '
        '(default): the network alone, as in the paper (on the held-out folds the '
        "lsr network's own output, which already matches the NLCD statistics, was "
        'better than its combination with them)',
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
    parser.add_argument('--methods', default=','.join(METHODS))
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
        warnings.filterwarnings('ignore')
        torch.set_num_threads(os.cpu_count() or 1)
        _train_data, eval_data = triples(args.train), triples(args.eval)
        table = JointDistribution.builtin('nlcd-landcover4')
        start = time.perf_counter()
        per_seed: dict[str, dict[str, Any]] = {}
        methods = args.methods.split(',')
        bar = progress(desc='runs', unit='run', total=len(args.seeds) * len(methods))
        for seed in args.seeds:
            runs = per_seed.setdefault(str(seed), {})
            for method in methods:
                bar.set_postfix_str(f'seed {seed} {method}')
                task, trainer = train(method, args.train, args.steps, seed, args)
                runs[method] = evaluate(task, eval_data, table, args.diagnose)
                bar.write(f'{seed} {method} {json.dumps(runs[method])}', sys.stderr)
                bar.update(1)
                if method == 'lsr' and args.save_checkpoint and seed == args.seeds[0]:
                    with atomic_path(args.save_checkpoint, suffix='.ckpt') as tmp:
                        trainer.save_checkpoint(tmp)
        bar.close()
        results = {m: mean_scores([r[m] for r in per_seed.values()]) for m in methods}
        results['nlcd-argmax'] = evaluate(None, eval_data, table, args.diagnose)
        out: dict[str, Any] = {
            'methods': results,
            'steps': args.steps,
            'seconds': round(time.perf_counter() - start, 1),
        }
        if len(args.seeds) > 1:
            out['seeds'] = per_seed
        text = json.dumps(out, indent=2)
        print(text)
        if args.out:
            atomic_write_text(args.out, text + '\n')


if __name__ == '__main__':
    main()
