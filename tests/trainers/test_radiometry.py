import json

import numpy as np
import pytest
import rasterio
import torch

from geosparse.datasets import RadiometricShift
from geosparse.inference import Predictor
from geosparse.inference.predict import predict_raster
from geosparse.io.source import ImageSource
from geosparse.trainers import LabelSuperResolutionTask, brief_trainer

from ..conftest import random_raster, save_untrained
from .test_lsr import _dm


def test_the_task_counts_the_training_imagery_only(scene):
    from lightning.pytorch import Callback

    seen = []

    class Grab(Callback):  # the windows the network trains on
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch['image'].clone())

    task = LabelSuperResolutionTask(num_filters=8)
    assert task.reference_quantiles() is None  # nothing seen yet
    trainer = brief_trainer(2, val_batches=1)
    trainer.callbacks.append(Grab())
    trainer.fit(task, datamodule=_dm(scene))
    counts = task.radiometry_counts
    assert counts.shape == (4, 1024)
    assert counts.sum(1).tolist() == [2 * 2 * 64 * 64] * 4  # training windows only
    ref = task.reference_quantiles()
    pixels = torch.cat(seen).transpose(0, 1).reshape(4, -1).numpy()
    for b in range(4):  # the windows' own quantiles, to a grey level
        want = np.quantile(pixels[b], [0.1, 0.5, 0.9])
        assert ref[b, [10, 50, 90]] == pytest.approx(want, abs=1.5)
        assert np.all(np.diff(ref[b]) >= 0)


def test_a_checkpoint_without_the_histogram_still_loads(tmp_path):
    task = LabelSuperResolutionTask(num_filters=8)
    path = save_untrained(task, tmp_path / 'old.ckpt')
    ckpt = torch.load(path, weights_only=True)
    del ckpt['state_dict']['radiometry_counts']  # made before the histogram existed
    del ckpt['state_dict']['radiometry_strata_counts']
    torch.save(ckpt, path)
    pred = Predictor(checkpoint=path, radiometry='match')
    assert pred.reference_quantiles() is None
    random_raster(tmp_path / 'in.tif', h=32, w=32)
    src = ImageSource.open(tmp_path / 'in.tif')
    assert pred.matched(src) is pred  # nothing to match onto: raw values


def test_predictor_matches_a_raster_onto_the_training_radiometry(tmp_path):
    task = LabelSuperResolutionTask(num_filters=8)
    rng = np.random.default_rng(0)
    train = rng.integers(40, 120, (4, 64, 64)).astype(np.float64)
    task.radiometry_counts[:] = 0
    for b in range(4):  # as if trained on `train`
        idx = np.rint(train[b] / 255 * 1023).astype(int).ravel()
        task.radiometry_counts[b] += torch.bincount(
            torch.from_numpy(idx), minlength=1024
        )
    brighter = np.clip(train * 1.6 + 20, 0, 255).astype(np.uint8)  # another acquisition
    path = tmp_path / 'new.tif'
    from ..conftest import write_raster

    write_raster(path, brighter)
    off = Predictor(task, radiometry='off')
    assert off.matched(ImageSource.open(path)).shift is None
    pred = Predictor(task, radiometry='match').matched(ImageSource.open(path))
    assert isinstance(pred.shift, RadiometricShift)
    back = pred.shift(brighter.astype(np.float32))
    assert np.abs(back - train).mean() < 2  # the new acquisition looks like training
    match = Predictor(task, radiometry='match')
    out = predict_raster(match, path, tmp_path / 'map.tif', progress=False)
    with rasterio.open(out) as src:
        assert 'radiometry' in src.tags()
    with pytest.raises(ValueError, match='radiometry='):
        Predictor(task, radiometry='always')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='radiometry_threshold'):
        Predictor(task, radiometry_threshold=float('nan'))


