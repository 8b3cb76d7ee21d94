import shutil

import lightning
import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from geosparse.cli import main
from geosparse.datasets import make_object_scene
from geosparse.inference import Predictor
from geosparse.inference.checkpoints import load_task, task_class_for
from geosparse.inference.count_maps import count_map, count_with_std, total_count
from geosparse.inference.predict import predict_raster
from geosparse.trainers import (
    DensityTask,
    PointMapTask,
    brief_trainer,
    smoothed_point_map,
)

from .._scripts import run_python
from ..conftest import ROOT, counting_dm, save_untrained
from ..test_torchgeo_fit import torchgeo_fit


@pytest.fixture(scope='module')
def objects(tmp_path_factory):
    return make_object_scene(
        tmp_path_factory.mktemp('objects'), size=96, n=50, radius=2.5, seed=2
    )


def make_dm(objects, tmp_path, **kw):
    return counting_dm(objects, tmp_path, **{'split': (0.5, 0.0, 0.5), **kw})


def test_smoothed_point_map_keeps_the_mass():
    m = smoothed_point_map(torch.tensor([[10.5, 12.5], [12.0, 6.0]]), (24, 24), 1.5)
    assert float(m.sum()) == pytest.approx(2.0, abs=1e-3)
    assert m.argmax() == 10 * 24 + 12


@pytest.mark.parametrize('loss', ['mse', 'bayesian', 'gst', 'ot'])
def test_density_task_trains_and_scores_counts(objects, tmp_path, loss):
    lightning.seed_everything(0)
    dm = make_dm(objects, tmp_path, gaussians=loss == 'gst')
    task = DensityTask(loss=loss, model='fcn', num_filters=8, sigma=2.0)
    trainer = brief_trainer(2)
    trainer.fit(task, dm)
    [scores] = trainer.test(task, dm, verbose=False)
    assert np.isfinite(scores['test_count_mae']) and scores['test_count_mae'] >= 0
    assert abs(scores['test_count_bias']) <= scores['test_count_mae'] + 1e-6
    assert 0 <= scores['test_count_within_1sd'] <= scores['test_count_within_2sd'] <= 1
    density = task(torch.full((1, 3, 16, 16), 100.0))
    assert (density >= 0).all()


def test_count_std_is_poisson_for_densities_and_poisson_binomial_for_point_maps():
    density = torch.zeros(2, 1, 8, 8)
    density[0, 0, :2, :2] = 1.0  # 4 objects expected
    task = DensityTask(loss='mse', model='fcn', num_filters=4)
    torch.testing.assert_close(task.count_std(density), torch.tensor([2.0, 0.0]))
    wide = DensityTask(loss='mse', model='fcn', num_filters=4, count_dispersion=2.25)
    torch.testing.assert_close(wide.count_std(density), torch.tensor([3.0, 0.0]))
    assert wide.output_specs()[0].properties['count_dispersion'] == 2.25
    points = PointMapTask(model='fcn', num_filters=4)
    logits = torch.full((1, 1, 3, 3), -30.0)
    logits[0, 0, 0, 0] = 0.0  # p = 1/2: variance 1/4
    logits[0, 0, 1, 1] = 30.0  # certain: no variance
    torch.testing.assert_close(points.count_std(logits), torch.tensor([0.5]))


def test_count_coverage_counts_windows_within_one_and_two_sd():
    from geosparse.metrics import CountCoverage

    cov = CountCoverage()
    assert bool(torch.isnan(cov.compute()['count_within_1sd']))
    pred = torch.tensor([10.0, 10.0, 10.0, 10.0])
    truth = torch.tensor([10.0, 11.5, 13.0, 20.0])
    cov.update(pred, truth, torch.tensor([1.0, 1.0, 2.0, 3.0]))
    got = {k: float(v) for k, v in cov.compute().items()}
    assert got == {'count_within_1sd': 0.25, 'count_within_2sd': 0.75}


