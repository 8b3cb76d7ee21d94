r"""The Neural Point Process paper's benchmark: Synthetic Heatmaps and Pin-MNIST.

Shi et al., "Neural Point Processes for Pixel-wise Regression", sparse setting: 28 x 28
images, each with about ten labelled pins, on a grid (3 x 3, step 10 px, centred: rows
and columns 4, 14, 24) or at 10 random pixels of its own. Each dataset and pattern
trains four models with the same network (TorchGeo's FCN, 32 filters), budget and seed:

- ``mse``: plain MSE at the pins (the paper's baseline);
- ``npp-static``: the NPP likelihood with a fixed RBF kernel; :math:`\ell`, :math:`s^2`
  and :math:`\sigma_0^2` are tuned on the validation images by the GP likelihood of the
  ``mse`` model's residuals at their pins (a grid over :math:`\ell` in 1..12 px);
- ``npp-learnable``: kernel and noise optimised with the network;
- ``npp-context``: :math:`\ell, s^2` regressed from each image.

Scores are MSE and R² at the pins of the test images. Partial label revelation
(NPP-GP): the pins of each test image are split in half at random; 25, 50, 75 or
100 % of the first half (rounded up) are revealed to the posterior of each NPP model
(random pins), and the error is measured at the second half; ``0.0`` is the
network's own error at those same pins. By default the kernel, the noise and a
trend on the network map are first re-fitted on the revealed pins of all test
images and stacked with the kernel as trained (the mean of the test images' trained
kernels) by their leave-one-out densities (:func:`~geosparse.gp.fit_revealed`, the
package's default at prediction; ``trained_weight`` is the latter's weight);
``METHOD/trained`` keeps each image's kernel as trained. ``best_kernel`` names the strategy
with the lowest mean validation MSE, whose curve is the headline.

Datasets (generated with a fixed seed):

- **Synthetic Heatmaps**: each image has its own Gaussian-mixture heatmap
  :math:`z \in [0, 1]` (1 to 4 bumps, sigma 2 to 6 px), shown to the network as a
  viridis RGB image; labels are :math:`y = 3z + 0.5 + g + \epsilon` with :math:`g` a
  Gaussian random field (RBF covariance, :math:`\ell = 5` px, variance 0.5) and
  :math:`\epsilon \sim N(0, 0.05^2)`, as in the authors' generator (mean
  :math:`a z + b`, RBF covariance) but with each image's own heatmap (their code
  gives every image the last image's heatmap).
- **Pin-MNIST**: real digits (``--mnist``, an npz with ``images``); a pin's label is
  the number of ink pixels (intensity >= 128) within 3 px of it (a disk of 29
  pixels; the authors' ``count_pins`` with ``r = 3``), so it lies in 0..29.

Prints one JSON object (and writes it to ``--out``)::

    {"datasets": {DATASET: {PATTERN: {METHOD: {"mse", "r2"}}}},
     "revelation": {DATASET: {METHOD or METHOD/trained:
                    {"0.0", "0.25" .. "1.0": {"mse", "r2"[, "trained_weight"]}}}},
     "validation_mse": {DATASET: {METHOD: float}},
     "best_kernel": {DATASET: METHOD},
     "per_seed": {SEED: {the three above, "kernels": {DATASET: {PATTERN/METHOD:
                  {"lengthscale", "variance", "noise"}}}}},
     "settings": {...}}

The top-level scores are means over ``--seeds`` (one run each: pins, the synthetic
images, training); single runs vary a lot (plain MSE on Pin-MNIST grid pins gave
test MSE 0.24 with one seed and 0.60 with another). Kernel parameters are in pixels
and label units, averaged over test images.

    python benchmarks/npp_paper.py [--mnist FILE] [--out FILE] [--images N] [--epochs N] [--seeds S ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _npp import make_task, scores, train

from geosparse.console import progress, quiet, verbose_option
from geosparse.datasets import collate_points
from geosparse.gp import (
    KernelParams,
    fit_kernel,
    fit_revealed,
    posterior_map,
    predictive_map,
)
from geosparse.inference import Predictor
from geosparse.io.raster import atomic_write_text
from geosparse.trainers import NPPTask
from geosparse.trainers.npp import point_values

SIZE = 28


def _as_tuple(params: KernelParams) -> tuple[float, float, float]:
    return params.lengthscale, params.variance, params.noise


FRACTIONS = (0.25, 0.5, 0.75, 1.0)
METHODS = ('mse', 'npp-static', 'npp-learnable', 'npp-context')


def default_mnist() -> Path:
    """``$GEOSPARSE_DATA_DIR/mnist/mnist_train_5k.npz``, else ``../shared/data/...``."""
    root = os.environ.get('GEOSPARSE_DATA_DIR')
    base = (
        Path(root) if root else Path(__file__).resolve().parents[2] / 'shared' / 'data'
    )
    return base / 'mnist' / 'mnist_train_5k.npz'


def gaussian_field(
    n: int, rng: np.random.Generator, lengthscale: float, variance: float
) -> np.ndarray:
    r"""``n`` stationary Gaussian random fields with RBF covariance, ``(n, 28, 28)``.

    White noise smoothed by a Gaussian filter of :math:`\sigma_g = \ell / \sqrt 2` has
    covariance :math:`\propto \exp(-d^2 / 2\ell^2)`; it is drawn on a larger canvas
    (no edge effects) and scaled by the filter's exact discrete gain.
    """
    sigma, pad = lengthscale / math.sqrt(2), int(4 * lengthscale)
    side = SIZE + 2 * pad
    impulse = np.zeros((side, side))
    impulse[side // 2, side // 2] = 1
    gain = float(np.square(ndimage.gaussian_filter(impulse, sigma)).sum())
    noise = rng.standard_normal((n, side, side))
    field = ndimage.gaussian_filter(noise, (0, sigma, sigma))
    field = field[:, pad : pad + SIZE, pad : pad + SIZE]
    return field * math.sqrt(variance / gain)


def synthetic_heatmaps(
    n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 28, 28)`` uint8 and dense labels ``(n, 28, 28)`` (see the module doc)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    z = np.zeros((n, SIZE, SIZE))
    for i in range(n):
        for _ in range(rng.integers(1, 5)):
            r0, c0 = rng.uniform(0, SIZE, 2)
            s = rng.uniform(2, 6)
            w = rng.uniform(0.5, 1.0)
            z[i] += w * np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2 * s * s))
        z[i] /= z[i].max()
    rgb = colormaps['viridis'](z)[..., :3]  # n, H, W, 3
    images = np.round(rgb * 255).astype(np.uint8).transpose(0, 3, 1, 2)
    labels = 3 * z + 0.5 + gaussian_field(n, rng, lengthscale=5.0, variance=0.5)
    return images, labels


def pin_mnist(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits ``(n, 1, 28, 28)`` uint8 and ink counts within 3 px ``(n, 28, 28)``."""
    if not path.exists():
        raise SystemExit(
            f'--mnist {path}: no such file; give an npz with an "images" array of '
            '28 x 28 uint8 digits (e.g. ../shared/data/mnist/mnist_train_5k.npz).'
        )
    with np.load(path) as data:
        if 'images' not in data:
            raise SystemExit(f'--mnist {path}: no "images" array (has {list(data)}).')
        images = np.asarray(data['images'][:n])
    if images.ndim != 3 or images.shape[1:] != (SIZE, SIZE) or len(images) < n:
        raise SystemExit(
            f'--mnist {path}: need at least {n} images of 28 x 28, got {images.shape}.'
        )
    yy, xx = np.mgrid[-3:4, -3:4]
    disk = (yy**2 + xx**2 <= 9).astype(np.float64)  # 29 pixels
    ink = (images >= 128).astype(np.float64)
    counts = ndimage.correlate(ink, disk[None], mode='constant')
    return images[:, None].astype(np.uint8), counts


