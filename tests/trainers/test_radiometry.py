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