def test_count_bias_is_the_mean_signed_error():
    from geosparse.metrics import CountBias

    bias = CountBias()
    assert bool(torch.isnan(bias.compute()))
    bias.update(torch.tensor([12.0, 8.0]), torch.tensor([10.0, 10.0]))
    bias.update(torch.tensor([5.0]), torch.tensor([2.0]))
    assert float(bias.compute()) == pytest.approx(1.0)  # (2 - 2 + 3) / 3


def test_transport_losses_on_empty_windows_push_mass_to_zero():
    task = DensityTask(loss='bayesian', model='fcn', num_filters=8)
    d = torch.full((8, 8), 0.1, requires_grad=True)
    loss = task.sample_loss(d, torch.zeros(0, 2), None)
    assert float(loss) == pytest.approx(6.4)
    loss.backward()
    assert (d.grad > 0).all()


def test_gst_without_gaussians_is_a_clear_error(objects, tmp_path):
    dm = make_dm(objects, tmp_path)
    task = DensityTask(loss='gst', model='fcn', num_filters=8)
    with pytest.raises(ValueError, match='gaussians=True'):
        brief_trainer(1).fit(task, dm)


@pytest.mark.slow
@pytest.mark.parametrize('method', ['gst', 'p2r'])
def test_counts_beat_the_constant_density_answer(objects, tmp_path, method):
    """Trained, the count error is well below that of the training mean density."""
    lightning.seed_everything(0)
    # GST needs its 300 steps here (at 150 it is no better than the constant); P2R's
    # error is a quarter of the constant's at 100 (a third at 300).
    steps = 300 if method == 'gst' else 100
    dm = make_dm(
        objects,
        tmp_path,
        gaussians=method == 'gst',
        batch_size=8,
        length=8 * steps,
        fit_steps=50,
    )
    if method == 'gst':
        task: DensityTask | PointMapTask = DensityTask(loss='gst', sigma=2.0)
    else:
        task = PointMapTask(radius=3.0, stride=4)
    brief_trainer(steps).fit(task, dm)
    n_train = len(dm.train_dataset.datasets[1])
    const = n_train / (48 * 96) * 32 * 32
    truth, pred = [], []
    task.eval()
    with torch.no_grad():
        for batch in dm.test_dataloader():
            truth += batch['valid'].sum(1).tolist()
            pred += task.count(task(batch['image'])).tolist()
    truth_a, pred_a = np.array(truth, float), np.array(pred)
    assert np.abs(pred_a - truth_a).mean() < 0.75 * np.abs(const - truth_a).mean()


def test_point_map_task_semi_supervised_moves_the_teacher(objects, tmp_path):
    lightning.seed_everything(0)
    dm = make_dm(objects, tmp_path, labelled_fraction=0.5, patch_size=16, length=24)
    brief = dict(model='fcn', num_filters=8, radius=3.0, warmup_steps=1, ramp_steps=2)
    task = PointMapTask(**brief, pseudo_threshold=0.0, predict_with='student')
    brief_trainer(4).fit(task, dm)
    teacher = task.teacher.model
    assert 'teacher' not in ''.join(task.state_dict())  # not checkpointed
    diffs = [
        float((t - s).abs().max())
        for t, s in zip(teacher.parameters(), task.model.parameters(), strict=True)
    ]
    assert max(diffs) > 0  # an average, not a copy
    # the teacher's empty-cell confidence as the background weight trains too
    soft = PointMapTask(**brief, pseudo_threshold=0.0, pseudo_background='confidence')
    trainer = brief_trainer(3)
    trainer.fit(soft, dm)
    assert soft._teacher is not None
    # by default the trained model is the teacher, in memory and in checkpoints
    for t, s in zip(
        soft.teacher.model.parameters(), soft.model.parameters(), strict=True
    ):
        assert torch.equal(t, s)
    with torch.no_grad():  # a student that moved on: checkpoints keep the teacher
        next(soft.model.parameters()).add_(1.0)
    ckpt = tmp_path / 'semi.ckpt'
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)['state_dict']
    for key, value in soft.teacher.model.state_dict().items():
        assert torch.equal(state[f'model.{key}'], value)
    # its pseudo-labels: local maxima above the threshold, background maps 1 - p
    images = torch.full((2, 3, 16, 16), 100.0)
    points, conf, background = soft.pseudo_labels(images)
    assert len(points) == len(conf) == len(background) == 2
    assert isinstance(background, list) and background[0].shape == (4, 4)
    assert points[0].shape[1] == 2 and (conf[0] >= 0).all()
    p = torch.sigmoid(soft.pool(soft.teacher(soft.normalize(images)))[0, 0])
    torch.testing.assert_close(background[0], 1 - p)
    with pytest.raises(ValueError, match='predict_with'):
        PointMapTask(predict_with='ema')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='pseudo_background'):
        PointMapTask(pseudo_background='sure')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='pseudo_window'):
        PointMapTask(pseudo_window=2)
    # pseudo-points default to the count threshold; old checkpoints had no window
    fresh = PointMapTask(model='fcn', num_filters=8, threshold=0.4)
    assert soft.pseudo_threshold == 0.0 and fresh.pseudo_threshold == 0.4
    assert fresh.pseudo_window == 3
    del fresh.hparams['pseudo_window']
    assert fresh.pseudo_window == 1
    strong = task.strong(torch.full((2, 3, 16, 16), 100.0))
    assert strong.shape == (2, 3, 16, 16) and not torch.allclose(
        strong, torch.full_like(strong, 100.0)
    )


