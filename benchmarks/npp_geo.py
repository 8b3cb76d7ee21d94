r"""Neural Point Processes on a real raster against kriging, from sparse points.

The labelled points are split into *train* points (the networks learn from them),
*revealed* points (known at prediction time: the NPP-GP posterior is conditioned on
them) and *test* points. Two networks with the same architecture, budget and seed are
trained on windows around the train points: plain MSE at the points, and NPP (the
Gaussian-process likelihood, learnable RBF kernel by default). Scored:

- ``mse``, ``npp``: the networks' maps;
- ``npp-gp``: the package's default prediction: the NPP map conditioned on the
  revealed points after the empirical-Bayes re-fit of the kernel, the noise and a
  trend :math:`a + b\,m(x) + \sum_k c_k z_k(x)` on the network mean and the image
  bands, and one on the network mean alone, the two maps stacked with the weights
  that best predict the revealed points, each left out in turn
  (:func:`~geosparse.gp.fit_revealed`);
- ``npp-gp-select``: instead of stacking, the one trend that predicts them best;
- ``npp-gp-bands``, ``npp-gp-network``, ``npp-gp-kriging``: the same with the
  trend always on the bands too (``--drift bands``), on the network mean alone
  (``--drift network``), or on the bands alone, the network left out (``--drift
  kriging``: universal kriging of the points);
- ``npp-gp-all``, ``npp-gp-bands-all``, ``npp-gp-network-all``,
  ``npp-gp-kriging-all``: the same, given every known point, the train points too
  (``geosparse predict --reveal ALL --refit-on REVEALED``): conditioned on all of
  them, the kernel of the network's trends fitted on the revealed points, that of
  ``kriging`` on all, and the default's stacking weights (``npp-gp-select-all``:
  its choice) made at the revealed points, each predicted from all the others;
- ``npp-gp-trained``: conditioned with the kernel as trained (no re-fit);
- ``mse-gp``: the same re-fit and posterior around the MSE network's map;
- baselines from *every* known label (train and revealed points), so that they hold
  the same information as the networks plus the posterior: ``constant`` (their
  mean), ``ok`` (ordinary kriging, PyKrige, exponential variogram) and ``rk``
  (regression kriging on the standardised image bands,
  :func:`~geosparse.gp.regression_kriging`); ``ok-revealed`` and ``rk-revealed``
  krige the revealed points alone, the points that the posterior is given.

Scores are MSE, MAE and R² at the test points, or, with ``--truth``, at every valid
truth pixel that holds neither a train nor a revealed point, plus the RMSE.
``calibration`` gives, for every method with a standard deviation, the fraction of
those within 1 and 2 predictive standard deviations (for the GP methods
:math:`\sqrt{\sigma_*^2 + \sigma_0^2}`, the std of a new noisy label, which
``geosparse predict`` writes; a calibrated Gaussian gives 0.683 and 0.954), the
fraction within the central 68.3 and 95.4 % intervals of the predictive distribution
(``central_68``, ``central_95``: the probability integral transform
:math:`F(y)` within :math:`0.5 \pm 0.341` and :math:`0.5 \pm 0.477`; the same as
the sd counts for a Gaussian, but for a stacked map that of the mixture of its
members, whose moment-matched std the sd counts use) and the mean negative log
predictive density of that distribution (``nlpd``, lower is better).

Points come from ``--points FILE --value COLUMN`` (any vector file or a CSV with
coordinates, reprojected to the raster's CRS) or from ``--sample-truth N`` (N random
valid pixels of ``--truth``). Points outside the raster, or on its nodata, are dropped
with a warning. Imagery bands are standardised over their valid pixels; nodata
becomes 0.

    python benchmarks/npp_geo.py --image ../shared/data/kootenay-trees/kootenayOrtho.tif \
        --truth ../shared/data/kootenay-trees/kootenayCHM.tif --sample-truth 300
    python benchmarks/npp_geo.py --image ../shared/data/meuse/meuse_grid.tif \
        --points ../shared/data/meuse/meuse.csv --value zinc --points-crs EPSG:28992

Prints one JSON object (and writes it to ``--out``)::

    {"methods": {METHOD: {"mse", "mae", "r2", "rmse"}},
     "calibration": {METHOD: {"within_1sd", "within_2sd", "central_68",
                              "central_95", "nlpd"}},
     "revelation": {"refit"|"trained": {"0.25"|"0.5"|"1.0": {"mse", "mae", "r2"}}},
     "points": {...}, "per_seed": {SEED: {the above, "kernel", "seconds"}},
     "settings": {...}}

``revelation`` is NPP-GP given the first 25, 50 and 100 % of the revealed points,
re-fitted (below 8 points the trained kernel is kept) and with the kernel as trained;
``npp`` is the share 0. The top level holds the means over ``--seeds`` (and, for
``revelation``, over ``--folds``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import torch
from rasterio.transform import rowcol
from scipy.special import logsumexp, ndtr
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _npp import make_task, scores, train

from geosparse.console import quiet, verbose_option
from geosparse.datasets import (
    ImageryDataset,
    SparsePoints,
    collate_points,
    make_point_labels,
    make_scene,
)
from geosparse.gp import (
    KernelParams,
    RevealedFit,
    Trend,
    fit_revealed,
    mixture_moments,
    ordinary_kriging,
    posterior_map,
    predictive_map,
    predictive_parts,
    regression_kriging,
)
from geosparse.gp.kernels import FAMILIES
from geosparse.inference import Predictor
from geosparse.io.points import read_points
from geosparse.io.raster import atomic_write_text
from geosparse.samplers import PointGeoSampler
from geosparse.trainers import NPPTask

Grid = tuple[Path, Any, Any]  # the standardised image's file, CRS and transform


def load_image(path: Path) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """Standardised bands ``(C, H, W)`` float32 (nodata 0), validity ``(H, W)``, CRS, transform."""
    if not path.exists():
        raise SystemExit(f'--image {path}: no such raster.')
    with rasterio.open(path) as src:
        data = src.read(masked=True).astype(np.float64)
        crs, transform = src.crs, src.transform
    if crs is None:
        raise SystemExit(f'--image {path}: the raster has no CRS; georeference it.')
    bands = np.ma.filled(data, np.nan)
    valid = np.isfinite(bands).all(0)
    if not valid.any():
        raise SystemExit(f'--image {path}: every pixel is nodata.')
    out = np.zeros(bands.shape, dtype=np.float32)
    for i, band in enumerate(bands):
        v = band[valid]
        sd = v.std() or 1.0
        out[i][valid] = (v - v.mean()) / sd
    return out, valid, crs, transform


def load_truth(
    path: Path, shape: tuple[int, int], crs: Any, transform: Any
) -> np.ndarray:
    """Dense truth on the image grid, NaN where missing."""
    if not path.exists():
        raise SystemExit(f'--truth {path}: no such raster.')
    with rasterio.open(path) as src:
        if (
            (src.height, src.width) != shape
            or src.crs != crs
            or not src.transform.almost_equals(transform)
        ):
            raise SystemExit(
                f'--truth {path}: must share the image grid ({shape}, {crs}); '
                'resample it with gdalwarp first.'
            )
        return np.ma.filled(src.read(1, masked=True).astype(np.float64), np.nan)


def to_pixels(
    xy: np.ndarray, values: np.ndarray, valid: np.ndarray, transform: Any, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Integer (row, col) of points on valid pixels and their values; others dropped with a warning."""
    rows, cols = rowcol(transform, xy[:, 0], xy[:, 1])
    rc = np.stack([np.asarray(rows), np.asarray(cols)], 1)
    h, w = valid.shape
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    ok = inside.copy()
    ok[inside] = valid[rc[inside, 0], rc[inside, 1]]
    if not ok.any():
        raise SystemExit(
            f'{source}: none of the {len(xy)} points falls on a valid pixel of the '
            "image; check the points' CRS (--points-crs for a CSV, whose default is "
            'EPSG:4326) and that they overlap the raster.'
        )
    if not ok.all():
        warnings.warn(
            f'{source}: dropped {int((~inside).sum())} points outside the image and '
            f'{int((inside & ~ok).sum())} on its nodata.',
            stacklevel=2,
        )
    return rc[ok], values[ok]


