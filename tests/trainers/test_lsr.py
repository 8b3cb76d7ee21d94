import warnings

import pytest
import torch

from geosparse.compat import GEO_KEYS, window_bounds
from geosparse.datamodules import LabelSuperResolutionDataModule
from geosparse.priors import PriorError
from geosparse.trainers import (
    LabelSuperResolutionTask,
    brief_trainer,
    combine_with_prior,
    match_fractions,
)


def _dm(scene, **kw):
    args = dict(
        image_paths=str(scene.image),
        coarse_paths=str(scene.coarse),
        fine_paths=str(scene.fine),
        patch_size=64,
        batch_size=2,
        length=4,
        val_fraction=0.25,
        split='grid',
        grid_size=2,
    )
    args.update(kw)
    return LabelSuperResolutionDataModule(**args)


def _trainer(steps=2):
    return brief_trainer(steps, val_batches=2)


def _fit_moves_weights(task, scene):
    """Fit ``task`` briefly on ``scene``; the trainer, after checking weights moved."""
    before = [p.clone() for p in task.parameters()]
    trainer = _trainer()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        trainer.fit(task, datamodule=_dm(scene))
    assert any((a != b).any() for a, b in zip(before, task.parameters(), strict=True))
    return trainer


@pytest.mark.parametrize('loss', ['lsr', 'soft-naive', 'hard-naive', 'hr', 'hr+lsr'])
def test_every_loss_trains_and_validates(scene, loss):
    task = LabelSuperResolutionTask(model='fcn', num_filters=8, loss=loss)
    trainer = _fit_moves_weights(task, scene)
    assert 'val_acc' in trainer.callback_metrics
    assert 0 <= float(trainer.callback_metrics['val_miou']) <= 1


def test_batches_keep_georeference(scene):
    dm = _dm(scene)
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    moved = dm.transfer_batch_to_device(batch, torch.device('cpu'), 0)
    # 0.8.1 keeps its non-tensor crs and bounds; 0.10 has tensor bounds and no crs
    assert set(GEO_KEYS) | {'bounds'} <= set(moved)
    assert moved['transform'].shape == (2, 6)
    assert moved['transform'].dtype == torch.float64
    assert moved['transform'][0, 0] == pytest.approx(1.0)
    xmin, _, _, ymax = window_bounds(moved['bounds'][0])
    assert moved['transform'][0, 2] == pytest.approx(xmin)
    assert moved['transform'][0, 5] == pytest.approx(ymax)


def test_unknown_coarse_code_is_named():
    task = LabelSuperResolutionTask(model='fcn', num_filters=8)
    batch = {'image': torch.rand(1, 4, 16, 16), 'coarse': torch.full((1, 16, 16), 77)}
    with pytest.raises(PriorError, match=r'\[77\]'):
        task.compute_loss(batch, task(batch['image']))


def test_all_nodata_batch_is_skipped_with_warning():
    task = LabelSuperResolutionTask(model='fcn', num_filters=8)
    batch = {'image': torch.rand(1, 4, 16, 16), 'coarse': torch.zeros(1, 16, 16)}
    with pytest.warns(UserWarning, match='no labelled pixel'):
        assert task.training_step(batch, 0) is None


def test_combine_with_prior():
    probs = torch.full((1, 2, 1, 2), 0.5)
    eta = torch.tensor([[0.9, 0.1]])
    out = combine_with_prior(probs, torch.tensor([[[0, -1]]]), eta, weight=1.0, eps=0)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.9, 0.1]))
    torch.testing.assert_close(out[0, :, 0, 1], torch.tensor([0.5, 0.5]))


def test_bayes_combination_divides_by_the_training_marginal():
    # Network says 50/50; prior of the block 0.8/0.2; training marginal 0.8/0.2:
    # the block is no more forest than the training data, so the network stands.
    probs = torch.full((1, 2, 1, 1), 0.5)
    eta = torch.tensor([[0.8, 0.2]])
    coarse = torch.tensor([[[0]]])
    out = combine_with_prior(probs, coarse, eta, eps=0, marginal=torch.tensor([8.0, 2]))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.5, 0.5]))
    plain = combine_with_prior(probs, coarse, eta, eps=0)
    torch.testing.assert_close(plain[0, :, 0, 0], torch.tensor([0.8, 0.2]))