def test_predict_writes_density_and_counts(objects, tmp_path):
    lightning.seed_everything(0)
    dm = make_dm(objects, tmp_path, gaussians=True)
    task = DensityTask(loss='gst', model='fcn', num_filters=8)
    trainer = brief_trainer(2)
    trainer.fit(task, dm)
    ckpt = tmp_path / 'density.ckpt'
    trainer.save_checkpoint(ckpt)
    assert task_class_for(torch.load(ckpt, weights_only=True)['hyper_parameters'])
    out = predict_raster(
        Predictor(checkpoint=ckpt), objects.image, tmp_path / 'd.tif', block=64, halo=8
    )
    with rasterio.open(out) as src:
        density = src.read(1)
        assert src.descriptions == ('density',)
        assert src.tags()['counting'] == 'density'
        assert src.profile['tiled']
    with torch.no_grad():
        x = torch.from_numpy(rasterio.open(objects.image).read()[None]).float()
        direct = task(x)[0, 0].numpy()
    np.testing.assert_allclose(density, direct, rtol=1e-4, atol=1e-6)
    assert total_count(out) == pytest.approx(float(direct.sum()), rel=1e-4)
    counts = count_map(out, tmp_path / 'c.tif', cell=32)
    with rasterio.open(counts) as src:
        c, sd, valid = src.read()
        assert c.shape == (3, 3) and src.res == (32.0, 32.0)
        assert src.descriptions == ('count', 'std', 'valid_fraction')
    assert (valid == 1).all()  # no nodata in the scene
    assert float(c.sum()) == pytest.approx(float(direct.sum()), rel=1e-4)
    assert float(c[0, 0]) == pytest.approx(float(direct[:32, :32].sum()), rel=1e-4)
    np.testing.assert_allclose(sd, np.sqrt(c), rtol=1e-4)  # Poisson, dispersion 1
    total, std = count_with_std(out)
    assert std == pytest.approx(np.sqrt(total), rel=1e-4)
    with pytest.raises(ValueError, match='not a counting map'):
        count_map(objects.image, tmp_path / 'x.tif')


def test_pseudo_flips_make_the_teachers_pseudo_labels_flip_with_the_window():
    torch.manual_seed(0)
    brief = dict(model='fcn', num_filters=8, radius=3.0, pseudo_threshold=0.5)
    images = torch.rand(2, 3, 16, 16) * 255
    flipped = images.flip(-1)
    for flips in (False, True):
        task = PointMapTask(**brief, pseudo_flips=flips)
        task.teacher.model.load_state_dict(task.model.state_dict())
        _, _, background = task.pseudo_labels(images)
        _, _, mirrored = task.pseudo_labels(flipped)
        assert isinstance(background, list) and isinstance(mirrored, list)
        same = torch.allclose(background[0].flip(-1), mirrored[0], atol=1e-5)
        # a random network is not equivariant; the mean over the flips is
        assert same == flips
    views = [
        torch.sigmoid(task.pool(task.teacher(task.normalize(images).flip(d)).flip(d)))
        for d in ((), (-1,), (-2,), (-2, -1))
    ]
    torch.testing.assert_close(
        background[0], 1 - torch.stack(views).mean(0)[0, 0], atol=1e-5, rtol=1e-4
    )


