import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from geosparse.gp import GaussianNoise
from geosparse.gp.kernels import ContextKernel, StationaryKernel, rbf, stable_cholesky
from geosparse.losses import NPPLoss


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(3, 5, 2, generator=g) * 20
    pred = torch.randn(3, 5, generator=g)
    target = torch.randn(3, 5, generator=g)
    valid = torch.tensor(
        [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool
    )
    return pred, target, coords, valid


def test_loss_is_the_gaussian_nll_per_point_and_padding_adds_nothing():
    pred, target, coords, valid = _batch()
    loss_fn = NPPLoss(
        StationaryKernel(4.0, 2.0, learnable=False), GaussianNoise(0.3, learnable=False)
    )
    got = loss_fn(pred, target, coords, valid)
    total = 0.0
    for i in range(3):
        m = valid[i]
        c = coords[i][m].double()
        cov = rbf(c, c, 4.0, 2.0) + 0.3 * torch.eye(int(m.sum()), dtype=torch.float64)
        mvn = MultivariateNormal(pred[i][m].double(), covariance_matrix=cov)
        total -= float(mvn.log_prob(target[i][m].double()))
    assert float(got) == pytest.approx(total / int(valid.sum()), rel=1e-5)
    # Garbage in the padded slots changes nothing.
    pred2, target2 = pred.clone(), target.clone()
    pred2[~valid], target2[~valid] = 1e3, -1e3
    assert float(loss_fn(pred2, target2, coords, valid)) == pytest.approx(float(got))


def test_one_point_is_a_normal_and_an_empty_batch_is_an_error():
    loss_fn = NPPLoss(
        StationaryKernel(3.0, 1.5, learnable=False), GaussianNoise(0.5, learnable=False)
    )
    pred, target = torch.tensor([[0.2, 9.0]]), torch.tensor([[1.0, 9.0]])
    coords, valid = torch.zeros(1, 2, 2), torch.tensor([[True, False]])
    sd = math.sqrt(1.5 + 0.5)
    want = -torch.distributions.Normal(0.2, sd).log_prob(torch.tensor(1.0))
    assert float(loss_fn(pred, target, coords, valid)) == pytest.approx(
        float(want), rel=1e-5
    )
    with pytest.raises(ValueError, match='no labelled point'):
        loss_fn(pred, target, coords, torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match='not finite'):
        loss_fn(pred, torch.tensor([[float('nan'), 0.0]]), coords, valid)


def test_every_learnable_parameter_gets_a_gradient_the_context_head_included():
    pred, target, coords, valid = _batch(1)
    pred.requires_grad_(True)
    image = torch.randn(3, 4, 16, 16)
    for kernel in (StationaryKernel(3.0, 1.0, learnable=True), ContextKernel(4)):
        loss_fn = NPPLoss(kernel, GaussianNoise(0.2))
        loss_fn(pred, target, coords, valid, context=image).backward()
        named = dict(loss_fn.named_parameters())
        assert 'noise.raw' in named and len(named) > 1
        for name, p in named.items():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    static = NPPLoss(
        StationaryKernel(3.0, 1.0, learnable=False), GaussianNoise(learnable=False)
    )
    assert list(static.parameters()) == []
    with pytest.raises(ValueError, match='needs the input image'):
        NPPLoss(ContextKernel(4))(pred, target, coords, valid)


def test_learned_lengthscale_is_not_clamped():
    # Points drawn from a GP with a length-scale of 8 px: maximising the likelihood
    # takes the kernel from 3 px well past the [1, 2] px clamp of the authors' code.
    g = torch.Generator().manual_seed(0)
    coords = torch.rand(8, 40, 2, generator=g, dtype=torch.float64) * 32
    cov = rbf(coords, coords, 8.0, 1.0) + 0.01 * torch.eye(40, dtype=torch.float64)
    y = (
        torch.linalg.cholesky(cov)
        @ torch.randn(8, 40, 1, generator=g, dtype=torch.float64)
    )[..., 0]
    kernel = StationaryKernel(3.0, 1.0, learnable=True)
    loss_fn = NPPLoss(kernel, GaussianNoise(0.1))
    opt = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
    valid = torch.ones(8, 40, dtype=torch.bool)
    for _ in range(150):
        opt.zero_grad()
        loss_fn(torch.zeros(8, 40), y.float(), coords.float(), valid).backward()
        opt.step()
    ell, _ = kernel.params()
    assert 5.0 < float(ell[0]) < 12.0


def test_stable_cholesky_jitters_only_the_singular_matrices():
    pts = torch.tensor(
        [[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [5.0, 0.0]]], dtype=torch.float64
    )
    k = rbf(pts, pts, torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0]))
    factor = stable_cholesky(k)  # the first matrix is singular (duplicate points)
    assert torch.isfinite(factor).all()
    torch.testing.assert_close(factor[1], torch.linalg.cholesky(k[1]))
    with pytest.raises(RuntimeError, match='not positive definite'):
        stable_cholesky(torch.full((1, 2, 2), float('nan'), dtype=torch.float64))
    with pytest.raises(ValueError, match='must be > 0'):
        StationaryKernel(0.0)
