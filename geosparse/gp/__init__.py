"""Gaussian processes of Neural Point Processes, in objects (as gpytorch keeps them).

- :mod:`~geosparse.gp.kernels`: kernel families and kernel objects (stationary and
  context-aware);
- :mod:`~geosparse.gp.noise`: the observation noise;
- :mod:`~geosparse.gp.likelihood`: the NPP loss, the marginal likelihood over both;
- :mod:`~geosparse.gp.params`: :class:`KernelParams`, the fitted values that the
  posterior, the calibration, the task, the CLI and the COG tags share;
- :mod:`~geosparse.gp.posterior`: posterior maps and leave-one-out calibration;
- :mod:`~geosparse.gp.fit`: kernel parameters by grid search on the likelihood;
- :mod:`~geosparse.gp.empirical`: empirical Bayes at prediction, the kernel, noise and
  a trend on the network mean re-fitted on the revealed points;
- :mod:`~geosparse.gp.kriging`: ordinary and regression kriging by PyKrige, the
  baselines to compare with.
"""

from .empirical import RevealedFit, Trend, fit_revealed
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
from .kriging import KrigingResult, ordinary_kriging, regression_kriging
from .likelihood import MarginalLikelihood, NPPLoss
from .noise import GaussianNoise
from .params import KernelParams
from .posterior import (
    loo_variance_scale,
    mixture_moments,
    posterior_map,
    predictive_map,
    predictive_parts,
)

__all__ = [
    'FAMILIES',
    'ContextKernel',
    'GaussianNoise',
    'KernelFamily',
    'KernelParams',
    'KrigingResult',
    'MarginalLikelihood',
    'NPPLoss',
    'RevealedFit',
    'StationaryKernel',
    'Trend',
    'fit_kernel',
    'fit_revealed',
    'kernel_reach',
    'loo_variance_scale',
    'mixture_moments',
    'ordinary_kriging',
    'posterior_map',
    'predictive_map',
    'predictive_parts',
    'rbf',
    'regression_kriging',
    'stable_cholesky',
    'stationary',
]