def test_point_map_prediction_counts_cells(objects, tmp_path):
    lightning.seed_everything(0)
    task = PointMapTask(model='fcn', num_filters=8, stride=4, radius=4.0)
    with torch.no_grad():
        task.model.eval()
        logits = torch.full((1, 1, 10, 12), -5.0)
        logits[0, 0, 4:8, 8:12] = 5.0  # one confident cell (row 1, col 2)
        maps = task.maps_from_logits(logits)
    assert maps.shape == (1, 2, 10, 12)
    assert float(maps[0, 1].sum()) == 1.0 and float(maps[0, 1, 6, 10]) == 1.0
    assert float(maps[0, 0, 4, 8]) > 0.99 and float(maps[0, 0, 0, 0]) < 0.01
    assert float(task.count(F.avg_pool2d(logits, 4, ceil_mode=True))[0]) == 1.0
    dm = make_dm(objects, tmp_path)
    trainer = brief_trainer(2)
    trainer.fit(task, dm)
    ckpt = tmp_path / 'p2r.ckpt'
    trainer.save_checkpoint(ckpt)
    out = predict_raster(
        Predictor(checkpoint=ckpt), objects.image, tmp_path / 'p.tif', block=64, halo=8
    )
    with rasterio.open(out) as src:
        assert src.descriptions == ('probability', 'detection')
        assert src.tags()['counting'] == 'point map'
        det = src.read(2)
    x = torch.from_numpy(rasterio.open(objects.image).read()[None]).float()
    with torch.no_grad():
        cells = task(x)
        direct = task.count(cells)
    assert total_count(out) == float(det.sum()) == float(direct[0])
    # The std comes from the cell probabilities (Poisson-binomial), not the pixels.
    _, std = count_with_std(out)
    assert std == pytest.approx(float(task.count_std(cells)[0]), rel=1e-3)
    counts = count_map(out, tmp_path / 'pc.tif', cell=48)  # 12 x 12 cells of stride 4
    with rasterio.open(counts) as src:
        cell_counts, sd, _ = src.read()
    p = torch.sigmoid(cells[0, 0])
    var = (p * (1 - p)).numpy()
    assert float(sd[0, 0]) == pytest.approx(
        float(np.sqrt(var[:12, :12].sum())), rel=1e-3
    )
    # A fitted dispersion travels checkpoint -> map tag -> geosparse count: phi = 4
    # doubles every std, and leaves the counts alone.
    task.hparams['count_dispersion'] = 4.0
    wide_ckpt = tmp_path / 'p2r-wide.ckpt'
    trainer.save_checkpoint(wide_ckpt)
    wide = predict_raster(
        Predictor(checkpoint=wide_ckpt),
        objects.image,
        tmp_path / 'pw.tif',
        block=64,
        halo=8,
    )
    with rasterio.open(wide) as src:
        assert float(src.tags()['count_dispersion']) == 4.0
    total_wide, std_wide = count_with_std(wide)
    assert total_wide == total_count(out)
    assert std_wide == pytest.approx(2 * std, rel=1e-6)
    assert (
        main(['count', str(wide), '--cell', '48', '--out', str(tmp_path / 'pwc.tif')])
        == 0
    )
    with rasterio.open(tmp_path / 'pwc.tif') as src:
        np.testing.assert_allclose(src.read(2), 2 * sd, rtol=1e-5)
        np.testing.assert_array_equal(src.read(1), cell_counts)


