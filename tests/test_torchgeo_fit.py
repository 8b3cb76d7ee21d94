import shutil

import torch

from geosparse.datasets import make_scene

from ._scripts import run_python
from .conftest import ROOT


def torchgeo_fit(config, cwd, *overrides):
    """Run ``torchgeo fit`` on an example config for 2 steps; the runs folder."""
    cmd = [
        shutil.which('torchgeo') or 'torchgeo',
        'fit',
        '--config',
        str(ROOT / 'examples' / 'configs' / config),
        '--trainer.max_steps',
        '2',
        '--trainer.limit_val_batches',
        '1',
        '--data.init_args.batch_size',
        '2',
        '--data.init_args.length',
        '4',
        '--trainer.default_root_dir',
        str(cwd / 'runs'),
        *overrides,
    ]
    run_python(*cmd, cwd=cwd)
    return cwd / 'runs'


def test_torchgeo_fit_with_example_config(tmp_path):
    make_scene(tmp_path / 'data' / 'synthetic', size=256, seed=1)
    runs = torchgeo_fit(
        'lsr_synthetic.yaml',
        tmp_path,
        '--data.init_args.patch_size',
        '64',
        '--model.init_args.backbone',
        'resnet18',
    )
    assert list(runs.rglob('*.ckpt'))


def test_torchgeo_fit_with_chesapeake_config(data_dir, tmp_path):
    patches = str(data_dir / 'chesapeake-wv2014' / 'train')
    paths = [f'--data.init_args.{k}_paths' for k in ('image', 'coarse', 'fine')]
    runs = torchgeo_fit(
        'lsr_chesapeake.yaml', tmp_path, *[a for k in paths for a in (k, patches)]
    )
    ckpt = next(runs.rglob('*.ckpt'))
    hp = torch.load(ckpt, map_location='cpu', weights_only=True)['hyper_parameters']
    assert hp['model'] == 'local' and hp['coarse_balance'] == 'batch'


def test_torchgeo_fit_instances_config_then_predict(tmp_path):
    import geopandas as gpd
    import rasterio

    from geosparse.cli import main
    from geosparse.datasets import make_instance_scene

    scene = make_instance_scene(tmp_path / 'data' / 'roofs', size=96, seed=2)
    runs = torchgeo_fit(
        'instances_synthetic.yaml', tmp_path, '--data.init_args.patch_size', '64'
    )
    ckpt = next(runs.rglob('*.ckpt'))
    hp = torch.load(ckpt, map_location='cpu', weights_only=True)['hyper_parameters']
    assert hp['prior'] == 'geodesic' and hp['rounds'] == 2
    assert hp['window'] == 64  # the data module's patch_size, for prediction blocks
    out = tmp_path / 'maps'
    args = ['predict', '--checkpoint', str(ckpt), str(scene.image), '--out', str(out)]
    points = ['--points', str(scene.points), '--id-column', 'instance', '--quiet']
    assert main([*args, *points]) == 0
    with rasterio.open(out / 'instances_instances.tif') as src:
        assert src.count == 3 and src.dtypes[0] == 'uint32'
        ids = set(map(int, src.read(1).ravel())) - {0}
    truth = set(gpd.read_file(scene.points)['instance'])
    assert ids and ids <= truth
    polygons = gpd.read_file(out / 'instances_instances.gpkg')
    assert set(polygons['instance']) == ids
    assert (out / 'instances_instances.json').is_file()


def test_torchgeo_fit_stage2_config_then_predict_without_points(tmp_path, capsys):
    import geopandas as gpd
    import rasterio

    from geosparse.cli import main
    from geosparse.datasets import make_instance_scene

    scene = make_instance_scene(tmp_path / 'data' / 'roofs', size=96, seed=2)
    runs = torchgeo_fit(
        'instances_stage2.yaml',
        tmp_path,
        '--data.init_args.patch_size',
        '64',
        '--data.init_args.masks_path',
        str(scene.truth),
    )
    ckpt = next(runs.rglob('*.ckpt'))
    hp = torch.load(ckpt, map_location='cpu', weights_only=True)['hyper_parameters']
    assert hp['fpn_channels'] == 64 and hp['backbone'] == 'resnet18'
    new = make_instance_scene(tmp_path / 'data' / 'new', size=96, seed=3)
    out = tmp_path / 'found'
    args = ['predict', '--checkpoint', str(ckpt), str(new.image), '--out', str(out)]
    # an untrained model scores low: keep what it finds, to check the outputs agree
    assert main([*args, '--min-score', '0.05', '--block', '48', '--quiet']) == 0
    with rasterio.open(out / 'instances_instances.tif') as src:
        assert src.count == 3 and src.dtypes[0] == 'uint32'
        assert src.nodata == 4294967295
        ids = set(map(int, src.read(1).ravel())) - {0}
    polygons = gpd.read_file(out / 'instances_instances.gpkg')
    assert set(polygons['instance']) == ids
    assert len(polygons) == len(ids)  # one feature per instance
    assert {'class', 'score', 'area'} <= set(polygons.columns)
    assert (out / 'instances_instances.json').is_file()
    # points are not used by stage 2: a warning says so (the output is complete)
    capsys.readouterr()
    clicks = str(new.points)
    assert main([*args, '--points', clicks, '--resume', '--quiet']) == 0
    err = capsys.readouterr().err
    assert f'--points {clicks} is not used' in err and 'MaskRCNNTask (stage 2)' in err
