"""Gaussian processes of Neural Point Processes, in objects (as gpytorch keeps them).

- :mod:`~geosparse.gp.kernels`: kernel families and kernel objects (stationary and
  context-aware);
- :mod:`~geosparse.gp.noise`: the observation noise;
- :mod:`~geosparse.gp.likelihood`: the NPP loss, the marginal likelihood over both;
- :mod:`~geosparse.gp.params`: :class:`KernelParams`, the fitted values that the
  posterior, the calibration, the task, the CLI and the COG tags share;
- :mod:`~geosparse.gp.posterior`: posterior maps and leave-one-out calibration;
- :mod:`~geosparse.gp.fit`: kernel parameters by grid search on the likelihood.
"""

from .fit import fit_kernel
from .kernels import (
    FAMILIES,
    ContextKernel,
    KernelFamily,
    StationaryKernel,
    kernel_reach,
    rbf,
    stable_cholesky,
    stationary,
)
from .likelihood import MarginalLikelihood, NPPLoss
from .noise import GaussianNoise
from .params import KernelParams
from .posterior import loo_variance_scale, posterior_map

__all__ = [
    'FAMILIES',
    'ContextKernel',
    'GaussianNoise',
    'KernelFamily',
    'KernelParams',
    'MarginalLikelihood',
    'NPPLoss',
    'StationaryKernel',
    'fit_kernel',
    'kernel_reach',
    'loo_variance_scale',
    'posterior_map',
    'rbf',
    'stable_cholesky',
    'stationary',
]