def test_match_fractions_gives_each_region_its_prior_and_keeps_the_ranking():
    torch.manual_seed(0)
    probs = torch.rand(2, 3, 8, 8).softmax(dim=1)
    eta = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    coarse = torch.zeros(2, 8, 8, dtype=torch.long)
    coarse[0, :3] = 1
    coarse[1, :, :2] = -1  # nodata
    out = match_fractions(probs, coarse, eta, eps=0.0, iters=200)
    for b in range(2):
        for z in (0, 1):
            m = coarse[b] == z
            if m.any():
                torch.testing.assert_close(
                    out[b][:, m].mean(dim=1), eta[z], atol=1e-4, rtol=0
                )
    nod = coarse[1] == -1
    torch.testing.assert_close(out[1][:, nod], probs[1][:, nod])
    # Within a region, a pixel the network finds more class-0 (relative to class 1)
    # stays more class-0: one offset per class and region.
    m = coarse[0] == 0
    before = (probs[0, 0][m] / probs[0, 1][m]).argsort()
    after = (out[0, 0][m] / out[0, 1][m]).argsort()
    assert torch.equal(before, after)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 8, 8))


def test_fractions_rule_in_the_task():
    task = LabelSuperResolutionTask(
        model='fcn', num_filters=8, prior_rule='fractions', prior_weight=1
    )
    probs = torch.rand(1, 4, 8, 8).softmax(dim=1)
    coarse = torch.zeros(1, 8, 8, dtype=torch.long)  # all of the first table row
    out = task.combine(probs, coarse)
    want = task.eta[0] + 0.01
    torch.testing.assert_close(
        out[0].mean(dim=(1, 2)), want / want.sum(), atol=1e-3, rtol=0
    )
    task.hparams['prior_weight'] = 0
    assert torch.equal(task.combine(probs, coarse), probs)
    with pytest.raises(ValueError, match='prior_rule'):
        LabelSuperResolutionTask(model='fcn', num_filters=8, prior_rule='fraction')  # type: ignore[arg-type]


def test_training_counts_labels_for_the_marginal():
    task = LabelSuperResolutionTask(model='fcn', num_filters=8)
    assert task.training_marginal() is None
    coarse = torch.full((1, 8, 8), 41)
    coarse[0, :2] = 82
    task.training_step({'image': torch.rand(1, 4, 8, 8), 'coarse': coarse}, 0)
    rows = [task.table.coarse_codes.index(c) for c in (41, 82)]
    expected = 0.75 * task.eta[rows[0]] + 0.25 * task.eta[rows[1]]
    torch.testing.assert_close(task.training_marginal(), expected)


def test_checkpoint_round_trip_keeps_priors(scene, tmp_path):
    task = LabelSuperResolutionTask(model='fcn', num_filters=8)
    trainer = _trainer(1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        trainer.fit(task, datamodule=_dm(scene))
    trainer.save_checkpoint(tmp_path / 'm.ckpt')
    loaded = LabelSuperResolutionTask.load_from_checkpoint(tmp_path / 'm.ckpt')
    x = {'image': torch.rand(1, 4, 32, 32) * 255}
    task.eval()
    torch.testing.assert_close(loaded.predict_probs(x), task.predict_probs(x))
    assert loaded.table.coarse_codes == task.table.coarse_codes
    assert float(loaded.coarse_seen.sum()) > 0
    torch.testing.assert_close(loaded.coarse_seen, task.coarse_seen)


def test_var_floor_scale_reaches_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 16, 16)
    coarse = torch.full((1, 16, 16), 41)
    losses = {}
    for scale in ('block', 'pixel'):
        task = LabelSuperResolutionTask(
            model='fcn', num_filters=8, var_floor_scale=scale
        )
        assert task.hparams['var_floor_scale'] == scale
        losses[scale] = task.compute_loss({'coarse': coarse}, logits)
    # The pixel floor (0.03/256) is below the block floor (0.03): a lower log term.
    assert losses['pixel'] < losses['block']


