import pytest
import torch

from geosparse.gp import KernelParams, fit_kernel
from geosparse.gp.kernels import rbf


def test_kernel_fit_recovers_the_generating_kernel():
    torch.manual_seed(0)
    resid = []
    for _ in range(20):
        pts = torch.rand(30, 2, dtype=torch.float64) * 40
        k = rbf(pts, pts, 4.0, 2.0) + 0.2 * torch.eye(30, dtype=torch.float64)
        resid.append(
            (pts, torch.linalg.cholesky(k) @ torch.randn(30, dtype=torch.float64))
        )
    fitted = fit_kernel(resid, lengthscales=(1, 2, 4, 8))
    assert isinstance(fitted, KernelParams) and fitted.units == 'pixels'
    assert fitted.lengthscale == 4.0 and fitted.family == 'rbf'
    assert fitted.variance == pytest.approx(2.0, rel=0.3)
    assert fitted.noise == pytest.approx(0.2, rel=0.5)


def test_kernel_fit_refuses_nothing_to_fit():
    with pytest.raises(ValueError, match='one point at least'):
        fit_kernel([], lengthscales=(1,))
    with pytest.raises(ValueError, match='all zero'):
        fit_kernel([(torch.zeros(3, 2), torch.zeros(3))], lengthscales=(1,))
