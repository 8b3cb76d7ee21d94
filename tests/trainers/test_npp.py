import json
import shutil

import numpy as np
import pytest
import rasterio
import torch

from geosparse.cli import main
from geosparse.datasets import make_point_labels, make_scene
from geosparse.gp.posterior import posterior_map
from geosparse.trainers import NPPTask, point_values

from .._scripts import run_python
from ..conftest import ROOT


def _batch():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 4, 32, 32, generator=g) * 255
    points = torch.tensor([[[3.5, 4.5], [20.5, 10.5]], [[7.5, 7.5], [0.0, 0.0]]])
    values = torch.tensor([[[1.0], [2.0]], [[3.0], [0.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    return {'image': image, 'points': points, 'values': values, 'valid': valid}


@pytest.mark.parametrize('kernel', ['static', 'learnable', 'context'])
def test_npp_and_mse_losses_train_the_network(kernel):
    torch.manual_seed(0)
    task = NPPTask(model='fcn', num_filters=8, kernel=kernel)
    batch = _batch()
    loss = task.training_step(batch, 0)
    loss.backward()
    grads = [p.grad for p in task.model.parameters()]
    assert all(g is not None for g in grads) and float(grads[0].abs().sum()) > 0
    mse = NPPTask(model='fcn', num_filters=8, loss='mse')
    out = mse(batch['image'])
    want = torch.stack(
        [
            (out[0, 0, 3, 4] - 1) ** 2,
            (out[0, 0, 20, 10] - 2) ** 2,
            (out[1, 0, 7, 7] - 3) ** 2,
        ]
    ).mean()
    assert float(mse.compute_loss(batch, out)) == pytest.approx(float(want), rel=1e-5)
    empty = dict(batch, valid=torch.zeros(2, 2, dtype=torch.bool))
    assert task.training_step(empty, 0) is None


def test_metrics_are_global_and_r2_has_its_arguments_in_order():
    task = NPPTask(model='fcn', num_filters=8)
    batch = _batch()
    task.validation_step(batch, 0)
    out = task(batch['image'])
    pred = point_values(out, batch['points'])[batch['valid']].detach()
    truth = batch['values'][..., 0][batch['valid']]
    got = task.val_metrics.compute()
    want_r2 = 1 - ((truth - pred) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
    assert float(got['val_r2']) == pytest.approx(float(want_r2), rel=1e-4)
    assert float(got['val_mse']) == pytest.approx(
        float(((truth - pred) ** 2).mean()), rel=1e-4
    )


def test_predict_step_gives_the_posterior():
    task = NPPTask(
        model='fcn', num_filters=8, kernel='static', lengthscale=2.0, variance=4.0
    )
    batch = _batch()
    with torch.no_grad():
        out = task.predict_step(batch, 0)
        mean = task(batch['image'])
    assert out.shape == (2, 2, 32, 32)
    assert float(out[0, 0, 3, 4]) == pytest.approx(1.0, abs=0.2)  # pinned by the point
    assert float(out[0, 1, 3, 4]) < 0.5 and float(out[0, 1, 31, 31]) == pytest.approx(
        2.0
    )
    assert float(out[1, 0, 31, 0]) == pytest.approx(float(mean[1, 0, 31, 0]), abs=1e-5)


def test_torchgeo_fit_then_predict_with_revealed_points(tmp_path):
    scene = make_scene(tmp_path / 'data' / 'synthetic', size=192, seed=2)
    points = make_point_labels(scene, n=120, seed=2)
    cmd = [
        shutil.which('torchgeo') or 'torchgeo',
        'fit',
        '--config',
        str(ROOT / 'examples' / 'configs' / 'npp_synthetic.yaml'),
        '--trainer.max_steps',
        '3',
        '--data.init_args.length',
        '6',
        '--data.init_args.eval_windows',
        '2',
        '--data.init_args.batch_size',
        '2',
        '--data.init_args.block_size',
        '32',
        '--trainer.default_root_dir',
        str(tmp_path / 'runs'),
    ]
    run_python(*cmd, cwd=tmp_path)
    [ckpt] = list((tmp_path / 'runs').rglob('*.ckpt'))
    out = tmp_path / 'maps'
    base = [
        'predict',
        '--checkpoint',
        str(ckpt),
        str(scene.image),
        '--quiet',
        '--halo',
        '32',
    ]
    assert main([*base, '--out', str(out / 'plain')]) == 0
    with rasterio.open(out / 'plain' / 'scene_naip_regression.tif') as src:
        mean, std = src.read()
        assert src.descriptions == ('mean', 'std')
        assert src.tags()['task'] == 'NPPTask'
    assert np.ptp(std) < 1e-3  # no known points: the prior std everywhere
    # Known points, the kernel from the checkpoint: the map passes through them.
    args = [
        *base,
        '--out',
        str(out / 'gp'),
        '--reveal',
        str(points),
        '--value',
        'height',
    ]
    assert main(args) == 0
    with rasterio.open(out / 'gp' / 'scene_naip_regression.tif') as src:
        post, post_std = src.read()
        assert json.loads(src.tags()['kernel'])['type'] == 'rbf'
    import geopandas as gpd

    pts = gpd.read_file(points)
    with rasterio.open(scene.image) as src:
        rc = [src.index(p.x, p.y) for p in pts.geometry]
    at = np.array([post_std[r, c] for r, c in rc])
    assert np.median(at) < 0.8 * std[0, 0]
    err_gp = np.abs(
        [post[r, c] - v for (r, c), v in zip(rc, pts['height'], strict=True)]
    )
    err_net = np.abs(
        [mean[r, c] - v for (r, c), v in zip(rc, pts['height'], strict=True)]
    )
    assert np.median(err_gp) < np.median(err_net)
    # By default the kernel is re-fitted on the 120 points, said in the tags.
    with rasterio.open(out / 'gp' / 'scene_naip_regression.tif') as src:
        fitted = json.loads(src.tags()['kernel'])
    assert (
        fitted['source'] == 'refit on the revealed points' and fitted['points'] == 120
    )
    # --no-refit: the kernel as trained; --calibrate (replaced): the default's map.
    assert main([*args[:-6], '--out', str(out / 'cal'), *args[-4:], '--calibrate']) == 0
    assert main([*args[:-6], '--out', str(out / 'raw'), *args[-4:], '--no-refit']) == 0
    with rasterio.open(out / 'cal' / 'scene_naip_regression.tif') as src:
        cal, cal_std = src.read()
    with rasterio.open(out / 'raw' / 'scene_naip_regression.tif') as src:
        raw_std = src.read(2)
        assert json.loads(src.tags()['kernel'])['from'].startswith('checkpoint')
    np.testing.assert_array_equal(cal, post)
    np.testing.assert_array_equal(cal_std, post_std)
    assert np.isfinite(raw_std).all() and not np.array_equal(raw_std, post_std)


def test_gp_parameters_get_their_own_learning_rate():
    task = NPPTask(model='fcn', num_filters=8, lr=1e-3, kernel_lr=5e-2)
    opt = task.configure_optimizers()['optimizer']
    lrs = [g['lr'] for g in opt.param_groups]
    assert lrs == [1e-3, 5e-2]
    gp = {id(p) for p in opt.param_groups[1]['params']}
    assert gp == {id(p) for p in task.npp_loss.parameters()} and len(gp) == 2
    # The context head is a network (trains at lr); its output bias is the kernel's.
    ctx = NPPTask(model='fcn', num_filters=8, kernel='context')
    groups = ctx.configure_optimizers()['optimizer'].param_groups
    head = ctx.kernel.head
    assert {id(p) for p in groups[1]['params']} == {
        id(head[-1].bias),
        id(ctx.npp_loss.noise.raw),
    }
    assert id(head[0].weight) in {id(p) for p in groups[0]['params']}
    static = NPPTask(model='fcn', num_filters=8, kernel='static', learn_noise=False)
    assert len(static.configure_optimizers()['optimizer'].param_groups) == 1


def test_matern_task_trains_and_predicts_with_its_family():
    task = NPPTask(model='fcn', num_filters=8, in_channels=3, kernel_family='matern32')
    assert task.kernel.family == 'matern32' and task.kernel_family == 'matern32'
    batch = {
        'image': torch.rand(2, 3, 32, 32) * 255,
        'points': torch.tensor([[[4.5, 4.5], [20.5, 10.5]], [[8.5, 8.5], [0.0, 0.0]]]),
        'values': torch.tensor([[[1.0], [2.0]], [[3.0], [0.0]]]),
        'valid': torch.tensor([[True, True], [True, False]]),
    }
    loss = task.compute_loss(batch, task(batch['image']))
    loss.backward()
    assert torch.isfinite(loss) and task.kernel.raw.grad is not None
    with torch.no_grad():
        out = task.predict_step(batch, 0)
    params = task.kernel_params(batch['image'][:1])
    assert params.family == 'matern32' and params.units == 'pixels'
    mean = task(batch['image'][:1])[0, 0].detach().double()
    ref_mean, ref_std = posterior_map(
        mean, batch['points'][0], batch['values'][0, :, 0], params
    )
    torch.testing.assert_close(
        out[0, 0].double(), ref_mean.float().double(), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        out[0, 1].double(), ref_std.float().double(), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="'cubic'"):
        NPPTask(model='fcn', num_filters=8, kernel_family='cubic')