@pytest.mark.parametrize('loss', ['lsr', 'soft-naive'])
def test_local_model_with_batch_balance_trains_and_reloads(scene, tmp_path, loss):
    task = LabelSuperResolutionTask(
        model='local',
        num_filters=8,
        local_scales=(3, 7),
        standardize='none',
        coarse_balance='batch',
        loss=loss,
    )
    assert task.lsr_loss.balance == task.soft_naive.balance == 'batch'
    trainer = _fit_moves_weights(task, scene)
    trainer.save_checkpoint(tmp_path / 'm.ckpt')
    loaded = LabelSuperResolutionTask.load_from_checkpoint(tmp_path / 'm.ckpt')
    assert loaded.model.scales == (3, 7)
    x = {'image': torch.rand(1, 4, 32, 32) * 255}
    task.eval(), loaded.eval()  # batch normalisation: use the training statistics
    torch.testing.assert_close(loaded.predict_probs(x), task.predict_probs(x))


def test_unknown_coarse_balance_is_refused():
    with pytest.raises(ValueError, match="balance='class'"):
        LabelSuperResolutionTask(model='local', coarse_balance='class')  # type: ignore[arg-type]


def test_hr_plus_lsr_uses_each_term_where_its_labels_exist():
    """HR+SR: windows of the target region carry coarse labels only (fine nodata)."""
    torch.manual_seed(0)
    task = LabelSuperResolutionTask(model='fcn', num_filters=8, loss='hr+lsr')
    image = torch.rand(2, 4, 16, 16) * 255
    with torch.no_grad():
        logits = task(image)
    coarse = torch.full((2, 16, 16), 41)
    fine = torch.full((2, 16, 16), 2)
    nodata = torch.zeros(2, 16, 16, dtype=torch.long)
    both = task.compute_loss({'coarse': coarse, 'mask': fine}, logits)
    coarse_only = task.compute_loss({'coarse': coarse, 'mask': nodata}, logits)
    fine_only = task.compute_loss({'coarse': nodata, 'mask': fine}, logits)
    lsr = task.lsr_loss(logits, task.coarse_index(coarse), None)
    hr = task.hr_loss(logits, task.fine_index(fine))
    assert coarse_only == pytest.approx(float(lsr))
    assert fine_only == pytest.approx(float(hr))
    assert both == pytest.approx(float(hr + lsr))
    assert task.compute_loss({'coarse': nodata, 'mask': nodata}, logits) is None


def test_hr_coarse_unlabelled_keeps_the_coarse_term_off_fine_labelled_pixels():
    """hr_coarse='unlabelled': the lsr term sees only pixels without a fine label
    (the paper's HR+SR); 'all' (the default) adds it where both labels exist."""
    torch.manual_seed(0)
    task = LabelSuperResolutionTask(
        model='fcn', num_filters=8, loss='hr+lsr', hr_coarse='unlabelled'
    )
    image = torch.rand(2, 4, 16, 16) * 255
    with torch.no_grad():
        logits = task(image)
    coarse = torch.full((2, 16, 16), 41)
    coarse[:, :, 8:] = 81
    fine = torch.full((2, 16, 16), 2)
    fine[1] = 0  # the second window: target region, fine nodata
    loss = task.compute_loss({'coarse': coarse, 'mask': fine}, logits)
    c = task.coarse_index(coarse)
    hr = task.hr_loss(logits, task.fine_index(fine))
    lsr_target = task.lsr_loss(logits[1:], c[1:], None)
    assert loss == pytest.approx(float(hr + lsr_target))
    lsr_all = task.lsr_loss(logits, c, None)
    assert float(lsr_all) != pytest.approx(float(lsr_target))
    every = LabelSuperResolutionTask(model='fcn', num_filters=8, loss='hr+lsr')
    every.load_state_dict(task.state_dict())
    assert every.compute_loss({'coarse': coarse, 'mask': fine}, logits) == (
        pytest.approx(float(hr + lsr_all))
    )
    with pytest.raises(ValueError, match="hr_coarse='target'"):
        LabelSuperResolutionTask(model='fcn', loss='hr+lsr', hr_coarse='target')  # type: ignore[arg-type]


