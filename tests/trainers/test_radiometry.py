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
    assert Predictor(task).matched(ImageSource.open(path)).shift is None  # off
    pred = Predictor(task, radiometry='match').matched(ImageSource.open(path))
    assert isinstance(pred.shift, RadiometricShift)
    back = pred.shift(brighter.astype(np.float32))
    assert np.abs(back - train).mean() < 2  # the new acquisition looks like training
    match = Predictor(task, radiometry='match')
    out = predict_raster(match, path, tmp_path / 'map.tif', progress=False)
    with rasterio.open(out) as src:
        assert 'radiometry' in src.tags()
    with pytest.raises(ValueError, match='radiometry='):
        Predictor(task, radiometry='auto')  # type: ignore[arg-type]


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
