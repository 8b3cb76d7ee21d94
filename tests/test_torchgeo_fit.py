import shutil
import subprocess

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