def test_torchgeo_fit_predict_and_count_from_the_cli(tmp_path, capsys):
    scene = make_object_scene(tmp_path / 'data' / 'objects', size=256, n=150, seed=4)
    cmd = [
        shutil.which('torchgeo') or 'torchgeo',
        'fit',
        '--config',
        str(ROOT / 'examples' / 'configs' / 'counting_synthetic.yaml'),
        '--trainer.max_steps',
        '2',
        '--trainer.limit_val_batches',
        '1',
        '--data.init_args.length',
        '4',
        '--data.init_args.batch_size',
        '2',
        '--data.init_args.fit_steps',
        '5',
        '--trainer.default_root_dir',
        str(tmp_path / 'runs'),
    ]
    env = {'GEOSPARSE_CACHE': str(tmp_path / 'cache')}
    run_python(*cmd, cwd=tmp_path, env=env)
    assert list((tmp_path / 'cache').glob('gst-*.npz'))
    [ckpt] = list((tmp_path / 'runs').rglob('*.ckpt'))
    maps = tmp_path / 'maps'
    assert (
        main(
            [
                'predict',
                '--checkpoint',
                str(ckpt),
                str(scene.image),
                '--quiet',
                '--out',
                str(maps),
            ]
        )
        == 0
    )
    [density] = list(maps.glob('*.tif'))
    counts = tmp_path / 'counts.tif'
    assert main(['count', str(density), '--cell', '64', '--out', str(counts)]) == 0
    printed = capsys.readouterr().out
    assert ' ± ' in printed and 'objects (1 sd)' in printed
    with rasterio.open(counts) as src:
        assert src.shape == (4, 4) and src.count == 3
    assert main(['count', str(scene.image)]) == 2


def test_flip_is_deprecated_but_old_checkpoints_still_load(tmp_path):
    with pytest.warns(DeprecationWarning, match=r'CountingDataModule\(augment'):
        PointMapTask(model='fcn', num_filters=4, flip=True)
    task = DensityTask(loss='mse', model='fcn', num_filters=4)
    assert task.hparams['flip'] is None
    path = save_untrained(task, tmp_path / 'old.ckpt')
    ckpt = torch.load(path, weights_only=True)
    ckpt['hyper_parameters']['flip'] = False  # as saved before the data module flipped
    torch.save(ckpt, path)
    with pytest.warns(FutureWarning, match='augment=False'):
        old = load_task(path)
    x = torch.full((1, 3, 16, 16), 100.0)
    with torch.no_grad():
        torch.testing.assert_close(old(x), task.eval()(x))


def test_torchgeo_fit_semi_supervised_p2r_config(tmp_path):
    make_object_scene(tmp_path / 'data' / 'objects', size=256, n=150, seed=4)
    torchgeo_fit(
        'counting_p2r_semi.yaml',
        tmp_path,
        '--trainer.max_steps',
        '3',
        '--data.init_args.length',
        '6',
        '--data.init_args.unlabelled_batch_size',
        '3',
        '--model.init_args.warmup_steps',
        '1',
        '--trainer.log_every_n_steps',
        '1',
    )
    [ckpt] = list((tmp_path / 'runs').rglob('*.ckpt'))
    hp = torch.load(ckpt, map_location='cpu', weights_only=True)['hyper_parameters']
    assert hp['pseudo_background'] == 'confidence' and hp['pseudo_threshold'] is None
    # the teacher ran on the unlabelled windows after the warm-up step
    [metrics] = list((tmp_path / 'runs').rglob('metrics.csv'))
    assert 'train_pseudo_points' in metrics.read_text().splitlines()[0]


def test_gst_scale_range_clamps_the_kernels_gaussians_in_units_of_sigma():
    points = torch.tensor([[8.5, 8.5]])
    narrow = torch.tensor([[0.04, 0.0, 0.04]])  # std 0.2 px: all mass on one cell
    free = DensityTask(loss='gst', model='fcn', num_filters=4, sigma=2.0)
    clamped = DensityTask(
        loss='gst', model='fcn', num_filters=4, sigma=2.0, gst_scale_range=(1.0, 2.5)
    )
    wide = torch.tensor([[2.0**2, 0.0, 2.0**2]])  # exactly sigma: inside the range
    for covs in (narrow, wide):
        k_free = free.gst_window_kernel(points, covs, (17, 17))
        k_clamped = clamped.gst_window_kernel(points, covs, (17, 17))
        # One Gaussian's kernel row, shaped by its std (2 px after the clamp).
        same = torch.allclose(k_free, k_clamped)
        assert same == (covs is wide)
    k = clamped.gst_window_kernel(points, narrow, (17, 17))
    reference = free.gst_window_kernel(points, wide, (17, 17))
    torch.testing.assert_close(k, reference)