def _trained_on(train: np.ndarray) -> LabelSuperResolutionTask:
    task = LabelSuperResolutionTask(num_filters=8)
    task.radiometry_counts[:] = 0
    for b in range(train.shape[0]):  # as if trained on `train`
        idx = np.rint(train[b] / 255 * 1023).astype(int).ravel()
        task.radiometry_counts[b] += torch.bincount(
            torch.from_numpy(idx), minlength=1024
        )
    return task


@pytest.mark.parametrize(
    ('gain', 'offset', 'matched'),
    [(1.0, 0.0, False), (1.05, 2.0, False), (0.3, 150.0, True)],
)
def test_auto_matches_only_a_raster_far_from_the_training_radiometry(
    tmp_path, gain, offset, matched
):
    from ..conftest import write_raster

    rng = np.random.default_rng(1)
    train = rng.integers(40, 120, (4, 64, 64)).astype(np.float64)
    task = _trained_on(train)
    new = np.clip(rng.integers(40, 120, (4, 64, 64)) * gain + offset, 0, 255)
    path = tmp_path / 'new.tif'
    write_raster(path, new.astype(np.uint8))
    pred = Predictor(task)  # auto is the default
    assert pred.radiometry == 'auto'
    out = pred.matched(ImageSource.open(path))
    assert (out.shift is not None) == matched
    report = out.radiometry_report
    assert report is not None and report['matched'] == matched
    assert (max(report['displacement']) > 0.5) == matched
    tif = predict_raster(pred, path, tmp_path / 'map.tif', progress=False)
    with rasterio.open(tif) as src:  # the decision and its reason, in the tags
        tag = json.loads(src.tags()['radiometry'])
    assert tag['mode'] == 'auto' and tag['matched'] == matched
    assert tag['threshold'] == 0.5
    # A threshold of 0 matches whatever moves at all.
    eager = Predictor(task, radiometry_threshold=0.0).matched(ImageSource.open(path))
    assert eager.shift is not None


def test_displacement_is_the_mean_quantile_distance_over_the_target_range():
    q = np.linspace(0, 1, 101)
    target = np.stack([100 * q, 100 * q])
    shift = RadiometricShift(np.stack([100 * q + 10, 100 * q]), target)
    np.testing.assert_allclose(shift.displacement(), [10 / 90, 0.0])
    # a band constant in the target: over the resolution, or 0 / inf without one
    flat = np.stack([np.full(101, 80.0), np.full(101, 80.0)])
    shift = RadiometricShift(np.stack([np.full(101, 81.0), flat[1]]), flat)
    np.testing.assert_allclose(shift.displacement(0.25), [4.0, 0.0])
    assert shift.displacement().tolist() == [np.inf, 0.0]


def test_matching_leaves_the_rasters_nodata_out(tmp_path):
    from ..conftest import write_raster

    task = LabelSuperResolutionTask(num_filters=8)
    task.radiometry_counts[:, 300:600] = 1.0  # any reference
    image = np.full((4, 32, 32), 200, np.uint8)
    image[:, :16] = 0  # half the raster is nodata
    write_raster(tmp_path / 'n.tif', image, nodata=0)
    pred = Predictor(task, radiometry='match').matched(
        ImageSource.open(tmp_path / 'n.tif')
    )
    assert pred.shift is not None and (pred.shift.source == 200).all()


