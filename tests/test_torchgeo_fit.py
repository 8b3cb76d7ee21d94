import shutil
import subprocess

import torch

from geosparse.datasets import make_scene

from .conftest import ROOT


def test_torchgeo_fit_with_example_config(tmp_path):
    make_scene(tmp_path / 'data' / 'synthetic', size=256, seed=1)
    cmd = [
        shutil.which('torchgeo') or 'torchgeo',
        'fit',
        '--config',
        str(ROOT / 'examples' / 'configs' / 'lsr_synthetic.yaml'),
        '--trainer.max_steps',
        '2',
        '--trainer.limit_val_batches',
        '1',
        '--data.init_args.patch_size',
        '64',
        '--data.init_args.batch_size',
        '2',
        '--data.init_args.length',
        '4',
        '--model.init_args.backbone',
        'resnet18',
        '--trainer.default_root_dir',
        str(tmp_path / 'runs'),
    ]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list((tmp_path / 'runs').rglob('*.ckpt'))


def test_torchgeo_fit_with_chesapeake_config(data_dir, tmp_path):
    patches = data_dir / 'chesapeake-wv2014' / 'train'
    cmd = [
        shutil.which('torchgeo') or 'torchgeo',
        'fit',
        '--config',
        str(ROOT / 'examples' / 'configs' / 'lsr_chesapeake.yaml'),
        '--trainer.max_steps',
        '2',
        '--trainer.limit_val_batches',
        '1',
        '--data.init_args.batch_size',
        '2',
        '--data.init_args.length',
        '4',
        '--trainer.default_root_dir',
        str(tmp_path / 'runs'),
    ]
    for key in ('image_paths', 'coarse_paths', 'fine_paths'):
        cmd += [f'--data.init_args.{key}', str(patches)]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = next((tmp_path / 'runs').rglob('*.ckpt'))
    hp = torch.load(ckpt, map_location='cpu', weights_only=False)['hyper_parameters']
    assert hp['model'] == 'local' and hp['coarse_balance'] == 'batch'
