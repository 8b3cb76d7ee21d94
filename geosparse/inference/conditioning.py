r"""GP conditioning of a regression head's mean on revealed points (NPP-GP).

Neural Point Processes (Shi et al.) treat the labels as a Gaussian process around
the network's mean :math:`m = f(x)`. Given labels :math:`y_+` revealed at points
:math:`P_+` inside a window, every pixel gets the posterior mean and standard
deviation of :func:`~geosparse.gp.posterior_map`:

.. math::
    \mu_* = m_* + k_{*+} K_{++}^{-1} (y_+ - m_+), \qquad
    \sigma_*^2 = k_{**} - k_{*+} K_{++}^{-1} k_{+*}.

The kernel is given (:class:`~geosparse.gp.params.KernelParams` with :math:`\ell`
in CRS units, converted to the window's pixels) or is the NPP task's own
(:meth:`~geosparse.trainers.NPPTask.kernel_params`, per window for a context-aware
kernel). By default the kernel, the noise and a trend
:math:`\beta_0 + \beta_1 m` are first re-fitted on the revealed points of the raster
(:func:`~geosparse.inference.refit.refit`, empirical Bayes); the fit replaces the
trained kernel for every window. The written ``std`` is that of a new measurement at
the pixel, :math:`\sqrt{\sigma_*^2 + \sigma_0^2}`, as a kriging variance with a
nugget is: held-out labels are measured with the noise. When the re-fit stacks
several trends (:attr:`~geosparse.gp.RevealedFit.members`, weights :math:`w_k`),
each gives its posterior :math:`(\mu_k, \sigma_k^2)` and the map is their mixture's
mean and standard deviation, :math:`\mu = \sum_k w_k \mu_k` and
:math:`\sigma^2 = \sum_k w_k (\sigma_k^2 + \mu_k^2) - \mu^2`. :class:`GPConditioning`
also turns the head's one-band spec into the written ``mean`` and ``std`` bands
with the kernel and the fit in the tags.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from torch import Tensor

from ..gp import KernelParams, RevealedFit, Trend, kernel_reach, predictive_map
from ..io.grid import RasterGrid
from ..io.spec import BandSpec, OutputSpec

__all__ = ['MAX_POINTS_PER_WINDOW', 'GPConditioning', 'RevealedPoints', 'TaskKernel']

#: At most this many revealed points condition one window (the nearest); a window
#: factorises a matrix of their number squared (4000: 128 MB in float64).
MAX_POINTS_PER_WINDOW = 4000

#: Correlation below which a point is left out of a pixel's variance (not of its
#: mean) when every point within reach conditions a window
#: (:attr:`GPConditioning.at_points`): with a long length-scale and many points, the
#: exact reach (:math:`10^{-12}`) holds most points for every pixel, and the
#: variance costs their number squared per pixel. Measured on a 576 px window with
#: 1000 points and a length-scale of 103 px: the std moved by at most
#: :math:`5 \cdot 10^{-6} s`, in 0.63 of the time. (A cutoff of :math:`10^{-6}` on the
#: mean too, tried, moved the mean by up to 0.3 % of :math:`s` between blocks where
#: the noise is small.)
_VARIANCE_CUTOFF = 1e-4

#: A task's kernel of one raw window ``(1, C, h, w)`` (:math:`\ell` in pixels).
TaskKernel = Callable[[Tensor], KernelParams]


@dataclass(frozen=True)
class RevealedPoints:
    """Known labels at points.

    .. versionadded:: 0.1

    Attributes:
        xy: ``(P, 2)`` coordinates in :attr:`crs`.
        values: ``(P,)`` labels.
        crs: their CRS (None: the rasters').
    """

    xy: np.ndarray
    values: np.ndarray
    crs: CRS | None = None

    def to_crs(self, crs: CRS) -> RevealedPoints:
        """The points reprojected to ``crs`` (self if already there or unknown)."""
        if self.crs is None or self.crs == crs:
            return self
        xs, ys = Transformer.from_crs(self.crs, crs, always_xy=True).transform(
            self.xy[:, 0], self.xy[:, 1]
        )
        return RevealedPoints(np.stack([xs, ys], axis=1), self.values, crs)

    def subset(self, keep: np.ndarray) -> RevealedPoints:
        """The points where ``keep`` is true."""
        return RevealedPoints(self.xy[keep], self.values[keep], self.crs)

    def in_window(
        self, transform: Affine, height: int, width: int
    ) -> tuple[Tensor, Tensor]:
        """``(row, col)`` pixel positions (exact, not snapped) and values inside a window."""
        # The window's grid; the CRS plays no part in the pixel arithmetic.
        grid = RasterGrid(self.crs or CRS(), transform, height, width)
        rows, cols = grid.to_pixels(self.xy)
        inside = grid.contains(self.xy)
        pts = torch.from_numpy(np.stack([rows[inside], cols[inside]], axis=1))
        return pts, torch.from_numpy(self.values[inside])


@dataclass(frozen=True)
class GPConditioning:
    r"""Posterior mean and std of a window's mean band given revealed points.

    .. versionadded:: 0.1

    Attributes:
        points: the revealed points (None: none; the std is the prior's).
        kernel: the kernel given (:math:`\ell` in CRS units), or None to use the
            task's (passed to :meth:`__call__`; the conditioning holds no model, so
            it pickles small for dask workers).
        kernel_source: how the task's kernel is set (for the tags), e.g.
            ``learnable``.
        family: kernel family used with the task's kernel.
        fit: the kernel and trend re-fitted on the revealed points
            (:func:`~geosparse.inference.refit.refit`); when it re-fitted, it
            replaces :attr:`kernel` and the task's kernel.
        at_points: ``(P, 1 + K)`` the network mean and the ``K`` image bands at
            each of :attr:`points`, computed on the blocks that hold them (NaN off
            the raster or on nodata; :func:`~geosparse.inference.refit.refit_with_points`).
            With it, a window is conditioned on every point within the kernel's
            reach of it, inside the window or not, so the blocks of a map agree;
            without, on the points inside the window alone.

    .. versionchanged:: 0.6
       :attr:`at_points`.
    """

    points: RevealedPoints | None = None
    kernel: KernelParams | None = None
    kernel_source: str = 'rbf'
    family: str = 'rbf'
    fit: RevealedFit | None = None
    # An array: left out of == and hash (an array has no truth value).
    at_points: np.ndarray | None = dataclasses.field(default=None, compare=False)

    def replace(self, **changes: object) -> GPConditioning:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def params(
        self,
        image: np.ndarray,
        transform: Affine | None,
        task_kernel: TaskKernel | None = None,
    ) -> KernelParams:
        r"""The kernel of a window, :math:`\ell` in its pixels.

        The re-fitted kernel if there is one, else the one given, else the task's.

        Raises:
            ValueError: without a kernel given or a ``task_kernel``.
        """
        res = 1.0 if transform is None else abs(transform.a)
        if self.fit is not None and self.fit.refitted:
            return self.fit.params.in_pixels(res)
        if self.kernel is not None:
            return self.kernel.in_pixels(res)
        if task_kernel is None:
            raise ValueError("GPConditioning needs a kernel or the task's kernel.")
        params = task_kernel(torch.from_numpy(image[None]))
        return dataclasses.replace(params, family=self.family)

    def spec(self, spec: OutputSpec) -> OutputSpec:
        """The written spec: ``mean`` and ``std`` bands, the kernel in the tags."""
        if self.fit is not None and self.fit.refitted:
            kernel: dict[str, object] = self.fit.as_dict()
        elif self.kernel is not None:
            kernel = self.kernel.as_dict()
        else:
            kernel = {'type': self.family, 'from': f'checkpoint ({self.kernel_source})'}
        if self.fit is not None and not self.fit.refitted:
            kernel['refit'] = f'not done: {self.fit.reason}'
        n = 0 if self.points is None else len(self.points.values)
        return spec.replace(
            bands=(
                BandSpec('mean', 'GP posterior mean given the revealed points'),
                BandSpec(
                    'std',
                    'predictive standard deviation of a measurement at the pixel '
                    '(GP posterior and noise)',
                ),
            )
        ).with_properties(kernel=kernel, revealed_points=n)

    def __call__(
        self,
        mean: Tensor,
        image: np.ndarray,
        transform: Affine | None,
        task_kernel: TaskKernel | None = None,
    ) -> np.ndarray:
        """``(2, h, w)`` float32: posterior mean and std of the window.

        Args:
            mean: ``(h, w)`` the head's mean band.
            image: ``(C, h, w)`` the raw window (context-aware kernels read it).
            transform: the window's affine transform (needed with points).
            task_kernel: the task's kernel of a raw window, when none is given.

        Raises:
            ValueError: with points but no transform.
        """
        h, w = mean.shape
        if self.points is not None and transform is None:
            raise ValueError('reveal needs the window transform.')
        if self.fit is not None and self.fit.refitted:
            res = 1.0 if transform is None else abs(transform.a)
            fit = self.fit.map_params(lambda p: p.in_pixels(res))
        else:  # the kernel given or trained, the trend as known
            params = self.params(image, transform, task_kernel)
            trend = self.fit.trend if self.fit is not None else Trend()
            fit = RevealedFit(params, trend, False, 0)
        on_bands = any(part.trend.bands for _, part in fit.parts)
        pts = torch.zeros(0, 2, dtype=torch.float64)
        vals = torch.zeros(0, dtype=torch.float64)
        at = None
        if self.points is not None and self.at_points is not None:
            assert transform is not None
            reach = max(
                kernel_reach(part.params.lengthscale, part.params.family)
                for _, part in fit.parts
            )
            pts, vals, at = self._near(transform, h, w, reach)
        elif self.points is not None:
            assert transform is not None
            pts, vals = self.points.in_window(transform, h, w)
        # The image bands, only for a trend on them (a float64 copy of the window).
        bands = torch.from_numpy(np.asarray(image, np.float64)) if on_bands else None
        post, std = predictive_map(
            mean,
            pts,
            vals,
            fit,
            covariates=bands,
            point_mean=None if at is None else at[:, 0],
            point_covariates=None if at is None or not on_bands else at[:, 1:].T,
            variance_cutoff=None if at is None else _VARIANCE_CUTOFF,
        )
        return np.stack([post.numpy(), std.numpy()]).astype(np.float32)

    def _near(
        self, transform: Affine, h: int, w: int, reach: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Points within ``reach`` pixels of the window, with :attr:`at_points`."""
        assert self.points is not None and self.at_points is not None
        grid = RasterGrid(self.points.crs or CRS(), transform, h, w)
        rows, cols = grid.to_pixels(self.points.xy)
        # Distance from each point to the window's rectangle, in pixels.
        dr = np.maximum(0.0, np.maximum(-rows, rows - h))
        dc = np.maximum(0.0, np.maximum(-cols, cols - w))
        dist = np.hypot(dr, dc)
        keep = (
            (dist < reach)
            & np.isfinite(self.at_points).all(1)
            & np.isfinite(self.points.values)
        )
        if keep.sum() > MAX_POINTS_PER_WINDOW:
            # A moving neighbourhood, as kriging software has: the nearest ones.
            order = np.flatnonzero(keep)[np.argsort(dist[keep], kind='stable')]
            keep = np.zeros_like(keep)
            keep[order[:MAX_POINTS_PER_WINDOW]] = True
            warnings.warn(
                f"{len(order)} revealed points lie within the kernel's reach of a "
                f'window; it is conditioned on the nearest {MAX_POINTS_PER_WINDOW} '
                '(memory grows as their number squared), so neighbouring blocks can '
                'differ slightly: thin the points or predict smaller blocks.',
                stacklevel=3,
            )
        pts = torch.from_numpy(np.stack([rows[keep], cols[keep]], axis=1))
        return (
            pts.to(torch.float64),
            torch.from_numpy(self.points.values[keep].astype(np.float64)),
            torch.from_numpy(self.at_points[keep]),
        )
