r"""A trained task turned into a block function: pad, call the head, condition, write.

A :class:`Predictor` wraps a trained task and applies it to one window of raw
imagery, returning the bands that :func:`~geosparse.inference.blocks.predict_blocks`
writes. It knows no task: the task's output head
(:class:`~geosparse.trainers.heads.OutputHead`; TorchGeo's tasks through
:func:`~geosparse.inference.head_for`) says what it writes
(:class:`~geosparse.io.spec.OutputSpec`, one per file: a class map and optionally
its probabilities, or a regression) and maps a raw window to those bands. With known
points (``reveal``) or an NPP task, the regression mean is conditioned on the points
by the GP (:mod:`~geosparse.inference.conditioning`), which adds a ``std`` band; by
default (``refit``) the kernel, the noise and a trend on the network mean are first
re-fitted on the points (:mod:`~geosparse.inference.refit`).

A predictor made from a checkpoint (:mod:`~geosparse.inference.checkpoints`) pickles
to its checkpoint path and options, not its weights, so dask workers load the model
once each.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from affine import Affine
from lightning.pytorch import LightningModule
from rasterio.crs import CRS

from ..datasets.radiometry import (
    DISPLACEMENT_THRESHOLD,
    RadiometricShift,
    sample_rasters,
)
from ..gp import FAMILIES, KernelParams
from ..io.raster import file_sha256, read_coarse_on_grid
from ..io.source import ImageSource
from ..io.spec import OutputSpec
from ..trainers.heads import OutputHead
from .checkpoints import load_task
from .conditioning import GPConditioning, RevealedPoints
from .heads import head_for
from .refit import Drift, check_drift

__all__ = ['Predictor']

#: Pixels of the decimated grid on which a raster's coarse labels and band
#: distributions are read before any block (the code check, the radiometry).
OVERVIEW_PIXELS = 1_000_000

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

    Call it as ``predictor(image, coarse, transform=...)`` with ``image``
    ``(C, h, w)`` float32 raw values and ``coarse`` ``(h, w)`` codes or None; it
    returns the bands of all of :attr:`specs`, one after the other, in their dtype.

    .. versionadded:: 0.1
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
        kernel: Mapping[str, float] | KernelParams | None = None,
        kernel_family: str | None = None,
        refit: bool = True,
        refit_on: tuple[np.ndarray, np.ndarray] | None = None,
        drift: Drift = 'auto',
        radiometry: Literal['auto', 'match', 'off'] | RadiometricShift = 'auto',
        radiometry_threshold: float = DISPLACEMENT_THRESHOLD,
        trust_checkpoint: bool = False,
    ) -> None:
        r"""Wrap a task (or a checkpoint, loaded now and again in each dask worker).

        Args:
            task: the trained task; if None, ``checkpoint`` is loaded.
            checkpoint: Lightning checkpoint of the task (recorded in the output
                tags with its SHA-256).
            task_class: dotted class of the task when the checkpoint does not tell
                (see :func:`~geosparse.inference.checkpoints.task_class_for`).
            probabilities: segmentation: also write one probability band per class
                (a second COG).
            mean: TorchGeo tasks: per-band (or one) mean subtracted from the raw
                imagery, as the training datamodule did (default 0).
            std: TorchGeo tasks: per-band (or one) divisor (default 255).
            class_names: names of the classes or outputs (default: the task's, or
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
                (:class:`~geosparse.inference.conditioning.GPConditioning`), with a
                ``std`` band.
            reveal_crs: CRS of the ``reveal`` coordinates (they are reprojected to
                each raster's CRS by :meth:`for_crs`); None: the rasters' CRS.
            kernel: with ``reveal``: ``lengthscale`` (CRS units, e.g. metres),
                ``variance`` and ``noise``, or :class:`~geosparse.gp.KernelParams`
                (units ``crs``).
            kernel_family: ``rbf`` or a Matérn (:func:`~geosparse.gp.stationary`);
                default: the NPP checkpoint's, else ``rbf``.
            refit: with ``reveal``: before predicting, re-fit the kernel, the
                noise and a trend :math:`\beta_0 + \beta_1 m` on the network mean by
                maximum likelihood on the revealed points (:meth:`refitted`, called
                by :func:`~geosparse.inference.predict.predict_raster`;
                :func:`~geosparse.gp.fit_revealed`); the kernel given or trained
                is the starting point, and is kept (with a warning) when the points
                are too few. The std then matches the errors at held-out points
                instead of the residuals the network saw in training, and where
                the imagery says little the map falls back to kriging of the points.
                Reveal points the network was not trained on, or give them as
                ``refit_on``: at training points the residuals are too small.
            refit_on: with ``refit``: fit the kernel on these points ``(xy, values)``
                (in ``reveal_crs``) instead of the revealed ones. Then reveal every
                known point, the training points too, and fit on those the network
                did not see, whose residuals are honest: the posterior uses all the
                labels, as kriging of all of them would.
            drift: with ``refit``: ``bands``: the trend is on the network mean
                and the raw image bands,
                :math:`\beta_0 + \beta_1 m + \sum_k \gamma_k z_k`, so that where
                the network is weak and the bands explain the labels the map
                becomes regression (universal) kriging on the bands; ``network``:
                on the network mean alone; ``kriging``: on the bands alone,
                :math:`\beta_0 + \sum_k \gamma_k z_k`, the network left out
                (universal kriging of the points, fitted on every revealed point,
                ``refit_on`` or not); ``auto`` (default): ``bands`` and
                ``network`` (and ``kriging``, with ``refit_on``) each fitted and
                the map their mixture with the kernel as trained (the network
                mean as the trend), with the stacking weights that maximise
                the leave-one-out likelihood of the ``refit_on`` (or revealed)
                points, each predicted from all the others, so that a network
                that predicts new points worse than the bands steps aside.
            radiometry: for tasks that remember the radiometry of their
                training imagery
                (:class:`~geosparse.trainers.radiometry.RadiometryReference`,
                label super-resolution),
                :func:`~geosparse.inference.predict.predict_raster` can map each
                raster's bands onto it before the network sees them (histogram
                matching, :meth:`matched`), so that a very different acquisition
                looks like the training one. ``auto`` (default): match only a
                raster whose bands lie far from the training imagery's (a
                :meth:`~geosparse.datasets.RadiometricShift.displacement` above
                ``radiometry_threshold`` in some band), keep the raw values
                otherwise; ``match``: always; ``off``: never. Matching also moves
                the values of a raster whose land cover differs in proportion
                from the training imagery, which cost up to 0.17 mIoU on held-out
                Chesapeake patches under a mild shift, while under a harsh one it
                took the model from 0.19 to 0.54 mIoU: hence ``auto``. Or a :class:`~geosparse.datasets.RadiometricShift`
                applied to every window. Tasks without a reference ignore
                ``auto``.
            radiometry_threshold: ``auto``: the largest per-band displacement
                still predicted on raw values (0.5: a band moved by half its
                training 5–95 % range on average; chosen on the Chesapeake tuning
                fold, where the tile's own patches reach 0.22, a mild simulated
                acquisition 0.31 and a harsh one 1.02).
            trust_checkpoint: unpickle whatever the checkpoint holds and import the
                task class it names. Off by default: a checkpoint is read as weights
                and plain data (:mod:`~geosparse.inference.checkpoints`), since its
                pickle can run code; only for files you trust.

        Raises:
            UntrustedCheckpointError: if the checkpoint needs more than weights and
                plain data, or names an unknown task class, and is not trusted.
            ValueError: without a task or a checkpoint, or for an unsupported task
                (multilabel segmentation) or option.
        """
        if task is None and checkpoint is None:
            raise ValueError('Predictor needs a task or a checkpoint.')
        if not isinstance(radiometry, RadiometricShift) and radiometry not in (
            'auto',
            'match',
            'off',
        ):
            raise ValueError(
                f'radiometry={radiometry!r}: choose auto, match, off or a '
                'RadiometricShift.'
            )
        if not radiometry_threshold >= 0:
            raise ValueError(
                f'radiometry_threshold={radiometry_threshold}: give a displacement '
                '>= 0 (0.5 by default).'
            )
        #: ``auto``, ``match``, ``off``, or the shift in use.
        self.radiometry = radiometry
        self.radiometry_threshold = float(radiometry_threshold)
        #: What :meth:`matched` decided for the last raster (for the output tags).
        self.radiometry_report: dict[str, Any] | None = None
        #: The map applied to every window's imagery, or None.
        self.shift = radiometry if isinstance(radiometry, RadiometricShift) else None
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.sha256 = None if checkpoint is None else file_sha256(checkpoint)
        self.task_class = task_class
        self.trust_checkpoint = trust_checkpoint
        if task is None:
            assert self.checkpoint is not None and self.sha256 is not None
            task = _load(self.checkpoint, self.sha256, task_class, trust_checkpoint)
        self._task: LightningModule | None = task.eval()
        self.mean, self.std = mean, std
        self._head: OutputHead | None = None
        self.probabilities = probabilities
        self.torch_threads = torch_threads
        self.task_name = type(task).__name__
        hp = task.hparams
        self.in_channels = int(hp.get('in_channels', 0)) or None
        specs = self.head.output_specs(class_names, probabilities)
        #: A land-cover task (label super-resolution): its outputs are named so.
        self.landcover = bool(getattr(task, 'uses_coarse', False))
        #: Whether coarse labels change the map (``prior_weight > 0``).
        self.uses_coarse = self.landcover and float(hp.get('prior_weight', 1.0)) > 0
        self.names = list(specs[0].names)
        # The task's GP: an NPP task carries one (its kernel_params).
        task_gp = hasattr(task, 'kernel_params')
        family = kernel_family or str(getattr(task, 'kernel_family', 'rbf'))
        if family not in FAMILIES:
            raise ValueError(
                f'kernel_family={family!r}: choose one of {", ".join(FAMILIES)}.'
            )
        points = None
        if reveal is not None:
            points = RevealedPoints(
                np.asarray(reveal[0]),
                np.asarray(reveal[1]),
                None if reveal_crs is None else CRS.from_user_input(reveal_crs),
            )
            if specs[0].kind != 'regression' or specs[0].count != 1:
                raise ValueError(
                    'reveal (known points) needs a regression model with one output.'
                )
        given: KernelParams | None = None
        options = kernel or {}
        if isinstance(options, KernelParams):
            given = options
        elif {'lengthscale', 'variance'} <= set(options):
            given = KernelParams.from_options(options, family, units='crs')
        elif reveal is not None and not task_gp:
            missing = sorted({'lengthscale', 'variance'} - set(options))
            raise ValueError(
                f'reveal needs the kernel parameters {missing}: give '
                '--lengthscale (CRS units of the imagery, e.g. metres) and '
                '--kernel-variance (label units squared), or use an NPPTask '
                'checkpoint, which has its own kernel.'
            )
        source = str(hp.get('kernel', 'rbf'))
        #: Re-fit the kernel on the revealed points before predicting.
        self.refit = refit
        check_drift(drift)
        #: What the re-fit's trend is on (``auto``, ``bands``, ``network``, ``kriging``).
        self.drift = drift
        #: The points the kernel is fitted on, if not the revealed ones.
        self.refit_points: RevealedPoints | None = None
        if refit_on is not None:
            if reveal is None or not refit:
                raise ValueError(
                    'refit_on (--refit-on) names the points to fit the kernel on: it '
                    'needs revealed points (reveal, --reveal) and the re-fit.'
                )
            self.refit_points = RevealedPoints(
                np.asarray(refit_on[0]),
                np.asarray(refit_on[1]),
                None if reveal_crs is None else CRS.from_user_input(reveal_crs),
            )
        #: GP conditioning of the mean (NPP tasks, or known points), else None.
        self.conditioning: GPConditioning | None = None
        if task_gp or points is not None:
            self.conditioning = GPConditioning(points, given, source, family)
        props: dict[str, Any] = {}
        if self.checkpoint is not None:
            props = {
                'checkpoint': Path(self.checkpoint).name,
                'checkpoint_sha256': str(self.sha256),
            }
        self._head_specs = tuple(s.with_properties(**props) for s in specs)

    @property
    def specs(self) -> tuple[OutputSpec, ...]:
        """What is written, one spec per file (the head's, after GP conditioning)."""
        if self.conditioning is None:
            return self._head_specs
        return (self.conditioning.spec(self._head_specs[0]), *self._head_specs[1:])

    # ------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """State without the model when a checkpoint can restore it."""
        state = self.__dict__.copy()
        if self.checkpoint is not None:
            state['_task'] = None
            state['_head'] = None
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

    @property
    def head(self) -> OutputHead:
        """The task's output head (:func:`~geosparse.inference.head_for`)."""
        if self._head is None:
            self._head = head_for(self.task, self.mean, self.std)
        return self._head

    # ------------------------------------------------------------ layout
    @property
    def reveal(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The revealed points ``(xy, values)``, or None."""
        c = self.conditioning
        if c is None or c.points is None:
            return None
        return c.points.xy, c.points.values

    @property
    def kind(self) -> str:
        """``segmentation`` or ``regression``."""
        return self.specs[0].kind

    @property
    def needs_transform(self) -> bool:
        """Whether the block function needs each window's affine transform."""
        return self.conditioning is not None

    def with_points(self, points: RevealedPoints | None) -> Predictor:
        """This predictor with other revealed points (the specs follow)."""
        assert self.conditioning is not None
        return self._with_conditioning(self.conditioning.replace(points=points))

    def _with_conditioning(self, conditioning: GPConditioning) -> Predictor:
        other = copy.copy(self)
        other.conditioning = conditioning
        return other

    def check_coarse(
        self,
        coarse: str | os.PathLike[str],
        grid: Any,
        max_pixels: int = OVERVIEW_PIXELS,
        values: np.ndarray | None = None,
    ) -> None:
        """Refuse coarse labels whose codes the task's joint distribution lacks.

        Read on ``grid`` (the imagery's, decimated to at most ``max_pixels``), so
        that a bad code is named with its file before any block is predicted; the
        task's ``coarse_nodata`` (and NaN) are nodata. Does nothing for a task
        without a joint distribution.

        Args:
            coarse: the coarse raster, named in the error.
            grid: the imagery's grid.
            max_pixels: pixels of the decimated grid.
            values: the codes already read on that grid (then nothing is read).

        Raises:
            PriorError: naming ``coarse`` and the missing codes.

        .. versionadded:: 0.7
        """
        table = getattr(self.task, 'table', None)
        if table is None:
            return
        if values is None:
            values = read_coarse_on_grid(coarse, grid.decimated(max_pixels))
        codes = np.unique(values)
        nodata = self.task.hparams.get('coarse_nodata')
        if nodata is not None:
            codes = codes[codes != nodata]
        table.check_codes(codes, f'--coarse {coarse}')

    @property
    def coarse_radiometry(self) -> bool:
        """Whether coarse labels given to :meth:`matched` shape the reference.

        True with ``radiometry`` ``match`` or ``auto`` and a task that counted its
        training histograms per coarse class (label super-resolution since 0.4).
        """
        per = getattr(self.task, 'radiometry_strata_counts', None)
        return (
            self.radiometry in ('match', 'auto')
            and per is not None
            and float(per.sum()) > 0
        )

    def reference_quantiles(
        self, composition: np.ndarray | None = None
    ) -> np.ndarray | None:
        """The training imagery's band quantiles that the task keeps, or None.

        With ``composition`` (shares of the task's strata, e.g. coarse classes),
        those of its per-stratum histograms mixed in these shares
        (:class:`~geosparse.trainers.radiometry.RadiometryReference`).
        """
        get = getattr(self.task, 'reference_quantiles', None)
        if get is None:
            return None
        return get() if composition is None else get(composition=composition)

    def matched(
        self,
        source: ImageSource | Sequence[np.ndarray],
        max_pixels: int = OVERVIEW_PIXELS,
        coarse: str | os.PathLike[str] | Sequence[np.ndarray] | None = None,
    ) -> Predictor:
        """This predictor with ``source`` mapped onto the training radiometry.

        With ``radiometry`` ``match`` or ``auto`` and a task that keeps its
        training imagery's band distributions, fits the per-band quantile map from
        ``source`` (a raster or mosaic, read at reduced resolution, or
        ``(C, H, W)`` images pooled) onto them
        (:meth:`~geosparse.datasets.RadiometricShift.to_reference`). ``auto`` keeps
        it only if some band's displacement exceeds ``radiometry_threshold``.
        Otherwise returns this predictor. :attr:`radiometry_report` of the result
        says what was decided and why.

        With ``coarse`` (the source's coarse labels: a raster, read on the
        source's grid at reduced resolution, or arrays of codes) and a task that
        counted its histograms per coarse class, the reference is the training
        radiometry mixed in the source's own land-cover composition, so that the
        map corrects the acquisition and not the land cover
        (:class:`~geosparse.trainers.radiometry.RadiometryReference`; the report's
        ``reference`` says which was used).
        """
        mode = self.radiometry
        if mode not in ('match', 'auto'):
            return self
        composition = None
        compose = getattr(self.task, 'radiometry_composition', None)
        if coarse is not None and compose is not None:
            if isinstance(coarse, str | os.PathLike):
                if not isinstance(source, ImageSource):
                    raise ValueError(
                        f'coarse={coarse}: a raster path needs the source as an '
                        'ImageSource (its grid); give arrays of codes instead.'
                    )
                coarse = [
                    read_coarse_on_grid(coarse, source.grid.decimated(max_pixels))
                ]
            composition = compose(coarse)
        mixture = getattr(self.task, 'radiometry_mixture', None)
        if composition is not None and (
            mixture is None or mixture(composition) is None
        ):
            composition = None  # no class of the source was seen in training
        reference = self.reference_quantiles(composition)
        if reference is None:
            return self
        if isinstance(source, ImageSource):  # each raster's nodata read as NaN
            images = sample_rasters(source.paths, max_pixels)
        else:
            images = [np.asarray(a, dtype=np.float64) for a in source]
        shift = RadiometricShift.to_reference(images, reference)
        resolution = getattr(self.task, 'reference_resolution', None)
        moved = shift.displacement(0.0 if resolution is None else resolution())
        use = mode == 'match' or float(moved.max()) > self.radiometry_threshold
        other = copy.copy(self)
        other.shift = shift if use else None
        other.radiometry_report = {
            'mode': str(mode),
            'matched': bool(use),
            # JSON has no infinity: null for a band constant in training that moved
            'displacement': [
                round(float(d), 3) if np.isfinite(d) else None for d in moved
            ],
            **({'threshold': self.radiometry_threshold} if mode == 'auto' else {}),
            'reference': 'pooled' if composition is None else 'land-cover composition',
        }
        return other

    def for_crs(self, crs: CRS) -> Predictor:
        """This predictor with its revealed points reprojected to ``crs``."""
        c = self.conditioning
        if c is None or c.points is None:
            return self
        moved = c.points.to_crs(crs)
        other = self if moved is c.points else self.with_points(moved)
        if self.refit_points is not None:
            other = copy.copy(other)
            other.refit_points = self.refit_points.to_crs(crs)
        return other

    # ------------------------------------------------------------ model
    def __call__(
        self,
        image: np.ndarray,
        coarse: np.ndarray | None = None,
        transform: Affine | None = None,
    ) -> np.ndarray:
        """Output bands of all :attr:`specs` ``(K, h, w)`` of a raw window ``(C, h, w)``.

        ``transform`` (the window's affine transform) is needed with ``reveal``.
        Non-finite values of floating-point outputs (an input that overflows the
        network) are nodata (NaN).

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
        image = self.prepared(image)
        x = torch.from_numpy(image[None])
        c = None
        if coarse is not None and self.uses_coarse:
            c = torch.from_numpy(coarse[None].astype(np.int64))
        with torch.no_grad():
            bands = self.head.predict_window(x, c, self.probabilities)
        if self.conditioning is not None:
            task_kernel = getattr(self.head, 'kernel_params', None)
            return self.conditioning(bands[0], image, transform, task_kernel)
        out = bands.numpy()
        if out.dtype.kind == 'f':
            out = out.astype(np.float32)
            # an overflowing input (huge values) gives NaN, never inf: nodata
            return np.where(np.isfinite(out), out, np.float32(np.nan))
        return out

    def prepared(self, image: np.ndarray) -> np.ndarray:
        """A raw window ``(C, h, w)`` as the model sees it: float32, radiometry matched.

        .. versionadded:: 0.6
        """
        image = image.astype(np.float32)
        return image if self.shift is None else self.shift(image)

    def window_mean(self, image: np.ndarray, prepared: bool = False) -> np.ndarray:
        """The head's first band ``(h, w)`` of a window (the GP's mean).

        Args:
            image: ``(C, h, w)``, raw, or already :meth:`prepared`.
            prepared: whether it is.
        """
        if not prepared:
            image = self.prepared(image)
        x = torch.from_numpy(image[None]).float()
        with torch.no_grad():
            return self.head.predict_window(x)[0].numpy()

    def refitted(
        self,
        source: ImageSource,
        block: int,
        halo: int,
        progress: bool = False,
        max_points: int = 1000,
    ) -> Predictor:
        """This predictor with its kernel and trend re-fitted on ``source``'s points.

        See :func:`~geosparse.inference.refit.refit`. The network mean and bands at
        the revealed points, computed on the blocks that hold them, are kept too
        (with or without :attr:`refit`), so each block is conditioned on every
        point within the kernel's reach
        (:attr:`~geosparse.inference.conditioning.GPConditioning.at_points`).

        .. versionchanged:: 0.6
           The points' mean and bands are kept, also without :attr:`refit`.

        Returns:
            A copy whose conditioning holds the fit and the points' mean and bands
            (self without revealed points).
        """
        from .refit import network_at_points, refit_with_points

        if self.reveal is None or self.conditioning is None:
            return self
        if not self.refit:
            table = network_at_points(self, source, block, halo, progress)
            return self._with_conditioning(self.conditioning.replace(at_points=table))
        fit, at_points = refit_with_points(
            self,
            source,
            block,
            halo,
            progress,
            max_points,
            points=self.refit_points,
            drift=self.drift,
        )
        return self._with_conditioning(
            self.conditioning.replace(fit=fit, at_points=at_points)
        )
