import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate

from geosparse.inference.blocks import predict_blocks
from geosparse.trainers import LabelSuperResolutionTask

from ..conftest import random_raster


def _raster(path, h=700, w=600, nodata=None, seed=0):
    return random_raster(path, 4, h, w, nodata, seed)


def _model():
    torch.manual_seed(0)
    task = LabelSuperResolutionTask(model='fcn', num_filters=4, standardize='none')
    return task.eval()


def _probs(task, image):
    with torch.no_grad():
        return task(torch.from_numpy(image[None].astype(np.float32))).softmax(1)[0]


@pytest.mark.parametrize('block', [256, 512])
def test_blocks_equal_one_forward_pass(tmp_path, block):
    # The FCN's receptive field is 11 px, so a halo of 8 hides every seam.
    image = _raster(tmp_path / 'in.tif')
    task = _model()

    def fn(img, coarse):
        return _probs(task, img).numpy()

    out = predict_blocks(
        tmp_path / 'in.tif',
        fn,
        tmp_path / 'out.tif',
        count=4,
        dtype='float32',
        nodata=None,
        block=block,
        halo=8,
        progress=False,
    )
    with rasterio.open(out) as src:
        got = src.read()
        assert src.crs.to_epsg() == 32618 and src.transform.c == 500000
    np.testing.assert_allclose(got, _probs(task, image).numpy(), atol=1e-5)
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors


def test_without_halo_blocks_show_seams(tmp_path):
    # The same check can fail: with no halo the block edges differ.
    image = _raster(tmp_path / 'in.tif')
    task = _model()
    out = predict_blocks(
        tmp_path / 'in.tif',
        lambda img, c: _probs(task, img).numpy(),
        tmp_path / 'out.tif',
        count=4,
        dtype='float32',
        nodata=None,
        block=256,
        halo=0,
        progress=False,
    )
    with rasterio.open(out) as src:
        got = src.read()
    assert np.abs(got - _probs(task, image).numpy()).max() > 1e-3


def test_nodata_is_carried_and_coarse_reaches_the_model(tmp_path, scene):
    data = _raster(tmp_path / 'in.tif', h=300, w=300, nodata=0)
    with rasterio.open(tmp_path / 'in.tif', 'r+') as dst:
        data[:, :40, :50] = 0
        dst.write(data)
    seen = []

    def fn(img, coarse):
        seen.append(coarse is not None)
        return np.ones((1, *img.shape[1:]), dtype=np.uint8)

    out = predict_blocks(
        tmp_path / 'in.tif',
        fn,
        tmp_path / 'out.tif',
        count=1,
        coarse_path=scene.coarse,
        block=128,
        halo=4,
        progress=False,
    )
    with rasterio.open(out) as src:
        band = src.read(1)
        assert src.nodata == 255
    assert (band[:40, :50] == 255).all() and (band[40:] == 1).all()
    assert seen and all(seen)


def test_a_failing_block_leaves_nothing_at_the_output(tmp_path):
    _raster(tmp_path / 'in.tif', h=300, w=300)
    calls = []

    def fn(img, coarse):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError('model exploded')
        return np.zeros((1, *img.shape[1:]), dtype=np.uint8)

    with pytest.raises(RuntimeError, match='model exploded'):
        predict_blocks(
            tmp_path / 'in.tif',
            fn,
            tmp_path / 'out' / 'map.tif',
            count=1,
            block=128,
            halo=0,
            progress=False,
        )
    assert not (tmp_path / 'out' / 'map.tif').exists()
    assert list((tmp_path / 'out').iterdir()) == []


def test_wrong_output_shape_names_the_block(tmp_path):
    _raster(tmp_path / 'in.tif', h=100, w=100)
    with pytest.raises(ValueError, match=r'block rows 0:100.*expected \(2, 100, 100\)'):
        predict_blocks(
            tmp_path / 'in.tif',
            lambda img, c: np.zeros((1, 100, 100)),
            tmp_path / 'o.tif',
            count=2,
            progress=False,
        )


def test_progress_bar_counts_every_block(tmp_path, capsys):
    _raster(tmp_path / 'in.tif', h=300, w=300)
    predict_blocks(
        tmp_path / 'in.tif',
        lambda img, c: img[:1].astype(np.uint8),
        tmp_path / 'o.tif',
        count=1,
        block=128,
        progress=True,
    )
    assert '9/9' in capsys.readouterr().err


def test_a_failing_block_on_a_cluster_leaves_nothing(tmp_path):
    from distributed import Client, LocalCluster

    _raster(tmp_path / 'in.tif', h=300, w=300)

    def fn(img, coarse):
        if img.shape[1] < 100:  # the last row of blocks
            raise RuntimeError('model exploded on a worker')
        return np.zeros((1, *img.shape[1:]), dtype=np.uint8)

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        with pytest.raises(RuntimeError, match='exploded on a worker'):
            predict_blocks(
                tmp_path / 'in.tif',
                fn,
                tmp_path / 'out' / 'map.tif',
                count=1,
                block=128,
                halo=0,
                scheduler=client,
                progress=False,
            )
    assert list((tmp_path / 'out').iterdir()) == []