def test_radiometric_augmentation_reaches_training_batches(scene):
    from geosparse.transforms import RandomRadiometry

    dm = _dm(scene, radiometric=0.3)
    assert any(isinstance(m, RandomRadiometry) for m in dm.train_aug)
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    raw = batch['image'].clone()

    class _T:
        training = True

    dm.trainer = _T()  # type: ignore[assignment]
    out = dm.on_after_batch_transfer(batch, 0)['image']
    assert out.shape == raw.shape  # flips keep the band means; the tone curve not
    assert (out.mean(dim=(2, 3)) - raw.float().mean(dim=(2, 3))).abs().min() > 0.1


def test_naive_warmup_trains_the_first_steps_with_the_soft_naive_loss(monkeypatch):
    torch.manual_seed(0)
    task = LabelSuperResolutionTask(model='fcn', num_filters=8, naive_warmup=3)
    logits = torch.randn(2, 4, 16, 16)
    coarse = torch.full((2, 16, 16), 41)
    coarse[:, :, 8:] = 82
    rows = task.coarse_index(coarse)
    naive = float(task.soft_naive(logits, rows))
    lsr = float(task.lsr_loss(logits, rows, None))
    assert naive != pytest.approx(lsr)
    clock = {'step': 0}
    monkeypatch.setattr(
        LabelSuperResolutionTask, 'global_step', property(lambda self: clock['step'])
    )
    task.train()
    for step, expected in ((0, naive), (2, naive), (3, lsr), (10, lsr)):
        clock['step'] = step
        loss = task.compute_loss({'coarse': coarse}, logits)
        assert float(loss) == pytest.approx(expected)
    task.eval()  # validation and test score the configured loss from the start
    clock['step'] = 0
    assert float(task.compute_loss({'coarse': coarse}, logits)) == pytest.approx(lsr)


def test_negative_naive_warmup_is_refused():
    with pytest.raises(ValueError, match='naive_warmup=-1'):
        LabelSuperResolutionTask(model='local', naive_warmup=-1)


def test_hr_trains_on_float_fine_labels_with_nan(scene, tmp_path):
    """NaN in a float fine raster is fine nodata through the datamodule (TorchGeo
    cast it to an arbitrary integer, which the task refused as an unknown code)."""
    import rasterio

    with rasterio.open(scene.fine) as src:
        prof, data = src.profile, src.read().astype('float32')
    data[:, :40] = float('nan')
    prof.update(dtype='float32', nodata=float('nan'))
    fine = tmp_path / scene.fine.name
    with rasterio.open(fine, 'w', **prof) as dst:
        dst.write(data)
    dm = _dm(scene, fine_paths=str(fine))
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    assert set(batch['mask'].unique().tolist()) <= {0, 1, 2, 3, 4}
    task = LabelSuperResolutionTask(model='fcn', num_filters=8, loss='hr')
    trainer = _trainer()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        trainer.fit(task, datamodule=dm)
    assert 0 <= float(trainer.callback_metrics['val_miou']) <= 1


@pytest.mark.parametrize('name', ['coarse_nodata', 'fine_nodata'])
def test_data_module_and_task_must_agree_on_nodata(scene, name):
    """A data module that marks "no label" with another code than the task is
    refused before training, naming the parameter of both (before, the data
    module's code reached the task as an unknown label)."""
    from geosparse.errors import InputError

    task = LabelSuperResolutionTask(model='fcn', num_filters=8, loss='hr+lsr')
    with pytest.raises(InputError, match=f'{name}.*data.init_args.{name}'):
        _trainer().fit(task, datamodule=_dm(scene, **{name: 255}))


@pytest.mark.parametrize(
    ('option', 'value', 'match'),
    [
        ('patch_size', 0, 'patch_size=0 must be a whole number >= 1'),
        ('batch_size', -1, 'batch_size=-1'),
        ('grid_size', 0, 'grid_size=0'),
        ('cell_size', 0.0, 'cell_size=0.0 must be a number > 0'),
        ('balance', float('nan'), 'balance=nan'),
        ('radiometric', -0.1, 'radiometric=-0.1'),
        ('val_fraction', 1.0, 'val_fraction=1.0 must be below 1'),
        ('val_fraction', -0.2, 'val_fraction=-0.2'),
    ],
)
def test_data_module_refuses_numbers_out_of_range_by_name(scene, option, value, match):
    from geosparse.errors import InputError

    with pytest.raises(InputError, match=f'LabelSuperResolutionDataModule: {match}'):
        _dm(scene, **{option: value})