def split_points(n: int, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Random split of ``n`` points by ``fractions`` (train, revealed, test)."""
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:-1] / sum(fractions) * n).astype(int)
    return np.split(order, cuts)


def write_image(image: np.ndarray, crs: Any, transform: Any, folder: Path) -> Grid:
    """The standardised image as a GeoTIFF in ``folder``, for the package's datasets."""
    path = folder / 'standardised.tif'
    profile = dict(
        driver='GTiff',
        width=image.shape[2],
        height=image.shape[1],
        count=image.shape[0],
        dtype='float32',
        crs=crs,
        transform=transform,
    )
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(image)
    return path, crs, transform


def windows(
    grid: Grid,
    rc: np.ndarray,
    values: np.ndarray,
    size: int,
    batch_size: int,
    steps: int,
    seed: int,
) -> DataLoader[dict[str, Any]]:
    """``steps`` batches of training windows around the train points.

    The package's pieces: :class:`~geosparse.samplers.PointGeoSampler` windows (each
    around a random train point, snapped to the image grid) of the imagery
    intersected with the points (at pixel centres), batched by
    :func:`~geosparse.datasets.collate_points`.
    """
    image_path, crs, transform = grid
    with rasterio.open(image_path) as src:
        bounds, res = src.bounds, src.res
    xs, ys = rasterio.transform.xy(transform, rc[:, 0], rc[:, 1])  # pixel centres
    frame = gpd.GeoDataFrame(
        {'value': values}, geometry=gpd.points_from_xy(xs, ys), crs=crs
    )
    extent = (bounds.left, bounds.bottom, bounds.right, bounds.top)
    points = SparsePoints(frame, 'value', res=res, extent=extent)
    data = ImageryDataset(str(image_path)) & points
    gen = torch.Generator().manual_seed(seed)
    sampler = PointGeoSampler(
        data, points, size, steps * batch_size, gen, origin=(bounds.left, bounds.top)
    )
    return DataLoader(
        data, batch_size=batch_size, sampler=sampler, collate_fn=collate_points
    )


def predict_map(task: NPPTask, image: np.ndarray) -> torch.Tensor:
    """The network's map ``(H, W)`` over the whole image, by the package's predictor."""
    return torch.from_numpy(Predictor(task, torch_threads=None)(image)[0])


def run_split(
    a: argparse.Namespace,
    image: np.ndarray,
    grid: Grid,
    rc: np.ndarray,
    values: np.ndarray,
    tr: np.ndarray,
    rev: np.ndarray,
    eval_rc: np.ndarray,
    eval_val: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """Train both networks on ``tr``, condition on ``rev``, predict at ``eval_rc``."""
    scale = float(values[tr].std()) or 1.0
    common = dict(
        model=a.model,
        backbone='resnet18',
        num_filters=32,
        in_channels=image.shape[0],
        input_scale=1.0,
        target_scale=scale,
        lr=a.lr,
    )
    seconds: dict[str, float] = {}
    maps: dict[str, torch.Tensor] = {}
    tasks: dict[str, NPPTask] = {}
    for name, kw in (
        ('mse', {'loss': 'mse'}),
        (
            'npp',
            {
                'loss': 'npp',
                'kernel': a.kernel,
                'kernel_family': a.kernel_family,
                'lengthscale': a.lengthscale,
                'variance': 1.0,
                'noise': 0.1,
            },
        ),
    ):
        t0 = time.perf_counter()
        task = make_task(**common, **kw)
        # The same windows for both networks.
        loader = windows(
            grid, rc[tr], values[tr], a.patch_size, a.batch_size, a.steps, seed
        )
        train(task, loader, 1, seed)
        tasks[name] = task
        maps[name] = predict_map(task, image).double()
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f'{name}: trained in {seconds[name]} s', file=sys.stderr)
    rev_pts = torch.from_numpy(rc[rev] + 0.5)
    rev_val = torch.from_numpy(values[rev])
    er, ec = eval_rc[:, 0], eval_rc[:, 1]
    pred: dict[str, np.ndarray] = {}
    sd: dict[str, np.ndarray] = {}
    # Stacked maps: (weight, mean, std) of each member at the evaluated pixels.
    mixtures: dict[str, list[tuple[float, np.ndarray, np.ndarray]]] = {}
    kernels: dict[str, Any] = {}
    t0 = time.perf_counter()
    trained = tasks['npp'].kernel_params(torch.from_numpy(image)[None])
    # NPP-GP, the kernel as trained (what prediction did before the re-fit).
    mean, std = posterior_map(maps['npp'], rev_pts, rev_val, trained)
    pred['npp-gp-trained'] = mean[er, ec].numpy()
    sd['npp-gp-trained'] = np.sqrt(std[er, ec].numpy() ** 2 + trained.noise)
    kernels['npp-gp-trained'] = trained.as_dict()
    # The package's default: empirical Bayes on the revealed points (kernel, noise
    # and a trend a + b * network re-fitted), for the NPP and the MSE network.
    starts = {
        'npp': trained,
        'mse': KernelParams(a.kernel_family, a.lengthscale, scale**2, 0.1 * scale**2),
    }
    known = np.concatenate([tr, rev])
    # The image bands as drifts of the trend (the default), or the network alone.
    bands = torch.from_numpy(image).double()
    bands_rev = bands[:, rc[rev, 0], rc[rev, 1]].T
    tr_pts = torch.from_numpy(rc[tr] + 0.5)
    tr_val = torch.from_numpy(values[tr])
    bands_tr = bands[:, rc[tr, 0], rc[tr, 1]].T
    for net, start in starts.items():
        at = maps[net][rc[rev, 0], rc[rev, 1]]
        at_tr = maps[net][rc[tr, 0], rc[tr, 1]]
        drifts = ('auto', 'bands', 'network', 'kriging') if net == 'npp' else ('auto',)
        for drift in drifts:
            name = f'{net}-gp' if drift == 'auto' else f'{net}-gp-{drift}'
            for all_points in (False, True) if net == 'npp' else (False,):
                # Given every known point (``--reveal ALL --refit-on REVEALED``), the
                # train points are seen: conditioned on, and in the drift's choice.
                # The network's trends are fitted on the revealed points alone: the
                # same fit with or without the train points.
                if not (all_points and drift in ('bands', 'network')):
                    fit = fit_revealed(
                        [(rev_pts, rev_val, at)],
                        start,
                        covariates=None if drift == 'network' else [bands_rev],
                        select=drift == 'auto',
                        seen=[(tr_pts, tr_val, at_tr)] if all_points else None,
                        seen_covariates=(
                            [bands_tr] if all_points and drift != 'network' else None
                        ),
                        drift=None if drift == 'auto' else drift,
                    )
                given = (
                    (torch.from_numpy(rc[known] + 0.5), torch.from_numpy(values[known]))
                    if all_points
                    else (rev_pts, rev_val)
                )
                parts = predictive_parts(maps[net], *given, fit, covariates=bands)
                mean, std = mixture_moments(parts)
                key = f'{name}-all' if all_points else name
                pred[key] = mean[er, ec].numpy()
                sd[key] = std[er, ec].numpy()
                kernels[key] = fit.as_dict()
                if fit.members:  # the mixture's members, for its calibration
                    mixtures[key] = [
                        (w, mu[er, ec].numpy(), s_k[er, ec].numpy())
                        for w, mu, s_k in parts
                    ]
                if drift == 'auto' and net == 'npp':
                    # The trend of best leave-one-out density alone (stack=False).
                    best = min(fit.compared, key=lambda c: c[1])[0]
                    one = next((f for _, f in fit.parts if f.drift == best), None)
                    if one is None:  # dropped from the stack: fit it again
                        one = fit_revealed(
                            [(rev_pts, rev_val, at)],
                            start,
                            covariates=[bands_rev],
                            seen=[(tr_pts, tr_val, at_tr)] if all_points else None,
                            seen_covariates=[bands_tr] if all_points else None,
                            stack=False,
                        )
                    one = dataclasses.replace(one, compared=fit.compared)
                    mean, std = predictive_map(maps[net], *given, one, covariates=bands)
                    key = f'{net}-gp-select' + ('-all' if all_points else '')
                    pred[key] = mean[er, ec].numpy()
                    sd[key] = std[er, ec].numpy()
                    kernels[key] = one.as_dict()
    # Revelation curve: a growing share of the revealed points, re-fitted and as
    # trained (the share 0 is the network alone).
    curve: dict[str, dict[str, dict[str, float]]] = {'refit': {}, 'trained': {}}
    at_rev = maps['npp'][rc[rev, 0], rc[rev, 1]]
    for share in (0.25, 0.5, 1.0):
        k = max(1, round(share * len(rev)))
        pts_k, val_k = rev_pts[:k], rev_val[:k]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # too few points: the trained kernel
            fit = fit_revealed(
                [(pts_k, val_k, at_rev[:k])], trained, covariates=[bands_rev[:k]]
            )
        for name, given_fit in (
            ('refit', fit),
            ('trained', RevealedFit(trained, Trend(), False, k)),
        ):
            mean, _ = predictive_map(
                maps['npp'], pts_k, val_k, given_fit, covariates=bands
            )
            curve[name][str(share)] = scores(mean[er, ec].numpy(), eval_val)
    seconds['posterior'] = round(time.perf_counter() - t0, 2)
    # Baselines from every known label (train and revealed points alike): the
    # constant, ordinary kriging, and regression kriging on the image bands.
    t0 = time.perf_counter()
    targets = eval_rc + 0.5
    y_known = values[known]
    pred['constant'] = np.full(len(eval_rc), y_known.mean())
    sd['constant'] = np.full(len(eval_rc), y_known.std(ddof=1))
    # The same two, from the revealed points alone (what the posterior is given).
    for tag, idx in (('', known), ('-revealed', rev)):
        xy_i = rc[idx] + 0.5
        ok = ordinary_kriging(xy_i, values[idx], targets)
        bands = image[:, rc[idx, 0], rc[idx, 1]].T
        rk = regression_kriging(xy_i, values[idx], bands, targets, image[:, er, ec].T)
        for name, res in ((f'ok{tag}', ok), (f'rk{tag}', rk)):
            pred[name], sd[name] = res.mean, res.std
            kernels[name] = res.variogram
    seconds['kriging'] = round(time.perf_counter() - t0, 2)
    pred['mse'] = maps['mse'][er, ec].numpy()
    pred['npp'] = maps['npp'][er, ec].numpy()
    return {
        'truth': eval_val,
        'pred': pred,
        'sd': sd,
        'predictive': {
            m: predictive_scores(mixtures.get(m, [(1.0, pred[m], sd[m])]), eval_val)
            for m in sd
        },
        'kernel': kernels,
        'seconds': seconds,
        'revelation': curve,
    }


def nested_mean(runs: list[Any]) -> Any:
    """Mean over runs of nested dictionaries of numbers."""
    if isinstance(runs[0], dict):
        return {k: nested_mean([r[k] for r in runs]) for k in runs[0]}
    return float(np.mean(runs))


def predictive_scores(
    parts: list[tuple[float, np.ndarray, np.ndarray]], truth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""PIT :math:`F(y)` and :math:`-\log p(y)` of a Gaussian mixture at the truth."""
    cdf = np.zeros(len(truth))
    logs = []
    for w, mu, sd in parts:
        sd = np.maximum(sd, 1e-12)
        z = (truth - mu) / sd
        cdf += w * ndtr(z)
        logs.append(math.log(w) - 0.5 * np.log(2 * np.pi * sd**2) - 0.5 * z**2)
    return cdf, -logsumexp(np.stack(logs), axis=0)


def calibration(
    err: np.ndarray, sd: np.ndarray, pit: np.ndarray, nlpd: np.ndarray
) -> dict[str, float]:
    """Coverage within 1 and 2 sd and central intervals, and the mean NLPD."""
    sd = np.maximum(sd, 1e-12)
    dev = np.abs(pit - 0.5)
    return {
        'within_1sd': float((np.abs(err) <= sd).mean()),
        'within_2sd': float((np.abs(err) <= 2 * sd).mean()),
        'central_68': float((dev <= 0.5 * math.erf(1 / math.sqrt(2))).mean()),
        'central_95': float((dev <= 0.5 * math.erf(2 / math.sqrt(2))).mean()),
        'nlpd': float(nlpd.mean()),
    }


def run_seed(
    a: argparse.Namespace,
    p: argparse.ArgumentParser,
    image: np.ndarray,
    valid: np.ndarray,
    crs: Any,
    transform: Any,
    truth: np.ndarray | None,
    seed: int,
) -> dict[str, Any]:
    """One seed: the points (sampled, split), both networks, every method, scores."""
    if a.sample_truth is not None:
        assert truth is not None
        cand = np.flatnonzero(valid.ravel())
        if a.sample_truth < 3 or a.sample_truth > len(cand):
            p.error(f'--sample-truth {a.sample_truth}: need 3 to {len(cand)} points.')
        pick = np.random.default_rng(seed).choice(cand, a.sample_truth, replace=False)
        rc = np.stack(np.unravel_index(pick, valid.shape), 1)
        values = truth.ravel()[pick]
    else:
        try:
            xy, raw = read_points(a.points, a.value, crs, a.x, a.y, a.points_crs)
        except ValueError as err:
            raise SystemExit(f'--points: {err}') from err
        rc, values = to_pixels(xy, raw, valid, transform, f'--points {a.points}')
    if a.log:
        for name, v in (('points', values),) + (
            (('truth', truth),) if truth is not None else ()
        ):
            bad = np.isfinite(v) & (v <= 0)
            if bad.any():
                p.error(f'--log: {int(bad.sum())} {name} values are <= 0; drop --log.')
        values = np.log(values)
        if truth is not None:
            truth = np.where(
                np.isfinite(truth), np.log(np.where(truth > 0, truth, 1)), np.nan
            )
    test_rc = test_val = None
    if a.test_points is not None:
        try:
            txy, tval = read_points(a.test_points, a.value, crs, a.x, a.y, a.points_crs)
        except ValueError as err:
            raise SystemExit(f'--test-points: {err}') from err
        test_rc, test_val = to_pixels(
            txy, tval, valid, transform, f'--test-points {a.test_points}'
        )
        test_val = np.log(test_val) if a.log else test_val
    if a.folds > 1 and (truth is not None or test_rc is not None):
        p.error(
            '--folds cross-validates the points; it cannot go with --truth or --test-points.'
        )
    held_out = truth is not None or test_rc is not None
    split = a.split or ([2 / 3, 1 / 3, 0] if held_out else [0.5, 0.25, 0.25])
    if a.folds > 1:
        # Each fold's points are the test points once; the rest are split into
        # train and revealed points in the ratio of --split.
        folds = np.array_split(
            np.random.default_rng(seed).permutation(len(rc)), a.folds
        )
        runs = []
        for k, te in enumerate(folds):
            rest = np.concatenate([f for j, f in enumerate(folds) if j != k])
            tr_i, rev_i = split_points(len(rest), split[:2], seed + k)
            runs.append((rest[tr_i], rest[rev_i], te))
    else:
        runs = [tuple(split_points(len(rc), split, seed))]
    outputs = []
    tmp = tempfile.TemporaryDirectory()
    grid = write_image(image, crs, transform, Path(tmp.name))
    for k, (tr, rev, te) in enumerate(runs):
        if len(tr) < 2 or len(rev) < 2:
            p.error(
                f'{len(rc)} usable points: too few for train and revealed points '
                f'(--split {split}, --folds {a.folds}).'
            )
        if truth is not None:
            evaluate = valid.copy()
            evaluate[rc[tr, 0], rc[tr, 1]] = False
            evaluate[rc[rev, 0], rc[rev, 1]] = False
            eval_rc, eval_val = np.argwhere(evaluate), truth[evaluate]
        elif test_rc is not None:
            eval_rc, eval_val = test_rc, test_val
        else:
            eval_rc, eval_val = rc[te], values[te]
        if len(eval_val) == 0:
            p.error('no test points: give --test-points, --truth, or a test fraction.')
        print(
            f'run {k + 1}/{len(runs)}: {len(tr)} train, {len(rev)} revealed, '
            f'{len(eval_val)} evaluated',
            file=sys.stderr,
        )
        outputs.append(
            run_split(
                a,
                image,
                grid,
                rc,
                values,
                tr,
                rev,
                eval_rc,
                eval_val,
                seed=seed + k,
            )
        )
    tmp.cleanup()
    truth_all = np.concatenate([o['truth'] for o in outputs])
    methods = {
        m: scores(np.concatenate([o['pred'][m] for o in outputs]), truth_all)
        for m in outputs[0]['pred']
    }
    for m in methods.values():
        m['rmse'] = math.sqrt(m['mse'])
    calib = {
        m: calibration(
            np.concatenate([o['pred'][m] for o in outputs]) - truth_all,
            np.concatenate([o['sd'][m] for o in outputs]),
            np.concatenate([o['predictive'][m][0] for o in outputs]),
            np.concatenate([o['predictive'][m][1] for o in outputs]),
        )
        for m in outputs[0]['sd']
    }
    return {
        'methods': methods,
        'calibration': calib,
        'kernel': [o['kernel'] for o in outputs],
        'revelation': nested_mean([o['revelation'] for o in outputs]),
        'points': {
            'train': int(sum(len(r[0]) for r in runs)),
            'revealed': int(sum(len(r[1]) for r in runs)),
            'evaluated': len(truth_all),
            'evaluated_on': 'truth' if truth is not None else 'test points',
        },
        'seconds': {
            k: round(sum(o['seconds'][k] for o in outputs), 2)
            for k in outputs[0]['seconds']
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its JSON."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument('--image', type=Path, help='imagery raster (GeoTIFF)')
    where.add_argument(
        '--synthetic',
        choices=['land_cover', 'independent'],
        help='a generated 256 px scene and dense truth instead of --image and '
        '--truth (make_point_labels): a height the imagery explains (land_cover) '
        'or a smooth field it does not show (independent, as rainfall is to an '
        'elevation grid); points from --sample-truth',
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--points', type=Path, help='labelled points (vector file or CSV)')
    src.add_argument(
        '--sample-truth',
        type=int,
        metavar='N',
        help='draw N random valid pixels of --truth as the points',
    )
    p.add_argument('--value', help='value column of --points')
    p.add_argument('--truth', type=Path, help='dense truth raster on the image grid')
    p.add_argument('--test-points', type=Path, help='test points (same value column)')
    p.add_argument('--points-crs', help='CRS of CSV coordinates (default EPSG:4326)')
    p.add_argument('--x', help='CSV x column (default x or lon)')
    p.add_argument('--y', help='CSV y column (default y or lat)')
    p.add_argument(
        '--split',
        type=float,
        nargs=3,
        metavar=('TRAIN', 'REVEALED', 'TEST'),
        help='fractions of the points (default 0.5 0.25 0.25; with --truth or '
        '--test-points 0.67 0.33 0)',
    )
    p.add_argument(
        '--model',
        default='unet',
        choices=['unet', 'fcn'],
        help='network (unet: ResNet-18 U-Net, no pretrained weights)',
    )
    p.add_argument(
        '--kernel', default='learnable', choices=['static', 'learnable', 'context']
    )
    p.add_argument(
        '--kernel-family',
        default='rbf',
        choices=FAMILIES,
        help="NPP kernel shape (default: %(default)s, the paper's)",
    )
    p.add_argument(
        '--lengthscale',
        type=float,
        default=4.0,
        help='initial RBF length-scale in pixels (default: %(default)s)',
    )
    p.add_argument('--patch-size', type=int, default=64, help='(default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=8, help='(default: %(default)s)')
    p.add_argument(
        '--steps',
        type=int,
        default=300,
        help='optimiser steps per network (default: %(default)s)',
    )
    p.add_argument('--lr', type=float, default=1e-3, help='(default: %(default)s)')
    p.add_argument(
        '--folds',
        type=int,
        default=1,
        help='cross-validate: K runs, each fold of the points the test points '
        'once (default: one split)',
    )
    p.add_argument(
        '--log',
        action='store_true',
        help='learn and score log(value) (skewed positive labels, e.g. zinc)',
    )
    p.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0],
        help='one run per seed (point sample and split, training); the top-level '
        'scores are their means, each run is under per_seed (default: %(default)s)',
    )
    p.add_argument('--out', type=Path, help='also write the JSON here')
    verbose_option(p)
    a = p.parse_args(argv)
    with quiet(a.verbose):
        if a.points is not None and not a.value:
            p.error('--points needs --value COLUMN (the labels to learn).')
        if a.sample_truth is not None and a.truth is None and a.synthetic is None:
            p.error('--sample-truth N draws its points from --truth RASTER; give it.')
        if a.patch_size % 32 and a.model == 'unet':
            p.error(f'--patch-size {a.patch_size}: the U-Net needs a multiple of 32.')
        t_start = time.perf_counter()
        scene_dir = tempfile.TemporaryDirectory()
        if a.synthetic is not None:
            if a.truth is not None or a.sample_truth is None:
                p.error('--synthetic makes its own truth: give --sample-truth N only.')
            scene = make_scene(Path(scene_dir.name), size=256, seed=0)
            make_point_labels(scene, n=1, seed=0, field=a.synthetic)
            a.image, a.truth = (
                Path(scene.image),
                Path(scene_dir.name) / 'scene_height.tif',
            )
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        torch.manual_seed(a.seeds[0])
        image, valid, crs, transform = load_image(a.image)
        truth = load_truth(a.truth, valid.shape, crs, transform) if a.truth else None
        if truth is not None:
            valid = valid & np.isfinite(truth)
        per_seed = {
            str(seed): run_seed(a, p, image, valid, crs, transform, truth, seed)
            for seed in a.seeds
        }
        runs = list(per_seed.values())

        def mean_of(key: str) -> dict[str, dict[str, float]]:
            return {
                m: {
                    k: float(np.mean([r[key][m][k] for r in runs]))
                    for k in runs[0][key][m]
                }
                for m in runs[0][key]
            }

        result: dict[str, Any] = {
            'methods': mean_of('methods'),
            'calibration': mean_of('calibration'),
            'revelation': nested_mean([r['revelation'] for r in runs]),
            'points': runs[0]['points'],
            'per_seed': per_seed,
            'settings': {
                'model': a.model,
                'kernel': a.kernel,
                'kernel_family': a.kernel_family,
                'steps': a.steps,
                'folds': a.folds,
                'log': a.log,
                'patch_size': a.patch_size,
                'batch_size': a.batch_size,
                'seeds': a.seeds,
                'synthetic': a.synthetic,
                'seconds': round(time.perf_counter() - t_start, 1),
            },
        }
        scene_dir.cleanup()
        text = json.dumps(result, indent=2)
        if a.out:
            atomic_write_text(a.out, text + '\n')
        print(text)
        if not all(math.isfinite(m['mse']) for m in result['methods'].values()):
            raise SystemExit('a method produced non-finite predictions.')
        return result


if __name__ == '__main__':
    main()