def make_pins(pattern: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Integer (row, col) pins ``(n, P, 2)``: a centred 3 x 3 grid or 10 random pixels."""
    if pattern == 'grid':
        g = np.arange(4, SIZE, 10)
        grid = np.stack(np.meshgrid(g, g, indexing='ij'), -1).reshape(-1, 2)
        return np.broadcast_to(grid, (n, *grid.shape)).copy()
    flat = np.stack([rng.choice(SIZE * SIZE, 10, replace=False) for _ in range(n)])
    return np.stack([flat // SIZE, flat % SIZE], -1)


def pin_labels(
    labels: np.ndarray, pins: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Labels at the pins ``(n, P)``, with optional observation noise."""
    idx = np.arange(len(labels))[:, None]
    vals = labels[idx, pins[..., 0], pins[..., 1]]
    return vals + noise * rng.standard_normal(vals.shape)


class PinData(Dataset[dict[str, torch.Tensor]]):
    """Images, pins and their labels of one split: samples of the package's shape."""

    def __init__(
        self, images: np.ndarray, pins: np.ndarray, values: np.ndarray
    ) -> None:
        self.images = torch.from_numpy(images).float()
        self.points = torch.from_numpy(pins).double() + 0.5  # pixel centres
        self.values = torch.from_numpy(values).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """One image with its pins (``points``, ``values`` ``(P, 1)``)."""
        return {
            'image': self.images[i],
            'points': self.points[i],
            'values': self.values[i][:, None],
        }

    def loader(self, seed: int, size: int = 32) -> DataLoader[dict[str, Any]]:
        """Shuffled batches of ``size``, padded by :func:`collate_points`."""
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(
            self, size, shuffle=True, generator=gen, collate_fn=collate_points
        )

    def predict(self, task: NPPTask) -> torch.Tensor:
        """Network maps ``(n, 28, 28)``, image by image through the package's predictor."""
        predictor = Predictor(task, torch_threads=None)
        return torch.from_numpy(
            np.stack([predictor(x)[0] for x in self.images.numpy()])
        )


def at_pins(maps: torch.Tensor, points: torch.Tensor) -> np.ndarray:
    """Values of ``(n, H, W)`` maps at ``(n, P, 2)`` points."""
    return point_values(maps[:, None], points).numpy()


def run_dataset(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    label_noise: float,
    epochs: int,
    seed: int,
    log: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Train and score every method on both patterns, and the revelation curves.

    Returns:
        Test scores by pattern and method; the revelation curves (random pins) of
        every NPP kernel strategy, re-fitted and as trained; their validation MSE.
    """
    n = len(images)
    n_train, n_val = int(0.7 * n), int(0.1 * n)
    splits = {
        'train': slice(0, n_train),
        'val': slice(n_train, n_train + n_val),
        'test': slice(n_train + n_val, n),
    }
    results: dict[str, Any] = {}
    revelation: dict[str, Any] = {}
    val_mse: dict[str, float] = {}
    for pattern in ('grid', 'random'):
        rng = np.random.default_rng(seed + (pattern == 'random'))
        pins = make_pins(pattern, n, rng)
        values = pin_labels(labels, pins, label_noise, rng)
        data = {k: PinData(images[s], pins[s], values[s]) for k, s in splits.items()}
        scale = float(data['train'].values.std())
        common = dict(
            model='fcn',
            num_filters=32,
            in_channels=images.shape[1],
            target_scale=scale,
            lr=3e-3,
        )
        models: dict[str, NPPTask] = {}
        kernels: dict[str, Any] = {}
        for method in METHODS:
            t0 = time.perf_counter()
            if method == 'mse':
                task = make_task(loss='mse', **common)
            elif method == 'npp-static':
                val = data['val']
                resid_maps = val.predict(models['mse'])
                resid = val.values - torch.from_numpy(at_pins(resid_maps, val.points))
                fitted = fit_kernel(
                    [(val.points[i], resid[i] / scale) for i in range(len(val))],
                    lengthscales=(1, 2, 3, 4, 6, 8, 12),
                )
                ell, var, noise = fitted.lengthscale, fitted.variance, fitted.noise
                kernels[f'{pattern}/npp-static'] = {
                    'lengthscale': ell,
                    'variance': var * scale**2,
                    'noise': noise * scale**2,
                }
                task = make_task(
                    loss='npp',
                    kernel='static',
                    lengthscale=ell,
                    variance=var,
                    noise=noise,
                    learn_noise=False,
                    **common,
                )
            else:
                task = make_task(
                    loss='npp',
                    kernel=method.removeprefix('npp-'),
                    lengthscale=3.0,
                    variance=1.0,
                    noise=0.1,
                    **common,
                )
            train(task, data['train'].loader(seed), epochs, seed)
            models[method] = task
            test = data['test']
            pred = at_pins(test.predict(task), test.points)
            results.setdefault(pattern, {})[method] = scores(pred, test.values.numpy())
            log[f'{pattern}/{method}'] = round(time.perf_counter() - t0, 1)
            if method != 'mse':
                # Mean over test images (the context-aware kernel varies by image).
                params = np.array(
                    [
                        _as_tuple(task.kernel_params(test.images[i : i + 1]))
                        for i in range(min(64, len(test)))
                    ]
                ).mean(0)
                kernels.setdefault(
                    f'{pattern}/{method}',
                    dict(
                        zip(
                            ('lengthscale', 'variance', 'noise'),
                            params.tolist(),
                            strict=True,
                        )
                    ),
                )
            print(f'{pattern} {method}: {results[pattern][method]}', file=sys.stderr)
        log.setdefault('kernels', {}).setdefault(name, {}).update(kernels)
        if pattern == 'random':
            # The kernel strategy with the lowest validation MSE is the headline.
            val = data['val']
            val_mse = {
                m: scores(
                    at_pins(val.predict(models[m]), val.points), val.values.numpy()
                )['mse']
                for m in METHODS
                if m != 'mse'
            }
            for m in val_mse:
                for refit in (True, False):
                    curve, base = reveal(models[m], data['test'], seed, refit)
                    key = m if refit else f'{m}/trained'
                    revelation[key] = {'0.0': base, **curve}
    return results, revelation, val_mse


def reveal(
    task: NPPTask, test: PinData, seed: int, refit: bool = True
) -> tuple[dict[str, Any], dict[str, float]]:
    """Partial label revelation: posterior from part of one half, scored at the other.

    With ``refit`` (the package's default at prediction), the kernel, the noise and
    the trend on the network map are re-fitted by :func:`~geosparse.gp.fit_revealed`
    on the revealed pins of all test images at once (each image its own GP with the
    shared parameters: a few pins per image could not be fitted alone); without, each
    image uses the kernel as trained.
    """
    rng = np.random.default_rng(seed + 7)
    maps = test.predict(task)
    orders = [rng.permutation(test.points.shape[1]) for _ in range(len(test))]
    half = test.points.shape[1] // 2
    kernels = [task.kernel_params(test.images[i : i + 1]) for i in range(len(test))]
    truth = [test.values[i][o[half:]].numpy() for i, o in enumerate(orders)]
    base = [
        at_pins(maps[i : i + 1], test.points[i][o[half:]][None])[0]
        for i, o in enumerate(orders)
    ]
    y = np.concatenate(truth)
    out: dict[str, Any] = {}
    for f in FRACTIONS:
        k = math.ceil(f * half)
        shown = [
            (test.points[i][o[:k]], test.values[i][o[:k]]) for i, o in enumerate(orders)
        ]
        fit = None
        if refit:
            start = dataclasses.replace(
                kernels[0],
                **{
                    name: float(np.mean([getattr(p, name) for p in kernels]))
                    for name in ('lengthscale', 'variance', 'noise')
                },
            )
            groups = [
                (pts, vals, torch.from_numpy(at_pins(maps[i : i + 1], pts[None])[0]))
                for i, (pts, vals) in enumerate(shown)
            ]
            fit = fit_revealed(groups, start)
        preds = []
        for i, (pts, vals) in enumerate(shown):
            if fit is not None:  # the stacked members' mixture, as geosparse predicts
                mean, _ = predictive_map(maps[i].double(), pts, vals, fit)
            else:
                mean, _ = posterior_map(maps[i].double(), pts, vals, kernels[i])
            preds.append(
                at_pins(mean[None].float(), test.points[i][orders[i][half:]][None])[0]
            )
        scored = scores(np.concatenate(preds), y)
        out[str(f)] = {k_: v for k_, v in scored.items() if k_ != 'mae'}
        if fit is not None:
            # The weight of the kernel as trained in the stack (0: the re-fit alone).
            out[str(f)]['trained_weight'] = sum(
                w for w, part in fit.parts if part.drift == 'trained'
            )
    no = {k: v for k, v in scores(np.concatenate(base), y).items() if k != 'mae'}
    return out, no


def _mean_scores(runs: list[Any]) -> Any:
    """Mean over runs of nested ``{..., {"mse": x, "r2": y}}`` dictionaries."""
    if isinstance(runs[0], dict):
        return {k: _mean_scores([r[k] for r in runs]) for k in runs[0]}
    return float(np.mean(runs))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--mnist',
        type=Path,
        default=default_mnist(),
        help='npz with 28 x 28 uint8 "images" (default: %(default)s)',
    )
    parser.add_argument('--out', type=Path, help='also write the JSON here')
    parser.add_argument(
        '--images',
        type=int,
        default=1000,
        help='images per dataset, split 70/10/20 %% (default: %(default)s)',
    )
    parser.add_argument('--epochs', type=int, default=20, help='(default: %(default)s)')
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0, 1],
        help='one run per seed (pins, split of the synthetic data, training); the '
        'scores are their means, each run is under per_seed (default: %(default)s)',
    )
    parser.add_argument(
        '--datasets',
        nargs='+',
        default=['synthetic', 'pin-mnist'],
        choices=['synthetic', 'pin-mnist'],
    )
    verbose_option(parser)
    args = parser.parse_args(argv)
    with quiet(args.verbose):
        if args.images < 20:
            parser.error(
                f'--images {args.images}: need at least 20 (70/10/20 % split).'
            )
        mnist = (
            pin_mnist(args.mnist, args.images) if 'pin-mnist' in args.datasets else None
        )
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        t0 = time.perf_counter()
        per_seed: dict[str, Any] = {}
        log: dict[str, Any] = {}
        for seed in progress(args.seeds, desc='seeds', unit='seed'):
            one: dict[str, Any] = {
                'datasets': {},
                'revelation': {},
                'validation_mse': {},
            }
            seed_log: dict[str, Any] = {}
            for name in args.datasets:
                rng = np.random.default_rng(seed)
                if name == 'synthetic':
                    images, labels = synthetic_heatmaps(args.images, rng)
                    noise = 0.05
                else:
                    assert mnist is not None
                    images, labels = mnist
                    noise = 0.0
                res, rev, base = run_dataset(
                    name, images, labels, noise, args.epochs, seed, seed_log
                )
                one['datasets'][name] = res
                one['revelation'][name] = rev
                one['validation_mse'][name] = base
            one['kernels'] = seed_log.pop('kernels', {})
            per_seed[str(seed)] = one
            log[str(seed)] = seed_log
        runs = list(per_seed.values())
        result: dict[str, Any] = {
            key: _mean_scores([r[key] for r in runs])
            for key in ('datasets', 'revelation', 'validation_mse')
        }
        # The kernel strategy of lowest mean validation MSE, and its curve.
        result['best_kernel'] = {
            name: min(v, key=v.__getitem__)
            for name, v in result['validation_mse'].items()
        }
        result['per_seed'] = per_seed
        result['settings'] = {
            'images': args.images,
            'epochs': args.epochs,
            'seeds': args.seeds,
            'network': 'fcn-32',
            'seconds_per_run': log,
            'seconds': round(time.perf_counter() - t0, 1),
        }
        text = json.dumps(result, indent=2)
        if args.out:
            atomic_write_text(args.out, text + '\n')
        print(text)
        return result


if __name__ == '__main__':
    main()