def test_geosparse_predict_decides_by_itself_and_takes_a_threshold(tmp_path):
    from geosparse.cli import main

    from ..conftest import write_raster

    rng = np.random.default_rng(2)
    train = rng.integers(40, 120, (4, 64, 64)).astype(np.float64)
    train[3] = 80.0  # a band that never varied in training
    ckpt = save_untrained(_trained_on(train), tmp_path / 'lsr.ckpt')
    same = train.copy()
    same[:3] = rng.integers(40, 120, (3, 64, 64))
    write_raster(tmp_path / 'same.tif', same.astype(np.uint8))
    moved = np.clip(same * 1.1 + 8, 0, 255)  # displacement about 0.2
    moved[3] = 80.0
    write_raster(tmp_path / 'moved.tif', moved.astype(np.uint8))
    flat_moved = same.copy()
    flat_moved[3] = 90.0  # the constant band moved: always matched
    write_raster(tmp_path / 'flat.tif', flat_moved.astype(np.uint8))

    def tag(name: str, *extra: str) -> dict | None:
        out = tmp_path / f'out-{name}-{len(extra)}'
        args = ['predict', '--checkpoint', str(ckpt), str(tmp_path / f'{name}.tif')]
        assert main([*args, '--quiet', '--out', str(out), *extra]) == 0
        [tif] = out.glob('*.tif')
        with rasterio.open(tif) as src:
            found = src.tags().get('radiometry')
        return None if found is None else json.loads(found)

    kept = tag('same')  # the default is auto
    assert kept['mode'] == 'auto' and not kept['matched']
    # the constant band: quantised by the training histogram, not moved
    assert kept['displacement'][3] < 0.1 and kept['threshold'] == 0.5
    mild = tag('moved')
    assert not mild['matched'] and 0.05 < max(mild['displacement']) < 0.5
    eager = tag('moved', '--radiometry-threshold', '0.05')
    assert eager['matched'] and eager['threshold'] == 0.05
    flat = tag('flat')
    assert flat['matched'] and flat['displacement'][3] > 10  # 10 grey levels / bin
    assert tag('flat', '--radiometry', 'off') is None  # raw values, nothing decided