@pytest.mark.parametrize('cls', [DensityTask, PointMapTask])
def test_the_dispersion_is_fitted_on_the_validation_windows(objects, tmp_path, cls):
    """phi = max(1, sum of squared count errors / sum of model variances) at the end."""

    def make(**kw):
        if cls is DensityTask:
            return DensityTask(loss='mse', sigma=2.0, model='fcn', num_filters=8, **kw)
        return PointMapTask(radius=3.0, stride=4, model='fcn', num_filters=8, **kw)

    lightning.seed_everything(0)
    dm = make_dm(objects, tmp_path, split=(0.5, 0.25, 0.25), eval_size=16)
    task = make()
    brief_trainer(2, val_batches=1.0).fit(task, dm)
    err = var = 0.0
    task.eval()
    with torch.no_grad():
        for batch in dm.val_dataloader():
            out = task(batch['image'])
            truth = batch['valid'].sum(1).float()
            err += float((task.count(out) - truth).square().sum())
            var += float(task.count_variance(out).sum())
    phi = task.hparams['count_dispersion']
    assert var > 0 and phi == pytest.approx(max(1.0, err / var), rel=1e-4)
    assert task.output_specs()[0].properties['count_dispersion'] == phi
    out = task(torch.full((1, 3, 32, 32), 100.0))
    torch.testing.assert_close(
        task.count_std(out), (phi * task.count_variance(out)).sqrt()
    )
    # Without validation windows, or switched off, phi stays as given.
    lightning.seed_everything(0)
    fixed = make(fit_dispersion=False, count_dispersion=1.5)
    brief_trainer(2, val_batches=1.0).fit(fixed, dm)
    assert fixed.hparams['count_dispersion'] == 1.5
    none = make()
    brief_trainer(2).fit(none, make_dm(objects, tmp_path))
    assert none.hparams['count_dispersion'] == 1.0


def test_the_dispersion_is_fitted_on_the_network_that_predicts(objects, tmp_path):
    """Semi-supervised with predict_with='teacher': phi from the teacher's errors."""
    lightning.seed_everything(0)
    dm = make_dm(
        objects,
        tmp_path,
        labelled_fraction=0.5,
        split=(0.5, 0.25, 0.25),
        eval_size=16,
        patch_size=16,
        length=16,  # one epoch of 4 steps, then the validation that fits phi
    )
    task = PointMapTask(
        model='fcn', num_filters=8, radius=3.0, warmup_steps=1, ramp_steps=2
    )

    class MoveTheStudent(lightning.Callback):
        """Before the validation, the student alone moves: it sees no object."""

        def on_validation_start(self, trainer, module):
            with torch.no_grad():
                list(module.model.parameters())[-1].sub_(20.0)  # the output bias

    trainer = brief_trainer(4, val_batches=1.0, callbacks=[MoveTheStudent()])
    trainer.fit(task, dm)
    assert task._predicts_with_teacher()  # the model is now the teacher
    err = var = 0.0
    errors = []
    with torch.no_grad():  # the teacher's errors, as it stood at the validation
        for batch in dm.val_dataloader():
            out = task.pool(task.teacher(task.normalize(batch['image'])))
            truth = batch['valid'].sum(1).float()
            err += float((task.count(out) - truth).square().sum())
            var += float(task.count_variance(out).sum())
            errors.append((task.count(out) - truth).abs())
    phi = task.hparams['count_dispersion']
    assert phi == pytest.approx(max(1.0, err / var), rel=1e-4)
    assert phi > 1
    # The validation count metrics score the teacher too; val_loss (the
    # scheduler's) the student, whose count differs.
    logged = trainer.callback_metrics
    teacher_mae = float(torch.cat(errors).mean())
    assert float(logged['val_count_mae']) == pytest.approx(teacher_mae, rel=1e-4)
    assert abs(float(logged['val_loss']) - teacher_mae) > 1e-3
    # A student that moved on: the dispersion's output is still the teacher's.
    x = torch.full((1, 3, 16, 16), 100.0)
    with torch.no_grad():
        next(task.model.parameters()).add_(1.0)
        kept = task.predicting_output(x, task(x))
        torch.testing.assert_close(kept, task.pool(task.teacher(task.normalize(x))))
        assert not torch.allclose(kept, task(x))


