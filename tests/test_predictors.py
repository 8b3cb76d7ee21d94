import json
import pickle

import lightning.pytorch as pl
import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate
from torchgeo.trainers import PixelwiseRegressionTask, SemanticSegmentationTask

from geosparse.cli import main
from geosparse.predictors import Predictor, task_class_for

from .conftest import random_raster


def _raster(path, bands=3, h=300, w=260, seed=0, nodata=None):
    return random_raster(path, bands, h, w, nodata, seed)


def _save(task, path):
    torch.manual_seed(0)
    for p in task.parameters():
        torch.nn.init.normal_(p, std=0.3)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return task.eval()


@pytest.fixture
def seg_ckpt(tmp_path):
    task = SemanticSegmentationTask(
        model='fcn', in_channels=3, num_classes=3, num_filters=4
    )
    return _save(task, tmp_path / 'seg.ckpt'), tmp_path / 'seg.ckpt'


def test_torchgeo_segmentation_checkpoint_through_the_cli(tmp_path, seg_ckpt, capsys):
    task, ckpt = seg_ckpt
    image = _raster(tmp_path / 'in.tif')
    out = tmp_path / 'maps'
    code = main(
        [
            'predict',
            '--checkpoint',
            str(ckpt),
            str(tmp_path / 'in.tif'),
            '--out',
            str(out),
            '--probabilities',
            '--class-names',
            'a,b,c',
            '--block',
            '128',
            '--halo',
            '8',
            '--quiet',
        ]
    )
    assert code == 0, capsys.readouterr().err
    cog = out / 'in_segmentation.tif'
    assert cog_validate(str(cog))[0]
    with rasterio.open(cog) as src:
        got = src.read()
        assert src.descriptions == ('class', 'uncertainty')
        assert src.colormap(1)[0][3] == 255
        assert src.tags(ns='IMAGE_STRUCTURE')['PREDICTOR'] == '2'
        assert src.block_shapes[0] == (512, 512) and src.nodata == 255
        tags = src.tags()
        assert tags['task'] == 'SemanticSegmentationTask'
        assert len(tags['checkpoint_sha256']) == 64
        assert json.loads(tags['class_names']) == ['a', 'b', 'c']
    probs_cog = out / 'in_segmentation_probabilities.tif'
    assert cog_validate(str(probs_cog))[0]
    with rasterio.open(probs_cog) as src:
        assert src.descriptions == ('p_a', 'p_b', 'p_c')
        assert src.scales[0] == pytest.approx(1 / 254)
        got = np.concatenate([got, src.read()])
    # TorchGeo's default datamodule normalisation (x / 255), one pass over the
    # whole raster: the FCN's receptive field fits in the halo, so blocks agree.
    with torch.no_grad():
        ref = task(torch.from_numpy(image[None] / 255.0).float()).softmax(1)[0]
    probs = got[2:].astype(np.float64) / 254
    assert np.abs(probs - ref.numpy()).max() <= 0.5 / 254 + 1e-6
    assert (got[0] == ref.argmax(0).numpy()).mean() > 0.999
    item = json.loads((out / 'in_segmentation.json').read_text())
    classes = item['assets']['data']['classification:classes']
    assert [c['name'] for c in classes] == ['a', 'b', 'c']
    assert item['properties']['proj:code'] == 'EPSG:32618'
    assert item['properties']['proj:shape'] == [300, 260]
    assert item['assets']['probabilities']['href'] == './' + probs_cog.name
    assert len(item['assets']['probabilities']['raster:bands']) == 3


def test_torchgeo_regression_checkpoint_writes_the_mean(tmp_path):
    task = PixelwiseRegressionTask(
        model='fcn', in_channels=3, num_outputs=1, num_filters=4
    )
    task = _save(task, tmp_path / 'reg.ckpt')
    image = _raster(tmp_path / 'in.tif', nodata=0)
    with rasterio.open(tmp_path / 'in.tif', 'r+') as dst:
        image[:, :10, :10] = 0
        dst.write(image)
    args = ['predict', '--checkpoint', str(tmp_path / 'reg.ckpt'), '--quiet']
    args += [str(tmp_path / 'in.tif'), '--out', str(tmp_path / 'o'), '--halo', '8']
    args += ['--mean', '10,20,30', '--std', '50']
    assert main(args) == 0
    with rasterio.open(tmp_path / 'o' / 'in_regression.tif') as src:
        got = src.read(1)
        assert src.dtypes[0] == 'float32' and np.isnan(src.nodata)
        assert src.tags(ns='IMAGE_STRUCTURE')['PREDICTOR'] == '3'
        assert src.descriptions == ('mean',)
    x = (
        torch.from_numpy(image[None]).float()
        - torch.tensor([10.0, 20, 30])[:, None, None]
    ) / 50
    with torch.no_grad():
        ref = task(x)[0, 0].numpy()
    assert np.isnan(got[:10, :10]).all()
    np.testing.assert_allclose(got[10:], ref[10:], rtol=1e-4, atol=1e-4)


def test_predictor_pickles_to_its_checkpoint(tmp_path, seg_ckpt):
    _, ckpt = seg_ckpt
    image = _raster(tmp_path / 'in.tif', h=64, w=64).astype(np.float32)
    pred = Predictor(checkpoint=ckpt)
    blob = pickle.dumps(pred)
    assert len(blob) < 2000  # the weights stay behind
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again(image), pred(image))


def test_unet_windows_of_any_size_are_padded(tmp_path):
    task = SemanticSegmentationTask(
        model='unet', backbone='resnet18', in_channels=3, num_classes=2, weights=None
    ).eval()
    pred = Predictor(task)
    out = pred(np.zeros((3, 70, 45), dtype=np.float32))
    assert out.shape == (2, 70, 45)


def test_bad_inputs_are_named(tmp_path, seg_ckpt):
    with pytest.raises(ValueError, match='--task'):
        task_class_for({'lr': 0.1})
    _, ckpt = seg_ckpt
    pred = Predictor(checkpoint=ckpt, mean=[1, 2])
    with pytest.raises(ValueError, match='one value or one per band'):
        pred(np.zeros((3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match='trained on 3'):
        Predictor(checkpoint=ckpt)(np.zeros((4, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match='class_names has 2 names'):
        Predictor(checkpoint=ckpt, class_names=['a', 'b'])
