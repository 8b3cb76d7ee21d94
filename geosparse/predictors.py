r"""Model adapters for prediction: a trained task turned into a block function.

A :class:`Predictor` wraps a trained task and applies it to one window of raw
imagery, returning the output bands that :func:`~geosparse.blocks.predict_blocks`
writes. It knows the bands it writes (names, data type, nodata, scales, colour
table) and normalises the input exactly as the task did in training:

- :class:`~geosparse.trainers.LabelSuperResolutionTask` normalises inside the model
  (:meth:`~geosparse.trainers.LabelSuperResolutionTask.normalize`), and combines
  the network with coarse labels where they are given (``--coarse``).
- TorchGeo's :class:`~torchgeo.tasks.SemanticSegmentation` and
  :class:`~torchgeo.tasks.PixelwiseRegression` receive imagery normalised by
  the datamodule, :math:`x' = (x - m)/s`; :math:`m = 0, s = 255` is the default of
  TorchGeo's data modules, other values come from ``mean``/``std``.

Segmentation writes ``class`` (uint8, colour table, class names; 255 nodata) and
``uncertainty`` (normalised entropy :math:`-\sum_l p_l \log p_l / \log L`, uint8 with
scale 1/254), and optionally one probability band per class (uint8, scale 1/254) in
a second COG ``<name>_probabilities.tif`` (GeoTIFF keeps a colour table only in
files of one or two bands).
Regression writes ``mean`` (float32, NaN nodata) for every output of the network.
Counting tasks write ``density`` (:class:`~geosparse.trainers.DensityTask`, objects
per pixel) or ``probability`` and ``detection`` (1 at the centre of each detected
cell; :class:`~geosparse.trainers.PointMapTask`; block and halo should be multiples
of its stride so that blocks share its cell grid);
:func:`~geosparse.counting.count_map` sums either into counts per cell.

Windows are padded (reflect) to a multiple of 32 for encoder-decoder models and the
padding is cropped off again. A predictor made by :meth:`Predictor.from_checkpoint`
pickles to its checkpoint path and options (not its weights), so dask workers load
the model once each.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine
from lightning.pytorch import LightningModule
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.windows import Window
from tqdm.auto import tqdm

from .checkpoints import load_task
from .io.raster import file_sha256
from .io.source import ImageSource
from .kernels import FAMILIES
from .posterior import loo_variance_scale, posterior_map
from .trainers.counting import DensityTask, PointMapTask
from .trainers.lsr import LabelSuperResolutionTask, normalised_entropy
from .trainers.npp import NPPTask

__all__ = ['CLASS_COLORS', 'Predictor', 'file_sha256']

#: Colours of fine classes by name (others get a palette colour).
CLASS_COLORS: dict[str, tuple[int, int, int, int]] = {
    'water': (0, 112, 255, 255),
    'forest': (38, 115, 0, 255),
    'field': (163, 255, 115, 255),
    'impervious': (156, 156, 156, 255),
}

_PALETTE = [
    (228, 26, 28, 255),
    (55, 126, 184, 255),
    (77, 175, 74, 255),
    (152, 78, 163, 255),
    (255, 127, 0, 255),
    (255, 255, 51, 255),
    (166, 86, 40, 255),
    (247, 129, 191, 255),
]

Kind = Literal['segmentation', 'regression']

# Models loaded in this process, by checkpoint path and hash (dask workers keep one).
_LOADED: dict[tuple[str, str, str | None, bool], LightningModule] = {}
_LOAD_LOCK = threading.Lock()


def _load(
    checkpoint: str, sha: str, task_class: str | None, trust: bool
) -> LightningModule:
    with _LOAD_LOCK:
        key = (checkpoint, sha, task_class, trust)
        if key not in _LOADED:
            _LOADED[key] = load_task(checkpoint, task_class, trust)
        return _LOADED[key]


class Predictor:
    """A trained task applied to windows of raw imagery (a block function).

    Call it as ``predictor(image, coarse)`` with ``image`` ``(C, h, w)`` float32 raw
    values and ``coarse`` ``(h, w)`` codes or None; it returns
    ``(count, h, w)`` of :attr:`dtype`. :meth:`cog_options` gives the matching
    keyword arguments of :func:`~geosparse.io.cog.cog_writer`.
    """

    def __init__(
        self,
        task: LightningModule | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        task_class: str | None = None,
        probabilities: bool = False,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        class_names: Sequence[str] | None = None,
        torch_threads: int | None = 1,
        reveal: tuple[np.ndarray, np.ndarray] | None = None,
        reveal_crs: CRS | str | None = None,
        kernel: Mapping[str, float] | None = None,
        kernel_family: str | None = None,
        calibrate: bool = False,
        trust_checkpoint: bool = False,
    ) -> None:
        """Wrap a task (or a checkpoint, loaded now and again in each dask worker).

        Args:
            task: the trained task; if None, ``checkpoint`` is loaded.
            checkpoint: Lightning checkpoint of the task (recorded in the output
                tags with its SHA-256).
            task_class: dotted class of the task when the checkpoint does not tell
                (see :func:`~geosparse.checkpoints.task_class_for`).
            probabilities: segmentation: also write one probability band per class.
            mean: TorchGeo tasks: per-band (or one) mean subtracted from the raw
                imagery, as the training datamodule did (default 0).
            std: TorchGeo tasks: per-band (or one) divisor (default 255).
            class_names: names of the classes (default: the task's, or
                ``class_0``, ``class_1``, ...).
            torch_threads: torch intra-op threads when the model runs. The default,
                1, makes every block's numbers independent of the thread count and
                the machine's load, so the threaded scheduler and a cluster write
                the same bytes (a different thread count changes float sums in the
                last bit, enough to move a quantised value); parallelism comes from
                the scheduler's threads or workers. None keeps torch's setting.
            reveal: regression: known points as ``(xy (P, 2) in the imagery's CRS,
                values (P,))`` (:func:`~geosparse.io.points.read_points`); each
                block's output is then the GP posterior given the points inside the
                block's window, halo included
                (:func:`~geosparse.posterior.posterior_map`), with a ``std`` band.
            reveal_crs: CRS of the ``reveal`` coordinates (they are reprojected to
                each raster's CRS by :meth:`for_crs`); None: the rasters' CRS.
            kernel: with ``reveal``: ``lengthscale`` (CRS units, e.g. metres),
                ``variance`` and ``noise`` of the RBF kernel.
            kernel_family: ``rbf`` or a Matérn (:func:`~geosparse.kernels.stationary`);
                default: the NPP checkpoint's, else ``rbf``.
            calibrate: with ``reveal``: before predicting, rescale the kernel's
                variance and noise by leave-one-out on the revealed points
                (:meth:`calibrated`, called by
                :func:`~geosparse.predict.predict_raster`); the std band then matches
                the errors at held-out points instead of the residuals the network
                saw in training. Reveal points the network was not trained on: at
                training points the residuals are too small.
            trust_checkpoint: unpickle whatever the checkpoint holds and import the
                task class it names. Off by default: a checkpoint is read as weights
                and plain data (:mod:`geosparse.checkpoints`), since its pickle can
                run code; only for files you trust.

        Raises:
            UntrustedCheckpointError: if the checkpoint needs more than weights and
                plain data, or names an unknown task class, and is not trusted.
            ValueError: without a task or a checkpoint, or for an unsupported task
                (multilabel segmentation).
        """
        if task is None and checkpoint is None:
            raise ValueError('Predictor needs a task or a checkpoint.')
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.sha256 = None if checkpoint is None else file_sha256(checkpoint)
        self.task_class = task_class
        self.trust_checkpoint = trust_checkpoint
        if task is None:
            assert self.checkpoint is not None and self.sha256 is not None
            task = _load(self.checkpoint, self.sha256, task_class, trust_checkpoint)
        self._task: LightningModule | None = task.eval()
        self.probabilities = probabilities
        self.torch_threads = torch_threads
        hp = task.hparams
        self.task_name = type(task).__name__
        self.in_channels = int(hp.get('in_channels', 0)) or None
        self.kind: Kind
        self.uses_coarse = isinstance(task, LabelSuperResolutionTask)
        if isinstance(task, LabelSuperResolutionTask):
            self.kind = 'segmentation'
            names = list(task.table.fine_names)
            self.binary = False
        elif isinstance(task, DensityTask | PointMapTask):
            self.kind = 'regression'
            names = (
                ['density']
                if isinstance(task, DensityTask)
                else ['probability', 'detection']
            )
            self.binary = False
        elif 'num_outputs' in hp:
            self.kind = 'regression'
            names = [f'output_{i}' for i in range(int(hp['num_outputs']))]
            self.binary = False
        else:
            self.kind = 'segmentation'
            mode = hp.get('task', 'multiclass')
            if mode == 'multilabel':
                raise ValueError(
                    'multilabel segmentation is not supported by predict; train a '
                    'multiclass or binary task.'
                )
            self.binary = mode == 'binary'
            n = 2 if self.binary else int(hp['num_classes'])
            names = [f'class_{i}' for i in range(n)]
        if class_names is not None:
            if len(class_names) != len(names):
                raise ValueError(
                    f'class_names has {len(class_names)} names but the model has '
                    f'{len(names)} outputs.'
                )
            names = list(class_names)
        self.names = names
        self.reveal = reveal
        self.reveal_crs = (
            None if reveal_crs is None else CRS.from_user_input(reveal_crs)
        )
        self.kernel = dict(kernel or {})
        self.is_npp = isinstance(task, NPPTask)
        if kernel_family is None:
            kernel_family = task.kernel_family if isinstance(task, NPPTask) else 'rbf'
        if kernel_family not in FAMILIES:
            raise ValueError(
                f'kernel_family={kernel_family!r}: choose one of {", ".join(FAMILIES)}.'
            )
        self.kernel_family = kernel_family
        if reveal is not None:
            if self.kind != 'regression' or len(names) != 1:
                raise ValueError(
                    'reveal (known points) needs a regression model with one output.'
                )
            missing = {'lengthscale', 'variance'} - set(self.kernel)
            if missing and not self.is_npp:
                raise ValueError(
                    f'reveal needs the kernel parameters {sorted(missing)}: give '
                    '--lengthscale (CRS units of the imagery, e.g. metres) and '
                    '--kernel-variance (label units squared), or use an NPPTask '
                    'checkpoint, which has its own kernel.'
                )
            if not missing:
                self.kernel.setdefault('noise', 0.0)
        if calibrate and reveal is None:
            raise ValueError('calibrate needs known points (reveal, --reveal).')
        if (
            calibrate
            and 'lengthscale' not in self.kernel
            and hp_kernel(task) == 'context'
        ):
            raise ValueError(
                'calibrate needs one kernel for the whole raster; the checkpoint has a '
                'context-aware kernel (one per window): give --lengthscale and '
                '--kernel-variance, or drop --calibrate.'
            )
        self.calibrate = calibrate
        #: Factor of the kernel's variance and noise (:meth:`calibrated`).
        self.variance_scale = 1.0
        self.mean = 0.0 if mean is None else mean
        self.std = 255.0 if std is None else std
        model_name = str(hp.get('model', ''))
        self.pad_multiple = 1 if model_name == 'fcn' else 32

    # ------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """State without the model when a checkpoint can restore it."""
        state = self.__dict__.copy()
        if self.checkpoint is not None:
            state['_task'] = None
        return state

    @property
    def task(self) -> LightningModule:
        """The wrapped task (loaded from the checkpoint on first use)."""
        if self._task is None:
            assert self.checkpoint is not None and self.sha256 is not None
            self._task = _load(
                self.checkpoint, self.sha256, self.task_class, self.trust_checkpoint
            )
        return self._task

    # ------------------------------------------------------------ layout
    @property
    def count(self) -> int:
        """Output bands."""
        if self.kind == 'regression':
            return 2 if self.has_std else len(self.names)
        return 2 + (len(self.names) if self.probabilities else 0)

    def for_crs(self, crs: CRS) -> Predictor:
        """This predictor with its revealed points reprojected to ``crs``."""
        if self.reveal is None or self.reveal_crs is None or self.reveal_crs == crs:
            return self
        xy, values = self.reveal
        xs, ys = Transformer.from_crs(self.reveal_crs, crs, always_xy=True).transform(
            xy[:, 0], xy[:, 1]
        )
        other = copy.copy(self)
        other.reveal = (np.stack([xs, ys], axis=1), values)
        other.reveal_crs = crs
        return other

    @property
    def has_std(self) -> bool:
        """Regression with a GP: NPP models, or known points with a kernel."""
        return self.is_npp or self.reveal is not None

    @property
    def needs_transform(self) -> bool:
        """Whether the block function needs each window's affine transform."""
        return self.has_std

    @property
    def dtype(self) -> str:
        """Output data type."""
        return 'float32' if self.kind == 'regression' else 'uint8'

    @property
    def nodata(self) -> float:
        """Output nodata."""
        return float('nan') if self.kind == 'regression' else 255

    def cog_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~geosparse.io.cog.cog_writer` for the output."""
        tags = {
            'task': self.task_name,
            'kind': self.kind,
            'class_names'
            if self.kind == 'segmentation'
            else 'output_names': json.dumps(self.names),
        }
        if self.checkpoint is not None:
            tags['checkpoint'] = Path(self.checkpoint).name
            tags['checkpoint_sha256'] = str(self.sha256)
        if self.kind == 'regression':
            if self.has_std:
                if self.kernel:
                    tags['kernel'] = json.dumps(
                        {'type': self.kernel_family, **self.kernel}
                    )
                else:
                    tags['kernel'] = json.dumps(
                        {
                            'type': self.kernel_family,
                            'from': f'checkpoint ({hp_kernel(self.task)})',
                        }
                    )
                n = 0 if self.reveal is None else len(self.reveal[1])
                tags['revealed_points'] = str(n)
                tags['variance_scale'] = repr(self.variance_scale)
                return {
                    'descriptions': ['mean', 'std'],
                    'tags': tags,
                    'band_tags': [
                        {'definition': 'GP posterior mean given the revealed points'},
                        {'definition': 'GP posterior standard deviation'},
                    ],
                }
            if isinstance(self.task, DensityTask | PointMapTask):
                density = isinstance(self.task, DensityTask)
                tags['counting'] = 'density' if density else 'point map'
                if density:
                    definitions = [
                        'objects per pixel; its sum over an area is the count there'
                    ]
                else:
                    tags['threshold'] = repr(self.task.hparams['threshold'])
                    tags['stride'] = str(self.task.hparams['stride'])
                    definitions = [
                        'object probability of the cell of stride x stride pixels',
                        'detections: 1 at the centre of each cell above the threshold '
                        'tag; their sum over an area is the count there',
                    ]
                return {
                    'descriptions': self.names,
                    'tags': tags,
                    'band_tags': [{'definition': d} for d in definitions],
                }
            return {
                'descriptions': [
                    'mean' if len(self.names) == 1 else f'mean_{n}' for n in self.names
                ],
                'tags': tags,
                'band_tags': [
                    {'definition': 'network output (no uncertainty without --reveal)'}
                    for _ in self.names
                ],
            }
        colormap = {
            i: CLASS_COLORS.get(n, _PALETTE[i % len(_PALETTE)])
            for i, n in enumerate(self.names)
        }
        return {
            'descriptions': ['class', 'uncertainty'],
            'colormap': colormap,
            'tags': tags,
            'band_tags': [
                {'class_names': json.dumps(self.names)},
                {'definition': 'normalised entropy of the class probabilities, 0..1'},
            ],
            'scales': [1.0, 1 / 254],
            'categorical': True,
        }

    @property
    def main_count(self) -> int:
        """Bands of the main COG (the rest go to the probabilities COG)."""
        return 2 if self.kind == 'segmentation' else self.count

    def probability_options(self) -> dict[str, Any]:
        """:func:`~geosparse.io.cog.cog_writer` options of the probabilities COG.

        Class probabilities go to a COG of their own beside the class map, because
        GeoTIFF keeps a colour table only in files of one or two bands.
        """
        tags = {k: v for k, v in self.cog_options()['tags'].items() if k != 'kind'} | {
            'kind': 'probabilities'
        }
        return {
            'descriptions': [f'p_{n}' for n in self.names],
            'tags': tags,
            'band_tags': [
                {'definition': f'probability of {n}, 0..1'} for n in self.names
            ],
            'scales': [1 / 254] * len(self.names),
        }

    # ------------------------------------------------------------ model
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(
            self.task, LabelSuperResolutionTask | NPPTask | DensityTask | PointMapTask
        ):
            return self.task.normalize(x)
        c = x.shape[1]
        mean = torch.as_tensor(self.mean, dtype=x.dtype).reshape(-1)
        std = torch.as_tensor(self.std, dtype=x.dtype).reshape(-1)
        if mean.numel() not in (1, c) or std.numel() not in (1, c):
            raise ValueError(
                f'mean/std have {mean.numel()}/{std.numel()} values for {c} bands; '
                'give one value or one per band.'
            )
        return (x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = 'reflect' if ph < h and pw < w else 'replicate'
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        model: Any = self.task.model  # input already normalised
        out = model(x)
        if isinstance(self.task, NPPTask):
            out = out * self.task.hparams['target_scale']
        elif isinstance(self.task, DensityTask):
            out = F.softplus(out) / self.task.hparams['density_scale']
        elif isinstance(self.task, PointMapTask):
            out = self.task.maps_from_logits(out)
        return out[..., :h, :w]

    def probs(
        self, image: np.ndarray, coarse: np.ndarray | None = None
    ) -> torch.Tensor:
        """Class probabilities ``(L, h, w)`` of a raw window (segmentation)."""
        x = self._normalise(torch.from_numpy(image[None]).float())
        task = self.task
        with torch.no_grad():
            if isinstance(task, LabelSuperResolutionTask):
                p = self._forward(x).softmax(dim=1)
                if coarse is not None and task.hparams['prior_weight'] > 0:
                    idx = task.coarse_index(
                        torch.from_numpy(coarse[None].astype(np.int64))
                    )
                    p = task.combine(p, idx)
            elif self.binary:
                q = self._forward(x).sigmoid()
                p = torch.cat([1 - q, q], dim=1)
            else:
                p = self._forward(x).softmax(dim=1)
        return p[0]

    def __call__(
        self,
        image: np.ndarray,
        coarse: np.ndarray | None = None,
        transform: Affine | None = None,
    ) -> np.ndarray:
        """Output bands ``(count, h, w)`` of a raw window ``(C, h, w)``.

        ``transform`` (the window's affine transform) is needed with ``reveal``.

        Raises:
            ValueError: if the window's band count differs from the model's.
        """
        if self.in_channels is not None and image.shape[0] != self.in_channels:
            raise ValueError(
                f'the input has {image.shape[0]} bands, but the model was trained on '
                f'{self.in_channels}; pass imagery with the training bands.'
            )
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        if self.kind == 'regression':
            x = self._normalise(torch.from_numpy(image[None]).float())
            with torch.no_grad():
                y = self._forward(x)[0]
            if not self.has_std:
                mean = y.numpy().astype(np.float32)
                # an overflowing input (huge values) gives NaN, never inf: nodata
                return np.where(np.isfinite(mean), mean, np.float32(np.nan))
            return self._posterior(y[0], image, transform)
        p = self.probs(image, coarse if self.uses_coarse else None)
        classes = p.argmax(0).numpy().astype(np.uint8)
        unc = normalised_entropy(p[None])[0].numpy()
        bands = [classes, _to_uint8(unc)]
        if self.probabilities:
            bands.extend(_to_uint8(q) for q in p.numpy())
        out = np.stack(bands)
        # Non-finite probabilities (an input that overflows the network) would
        # otherwise come out as class 0 with uncertainty 0: they are nodata.
        bad = ~torch.isfinite(p).all(0).numpy()
        out[:, bad] = np.uint8(self.nodata)
        return out

    def _posterior(
        self, mean: torch.Tensor, image: np.ndarray, transform: Affine | None
    ) -> np.ndarray:
        """GP posterior mean and std of a window given the known points inside it.

        The kernel is the one given (``lengthscale`` in CRS units), else the NPP
        task's own (per window for a context-aware kernel).
        """
        h, w = mean.shape
        pts = torch.zeros(0, 2, dtype=torch.float64)
        vals = torch.zeros(0, dtype=torch.float64)
        if self.reveal is not None:
            if transform is None:
                raise ValueError('reveal needs the window transform.')
            xy, values = self.reveal
            cols, rows = (~transform) * (xy[:, 0], xy[:, 1])
            inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
            pts = torch.from_numpy(np.stack([rows[inside], cols[inside]], axis=1))
            vals = torch.from_numpy(values[inside])
        ell, var, noise = self._kernel_pixels(image, transform)
        c = self.variance_scale
        post, std = posterior_map(
            mean.double(), pts, vals, ell, var * c, noise * c, family=self.kernel_family
        )
        return np.stack([post.numpy(), std.numpy()]).astype(np.float32)

    def _kernel_pixels(
        self, image: np.ndarray, transform: Affine | None
    ) -> tuple[float, float, float]:
        r"""Kernel :math:`(\ell, s^2, \sigma_0^2)`, :math:`\ell` in pixels of ``transform``."""
        if 'lengthscale' in self.kernel:
            res = 1.0 if transform is None else abs(transform.a)
            return (
                self.kernel['lengthscale'] / res,
                self.kernel['variance'],
                self.kernel['noise'],
            )
        assert isinstance(self.task, NPPTask)
        with torch.no_grad():
            return self.task.kernel_params(torch.from_numpy(image[None]))

    def calibrated(
        self,
        source: ImageSource,
        block: int,
        halo: int,
        progress: bool = False,
        max_points: int = 4000,
    ) -> Predictor:
        r"""This predictor with its kernel's variance and noise recalibrated on ``source``.

        The network's mean at every revealed point inside ``source`` is computed on
        the same windows as the blocks of :func:`~geosparse.blocks.predict_blocks`
        (``block`` and ``halo``), so it is the value of the written map. The factor
        :math:`c` of :func:`~geosparse.posterior.loo_variance_scale` (leave-one-out
        residuals of the revealed points have unit variance) then multiplies
        :math:`s^2` and :math:`\sigma_0^2`; the posterior mean does not change and the
        std scales by :math:`\sqrt c`.

        Args:
            source: the imagery about to be predicted (revealed points already in
                its CRS, see :meth:`for_crs`).
            block: block size of the prediction.
            halo: halo of the prediction.
            progress: show a progress bar over the blocks that hold points.
            max_points: at most this many points (a random subset, seed 0) enter
                the leave-one-out, which inverts a points x points matrix.

        Returns:
            A copy with :attr:`variance_scale` set (self if not :attr:`calibrate`).

        Raises:
            ValueError: if fewer than two revealed points lie on valid pixels.
        """
        if not self.calibrate or self.reveal is None:
            return self
        grid = source.grid
        xy, values = self.reveal
        cols, rows = (~grid.transform) * (xy[:, 0], xy[:, 1])
        rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
        inside = (rows >= 0) & (rows < grid.height) & (cols >= 0) & (cols < grid.width)
        keys = (rows // block) * (grid.width // block + 1) + cols // block
        pts: list[np.ndarray] = []
        resid: list[float] = []
        kernel: tuple[float, float, float] | None = None
        groups = np.unique(keys[inside])
        for key in tqdm(groups, desc='calibrate', unit='block', disable=not progress):
            sel = np.flatnonzero(inside & (keys == key))
            r0 = int(rows[sel[0]] // block) * block
            c0 = int(cols[sel[0]] // block) * block
            rr = (max(r0 - halo, 0), min(r0 + block + halo, grid.height))
            cc = (max(c0 - halo, 0), min(c0 + block + halo, grid.width))
            window = Window.from_slices(rr, cc)
            image, invalid = source.read(window)
            image = image.astype(np.float32)
            x = self._normalise(torch.from_numpy(image[None]))
            with torch.no_grad():
                mean = self._forward(x)[0, 0].numpy()
            r, c = rows[sel] - rr[0], cols[sel] - cc[0]
            ok = np.ones(len(sel), bool) if invalid is None else ~invalid[r, c]
            pts.append(np.stack([rows[sel][ok] + 0.5, cols[sel][ok] + 0.5], 1))
            resid.extend((values[sel][ok] - mean[r[ok], c[ok]]).tolist())
            if kernel is None:
                kernel = self._kernel_pixels(image, grid.window_transform(window))
        if len(resid) < 2 or kernel is None:
            raise ValueError(
                f'{", ".join(source.paths)}: calibrate needs at least two revealed '
                f'points on valid pixels, found {len(resid)}; drop --calibrate.'
            )
        all_pts, all_resid = np.concatenate(pts), np.asarray(resid)
        if len(all_resid) > max_points:  # the LOO needs a P x P inverse
            keep = np.random.default_rng(0).choice(len(all_resid), max_points, False)
            all_pts, all_resid = all_pts[keep], all_resid[keep]
        other = copy.copy(self)
        other.variance_scale = loo_variance_scale(
            torch.from_numpy(all_pts),
            torch.from_numpy(all_resid),
            *kernel,
            family=self.kernel_family,
        )
        return other


def hp_kernel(task: LightningModule) -> str:
    """The kernel choice recorded in a task's hyperparameters."""
    return str(task.hparams.get('kernel', 'rbf'))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """0..1 values as uint8 0..254 (255 is nodata)."""
    return np.round(np.clip(x, 0, 1) * 254).astype(np.uint8)
