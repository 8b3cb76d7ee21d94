import json
import math
import pickle
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate

from geosparse.cli import main
from geosparse.compat import PixelwiseRegression, SemanticSegmentation
from geosparse.inference import Predictor
from geosparse.inference.checkpoints import task_class_for

from ..conftest import random_raster, save_untrained


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


def _regression_net(tmp_path):
    """A saved FCN regression checkpoint ``reg.ckpt``, ``in.tif`` (200 px) and its output."""
    task = PixelwiseRegression(model='fcn', in_channels=3, num_outputs=1, num_filters=4)
    task = _save(task, tmp_path / 'reg.ckpt')
    image = _raster(tmp_path / 'in.tif', h=200, w=200)
    with torch.no_grad():
        return task(torch.from_numpy(image[None] / 255.0).float())[0, 0]


@pytest.fixture
def seg_ckpt(tmp_path):
    task = SemanticSegmentation(
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
        assert tags['task'] == SemanticSegmentation.__name__
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
    task = PixelwiseRegression(model='fcn', in_channels=3, num_outputs=1, num_filters=4)
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
    task = SemanticSegmentation(
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


def test_reveal_gives_the_gp_posterior_mean_and_std(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    net = _regression_net(tmp_path).numpy()
    # Two known points (pixel centres, UTM), one given in a CSV in WGS84 degrees.
    pts = gpd.GeoDataFrame(
        {'height': [30.0, 5.0]},
        geometry=[
            Point(500000 + 50.5, 4200000 - 40.5),
            Point(500000 + 150.5, 4200000 - 160.5),
        ],
        crs='EPSG:32618',
    )
    pts.to_file(tmp_path / 'pts.geojson')
    lonlat = pts.to_crs('EPSG:4326')
    lonlat.assign(lon=lonlat.geometry.x, lat=lonlat.geometry.y).drop(
        columns='geometry'
    ).to_csv(tmp_path / 'pts.csv', index=False)
    base = [
        'predict',
        '--checkpoint',
        str(tmp_path / 'reg.ckpt'),
        str(tmp_path / 'in.tif'),
    ]
    base += ['--block', '128', '--halo', '32', '--quiet', '--value', 'height']
    base += ['--lengthscale', '6', '--kernel-variance', '100', '--noise', '0.0001']
    for name in ('pts.geojson', 'pts.csv'):
        out = tmp_path / name.replace('.', '_')
        assert main([*base, '--reveal', str(tmp_path / name), '--out', str(out)]) == 0
        with rasterio.open(out / 'in_regression.tif') as src:
            mean, std = src.read()
            assert src.descriptions == ('mean', 'std')
            assert json.loads(src.tags()['kernel'])['lengthscale'] == 6
        assert mean[40, 50] == pytest.approx(30.0, abs=0.01)
        assert mean[160, 150] == pytest.approx(5.0, abs=0.01)
        assert std[40, 50] < 0.1 and std[160, 150] < 0.1
        assert std[100, 100] == pytest.approx(10.0, abs=1e-3)  # prior std far away
        np.testing.assert_allclose(mean[100:110, 0:10], net[100:110, 0:10], atol=1e-4)


def test_reveal_errors_name_the_fix(tmp_path, seg_ckpt, capsys):
    _, ckpt = seg_ckpt
    _raster(tmp_path / 'in.tif', h=32, w=32)
    (tmp_path / 'p.csv').write_text('lon,lat,v\n-75,39,1\n')
    args = ['predict', '--checkpoint', str(ckpt), str(tmp_path / 'in.tif'), '--out']
    args += [str(tmp_path / 'o'), '--reveal', str(tmp_path / 'p.csv')]
    assert main(args) == 2
    assert '--reveal needs --value' in capsys.readouterr().err
    assert main([*args, '--value', 'v']) == 2
    assert 'needs a regression model' in capsys.readouterr().err
    reg = PixelwiseRegression(model='fcn', in_channels=3, num_outputs=1, num_filters=4)
    with pytest.raises(ValueError, match='--lengthscale'):
        Predictor(reg, reveal=(np.zeros((1, 2)), np.ones(1)))
    assert (
        main([*args, '--value', 'w', '--lengthscale', '3', '--kernel-variance', '1'])
        == 2
    )
    assert "no value column 'w'" in capsys.readouterr().err
    assert (
        main([*args, '--value', 'v', '--lengthscale', '3', '--kernel-variance', '1'])
        == 2
    )
    assert 'needs a regression model' in capsys.readouterr().err


def test_binary_segmentation_reads_the_sigmoid_as_two_classes():
    task = SemanticSegmentation(
        model='fcn', in_channels=3, task='binary', num_filters=4
    ).eval()
    pred = Predictor(task, probabilities=True, mean=0, std=1)
    image = np.random.default_rng(0).normal(size=(3, 20, 24)).astype(np.float32)
    out = pred(image)
    assert pred.names == ['class_0', 'class_1'] and out.shape == (4, 20, 24)
    with torch.no_grad():
        p1 = task(torch.from_numpy(image[None]))[0, 0].sigmoid().numpy()
    np.testing.assert_array_equal(out[0], (p1 > 0.5).astype(np.uint8))
    assert np.abs(out[3] / 254 - p1).max() <= 0.5 / 254 + 1e-6


def test_reveal_refits_the_kernel_on_the_known_points_by_default(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    from geosparse.gp.kernels import rbf

    net = _regression_net(tmp_path).double()
    # 150 known points: the network plus a GP residual 9x the kernel given below.
    gen = torch.Generator().manual_seed(1)
    rc = torch.randint(0, 200, (150, 2), generator=gen)
    centres = rc.double() + 0.5
    k = rbf(centres, centres, 15.0, 9.0) + 0.09 * torch.eye(150, dtype=torch.float64)
    resid = torch.linalg.cholesky(k) @ torch.randn(
        150, generator=gen, dtype=torch.float64
    )
    values = net[rc[:, 0], rc[:, 1]] + resid
    pts = gpd.GeoDataFrame(
        {'h': values.numpy()},
        geometry=[Point(500000 + c + 0.5, 4200000 - r - 0.5) for r, c in rc.tolist()],
        crs='EPSG:32618',
    )
    known, held = pts.iloc[:100], pts.iloc[100:]
    known.to_file(tmp_path / 'pts.gpkg')
    base = ['predict', '--checkpoint', str(tmp_path / 'reg.ckpt')]
    base += [str(tmp_path / 'in.tif'), '--block', '128', '--halo', '32', '--quiet']
    base += ['--reveal', str(tmp_path / 'pts.gpkg'), '--value', 'h']
    # A kernel far too narrow and too sure: what a network that fitted its training
    # points leaves.
    base += ['--lengthscale', '2', '--kernel-variance', '0.1', '--noise', '0.001']
    out = {}
    for flag in ('--no-refit', '--refit'):
        folder = tmp_path / flag.strip('-')
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            assert main([*base, flag, '--out', str(folder)]) == 0
        # The re-fitted length-scale (~15 px) reaches beyond the 32 px halo, but
        # every block is conditioned on the points within reach, in it or not.
        assert not [w for w in caught if 'halo' in str(w.message)]
        with rasterio.open(folder / 'in_regression.tif') as src:
            mean, std = src.read()
            out[flag] = (mean, std, json.loads(src.tags()['kernel']))
    # So the map in blocks of 128 px is the map in one block: no block edges.
    base[base.index('--block') + 1] = '256'
    assert main([*base, '--refit', '--out', str(tmp_path / 'one')]) == 0
    with rasterio.open(tmp_path / 'one' / 'in_regression.tif') as src:
        whole = src.read()
    np.testing.assert_allclose(out['--refit'][0], whole[0], rtol=0, atol=1e-3)
    np.testing.assert_allclose(out['--refit'][1], whole[1], rtol=0, atol=1e-3)
    r, c = rc[100:, 0].numpy(), rc[100:, 1].numpy()
    truth = held['h'].to_numpy()
    fitted = out['--refit'][2]
    assert out['--no-refit'][2]['variance'] == 0.1
    assert (
        fitted['source'] == 'refit on the revealed points' and fitted['points'] == 100
    )
    assert 7 < fitted['lengthscale'] < 30 and 3 < fitted['variance'] < 27
    assert abs(fitted['trend']['slope'] - 1) < 0.5
    item = json.loads((tmp_path / 'refit' / 'in_regression.json').read_text())
    assert item['properties']['geosparse:kernel'] == fitted
    # Fitted on half of the points, conditioned on all of them.
    known.iloc[50:].to_file(tmp_path / 'fit.gpkg')
    folder = tmp_path / 'refit_on'
    args = [*base, '--refit-on', str(tmp_path / 'fit.gpkg'), '--out', str(folder)]
    assert main(args) == 0
    with rasterio.open(folder / 'in_regression.tif') as src:
        tags = src.tags()
    assert json.loads(tags['kernel'])['points'] == 50
    assert json.loads(tags['revealed_points']) == 100
    # The three trends were compared (the network explains the points here).
    scores = json.loads(tags['kernel'])['loo_nlpd_by_drift']
    assert set(scores) == {'bands', 'network', 'kriging'}
    assert json.loads(tags['kernel'])['drift'] != 'kriging', scores
    # Forced, the kriging trend leaves the network out and is fitted on all 100.
    folder = tmp_path / 'kriging'
    assert main([*args[:-1], str(folder), '--drift', 'kriging']) == 0
    with rasterio.open(folder / 'in_regression.tif') as src:
        forced = json.loads(src.tags()['kernel'])
        kriged = src.read(1)
    assert forced['drift'] == 'kriging' and forced['points'] == 100
    assert forced['trend']['slope'] == 0.0 and len(forced['trend']['bands']) == 3
    assert 'loo_nlpd_by_drift' not in forced
    with rasterio.open(tmp_path / 'refit_on' / 'in_regression.tif') as src:
        assert not np.allclose(kriged, src.read(1))
    bad = [*base, '--no-refit', '--refit-on', str(tmp_path / 'fit.gpkg')]
    assert main([*bad, '--out', str(tmp_path / 'bad')]) == 2
    err = {f: np.sqrt(np.mean((m[r, c] - truth) ** 2)) for f, (m, _, _) in out.items()}
    assert err['--refit'] < 0.7 * err['--no-refit'], err
    # The std covers the held-out errors (within 2 sd: about 95 %) after the re-fit
    # only; the trained kernel's std is far too narrow.
    for flag, low, high in (('--refit', 0.85, 1.0), ('--no-refit', 0.0, 0.5)):
        mean, std, _ = out[flag]
        within = np.mean(np.abs(mean[r, c] - truth) <= 2 * std[r, c])
        assert low <= within <= high, (flag, within)


def test_drift_on_the_bands_makes_the_map_regression_kriging(tmp_path, capsys):
    """A label the image band explains but the network does not: --drift bands."""
    import geopandas as gpd
    from shapely.geometry import Point

    _regression_net(tmp_path)
    with rasterio.open(tmp_path / 'in.tif') as src:
        band = src.read(1).astype(np.float64)
    rng = np.random.default_rng(2)
    rc = rng.integers(0, 200, (200, 2))
    values = 0.2 * band[rc[:, 0], rc[:, 1]] + rng.normal(0, 0.5, 200)
    pts = gpd.GeoDataFrame(
        {'h': values},
        geometry=[Point(500000 + c + 0.5, 4200000 - r - 0.5) for r, c in rc.tolist()],
        crs='EPSG:32618',
    )
    pts.iloc[:100].to_file(tmp_path / 'pts.gpkg')
    base = ['predict', '--checkpoint', str(tmp_path / 'reg.ckpt')]
    base += [str(tmp_path / 'in.tif'), '--block', '128', '--halo', '32', '--quiet']
    base += ['--reveal', str(tmp_path / 'pts.gpkg'), '--value', 'h']
    base += ['--lengthscale', '5', '--kernel-variance', '1']
    err, kernels = {}, {}
    for drift in ('auto', 'bands', 'network'):
        folder = tmp_path / drift
        flags = [] if drift == 'auto' else ['--drift', drift]  # auto: the default
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # the halo warning
            assert main([*base, *flags, '--out', str(folder)]) == 0
        with rasterio.open(folder / 'in_regression.tif') as src:
            mean = src.read(1)
            kernels[drift] = json.loads(src.tags()['kernel'])
        held = mean[rc[100:, 0], rc[100:, 1]] - values[100:]
        err[drift] = float(np.sqrt(np.mean(held**2)))
    trend = kernels['bands']['trend']
    assert len(trend['bands']) == 3 and abs(trend['bands'][0] - 0.2) < 0.02
    assert 'bands' not in kernels['network']['trend']
    # The default selects the bands by leave-one-out likelihood, and says so.
    assert kernels['auto']['drift'] == 'bands' and err['auto'] == err['bands']
    by_drift = kernels['auto']['loo_nlpd_by_drift']
    assert by_drift['bands'] < by_drift['network']
    assert err['bands'] < 1.0 < 5 * 1.0 < err['network'], err
    with pytest.raises(
        ValueError, match="drift must be 'auto', 'bands', 'network' or 'kriging'"
    ):
        Predictor(
            PixelwiseRegression(model='fcn', in_channels=3, num_outputs=1),
            drift='linear',  # type: ignore[arg-type]
        )
    # Without known points, --drift has nothing to act on, and says so.
    capsys.readouterr()
    args = ['predict', '--checkpoint', str(tmp_path / 'reg.ckpt'), '--quiet']
    args += [str(tmp_path / 'in.tif'), '--drift', 'network', '--out']
    assert main([*args, str(tmp_path / 'plain')]) == 0
    assert '--drift network is unused' in capsys.readouterr().err


def test_calibrate_is_replaced_by_refit(tmp_path, capsys):
    task = PixelwiseRegression(model='fcn', in_channels=3, num_outputs=1, num_filters=4)
    _save(task, tmp_path / 'reg.ckpt')
    _raster(tmp_path / 'in.tif', h=32, w=32)
    args = [
        'predict',
        '--checkpoint',
        str(tmp_path / 'reg.ckpt'),
        str(tmp_path / 'in.tif'),
    ]
    assert main([*args, '--out', str(tmp_path / 'o'), '--calibrate']) == 2
    assert '--calibrate is replaced by --refit' in capsys.readouterr().err


def test_kernel_family_shapes_the_posterior(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    net = _regression_net(tmp_path).numpy()
    pts = gpd.GeoDataFrame(
        {'h': [40.0]},
        geometry=[Point(500000 + 100.5, 4200000 - 100.5)],
        crs='EPSG:32618',
    )
    pts.to_file(tmp_path / 'one.gpkg')
    base = [
        'predict',
        '--checkpoint',
        str(tmp_path / 'reg.ckpt'),
        str(tmp_path / 'in.tif'),
    ]
    base += ['--quiet', '--reveal', str(tmp_path / 'one.gpkg'), '--value', 'h']
    base += ['--lengthscale', '10', '--kernel-variance', '4', '--noise', '1e-6']
    std = {}
    for family in ('rbf', 'matern12'):
        out = tmp_path / family
        assert main([*base, '--kernel-family', family, '--out', str(out)]) == 0
        with rasterio.open(out / 'in_regression.tif') as src:
            mean, std[family] = src.read()
            assert json.loads(src.tags()['kernel'])['type'] == family
        assert mean[100, 100] == pytest.approx(40.0, abs=0.01)
    # 5 px from the point: the RBF correlation is exp(-1/8), the exponential exp(-1/2).
    for family, rho in (('rbf', math.exp(-0.125)), ('matern12', math.exp(-0.5))):
        assert std[family][100, 105] == pytest.approx(
            2 * math.sqrt(1 - rho**2), rel=1e-3
        )
    assert np.allclose(std['rbf'][0, 0], 2.0) and net.shape == (200, 200)


def test_bytes_do_not_depend_on_the_thread_counts(tmp_path):
    """torch's and dask's thread counts change float sums in the last bit, enough to
    move a quantised uncertainty (2 pixels of this map with torch's own threads); the
    predictor runs every block on one torch thread so the COG's bytes stay the same
    (a 2-worker cluster too: tests/test_cli.py), and the caller's torch setting
    comes back afterwards."""
    from geosparse.inference.predict import predict_raster
    from geosparse.trainers import LabelSuperResolutionTask

    torch.manual_seed(0)
    save_untrained(LabelSuperResolutionTask(backbone='resnet18'), tmp_path / 'lsr.ckpt')
    image = tmp_path / 'in.tif'
    _raster(image, bands=4, h=192, w=192)
    before = torch.get_num_threads()
    outs = []
    try:
        for torch_threads, dask_threads in ((1, 1), (2, 2), (2, 1)):
            torch.set_num_threads(torch_threads)
            out = tmp_path / f'out_{torch_threads}_{dask_threads}.tif'
            pred = Predictor(checkpoint=tmp_path / 'lsr.ckpt')
            predict_raster(
                pred, image, out, block=64, halo=8, threads=dask_threads, progress=False
            )
            assert torch.get_num_threads() == torch_threads
            outs.append(out.read_bytes())
    finally:
        torch.set_num_threads(before)
    assert outs[0] == outs[1] == outs[2]