def test_the_task_counts_the_training_imagery_per_coarse_class(scene):
    from lightning.pytorch import Callback

    seen = []

    class Grab(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((batch['image'].clone(), batch['coarse'].clone()))

    task = LabelSuperResolutionTask(num_filters=8)
    trainer = brief_trainer(2, val_batches=1)
    trainer.callbacks.append(Grab())
    trainer.fit(task, datamodule=_dm(scene))
    per = task.radiometry_strata_counts
    assert per.shape == (task.table.num_coarse, 4, 1024)
    image = torch.cat([s[0] for s in seen])
    rows = task.coarse_index(torch.cat([s[1] for s in seen]))
    assert len(rows.unique()) > 1
    for z in rows.unique().tolist():
        if z < 0:
            continue
        pixels = image.permute(1, 0, 2, 3)[:, rows == z]  # (bands, n) of class z
        idx = (pixels.double() / 255 * 1023).round().clamp(0, 1023).long()
        for b in range(4):
            want = torch.bincount(idx[b], minlength=1024).double()
            torch.testing.assert_close(per[z, b], want)
    # the classes the windows never held stay empty
    unseen = [z for z in range(per.shape[0]) if z not in rows.unique().tolist()]
    assert all(float(per[z].sum()) == 0 for z in unseen)


def _two_class_task(dark: np.ndarray, bright: np.ndarray) -> LabelSuperResolutionTask:
    """A task as if trained on equal shares of a dark (NLCD 41) and a bright (82) class."""
    task = LabelSuperResolutionTask(num_filters=8)
    rows = task.table.coarse_codes.index(41), task.table.coarse_codes.index(82)
    for row, pixels in zip(rows, (dark, bright), strict=True):
        for b in range(4):
            idx = np.rint(pixels[b] / 255 * 1023).astype(int).ravel()
            h = torch.bincount(torch.from_numpy(idx), minlength=1024).double()
            task.radiometry_strata_counts[row, b] += h
            task.radiometry_counts[b] += h
    return task


def test_matching_in_the_rasters_land_cover_corrects_the_acquisition_only(tmp_path):
    """Pooled matching forces the training windows' 50/50 land cover on a raster
    that is 90 % forest; mixed in the raster's own NLCD shares it does not."""
    from ..conftest import write_raster

    rng = np.random.default_rng(3)
    dark = rng.normal(60, 6, (4, 64, 64)).clip(0, 255)
    bright = rng.normal(170, 6, (4, 64, 64)).clip(0, 255)
    task = _two_class_task(dark, bright)
    # the raster: 90 % forest (dark), 10 % pasture (bright), another acquisition
    nlcd = np.full((64, 64), 41, np.uint8)
    nlcd[:, :6] = 82
    truth = np.where(nlcd == 41, rng.normal(60, 6, (4, 64, 64)), 0)
    truth = np.where(nlcd == 82, rng.normal(170, 6, (4, 64, 64)), truth)
    raster = np.clip(truth * 0.8 + 25, 0, 255).astype(np.uint8)
    write_raster(tmp_path / 'r.tif', raster)
    write_raster(tmp_path / 'nlcd.tif', nlcd[None])
    src = ImageSource.open(tmp_path / 'r.tif')
    base = Predictor(task, radiometry='match')
    pooled = base.matched(src)
    mixed = base.matched(src, coarse=tmp_path / 'nlcd.tif')
    arrays = base.matched([raster.astype(np.float64)], coarse=[nlcd])
    assert pooled.radiometry_report['reference'] == 'pooled'
    assert mixed.radiometry_report['reference'] == 'land-cover composition'
    np.testing.assert_allclose(mixed.shift.target, arrays.shift.target)

    def error(pred):
        return float(np.abs(pred.shift(raster.astype(np.float32)) - truth).mean())

    assert error(mixed) < 4 < 30 < error(pooled)
    # a composition the task never saw (open water only): the pooled reference
    water = np.full((64, 64), 11, np.uint8)
    other = base.matched([raster.astype(np.float64)], coarse=[water])
    assert other.radiometry_report['reference'] == 'pooled'
    np.testing.assert_allclose(other.shift.target, pooled.shift.target)
    with pytest.raises(ValueError, match='shares'):
        task.reference_quantiles(composition=np.ones(3))


def test_geosparse_predict_matches_in_the_land_cover_of_coarse(tmp_path, capsys):
    from geosparse.cli import main

    from ..conftest import write_raster

    rng = np.random.default_rng(4)
    task = _two_class_task(
        rng.normal(60, 6, (4, 64, 64)).clip(0, 255),
        rng.normal(170, 6, (4, 64, 64)).clip(0, 255),
    )
    task.hparams['prior_weight'] = 1.0  # coarse labels also combine with the map
    ckpt = save_untrained(task, tmp_path / 'lsr.ckpt')
    image = rng.normal(60, 6, (4, 64, 64)) * 0.5 + 20  # forest, another acquisition
    write_raster(tmp_path / 'r.tif', image.clip(0, 255).astype(np.uint8))
    write_raster(tmp_path / 'nlcd.tif', np.full((1, 64, 64), 41, np.uint8))

    def tag(*extra: str) -> dict:
        out = tmp_path / f'out{len(extra)}'
        args = ['predict', '--checkpoint', str(ckpt), str(tmp_path / 'r.tif')]
        assert main([*args, '--quiet', '--out', str(out), *extra]) == 0
        with rasterio.open(out / 'r_landcover.tif') as src:
            return src.tags()

    import geosparse.inference.predict as predict_module
    import geosparse.inference.predictor as predictor_module

    reads = []
    read = predict_module.read_coarse_on_grid
    # one read on the decimated grid serves the code check and the composition
    with pytest.MonkeyPatch.context() as mp:
        for module in (predict_module, predictor_module):
            mp.setattr(
                module,
                'read_coarse_on_grid',
                lambda *a, **k: reads.append(a) or read(*a, **k),
            )
        with_coarse = tag('--coarse', str(tmp_path / 'nlcd.tif'))
    assert len(reads) == 1
    assert 'is not used' not in capsys.readouterr().err  # it sets the reference
    report = json.loads(with_coarse['radiometry'])
    assert report['matched'] and report['reference'] == 'land-cover composition'
    assert with_coarse['coarse'] == 'nlcd.tif'
    # forest only: mapped onto the forest's values (60 +- 6), not onto the pooled
    # training windows', half of them pasture (170)
    for band in report['bands']:
        assert abs(band['p50'][1] - 60) < 4 and band['p95'][1] < 80
    pooled = json.loads(tag()['radiometry'])
    assert pooled['reference'] == 'pooled'
    assert all(band['p95'][1] > 150 for band in pooled['bands'])
