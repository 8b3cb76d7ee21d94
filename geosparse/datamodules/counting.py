r"""Data module for point-supervised counting: imagery & object points, split by region.

Counting needs every object of a window annotated, so the split is by region, not by
point: each raster is cut into horizontal bands from the top (``split`` fractions of
its height) for training, validation and testing, and windows lie wholly inside one
band. Training windows are random (:class:`~geosparse.samplers.RegionGeoSampler`),
empty ones included (they teach "nothing here"); validation and test windows tile
their bands (:class:`~geosparse.samplers.CoverGeoSampler`) and are scored by count.

Semi-supervised training (``labelled_fraction < 1``): the training band is cut into
tiles of about ``patch_size`` and only a random ``labelled_fraction`` of them keep
their points; windows from the other tiles carry no points and ``labelled = False``,
for the teacher's pseudo-points. Each training batch then holds ``batch_size``
labelled windows followed by ``unlabelled_batch_size`` unlabelled ones
(:class:`~geosparse.samplers.LabelledBatchGeoSampler`), so the supervised part of a
step is the same as without unlabelled data. With ``transductive=True`` the validation
and test bands' imagery joins the unlabelled pool (never their points): the imagery a
model will count is usually at hand, and a teacher's pseudo-points on it let the
student see that imagery's density; validation and test windows are scored as
before.

GST (``gaussians=True``): one 2D Gaussian per training point is fitted to the
imagery once (:func:`~geosparse.gaussians.cached_fit`, cached on disk under a key of
the pixels, the points and the settings), in tiles of ``fit_tile`` pixels with a
halo, and each point carries its covariance (pixels² at the data module's
resolution) as ``covariances`` ``(cov_rr, cov_rc, cov_cc)``: a window keeps the
Gaussians of its points (shifted with them) and a flip changes the sign of ``cov_rc``
(:func:`~geosparse.transforms.flip_batch`), nothing is refitted.

Augmentation (``augment=True``), the TorchGeo way: ``train_aug``
(:class:`~geosparse.transforms.RandomFlipWithPoints`) flips training batches in
:meth:`~geosparse.datamodules.CountingDataModule.on_after_batch_transfer`, left-right
and top-bottom with probability 1/2 each, per window; the image, its points (:math:`c
\to W - c`, :math:`r \to H - r`) and their covariances move together. Validation, test
and prediction batches are never augmented.

Points are read from any vector file in any CRS, a CSV with coordinate columns, or a
CSV of pixel boxes (``xmin, ymin, xmax, ymax``, e.g. DeepForest's annotations; box
centres on the first raster are the points, :func:`~geosparse.io.points.box_centres`).
Points off the imagery are dropped with a warning; points closer than
``merge_distance`` pixels are merged (duplicated annotations) with a warning.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from torchgeo.datamodules import GeoDataModule

from ..batch import KeepGeoKeys
from ..compat import window_bounds
from ..datasets.coarse import ImageryDataset
from ..datasets.points import SparsePoints, collate_points
from ..errors import InputError, check_counts, check_number
from ..gaussians import cached_fit
from ..io.grid import RasterGrid
from ..io.points import box_centres, is_box_csv, read_points_frame
from ..samplers import (
    Box,
    CoverGeoSampler,
    LabelledBatchGeoSampler,
    RegionGeoSampler,
    window_positions,
)
from ..transforms import RandomFlipWithPoints

__all__ = [
    'COV_COLUMNS',
    'CountingDataModule',
    'collate_counting',
    'default_cache_dir',
]

#: Columns of each point's Gaussian covariance (pixels²), the order of a batch's
#: ``covariances`` ``(B, N, 3)``.
COV_COLUMNS = ('cov_rr', 'cov_rc', 'cov_cc')


def default_cache_dir() -> Path:
    """``$GEOSPARSE_CACHE`` or ``$XDG_CACHE_HOME/geosparse`` (``~/.cache/geosparse``).

    .. versionadded:: 0.1
    """
    env = os.environ.get('GEOSPARSE_CACHE')
    if env:
        return Path(env)
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'geosparse'


def _inside(sample: Mapping[str, Any], boxes: Sequence[Box]) -> bool:
    """Whether a sample's window lies in one of the boxes.

    Windows and boxes lie on the pixel grid, so they differ by whole pixels or not at
    all: half a pixel of tolerance absorbs float32 bounds (TorchGeo 0.10).
    """
    xmin, ymin, xmax, ymax = window_bounds(sample['bounds'])
    eps = 0.5 * (xmax - xmin) / int(sample['image'].shape[-1])
    return any(
        xmin >= b[0] - eps
        and xmax <= b[2] + eps
        and ymin >= b[1] - eps
        and ymax <= b[3] + eps
        for b in boxes
    )


def _clip(
    bounds: tuple[float, float, float, float], box: Box
) -> tuple[float, float, float, float]:
    """``bounds`` cut to ``box`` (a grid's last pixel may overhang a partial box)."""
    return (
        max(bounds[0], box[0]),
        max(bounds[1], box[1]),
        min(bounds[2], box[2]),
        min(bounds[3], box[3]),
    )


def _in_boxes(xy: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Which ``(P, 2)`` points lie in any box ``[xmin, xmax) x (ymin, ymax]``.

    The half-open sides are those of :class:`~geosparse.datasets.SparsePoints`
    windows, so a point on a shared edge belongs to exactly one box.
    """
    ok = np.zeros(len(xy), dtype=bool)
    for xmin, ymin, xmax, ymax in boxes:
        ok |= (
            (xy[:, 0] >= xmin)
            & (xy[:, 0] < xmax)
            & (xy[:, 1] > ymin)
            & (xy[:, 1] <= ymax)
        )
    return ok


def _tile_edges(length: int, size: int) -> list[int]:
    """Edges of tiles of ``size`` over ``length`` pixels, the last one taking the rest."""
    n = max(length // size, 1)
    return [k * size for k in range(n)] + [length]


def collate_counting(
    samples: Iterable[Mapping[str, Any]], unlabelled: Sequence[Box] = ()
) -> dict[str, Any]:
    """:func:`~geosparse.datasets.collate_points` plus ``labelled`` ``(B,)``.

    A window wholly inside one of the ``unlabelled`` boxes is unlabelled (its points
    are hidden); every other window is labelled, with or without points.

    .. versionadded:: 0.1
    """
    samples = list(samples)
    batch = collate_points(samples)
    batch['labelled'] = torch.tensor(
        [not _inside(s, unlabelled) for s in samples], dtype=torch.bool
    )
    return batch


class CountingDataModule(KeepGeoKeys, GeoDataModule):
    """Imagery & object points (one per object), split by region (see the module doc).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        image_paths: str | Sequence[str],
        points_path: str,
        image_glob: str = '*.tif',
        x: str | None = None,
        y: str | None = None,
        points_crs: str | None = None,
        res: float | None = None,
        patch_size: int = 64,
        batch_size: int = 8,
        length: int | None = 200,
        split: Sequence[float] = (0.7, 0.1, 0.2),
        labelled_fraction: float = 1.0,
        use_unlabelled: bool = True,
        unlabelled_batch_size: int | None = None,
        transductive: bool = False,
        eval_size: int | None = None,
        gaussians: bool = False,
        fit_steps: int = 100,
        fit_tile: int = 512,
        fit_max_scale: float | None = None,
        cache_dir: str | None = None,
        merge_distance: float = 0.5,
        augment: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        """Describe the data.

        Args:
            image_paths: imagery files or folders.
            points_path: points: vector file, CSV with coordinates, or CSV of pixel
                boxes on the (first) raster.
            image_glob: imagery file pattern.
            x: CSV x / longitude column.
            y: CSV y / latitude column.
            points_crs: CRS of CSV coordinates (default EPSG:4326).
            res: resolution of the samples in CRS units (default: the imagery's).
            patch_size: training window size in pixels.
            batch_size: windows per batch.
            length: training windows per epoch (semi-supervised: labelled windows;
                the unlabelled ones come on top, ``unlabelled_batch_size`` per batch).
            split: fractions of each raster's height (from the top) for training,
                validation and testing.
            labelled_fraction: fraction of the training band's tiles (of about
                ``patch_size``) whose points are kept; the other tiles give
                unlabelled windows.
            use_unlabelled: draw training windows from the unlabelled part too
                (False: labelled windows only, the supervised reference of
                semi-supervised training).
            unlabelled_batch_size: semi-supervised: unlabelled windows added to
                each batch of ``batch_size`` labelled ones (default
                ``batch_size``; :class:`~geosparse.samplers.LabelledBatchGeoSampler`),
                so that the labelled part of a step is that of the labelled-only
                reference.
            transductive: semi-supervised: draw unlabelled windows from the
                validation and test bands too (their imagery only; their points
                stay hidden from training), so that the teacher's pseudo-points
                cover the imagery that is scored.
            eval_size: validation and test tile size in pixels (default
                ``patch_size``).
            gaussians: fit GST Gaussians to the training points.
            fit_steps: Adam steps of the Gaussian fit.
            fit_tile: the fit works on tiles of this many pixels (plus a halo).
            fit_max_scale: largest Gaussian std in pixels (default: a quarter of
                the tile); a size prior, not in the paper.
            cache_dir: where fits are cached (default :func:`default_cache_dir`).
            merge_distance: points closer than this (pixels) are merged.
            augment: random horizontal and vertical flips of training batches
                (images, points and covariances together; ``train_aug``).
            seed: seed of the samplers and the fit.
            num_workers: data loader workers.

        Raises:
            ValueError: for fractions that do not sum to 1 or a labelled fraction
                outside (0, 1]; :class:`~geosparse.errors.InputError` for a size,
                count, resolution or distance out of range (e.g. ``patch_size=0``).
        """
        owner = 'CountingDataModule'
        check_counts(
            owner,
            patch_size,
            batch_size=batch_size,
            length=length,
            eval_size=eval_size,
            fit_tile=fit_tile,
        )
        check_number(owner, 'fit_steps', fit_steps, 0, integer=True)
        check_number(owner, 'merge_distance', merge_distance, 0)
        check_number(owner, 'res', res, 0, strict=True)
        check_number(owner, 'fit_max_scale', fit_max_scale, 0, strict=True)
        super().__init__(ImageryDataset, batch_size, patch_size, length, num_workers)
        if not np.isclose(sum(split), 1.0) or len(split) != 3 or min(split) < 0:
            raise ValueError(
                f'split={list(split)}: give three non-negative fractions (train, '
                'validation, test) that sum to 1.'
            )
        if not 0 < labelled_fraction <= 1:
            raise ValueError(
                f'labelled_fraction={labelled_fraction} must be in (0, 1].'
            )
        if unlabelled_batch_size is not None and unlabelled_batch_size < 1:
            raise ValueError(
                f'unlabelled_batch_size={unlabelled_batch_size} must be >= 1 '
                '(or None for batch_size).'
            )
        if transductive and (labelled_fraction >= 1 or not use_unlabelled):
            raise ValueError(
                f'transductive=True needs unlabelled windows: give labelled_fraction '
                f'< 1 (got {labelled_fraction}) and use_unlabelled=True (got '
                f'{use_unlabelled}).'
            )
        self.save_hyperparameters()
        self.aug = None  # type: ignore[assignment]  # the tasks normalise inputs
        self.train_aug = RandomFlipWithPoints() if augment else None

    @property
    def window_side(self) -> int:
        """Side of the (square) training windows in pixels."""
        size = self.patch_size
        return size if isinstance(size, int) else int(size[0])

    # ------------------------------------------------------------ points
    def read_points(self, image: ImageryDataset) -> SparsePoints:
        """All points in the imagery's CRS, off-imagery ones dropped, duplicates merged.

        Raises:
            ValueError: if no point lies on the imagery.
        """
        hp = self.hparams
        path = hp['points_path']
        if is_box_csv(path):
            first = Path(image.index['filepath'].iloc[0])
            frame = box_centres(path, first)
        else:
            frame = read_points_frame(path, [], hp['x'], hp['y'], hp['points_crs'])
        x, y, _ = image.bounds
        extent = (float(x.start), float(y.start), float(x.stop), float(y.stop))
        points = SparsePoints(frame, crs=image.crs, res=image.res, extent=extent)
        xy = points.xy()
        footprint = image.index.union_all()
        inside = shapely.contains_xy(footprint, xy[:, 0], xy[:, 1])
        if not inside.any():
            raise InputError(
                f'{path}: none of its {len(xy)} points lies on the imagery '
                f'{hp["image_paths"]} (check points_crs for a CSV, and that they '
                'overlap).'
            )
        keep = inside.copy()
        if not inside.all():
            warnings.warn(
                f'{path}: {int((~inside).sum())} of {len(xy)} points lie outside the '
                'imagery; they are dropped.',
                stacklevel=2,
            )
        # Duplicated annotations: clusters of points closer than merge_distance px.
        r = hp['merge_distance'] * float(image.res[0])
        idx = np.flatnonzero(keep)
        pairs: np.ndarray = (
            cKDTree(xy[idx]).query_pairs(r, output_type='ndarray')
            if r > 0
            else np.zeros((0, 2), dtype=np.int64)
        )
        if len(pairs):
            n = len(idx)
            adj = coo_matrix(
                (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)
            )
            _, label = connected_components(adj, directed=False)
            _, kept = np.unique(label, return_index=True)
            merged = n - len(kept)
            warnings.warn(
                f'{path}: {merged} points lie within merge_distance='
                f'{hp["merge_distance"]} px of another (duplicated annotations?); '
                'each group is counted once (the first point is kept).',
                stacklevel=2,
            )
            keep[:] = False
            keep[idx[np.sort(kept)]] = True
        return points.select(np.flatnonzero(keep))

    # ------------------------------------------------------------ regions
    def regions(self, image: ImageryDataset) -> dict[str, list[Box]]:
        """Boxes of each split per raster: ``labelled``, ``unlabelled``, ``val``, ``test``.

        Bands are cut from the top of each raster by ``split``, edges snapped to the
        pixel grid. With ``labelled_fraction < 1`` the training band is cut into
        tiles of about ``patch_size`` (the last row and column of tiles take the
        remainder) and ``labelled_fraction`` of them, drawn with ``seed``, keep their
        points, like the few labelled images of semi-supervised crowd counting.
        """
        hp = self.hparams
        rx, ry = (float(r) for r in image.res)
        size = self.window_side
        out: dict[str, list[Box]] = {
            k: [] for k in ('labelled', 'unlabelled', 'val', 'test')
        }
        rng = np.random.default_rng(hp['seed'])
        for geom in image.index.geometry:
            xmin, ymin, xmax, ymax = geom.bounds
            rows = round((ymax - ymin) / ry)
            f_train, f_val, _ = hp['split']
            r_train = round(rows * f_train)
            r_val = round(rows * (f_train + f_val))
            edge = [ymax - k * ry for k in (0, r_train, r_val, rows)]
            parts = zip(('train', 'val', 'test'), edge, edge[1:], strict=False)
            for name, top, bottom in parts:
                if top - bottom < 0.5 * ry:
                    continue
                if name != 'train':
                    out[name].append((xmin, bottom, xmax, top))
                elif hp['labelled_fraction'] >= 1:
                    out['labelled'].append((xmin, bottom, xmax, top))
                else:
                    cols = round((xmax - xmin) / rx)
                    redges = [top - k * ry for k in _tile_edges(r_train, size)]
                    cedges = [xmin + k * rx for k in _tile_edges(cols, size)]
                    tiles = [
                        (c0, b, c1, t)
                        for t, b in itertools.pairwise(redges)
                        for c0, c1 in itertools.pairwise(cedges)
                    ]
                    k = max(1, round(hp['labelled_fraction'] * len(tiles)))
                    chosen = set(rng.choice(len(tiles), k, replace=False).tolist())
                    for i, tile in enumerate(tiles):
                        out['labelled' if i in chosen else 'unlabelled'].append(tile)
        return out

    # ------------------------------------------------------------ Gaussians
    def fit_covariances(
        self, image: ImageryDataset, points: SparsePoints, boxes: Sequence[Box]
    ) -> np.ndarray:
        """``(P, 3)`` covariances (:data:`.COV_COLUMNS`, pixels²) of the points in ``boxes``.

        Each box is cut into tiles of ``fit_tile`` pixels; a tile's points are fitted
        together with the points of a halo around it (their Gaussians shape the
        image there too), and each point keeps the covariance from its own tile.
        Points outside every box get NaN.
        """
        hp = self.hparams
        xres, yres = (float(r) for r in image.res)
        tile, halo = int(hp['fit_tile']), 16
        xy = points.xy()
        covs = np.full((len(xy), 3), np.nan)
        cache = Path(hp['cache_dir']) if hp['cache_dir'] else default_cache_dir()
        _, _, t = image.bounds
        for box in boxes:
            # The box's pixel grid, cut into tiles of fit_tile pixels, each read with
            # a halo of 16 pixels (clipped at the box, as the box's own edges are).
            grid = RasterGrid.from_bounds(image.crs, box, (xres, yres))
            for tile_window in grid.blocks(tile):
                core = _in_boxes(xy, [_clip(grid.window_bounds(tile_window), box)])
                if not core.any():
                    continue
                read = grid.with_halo(tile_window, halo)
                wx0, wy0, wx1, wy1 = _clip(grid.window_bounds(read), box)
                window = (slice(wx0, wx1, xres), slice(wy0, wy1, yres), t)
                pixels = image[window]['image'].numpy().astype(np.float32)
                near = _in_boxes(xy, [(wx0, wy0, wx1, wy1)])
                rows, cols = grid.window_grid(read).to_pixels(xy[near])
                fit = cached_fit(
                    pixels / 255.0 if pixels.max() > 1.5 else pixels,
                    np.stack([rows, cols], 1),
                    cache,
                    steps=int(hp['fit_steps']),
                    max_scale=hp['fit_max_scale'],
                    seed=int(hp['seed']),
                )
                ids = np.flatnonzero(near)
                mine = core[ids]
                c = fit.covs[mine]
                covs[ids[mine]] = np.stack([c[:, 0, 0], c[:, 0, 1], c[:, 1, 1]], 1)
        return covs

    # ------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Read, split and (for GST) fit the points; build the samplers.

        Raises:
            ValueError: if the training band holds no window or no point.
        """
        hp = self.hparams
        image = ImageryDataset(hp['image_paths'], glob=hp['image_glob'], res=hp['res'])
        self.image = image
        everything = self.read_points(image)
        self.points = everything
        self.boxes = self.regions(image)
        xy = everything.xy()

        labelled = _in_boxes(xy, self.boxes['labelled'])
        self.setup_eval(everything)
        if stage not in ('fit', 'validate'):
            return
        if not labelled.any():
            raise ValueError(
                f'{hp["points_path"]}: no point in the labelled training region '
                f'(split={list(hp["split"])}, labelled_fraction='
                f'{hp["labelled_fraction"]}); enlarge them.'
            )
        train_points = everything.select(np.flatnonzero(labelled))
        if hp['gaussians']:
            covs = self.fit_covariances(image, train_points, self.boxes['labelled'])
            train_points = train_points.with_values(
                dict(zip(COV_COLUMNS, covs.T, strict=True)), key='covariances'
            )
        gen = torch.Generator().manual_seed(hp['seed'])
        size = self.window_side
        self.train_dataset = image & train_points
        length = hp['length'] or 200
        if hp['use_unlabelled'] and self.boxes['unlabelled']:
            # Semi-supervised: every batch holds batch_size labelled windows plus
            # unlabelled ones (the sampler's doc says why not one pool).
            self.train_sampler = None
            self.train_batch_sampler = LabelledBatchGeoSampler(
                self.train_dataset,
                size,
                max(length // self.batch_size, 1),
                self.boxes['labelled'],
                self.unlabelled_pool(),
                self.batch_size,
                hp['unlabelled_batch_size'] or self.batch_size,
                gen,
            )
        else:
            self.train_sampler = RegionGeoSampler(
                self.train_dataset, size, length, self.boxes['labelled'], gen
            )

    def unlabelled_pool(self) -> list[Box]:
        """Boxes of the unlabelled training windows.

        The training band's unlabelled tiles, and with ``transductive=True`` those of
        the validation and test bands that hold a training window (imagery only: the
        training dataset holds the labelled tiles' points alone, and the training
        collate marks these windows unlabelled).

        Raises:
            ValueError: with ``transductive=True``, if neither held-out band holds a
                window of ``patch_size``.
        """
        hp = self.hparams
        pool = list(self.boxes['unlabelled'])
        if not hp.get('transductive', False):
            return pool
        res = (float(self.image.res[0]), float(self.image.res[1]))
        size = self.window_side
        held_out = self.boxes['val'] + self.boxes['test']
        fits = [b for b in held_out if min(window_positions(b, res, (size, size))) > 0]
        if not fits:
            rows = [round((b[3] - b[1]) / res[1]) for b in held_out]
            raise ValueError(
                f'transductive=True: the validation and test bands ({rows} pixels '
                f'high, split={list(hp["split"])}) hold no training window of '
                f'patch_size={size}; give them a larger split fraction or a smaller '
                'patch_size.'
            )
        return pool + fits

    def train_dataloader(self) -> Any:
        """The training loader, whose collate marks every unlabelled-pool window unlabelled.

        Validation and test loaders keep :attr:`collate_fn`, which marks only the
        training band's unlabelled tiles, so that the validation and test bands are
        scored with ``transductive=True`` too.
        """
        scored = self.collate_fn
        self.collate_fn = functools.partial(
            collate_counting, unlabelled=tuple(self.unlabelled_pool())
        )
        try:
            return super().train_dataloader()
        finally:
            self.collate_fn = scored

    def setup_eval(self, everything: SparsePoints) -> None:
        """Validation and test windows: tiles of ``eval_size`` over their bands.

        Raises:
            ValueError: if ``eval_size`` exceeds a band.
        """
        hp, image = self.hparams, self.image
        size = self.window_side
        eval_size = hp['eval_size'] or size
        self.eval_size = eval_size
        rx, ry = (float(r) for r in image.res)
        for name in ('val', 'test'):
            boxes = self.boxes[name]
            small = [
                b
                for b in boxes
                if b[2] - b[0] < eval_size * rx * (1 - 1e-9)
                or b[3] - b[1] < eval_size * ry * (1 - 1e-9)
            ]
            if small:
                rows = min(round((b[3] - b[1]) / ry) for b in small)
                raise ValueError(
                    f'eval_size={eval_size}: the {name} band is only {rows} pixels '
                    f'high (split={list(hp["split"])}); give a smaller eval_size '
                    '(or patch_size) or a larger split fraction.'
                )
            if not boxes:
                setattr(self, f'{name}_dataset', None)
                setattr(self, f'{name}_sampler', None)
                continue
            data = image & everything
            setattr(self, f'{name}_dataset', data)
            setattr(
                self, f'{name}_sampler', CoverGeoSampler(data, eval_size, rois=boxes)
            )
        self.predict_dataset = self.test_dataset
        self.predict_sampler = self.test_sampler
        self.collate_fn = functools.partial(
            collate_counting, unlabelled=tuple(self.boxes['unlabelled'])
        )

    def on_after_batch_transfer(
        self, batch: dict[str, Any], dataloader_idx: int
    ) -> dict[str, Any]:
        """Augment training batches (``train_aug``: images, points and covariances).

        Validation, test and prediction batches pass unchanged.
        """
        if self.trainer and self.trainer.training and self.train_aug is not None:
            batch = self.train_aug(batch)
        return batch