@pytest.mark.parametrize('bad', [(2.5, 1.0), (0.0, 1.0), (1.0,)])
def test_a_bad_gst_scale_range_is_refused_when_the_task_is_made(bad):
    with pytest.raises(ValueError, match='gst_scale_range'):
        DensityTask(loss='gst', model='fcn', num_filters=4, gst_scale_range=bad)


def test_strong_views_can_leave_the_norm_statistics_to_the_weak_windows(
    objects, tmp_path
):
    # One step from the same start: the running statistics move in the forward on
    # the batch, before the optimiser, so they tell which forwards moved them.
    def running_means(**kw):
        lightning.seed_everything(0)
        dm = make_dm(objects, tmp_path, labelled_fraction=0.5, patch_size=32, length=4)
        task = PointMapTask(radius=3.0, warmup_steps=0, ramp_steps=0, **kw)
        brief_trainer(1).fit(task, dm)
        norms = [m for m in task.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert norms
        # the unlabelled branch ran (it makes the teacher) unless its weight is 0
        assert (task._teacher is None) == (task.hparams['unlabelled_weight'] == 0)
        return torch.cat([m.running_mean for m in norms])

    weak_only = running_means(unlabelled_weight=0.0)
    kept = running_means(strong_view_statistics=False)
    moved = running_means()
    torch.testing.assert_close(kept, weak_only)
    assert not torch.allclose(moved, weak_only)


def _half_nodata_batch():
    """A window whose left half is NaN (nodata), with points on both halves."""
    image = torch.rand(1, 3, 32, 32) * 100
    image[..., :16] = float('nan')
    points = torch.tensor([[[8.5, 4.5], [10.5, 24.5], [20.5, 28.5]]])
    return {
        'image': image,
        'points': points,
        'valid': torch.ones(1, 3, dtype=torch.bool),
        'covariances': torch.tensor([[[4.0, 0.0, 4.0]] * 3]),
    }


@pytest.mark.parametrize('loss', ['mse', 'bayesian', 'gst', 'ot'])
def test_density_loss_and_count_leave_nodata_pixels_out(loss):
    """Pixels without data were zeroed for the network but still in the loss: there
    they taught "no object here" (and their density was counted)."""
    task = DensityTask(loss=loss, model='fcn', num_filters=4, sigma=2.0)
    batch = _half_nodata_batch()
    with pytest.warns(UserWarning, match='are left out'):
        task.on_train_batch_start(batch, 0)
    assert batch['valid'].tolist() == [[False, True, True]]
    out = torch.full((1, 1, 32, 32), 0.01, requires_grad=True)
    task.compute_loss(batch, out).backward()
    assert out.grad is not None
    assert (out.grad[..., :16] == 0).all() and (out.grad[..., 16:] != 0).any()
    counted = task.count(task.without_nodata(out.detach(), batch))
    assert float(counted) == pytest.approx(0.01 * 32 * 16)


def test_point_map_loss_and_count_leave_nodata_cells_out():
    task = PointMapTask(model='fcn', num_filters=4, stride=4)
    batch = _half_nodata_batch()
    with pytest.warns(UserWarning, match='are left out'):
        task.on_train_batch_start(batch, 0)
    out = torch.zeros(1, 1, 8, 8, requires_grad=True)
    task.compute_loss(batch, out).backward()
    assert out.grad is not None
    assert (out.grad[..., :4] == 0).all() and (out.grad[..., 4:] != 0).any()
    kept = task.without_nodata(torch.full((1, 1, 8, 8), 5.0), batch)
    assert float(task.count(kept)) == 32  # the 8 x 4 cells with data
    # semi-supervised: the pseudo-label loss of an unlabelled window with a hole
    semi = PointMapTask(
        model='fcn', num_filters=4, stride=4, warmup_steps=0, pseudo_threshold=0.0
    )
    batch = _half_nodata_batch()
    batch = {k: torch.cat([v, v]) for k, v in batch.items()}
    batch['labelled'] = torch.tensor([True, False])
    with pytest.warns(UserWarning, match='are left out'):
        semi.on_train_batch_start(batch, 0)
    loss = semi.training_step(batch, 0)
    assert loss is not None and torch.isfinite(loss)


@pytest.mark.parametrize(
    ('task_class', 'loss'), [(DensityTask, {'loss': 'mse'}), (PointMapTask, {})]
)
def test_fit_on_imagery_with_a_hole_leaves_it_out_end_to_end(
    objects, tmp_path, task_class, loss
):
    """Through the data module and a whole fit (not the hooks alone): imagery
    whose declared nodata covers the left third reaches the
    training step with its hole marked, no point on it, and finite losses."""
    import dataclasses

    import rasterio

    with rasterio.open(objects.image) as src:
        prof, data = src.profile, src.read()
    data[:, :, :32] = 255
    prof.update(nodata=255)
    holed = tmp_path / 'holed.tif'
    with rasterio.open(holed, 'w', **prof) as dst:
        dst.write(data)
    scene = dataclasses.replace(objects, image=holed)
    dm = make_dm(scene, tmp_path, split=(0.5, 0.25, 0.25), eval_size=16)
    task = task_class(model='fcn', num_filters=4, **loss)
    seen: list[tuple[int, int]] = []
    compute_loss = task.compute_loss

    def recording(batch, out):
        bad = batch['nodata_pixels']
        rows = batch['points'][..., 0].long().clamp(0, bad.shape[-2] - 1)
        cols = batch['points'][..., 1].long().clamp(0, bad.shape[-1] - 1)
        index = torch.arange(len(bad))[:, None]
        on_hole = bad[index, rows, cols] & batch['valid']
        value = compute_loss(batch, out)
        assert value is None or torch.isfinite(value)
        seen.append((int(bad.sum()), int(on_hole.sum())))
        return value

    task.compute_loss = recording  # type: ignore[method-assign]
    with pytest.warns(UserWarning, match='are left out'):
        brief_trainer(4, val_batches=2).fit(task, dm)
    assert seen, 'no training step ran'
    assert any(n > 0 for n, _ in seen), 'the hole never reached a step'
    assert all(k == 0 for _, k in seen), 'a point on the hole stayed valid'


@pytest.mark.parametrize('shared', [True, False])
def test_the_supervised_forward_can_leave_the_unlabelled_windows_out(shared):
    """``shared_forward=False``: the labelled windows are normalised by their own
    BatchNorm statistics, so the supervised loss is that of a batch holding them
    alone; in the shared forward the unlabelled windows' weak views change it."""
    lightning.seed_everything(0)
    image = torch.rand(4, 3, 64, 64) * 100
    image[2:] *= 2  # unlabelled windows of another brightness
    batch = {
        'image': image,
        'points': torch.tensor([[[8.5, 4.5], [40.5, 24.5]]] * 4),
        'valid': torch.ones(4, 2, dtype=torch.bool),
        'labelled': torch.tensor([True, True, False, False]),
    }
    task = PointMapTask(stride=4, unlabelled_weight=0.0, shared_forward=shared)
    labelled = {k: v[:2] for k, v in batch.items() if k != 'labelled'}
    alone = task.compute_loss(labelled, task(labelled['image']))
    loss = task.training_step(batch, 0)
    assert loss is not None and torch.isfinite(loss)
    assert bool(torch.isclose(loss, alone)) != shared
