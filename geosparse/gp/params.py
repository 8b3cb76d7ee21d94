r"""Fitted kernel parameters: one small value type for every user of the GP.

A Gaussian process over the labels, as Neural Point Processes (Shi et al.) use it,
has a kernel :math:`k(a, b) = s^2 \rho(\lVert a - b \rVert / \ell)` of one family
(:func:`~geosparse.gp.stationary`) and i.i.d. observation noise
:math:`\sigma_0^2`. :class:`KernelParams` holds the four numbers
:math:`(\rho, \ell, s^2, \sigma_0^2)` with the unit of :math:`\ell` (pixels, or the
CRS units of a raster, e.g. metres). The posterior
(:func:`~geosparse.gp.posterior_map`), the leave-one-out calibration
(:func:`~geosparse.gp.loo_variance_scale`), the NPP task
(:meth:`~geosparse.trainers.NPPTask.kernel_params`), the command line and the COG
tags all pass this one object.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .kernels import FAMILIES

__all__ = ['KernelParams', 'LengthUnit']

#: Units of a length-scale, pixels of the map or the raster's CRS units.
LengthUnit = Literal['pixels', 'crs']


@dataclass(frozen=True)
class KernelParams:
    r"""Kernel family, :math:`\ell`, :math:`s^2` and :math:`\sigma_0^2` (frozen).

    .. versionadded:: 0.1

    Attributes:
        family: ``rbf``, ``matern12``, ``matern32`` or ``matern52``.
        lengthscale: :math:`\ell` in :attr:`units`.
        variance: :math:`s^2` (label units squared).
        noise: :math:`\sigma_0^2` (label units squared).
        units: ``pixels`` or ``crs`` (the raster's CRS units).
    """

    family: str = 'rbf'
    lengthscale: float = 1.0
    variance: float = 1.0
    noise: float = 0.0
    units: LengthUnit = 'pixels'

    def __post_init__(self) -> None:
        r"""Check the values.

        Raises:
            ValueError: for an unknown family or unit, or non-positive
                :math:`\ell, s^2` or negative :math:`\sigma_0^2`.
        """
        if self.family not in FAMILIES:
            raise ValueError(
                f'kernel family {self.family!r}: choose one of {", ".join(FAMILIES)}.'
            )
        if self.units not in ('pixels', 'crs'):
            raise ValueError(f"units={self.units!r}: choose 'pixels' or 'crs'.")
        ok = (
            math.isfinite(self.lengthscale)
            and math.isfinite(self.variance)
            and math.isfinite(self.noise)
        )
        if not ok or self.lengthscale <= 0 or self.variance <= 0 or self.noise < 0:
            raise ValueError(
                f'lengthscale={self.lengthscale} and variance={self.variance} must be '
                f'> 0 and noise={self.noise} >= 0.'
            )

    def in_pixels(self, resolution: float) -> KernelParams:
        r"""These parameters with :math:`\ell` in pixels of ``resolution`` CRS units.

        Parameters already in pixels are returned as they are.
        """
        if self.units == 'pixels':
            return self
        return dataclasses.replace(
            self, lengthscale=self.lengthscale / resolution, units='pixels'
        )

    def scaled(self, factor: float) -> KernelParams:
        r""":math:`s^2` and :math:`\sigma_0^2` times ``factor`` (the calibration's :math:`c`)."""
        if factor == 1:
            return self
        return dataclasses.replace(
            self, variance=self.variance * factor, noise=self.noise * factor
        )

    def as_dict(self) -> dict[str, Any]:
        """``{type, lengthscale, variance, noise}`` as written in the COG tags."""
        return {
            'type': self.family,
            'lengthscale': self.lengthscale,
            'variance': self.variance,
            'noise': self.noise,
        }

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, float],
        family: str = 'rbf',
        units: LengthUnit = 'crs',
    ) -> KernelParams:
        """Parameters from ``lengthscale``, ``variance`` and (optional) ``noise``.

        Raises:
            ValueError: if ``lengthscale`` or ``variance`` is missing.
        """
        missing = {'lengthscale', 'variance'} - set(options)
        if missing:
            raise ValueError(f'kernel parameters {sorted(missing)} are missing.')
        return cls(
            family=family,
            lengthscale=float(options['lengthscale']),
            variance=float(options['variance']),
            noise=float(options.get('noise', 0.0)),
            units=units,
        )
