import pytest
import torch

from geosparse.gp import GaussianNoise, KernelParams, MarginalLikelihood
from geosparse.gp.kernels import StationaryKernel


def test_kernel_params_convert_units_and_scale():
    k = KernelParams('matern32', 10.0, 2.0, 0.5, units='crs')
    px = k.in_pixels(2.5)
    assert px.lengthscale == 4.0 and px.units == 'pixels' and px.family == 'matern32'
    assert px.in_pixels(7.0) is px
    assert k.scaled(3.0).variance == 6.0 and k.scaled(3.0).noise == 1.5
    assert k.as_dict() == {
        'type': 'matern32',
        'lengthscale': 10.0,
        'variance': 2.0,
        'noise': 0.5,
    }
    assert KernelParams.from_options({'lengthscale': 3, 'variance': 1}).noise == 0.0


@pytest.mark.parametrize(
    ('kw', 'match'),
    [
        ({'family': 'cubic'}, 'kernel family'),
        ({'lengthscale': 0.0}, 'lengthscale=0.0'),
        ({'noise': -1.0}, 'noise=-1.0'),
        ({'variance': float('nan')}, 'variance=nan'),
        ({'units': 'feet'}, 'units'),
    ],
)
def test_kernel_params_refuse_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        KernelParams(**kw)


def test_old_checkpoints_with_raw_noise_still_load():
    loss = MarginalLikelihood(StationaryKernel(3.0, 1.0), GaussianNoise(0.1))
    state = loss.state_dict()
    old = {('raw_noise' if k == 'noise.raw' else k): v for k, v in state.items()}
    old['raw_noise'] = torch.tensor(0.7)
    fresh = MarginalLikelihood(StationaryKernel(3.0, 1.0), GaussianNoise(0.1))
    fresh.load_state_dict(old)
    assert float(fresh.noise.raw.detach()) == pytest.approx(0.7)
