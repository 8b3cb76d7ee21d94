r"""Point-supervised counting on a real raster: MSE, Bayesian Loss, GST, OT, P2R, semi-supervised P2R.

Every method trains the same network (TorchGeo U-Net, ResNet-18 encoder, random
init) with the same windows, steps and seed through
:class:`~geosparse.datamodules.CountingDataModule` and Lightning, and is scored by
the count MAE, RMSE and bias (mean signed error: positive when it counts too many)
over the evaluation tiles (``--eval-size`` pixels, tiling the held-out band, or the
whole ``--test-image``):

- ``mse``: :class:`~geosparse.trainers.DensityTask` against Gaussian-smoothed point
  maps (``--sigma``);
- ``bayesian``: Bayesian Loss+ (Gaussians of ``--sigma``);
- ``gst``: 2D Gaussians Spatial Transport; its ``seconds`` include the Gaussian fit
  (done once, in a fresh cache);
- ``ot``: DM-Count (count, Sinkhorn OT and total-variation terms,
  :func:`~geosparse.losses.dm_count_loss`), the iterative transport GST replaces;
- ``p2r``: :class:`~geosparse.trainers.PointMapTask`, all training points;
- ``p2r-semi``: P2R with a random ``--labelled-fraction`` of the training band's
  tiles labelled and the others given as unlabelled windows (EMA teacher,
  pseudo-points); each step takes ``--batch`` labelled windows, as ``p2r``, plus
  ``--unlabelled-batch`` unlabelled ones;
- ``p2r-semi-teacher``: the EMA teacher of ``p2r-semi`` (mean-teacher methods often
  report the teacher);
- ``p2r-semi-transductive`` (not in a default run): ``p2r-semi`` whose unlabelled
  windows also come from the held-out bands' imagery (never their points;
  ``CountingDataModule(transductive=True)``): the teacher's pseudo-points then cover
  the imagery that is scored, as they can when a user counts imagery at hand;
- ``p2r-labelled-only``: the supervised reference of ``p2r-semi``: the same labelled
  part, no unlabelled windows;
- ``METHOD@peaks`` (with ``--rules cells peaks``): a P2R method's network counted
  again by another rule, without training it again;
- ``METHOD@norm-train`` / ``METHOD@norm-eval`` (with ``--norm-stats train eval``): any
  method's network scored again with its BatchNorm running statistics re-estimated on
  its training windows or on the evaluation imagery (no labels), weights unchanged.

``semi_task`` (with ``p2r-semi``) gives the semi-supervised settings as the trained
task holds them. ``semi_diagnostics`` (mean of the seeds, and ``per_seed``) looks at
``--psam-windows`` unlabelled training windows with their hidden points: the teacher's
pseudo-points per window against the true objects, their precision and recall (within
``--radius``), and the PSAM shares of the unlabelled loss for the trained model (the
teacher, by the task's default ``predict_with='teacher'``;
:func:`~geosparse.trainers.point_activation_maps`, under P2R and under P2P), with
``negative_on_objects``, the share of the "nothing here" gradient that lands on cells
holding a true object.

``counts.constant_density_reference`` scores the no-learning answer (every tile gets
the training band's mean density) for scale.

Without ``--test-image`` the top 70 % of the image (``--train-fraction``) trains and
the bottom 30 % is held out. A points FILE is a vector file (any CRS) or a CSV of
pixel boxes on its raster (``xmin, ymin, xmax, ymax``; centres are the points).

Every method also gives ``step_seconds`` (training seconds per step, GST's fit
excluded) and ``count_within_1sd`` / ``count_within_2sd``: the share of evaluation
tiles whose true count lies within 1 and 2 standard deviations of the prediction
(Poisson for densities, Poisson-binomial for point maps, times the dispersion
``count_dispersion`` that the task fits on ``--val-fraction`` of the training band,
1 without; :mod:`geosparse.trainers.counting`).

``speed`` gives ratios of times measured in this run:

- ``gst_speedup_vs_ot``: one loss step (forward and backward) of DM-Count's loss
  (``DensityTask(loss='ot')``: 100 Sinkhorn iterations per window) over one of GST
  (kernel built in the step, as in training), on the same batch of training windows
  and the same density (``speed_settings``);
- ``p2r_speedup_vs_hungarian``: one P2R loss step over one point-to-point matching
  step (P2PNet's cost, every pixel against every point, scipy's
  ``linear_sum_assignment``, then BCE with the matched pixels positive), on a
  ``--speed-map``-pixel square logit map with ``--speed-points`` random points;
- ``gaussian_fit_seconds_per_megapixel``: the GST method's Gaussian fit of the
  training band (in tiles, as the data module does it).

The memory of every step is bounded by the windows and the speed map, not by the
raster, so a large scene (``--image`` of several megapixels) runs as a small one.

    python benchmarks/counting.py --image ../shared/data/kootenay-trees/kootenayOrtho.tif \
        --points ../shared/data/kootenay-trees/kootenayTrees.gpkg
    python benchmarks/counting.py --image ../shared/data/neon-trees/OSBS_029.tif \
        --points ../shared/data/neon-trees/OSBS_029_boxes.csv --res 0.2 --sigma 6 --radius 8

Prints one JSON object (and writes it atomically to ``--out``)::

    {"methods": {NAME: {"mae", "rmse", "seconds", "step_seconds",
                        "count_within_1sd", "count_within_2sd"}}, "speed": {...},
     "speed_settings": {...}, "gst_kernel": {...}, "counts": {...},
     "settings": {...}}

``gst_kernel`` says where GST's kernel sends the mass on training windows
(:func:`~geosparse.losses.kernel_shares`): the background's share of the cells,
the share of Gaussians wider than twice ``--sigma`` and of the objects' mass they
hold, the share of the objects' mass in cells that no single point owns by half
(``contested_mass``: crowded objects), and percentiles of the fitted stds.

With several ``--seeds`` each method's numbers are the mean over the seeds and
``per_seed`` holds every run (the speed ratios come from the first seed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import lightning
import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from geosparse.console import progress, quiet, verbose_option
from geosparse.datamodules import CountingDataModule
from geosparse.io.raster import atomic_write_text
from geosparse.losses import kernel_shares
from geosparse.losses.p2r import p2r_loss
from geosparse.samplers import RegionGeoSampler
from geosparse.trainers import (
    DensityTask,
    PointMapTask,
    brief_trainer,
    point_activation_maps,
)

METHODS = ('mse', 'bayesian', 'gst', 'ot', 'p2r', 'p2r-semi', 'p2r-labelled-only')
# Not in a default run: the transductive variant of p2r-semi.
EXTRA_METHODS = ('p2r-semi-transductive',)
KEYS = (
    'mae',
    'rmse',
    'bias',
    'seconds',
    'step_seconds',
    'count_within_1sd',
    'count_within_2sd',
    'count_dispersion',
)
# The semi-supervised task's settings reported in ``semi_task``, as the task holds them.
SEMI_HPARAMS = (
    'unlabelled_weight',
    'strong_view_statistics',
    'shared_forward',
    'predict_with',
    'pseudo_threshold',
    'pseudo_background',
    'pseudo_window',
    'pseudo_flips',
    'rule',
)


def _timed(fn: Any, repeat: int) -> float:
    """Median seconds of ``repeat`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def speed_gst_vs_ot(
    dm: CountingDataModule, a: argparse.Namespace, repeat: int
) -> tuple[float, dict[str, Any]]:
    """DM-Count loss step vs GST loss step on one batch of training windows."""
    batch = next(iter(dm.train_dataloader()))
    gen = torch.Generator().manual_seed(0)
    shape = batch['image'][:, :1].shape
    raw = torch.rand(shape, generator=gen) / 100.0
    tasks = {
        name: DensityTask(loss=name, sigma=a.sigma, cutoff=a.cutoff)
        for name in ('gst', 'ot')
    }

    def step(name: str) -> None:
        d = raw.clone().requires_grad_(True)
        tasks[name].compute_loss(batch, d).backward()

    t_gst = _timed(lambda: step('gst'), repeat)
    t_ot = _timed(lambda: step('ot'), max(1, repeat // 2))
    return t_ot / t_gst, {
        'windows': list(shape),
        'points_per_window': float(batch['valid'].sum(1).float().mean()),
        'gst_seconds': t_gst,
        'ot_seconds': t_ot,
        'ot': "DensityTask(loss='ot'): POT sinkhorn_log, 100 iterations, "
        'reg 1 px², cells of 2 px, squared-distance cost, count and TV terms',
    }


def gst_diagnostics(
    dm: CountingDataModule, a: argparse.Namespace, batches: int = 4
) -> dict[str, Any]:
    """Where GST's kernel sends the mass on training windows (:func:`kernel_shares`).

    Wide Gaussians: a largest std of at least twice ``--sigma`` (the MSE and
    Bayesian Loss width).
    """
    task = DensityTask(
        loss='gst',
        sigma=a.sigma,
        cutoff=a.cutoff,
        gst_background=a.gst_background,
        gst_scale_range=a.gst_scale_range,
    )
    shares: list[dict[str, float]] = []
    stds: list[np.ndarray] = []
    for i, batch in enumerate(dm.train_dataloader()):
        if i == batches:
            break
        shape = tuple(batch['image'].shape[-2:])
        for pts, ok, covs in zip(
            batch['points'], batch['valid'], batch['covariances'], strict=True
        ):
            if not bool(ok.any()):
                continue
            cov = torch.from_numpy(task.gst_covariances(covs[ok]))  # as the kernel
            sd = torch.linalg.eigvalsh(cov)[:, -1].clamp_min(0).sqrt()
            kernel = task.gst_window_kernel(pts[ok], covs[ok], shape)  # type: ignore[arg-type]
            shares.append(kernel_shares(kernel, sd, 2 * a.sigma))
            stds.append(sd.numpy())
    every = np.concatenate(stds) if stds else np.zeros(0)
    return {
        'windows': len(shares),
        'wide_std_px': 2 * a.sigma,
        **{
            k: float(np.mean([s[k] for s in shares])) if shares else math.nan
            for k in (
                'background',
                'wide_gaussians',
                'wide_mass',
                'cells_per_object',
                'contested_mass',
            )
        },
        'std_px_percentiles': {
            str(q): float(np.percentile(every, q)) if len(every) else math.nan
            for q in (10, 50, 90, 99)
        },
    }


def speed_p2r_vs_hungarian(
    side: int, n_points: int, repeat: int
) -> tuple[float, dict[str, Any]]:
    """P2R loss step vs a point-to-point Hungarian matching step."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(1, 1, side, side, generator=gen)
    pts = torch.rand(n_points, 2, generator=gen) * side

    def p2r_step() -> None:
        logits = raw.clone().requires_grad_(True)
        p2r_loss(logits, [pts], radius=8.0).backward()

    rr, cc = np.meshgrid(np.arange(side) + 0.5, np.arange(side) + 0.5, indexing='ij')
    cells = np.stack([rr.ravel(), cc.ravel()], 1)
    p = pts.double().numpy()

    def hungarian_step() -> None:
        logits = raw.clone().requires_grad_(True)
        prob = torch.sigmoid(logits.detach()).reshape(-1).double().numpy()
        dist = np.sqrt(((cells[:, None] - p[None]) ** 2).sum(-1))
        cost = dist - 0.05 * prob[:, None] * side  # P2PNet: distance minus confidence
        rows, _ = linear_sum_assignment(cost)
        target = torch.zeros(side * side)
        target[torch.from_numpy(rows)] = 1.0
        F.binary_cross_entropy_with_logits(logits.reshape(-1), target).backward()

    t_p2r = _timed(p2r_step, repeat)
    t_h = _timed(hungarian_step, 1)
    return t_h / t_p2r, {
        'map': [side, side],
        'points': n_points,
        'p2r_seconds': t_p2r,
        'hungarian_seconds': t_h,
    }


def scored(trainer: Any, task: Any, dm: CountingDataModule) -> dict[str, float]:
    """Count MAE, RMSE, bias, coverage and dispersion of a trained task on the test tiles."""
    scores = trainer.test(task, dm, verbose=False)[0]
    return {
        'mae': scores['test_count_mae'],
        'rmse': scores['test_count_rmse'],
        'bias': scores['test_count_bias'],
        'count_within_1sd': scores['test_count_within_1sd'],
        'count_within_2sd': scores['test_count_within_2sd'],
        'count_dispersion': task.dispersion,
    }


@contextlib.contextmanager
def renormalised(task: Any, loader: Any, batches: int = 32) -> Iterator[None]:
    """``task.model`` with its BatchNorm statistics re-estimated on ``loader``'s images.

    Inside the context the running means and variances are the plain averages over
    up to ``batches`` batches in training mode (no gradients, the weights unchanged:
    "precise BatchNorm" on training windows, AdaBN on the imagery to predict);
    afterwards the trained statistics are back.
    """
    norms = [
        m
        for m in task.model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    saved = [(m.momentum, [b.detach().clone() for b in m.buffers()]) for m in norms]
    training = task.model.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        task.model.train()
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                task.model(task.normalize(batch['image']))
        task.model.train(training)
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, buffers) in zip(norms, saved, strict=True):
                m.momentum = momentum
                for b, old in zip(m.buffers(), buffers, strict=True):
                    b.copy_(old)
        task.model.train(training)


def teacher_scores(task: PointMapTask, dm: CountingDataModule) -> dict[str, float]:
    """Count MAE, RMSE, bias and coverage of a semi-supervised task's EMA teacher on the test tiles."""
    dm.setup('test')
    truth, pred, std = [], [], []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            logits = task.pool(task.teacher(task.normalize(batch['image'])))
            truth += batch['valid'].sum(1).tolist()
            pred += task.count(logits).tolist()
            std += task.count_std(logits).tolist()
    signed = np.asarray(pred, dtype=float) - np.asarray(truth, dtype=float)
    err = np.abs(signed)
    sd = np.asarray(std, dtype=float)
    return {
        'mae': float(err.mean()),
        'rmse': float(np.sqrt((err**2).mean())),
        'bias': float(signed.mean()),
        'count_within_1sd': float((err <= sd).mean()),
        'count_within_2sd': float((err <= 2 * sd).mean()),
        'count_dispersion': task.dispersion,
    }


def semi_diagnostics(
    task: PointMapTask, dm: CountingDataModule, windows: int, seed: int
) -> dict[str, Any]:
    """The teacher's pseudo-points on unlabelled training windows, and their PSAMs.

    ``windows`` random windows of the unlabelled tiles, with their hidden points as
    the truth. ``pseudo``: pseudo-points and true objects per window, and the share
    of pseudo-points within ``radius`` of a true object (precision) and of true
    objects within ``radius`` of a pseudo-point (recall). ``psam``: the shares of
    the unlabelled loss's gradient (:func:`point_activation_maps`) for the trained
    model (the teacher itself with ``predict_with='teacher'``, the task's default)
    under the task's P2R supervision and under P2P (confidence on the matched cell
    only), each
    with ``negative_on_objects``, the share of the "nothing here" gradient that
    falls on cells holding a hidden true object.
    """
    hp = task.hparams
    data = dm.image & dm.points
    size = dm.patch_size if isinstance(dm.patch_size, int) else dm.patch_size[0]
    gen = torch.Generator().manual_seed(seed)
    sampler = RegionGeoSampler(data, size, windows, dm.boxes['unlabelled'], gen)
    batch = dm.collate_fn([data[w] for w in sampler])
    radius, stride = float(hp['radius']), float(hp['stride'])
    counts, precision, recall = [], [], []
    shares: dict[str, list[dict[str, float]]] = {'p2r': [], 'p2p': []}
    cell_points, confidence, background = task.pseudo_labels(batch['image'])
    for i, (image, pts, ok) in enumerate(
        zip(batch['image'], batch['points'], batch['valid'], strict=True)
    ):
        truth = pts[ok].double()
        conf = confidence[i]
        pseudo = cell_points[i] * stride
        counts.append((len(pseudo), len(truth)))
        if len(pseudo) and len(truth):
            d_p, _ = cKDTree(truth.numpy()).query(pseudo.numpy())
            d_t, _ = cKDTree(pseudo.numpy()).query(truth.numpy())
            precision.append(float((d_p <= radius).mean()))
            recall.append(float((d_t <= radius).mean()))
        bg = background if isinstance(background, float) else background[i]
        for scheme in ('p2r', 'p2p'):
            act = point_activation_maps(
                task, image, pseudo, conf, scheme, bg, truth=truth
            )
            shares[scheme].append(act.shares)
    n = np.asarray(counts, dtype=float).reshape(-1, 2)
    return {
        'windows': windows,
        'pseudo': {
            'pseudo_points_per_window': float(n[:, 0].mean()),
            'true_objects_per_window': float(n[:, 1].mean()),
            'precision': float(np.mean(precision)) if precision else math.nan,
            'recall': float(np.mean(recall)) if recall else math.nan,
        },
        'psam': {
            scheme: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            for scheme, rows in shares.items()
            if rows
        },
    }


def _mean_nested(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise mean of dicts of the same nesting (numbers averaged)."""
    out: dict[str, Any] = {}
    for key, value in rows[0].items():
        same = [r[key] for r in rows if key in r]
        if isinstance(value, dict):
            out[key] = _mean_nested(same)
        else:
            out[key] = float(np.nanmean(np.asarray(same, dtype=float)))
    return out


def derived_condition(
    image: Path, points: Path, top_rows: int | None, transpose: bool, folder: Path
) -> tuple[Path, Path]:
    """A validation condition cut from ``image``, written to ``folder``.

    ``top_rows`` keeps the image's top rows (``--top-rows 153`` on Kootenay: the
    top 70 %, which shares no pixel with the default test band below it);
    ``transpose`` swaps rows and columns, the points moving with their pixels
    (pixel :math:`(r, c)` goes to :math:`(c, r)`), so that the training band and the
    held-out band run the other way and the semi-supervised tiles are cut anew.

    :func:`main` checks the arguments first (``top_rows`` within the image, a
    vector points file with ``transpose``).

    Returns:
        The condition's raster and points files (``points`` itself when unchanged).
    """
    with rasterio.open(image) as src:
        window = Window(0, 0, src.width, top_rows or src.height)
        data = src.read(window=window)
        transform = src.window_transform(window)
        crs = src.crs
        profile = src.profile.copy()
    if transpose:
        data = np.ascontiguousarray(data.transpose(0, 2, 1))
    profile.update(
        driver='GTiff',
        height=data.shape[1],
        width=data.shape[2],
        transform=transform,
        photometric='MINISBLACK',  # no alpha band for four uint8 bands
    )
    out_image = folder / 'condition.tif'
    with rasterio.open(out_image, 'w', **profile) as dst:
        dst.write(data)
    if not transpose:
        return out_image, points
    frame = gpd.read_file(points).to_crs(crs)
    centre = frame.geometry.centroid
    x0, y0, rx, ry = transform.c, transform.f, transform.a, -transform.e
    xs = x0 + (y0 - centre.y) / ry * rx  # the new column is the old row
    ys = y0 - (centre.x - x0) / rx * ry  # the new row is the old column
    frame = frame.set_geometry(gpd.points_from_xy(xs, ys, crs=crs))
    out_points = folder / 'condition_points.gpkg'
    frame.to_file(out_points)
    return out_image, out_points


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Train and score every method for every seed; measure the speed ratios.

    With ``--top-rows`` or ``--transpose``, on the condition
    :func:`derived_condition` cuts from the image (in a temporary folder).
    """
    if a.top_rows is None and not a.transpose:
        return _run(a)
    with tempfile.TemporaryDirectory(prefix='geosparse-condition-') as folder:
        image, points = derived_condition(
            a.image, a.points, a.top_rows, a.transpose, Path(folder)
        )
        result = _run(
            argparse.Namespace(**{**vars(a), 'image': image, 'points': points})
        )
    result['settings'].update(image=str(a.image), points=str(a.points))
    return result


def _run(a: argparse.Namespace) -> dict[str, Any]:
    """:func:`run` on the files ``a`` names."""
    per_seed: dict[str, Any] = {}
    semi: dict[str, Any] = {}
    result: dict[str, Any] = {}
    for seed in a.seeds:
        one = argparse.Namespace(**{**vars(a), 'seed': seed})
        new = run_seed(one, speed=seed == a.seeds[0])
        if 'semi_diagnostics' in new:
            semi[str(seed)] = new.pop('semi_diagnostics')
            result['semi_task'] = new.pop('semi_task')
        result = new | (
            {k: v for k, v in result.items() if k != 'methods'} if result else {}
        )
        per_seed[str(seed)] = result['methods']
    if semi:
        result['semi_diagnostics'] = _mean_nested(list(semi.values()))
        if len(semi) > 1:
            result['semi_diagnostics']['per_seed'] = semi
    names = list(per_seed[str(a.seeds[0])])
    result['methods'] = {
        name: {
            key: float(np.mean([per_seed[str(s)][name][key] for s in a.seeds]))
            for key in KEYS
        }
        for name in names
    }
    if len(a.seeds) > 1:
        result['per_seed'] = per_seed
    result['settings'] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()
    }
    return result


def run_seed(a: argparse.Namespace, speed: bool = True) -> dict[str, Any]:
    """Train and score every method with ``a.seed``; with ``speed``, the ratios too.

    The Gaussian fits are cached in a temporary folder removed when the seed ends.
    """
    with tempfile.TemporaryDirectory(prefix='geosparse-gst-') as cache:
        return _run_seed(a, Path(cache), speed)


def _run_seed(a: argparse.Namespace, cache: Path, speed: bool) -> dict[str, Any]:
    """:func:`run_seed` with the Gaussian fits cached in ``cache``."""
    warnings.filterwarnings(
        'ignore', message='.*(does not have many workers|strict is set).*'
    )
    split = (
        (a.train_fraction - a.val_fraction, a.val_fraction, 1 - a.train_fraction)
        if not a.test_image
        else (1.0, 0.0, 0.0)
    )
    common = dict(
        image_paths=str(a.image),
        points_path=str(a.points),
        res=a.res,
        patch_size=a.patch,
        batch_size=a.batch,
        length=a.steps * a.batch,
        split=split,
        eval_size=a.eval_size,
        cache_dir=str(cache),
        fit_steps=a.fit_steps,
        fit_max_scale=a.fit_max_scale,
        seed=a.seed,
    )

    def data(method: str) -> CountingDataModule:
        extra: dict[str, Any] = {}
        if method == 'gst':
            extra['gaussians'] = True
        if method.startswith('p2r-semi') or method == 'p2r-labelled-only':
            extra['labelled_fraction'] = a.labelled_fraction
            extra['use_unlabelled'] = method.startswith('p2r-semi')
            extra['unlabelled_batch_size'] = a.unlabelled_batch
            extra['transductive'] = method == 'p2r-semi-transductive'
        return CountingDataModule(**common, **extra)  # type: ignore[arg-type]

    test_dm = (
        CountingDataModule(
            str(a.test_image),
            str(a.test_points),
            res=a.res,
            patch_size=a.patch,
            split=(0.0, 0.0, 1.0),
            eval_size=a.eval_size,
        )
        if a.test_image
        else None
    )
    results: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    diagnostics: dict[str, Any] = {}
    semi_task: dict[str, Any] = {}
    fit_seconds = math.nan
    gst_dm: CountingDataModule | None = None
    for method in progress(a.methods, desc=f'seed {a.seed}', unit='method'):
        lightning.seed_everything(a.seed, workers=True)
        dm = data(method)
        t0 = time.perf_counter()
        if method == 'gst':
            dm.setup('fit')  # the Gaussian fit (timed with the method)
            fit_seconds = time.perf_counter() - t0
        if method.startswith('p2r'):
            task: Any = PointMapTask(
                radius=a.radius,
                stride=a.stride,
                warmup_steps=a.steps // 2,
                ramp_steps=a.steps // 3,
                unlabelled_weight=(
                    a.unlabelled_weight if method.startswith('p2r-semi') else 0.0
                ),
                strong_view_statistics=a.strong_view_statistics == 'update',
                shared_forward=a.student_forward == 'shared',
                predict_with=a.predict_with,
                pseudo_threshold=a.pseudo_threshold,
                pseudo_background=a.pseudo_background,
                pseudo_window=a.pseudo_window,
                pseudo_flips=a.pseudo_flips,
                rule=a.rules[0],
            )
        else:
            task = DensityTask(
                loss=method,
                sigma=a.sigma,
                cutoff=a.cutoff,
                gst_background=a.gst_background,
                gst_scale_range=a.gst_scale_range,
            )
        val = 1.0 if a.val_fraction > 0 and not a.test_image else 0
        trainer = brief_trainer(a.steps, progress=a.progress, val_batches=val)
        t1 = time.perf_counter()
        trainer.fit(task, dm)
        seconds = time.perf_counter() - t0
        step_seconds = (time.perf_counter() - t1) / max(trainer.global_step, 1)
        times = {'seconds': seconds, 'step_seconds': step_seconds}
        results[method] = scored(trainer, task, test_dm or dm) | times
        if method.startswith('p2r'):
            for rule in a.rules[1:]:  # the same network, counted by another rule
                task.hparams['rule'] = rule
                results[f'{method}@{rule}'] = (
                    scored(trainer, task, test_dm or dm) | times
                )
            task.hparams['rule'] = a.rules[0]
        eval_dm = test_dm or dm
        for where in a.norm_stats:  # the same network, its statistics re-estimated
            if where == 'eval':
                eval_dm.setup('test')
            loader = (
                dm.train_dataloader() if where == 'train' else eval_dm.test_dataloader()
            )
            with renormalised(task, loader):
                results[f'{method}@norm-{where}'] = (
                    scored(trainer, task, eval_dm) | times
                )
        if method == 'p2r-semi' and task._teacher is not None:
            # With predict_with='teacher' the model is the teacher: no second pass.
            same = task.hparams['predict_with'] == 'teacher'
            results['p2r-semi-teacher'] = {
                **(results[method] if same else teacher_scores(task, test_dm or dm)),
                'seconds': seconds,
                'step_seconds': step_seconds,
            }
            diagnostics = semi_diagnostics(task, dm, a.psam_windows, a.seed)
            semi_task = {k: task.hparams[k] for k in SEMI_HPARAMS}
        if method == 'gst':
            gst_dm = dm
        print(json.dumps({method: results[method]}), file=sys.stderr, flush=True)
        if not counts:
            eval_dm = test_dm or dm
            eval_dm.setup('test')
            truth = [
                int(n) for b in eval_dm.test_dataloader() for n in b['valid'].sum(1)
            ]
            # Reference: every tile gets the training band's mean density.
            band_area = sum((b[2] - b[0]) * (b[3] - b[1]) for b in dm.boxes['labelled'])
            n_train = len(dm.train_dataset.datasets[1])  # type: ignore[attr-defined]
            tile_area = a.eval_size**2 * float(dm.image.res[0] * dm.image.res[1])
            const = n_train / band_area * tile_area
            err = np.asarray(truth, dtype=float) - const
            counts = {
                'points': len(dm.points.xy()),
                'train_points': n_train,
                'eval_tiles': len(eval_dm.test_sampler),  # type: ignore[arg-type]
                'eval_objects_per_tile': float(np.mean(truth)) if truth else 0.0,
                'constant_density_reference': {
                    'mae': float(np.abs(err).mean()),
                    'rmse': float(np.sqrt((err**2).mean())),
                },
            }
    semi = (
        {'semi_diagnostics': diagnostics, 'semi_task': semi_task} if diagnostics else {}
    )
    if not speed:
        return {'methods': results, **semi}
    # Speed: the loss steps on training windows, the fit from the gst method.
    if gst_dm is None:
        gst_dm = data('gst')
        t0 = time.perf_counter()
        gst_dm.setup('fit')
        fit_seconds = time.perf_counter() - t0
    band_mp = sum(
        (b[2] - b[0]) * (b[3] - b[1]) for b in gst_dm.boxes['labelled']
    ) / float(gst_dm.image.res[0] * gst_dm.image.res[1] * 1e6)
    lightning.seed_everything(a.seed, workers=True)
    gst_ratio, gst_info = speed_gst_vs_ot(gst_dm, a, a.repeat)
    p2r_ratio, p2r_info = speed_p2r_vs_hungarian(a.speed_map, a.speed_points, a.repeat)
    return {
        'methods': results,
        'gst_kernel': gst_diagnostics(gst_dm, a),
        'speed': {
            'gst_speedup_vs_ot': gst_ratio,
            'p2r_speedup_vs_hungarian': p2r_ratio,
            'gaussian_fit_seconds_per_megapixel': fit_seconds / band_mp,
        },
        'speed_settings': {
            'gst_vs_ot': gst_info,
            'p2r_vs_hungarian': p2r_info,
            'gaussian_fit': {
                'seconds': fit_seconds,
                'megapixels': band_mp,
                'points': len(gst_dm.train_dataset.datasets[1]),  # type: ignore[attr-defined]
                'steps': a.fit_steps,
            },
        },
        'counts': counts,
        **semi,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, run, print and write the JSON."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--image', type=Path, required=True, help='training raster')
    p.add_argument('--points', type=Path, required=True, help='points or box CSV')
    p.add_argument('--test-image', type=Path, help='evaluation raster')
    p.add_argument('--test-points', type=Path, help='its points or box CSV')
    p.add_argument(
        '--top-rows',
        type=int,
        help="a validation condition: keep only the image's top N rows (then the "
        'top --train-fraction of them trains and the rest is scored)',
    )
    p.add_argument(
        '--transpose',
        action='store_true',
        help='a validation condition: swap the rows and columns of the image (after '
        '--top-rows) and move the points with them',
    )
    p.add_argument('--out', type=Path, help='also write the JSON here')
    p.add_argument(
        '--methods',
        nargs='+',
        default=list(METHODS),
        choices=METHODS + EXTRA_METHODS,
        help='methods to train (default: all but p2r-semi-transductive)',
    )
    p.add_argument('--steps', type=int, default=300, help='training steps per method')
    p.add_argument('--batch', type=int, default=8, help='windows per step')
    p.add_argument('--patch', type=int, default=64, help='training window (pixels)')
    p.add_argument('--eval-size', type=int, default=32, help='evaluation tile (pixels)')
    p.add_argument('--res', type=float, help='resample to this resolution (CRS units)')
    p.add_argument('--sigma', type=float, default=2.0, help='MSE/BL Gaussian std (px)')
    p.add_argument(
        '--cutoff', type=float, default=3.0, help='GST background radius (Mahalanobis)'
    )
    p.add_argument(
        '--gst-background',
        choices=('cutoff', 'growing'),
        default='growing',
        help="GST background term: the authors' code's growing (the task's default) "
        'or a constant cutoff',
    )
    p.add_argument(
        '--gst-scale-range',
        type=float,
        nargs=2,
        metavar=('LO', 'HI'),
        help="GST: clamp the Gaussians' stds to [LO, HI] x --sigma in the loss "
        "(the authors' code: 1 2.5)",
    )
    p.add_argument('--radius', type=float, default=4.0, help='P2R radius (px)')
    p.add_argument('--stride', type=int, default=4, help='P2R cell size (px)')
    p.add_argument(
        '--rules',
        nargs='+',
        choices=('cells', 'peaks'),
        default=['cells'],
        help="P2R counting rules: the first is the task's; each other one counts the "
        "same trained network again, reported as 'METHOD@RULE' (cells: every cell "
        'above the threshold; peaks: its local maxima over 3 x 3 cells)',
    )
    p.add_argument(
        '--norm-stats',
        nargs='*',
        choices=('train', 'eval'),
        default=[],
        help='score each trained network again with its BatchNorm statistics '
        "re-estimated on training windows ('METHOD@norm-train') or on the "
        "evaluation imagery ('METHOD@norm-eval', no labels)",
    )
    p.add_argument('--train-fraction', type=float, default=0.7)
    p.add_argument(
        '--val-fraction',
        type=float,
        default=0.0,
        help='the bottom part of the training band held out as validation windows, '
        "on which the tasks fit the counts' dispersion (0: none, phi = 1)",
    )
    p.add_argument('--labelled-fraction', type=float, default=0.25, help='p2r-semi')
    p.add_argument(
        '--unlabelled-batch',
        type=int,
        help='p2r-semi: unlabelled windows added to each batch (default --batch)',
    )
    p.add_argument(
        '--unlabelled-weight',
        type=float,
        default=1.0,
        help='p2r-semi: full weight of the unlabelled loss after its ramp (a tiny '
        'weight such as 1e-9 keeps the EMA teacher and leaves out what the '
        'pseudo-points teach: the ablation of the teacher alone)',
    )
    p.add_argument(
        '--strong-view-statistics',
        choices=('update', 'keep'),
        default='update',
        help="p2r-semi: 'keep' stops the student's forward on strongly augmented "
        'views from moving its BatchNorm running statistics, which the EMA teacher '
        'averages and predicts with',
    )
    p.add_argument(
        '--student-forward',
        choices=('shared', 'labelled'),
        default='shared',
        help="p2r-semi: the student's supervised forward on the whole batch "
        "('shared': the unlabelled windows' weak views enter its BatchNorm "
        "statistics) or on the labelled windows alone ('labelled'); the task's "
        'shared_forward',
    )
    p.add_argument(
        '--predict-with',
        choices=('teacher', 'student'),
        default='teacher',
        help="p2r-semi: the network scored as 'p2r-semi' (the task's predict_with); "
        "'p2r-semi-teacher' is the EMA teacher either way",
    )
    p.add_argument(
        '--pseudo-threshold',
        type=float,
        help="p2r-semi: the teacher's minimum probability of a pseudo-point "
        "(default: the task's, its count threshold)",
    )
    p.add_argument(
        '--pseudo-background',
        choices=('certain', 'confidence'),
        default='confidence',
        help='p2r-semi: weight of unlabelled cells in no pseudo-region (1, or the '
        "teacher's 1 - p)",
    )
    p.add_argument(
        '--pseudo-window',
        type=int,
        default=3,
        help="p2r-semi: pseudo-points are the teacher's local maxima in windows of "
        'this many cells (1: every cell above the threshold)',
    )
    p.add_argument(
        '--pseudo-flips',
        action='store_true',
        help="p2r-semi: the teacher's probabilities averaged over the four flips "
        'of each unlabelled window before the pseudo-points are taken',
    )
    p.add_argument(
        '--psam-windows',
        type=int,
        default=8,
        help='p2r-semi: unlabelled windows of the PSAM and pseudo-point diagnostics',
    )
    p.add_argument('--fit-steps', type=int, default=100, help='GST fit steps')
    p.add_argument(
        '--fit-max-scale', type=float, help='largest GST Gaussian std (px; a prior)'
    )
    p.add_argument(
        '--speed-map', type=int, default=128, help='P2R vs Hungarian map side'
    )
    p.add_argument('--speed-points', type=int, default=1000)
    p.add_argument('--repeat', type=int, default=10, help='timing repeats')
    p.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0],
        help='one run per seed; methods give the mean, per_seed each run',
    )
    p.add_argument('--progress', action='store_true')
    verbose_option(p)
    a = p.parse_args(argv)
    with quiet(a.verbose):
        for name in ('image', 'points', 'test_image', 'test_points'):
            path = getattr(a, name)
            if path is not None and not path.exists():
                p.error(f'--{name.replace("_", "-")} {path}: no such file.')
        if not 0 <= a.val_fraction < a.train_fraction:
            p.error(
                f'--val-fraction {a.val_fraction}: give 0 (no validation) up to less '
                f'than --train-fraction {a.train_fraction}; it is cut from the '
                'training band.'
            )
        if (a.test_image is None) != (a.test_points is None):
            p.error('give --test-image and --test-points together.')
        if a.test_image and (a.top_rows is not None or a.transpose):
            p.error(
                '--top-rows and --transpose cut a validation condition from --image; '
                'give them without --test-image.'
            )
        if a.test_image and 'p2r-semi-transductive' in a.methods:
            p.error(
                '--methods p2r-semi-transductive draws unlabelled windows from the '
                'held-out band of --image; without --test-image, or drop the method.'
            )
        if a.top_rows is not None:
            with rasterio.open(a.image) as src:
                height = src.height
            if not 0 < a.top_rows <= height:
                p.error(
                    f'--top-rows {a.top_rows}: --image {a.image} has {height} rows; '
                    f'give 1 to {height}.'
                )
        if a.transpose and a.points.suffix.lower() == '.csv':
            p.error(
                f'--transpose: --points {a.points} is a CSV of pixel boxes; give the '
                'points as a vector file (GeoPackage, GeoJSON, ...).'
            )
        result = run(a)
        text = json.dumps(result, indent=2)
        print(text)
        if a.out:
            atomic_write_text(a.out, text + '\n')
        return result


if __name__ == '__main__':
    main()
