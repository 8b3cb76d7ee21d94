import math

import pytest
import torch

from geosparse.gp import GaussianNoise, KernelParams
from geosparse.gp.kernels import (
    FAMILIES,
    StationaryKernel,
    kernel_reach,
    rbf,
    stable_cholesky,
    stationary,
)
from geosparse.gp.posterior import posterior_map
from geosparse.losses import NPPLoss


def test_matern_kernels_have_their_closed_forms():
    a = torch.zeros(1, 2, dtype=torch.float64)
    r = torch.tensor([0.0, 0.5, 2.0, 7.0], dtype=torch.float64)
    b = torch.stack([r, torch.zeros_like(r)], 1)
    ell, var = 2.0, 3.0
    x = r / ell
    expected = {
        'rbf': var * torch.exp(-0.5 * x**2),
        'matern12': var * torch.exp(-x),
        'matern32': var * (1 + math.sqrt(3) * x) * torch.exp(-math.sqrt(3) * x),
        'matern52': var
        * (1 + math.sqrt(5) * x + 5 * x**2 / 3)
        * torch.exp(-math.sqrt(5) * x),
    }
    for family in FAMILIES:
        got = stationary(a, b, ell, var, family)[0]
        torch.testing.assert_close(got, expected[family])
    torch.testing.assert_close(stationary(b, b, ell, var), rbf(b, b, ell, var))
    with pytest.raises(ValueError, match="'cubic'"):
        stationary(a, b, ell, var, 'cubic')


@pytest.mark.parametrize('family', FAMILIES)
def test_every_family_is_positive_definite_and_reaches_its_cutoff(family):
    torch.manual_seed(0)
    pts = torch.rand(1, 80, 2, dtype=torch.float64) * 30
    k = stationary(pts, pts, 4.0, 1.0, family) + 1e-6 * torch.eye(
        80, dtype=torch.float64
    )
    stable_cholesky(k)  # raises if not positive definite
    reach = kernel_reach(4.0, family, 1e-9)
    far = torch.tensor([[reach, 0.0]], dtype=torch.float64)
    corr = float(
        stationary(torch.zeros(1, 2, dtype=torch.float64), far, 4.0, 1.0, family)
    )
    assert corr == pytest.approx(1e-9, rel=1e-3)
    assert math.isinf(kernel_reach(4.0, family, 0.0))


def test_matern_parameters_get_gradients_with_duplicated_points():
    kernel = StationaryKernel(3.0, 1.0, family='matern32')
    loss = NPPLoss(kernel, GaussianNoise(0.1))
    coords = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [4.0, 2.0]]])  # a duplicate
    out = loss(
        torch.zeros(1, 3, requires_grad=True),
        torch.tensor([[1.0, 1.2, -0.5]]),
        coords,
        torch.ones(1, 3, dtype=torch.bool),
    )
    out.backward()
    assert torch.isfinite(kernel.raw.grad).all() and (kernel.raw.grad != 0).all()


def test_matern_posterior_matches_the_dense_formula():
    torch.manual_seed(1)
    h, w = 30, 40
    mean = torch.randn(h, w, dtype=torch.float64)
    pts = torch.rand(12, 2, dtype=torch.float64) * torch.tensor([h, w])
    vals = torch.randn(12, dtype=torch.float64)
    ell, var, noise = 5.0, 2.0, 0.05
    for family in ('matern12', 'matern32'):
        mu, sd = posterior_map(
            mean, pts, vals, KernelParams(family, ell, var, noise), chunk=300
        )
        rr, cc = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        xs = torch.stack([rr.reshape(-1), cc.reshape(-1)], 1).double() + 0.5
        kpp = stationary(pts, pts, ell, var, family) + noise * torch.eye(12)
        ks = stationary(xs, pts, ell, var, family)
        m_p = mean[pts[:, 0].long(), pts[:, 1].long()]
        ref_mu = mean.reshape(-1) + ks @ torch.linalg.solve(kpp, vals - m_p)
        ref_var = var - (ks * torch.linalg.solve(kpp, ks.T).T).sum(1)
        torch.testing.assert_close(mu.reshape(-1), ref_mu)
        torch.testing.assert_close(
            sd.reshape(-1), ref_var.clamp(min=0).sqrt(), atol=1e-6, rtol=1e-6
        )


def test_cli_offers_every_kernel_family():
    from geosparse.cli import build_parser

    predict = build_parser()._subparsers._group_actions[0].choices['predict']
    [action] = [a for a in predict._actions if a.dest == 'kernel_family']
    assert tuple(action.choices) == FAMILIES
