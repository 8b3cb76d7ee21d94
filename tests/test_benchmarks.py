import json
import subprocess
import sys

from .conftest import ROOT


def test_loss_overhead_prints_ratio():
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'benchmarks' / 'loss_overhead.py'),
            '--repeats',
            '1',
            '--size',
            '64',
            '--batch-size',
            '2',
            '--posterior-size',
            '64',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(res.stdout)
    assert out['lsr_over_ce'] > 0
    assert out['npp_over_mse'] > 0 and out['posterior_over_forward'] > 0


def test_lsr_chesapeake_runs_on_real_patches(data_dir, tmp_path):
    src = data_dir / 'chesapeake-wv2014' / 'train'
    for split, ids in (('tr', ['00', '03']), ('ev', ['07'])):
        (tmp_path / split).mkdir()
        for i in ids:
            for f in src.glob(f'*_{i}_*.tif'):
                (tmp_path / split / f.name).symlink_to(f)
    out = tmp_path / 'r.json'
    ckpt = tmp_path / 'lsr.ckpt'
    subprocess.run(
        [
            sys.executable,
            str(ROOT / 'benchmarks' / 'lsr_chesapeake.py'),
            '--train',
            str(tmp_path / 'tr'),
            '--eval',
            str(tmp_path / 'ev'),
            '--steps',
            '1',
            '--batch-size',
            '2',
            '--out',
            str(out),
            '--save-checkpoint',
            str(ckpt),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.read_text())
    assert set(res['methods']) == {
        'lsr',
        'soft-naive',
        'hard-naive',
        'hr',
        'nlcd-argmax',
    }
    for scores in res['methods'].values():
        assert 0 <= scores['acc'] <= 1 and 0 <= scores['miou'] <= 1
    assert ckpt.stat().st_size > 0


def test_predict_throughput_prints_ratios(tmp_path):
    out = tmp_path / 'r.json'
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / 'benchmarks' / 'predict_throughput.py'),
            '--size',
            '192',
            '--block',
            '64',
            '--halo',
            '8',
            '--repeats',
            '1',
            '--memory-repeats',
            '1',
            '--out',
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout[res.stdout.index('{') :])
    assert got == json.loads(out.read_text())
    assert got['end_to_end_over_forward'] > 0 and got['memory_4x_over_1x'] > 0.5
    assert got['peak_rss_mb_4x'] > 100
    assert got['cluster_bytes_equal_threaded'] is True
