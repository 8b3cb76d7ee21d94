"""Quiet console output: no third-party noise, progress on stderr, a useful summary."""

import logging
import re
import warnings

import numpy as np
import pytest
import rasterio

from geosparse.cli import main
from geosparse.console import class_fractions, describe_output, progress, quiet

from .conftest import write_raster

NOISE = ('Tip', 'PROJCS[', 'GEOGCS[', 'GPU available', 'TPU available')
NOISE += ('DeprecationWarning', 'is deprecated', 'Converting ', '`Trainer.fit` stopped')
NAMES = ('water', 'forest', 'field', 'impervious')


def _fractions_from_cog(path):
    with rasterio.open(path) as src:
        data = src.read(1, masked=True)
    values = data.compressed()
    return {NAMES[c]: float(np.mean(values == c)) for c in np.unique(values)}


def _shown_fractions(text):
    """``{name: percent}`` from a summary line like ``water 12 %, forest <1 %``."""
    out = {}
    for name, less, pct in re.findall(r'(\w+) (<?)(\d+) %', text):
        out[name] = (less, int(pct))
    return out


def _check_fractions(line, cog):
    truth = _fractions_from_cog(cog)
    shown = _shown_fractions(line)
    assert set(shown) == set(truth)
    for name, frac in truth.items():
        less, pct = shown[name]
        assert (0 < frac < 0.01) if less else pct == round(100 * frac), (name, frac)


def _run(argv, capsys, monkeypatch):
    """Run the CLI; stdout, and stderr with the warnings it emitted, as a user sees."""
    import sys

    import lightning.pytorch  # noqa: F401  (its import adds its console handler)

    # Lightning's handler keeps the stderr of its import time, and pytest may add its
    # own handlers to that non-propagating logger: during the run it has one handler,
    # on capsys's stderr, as in a user's console.
    lightning_logger = logging.getLogger('lightning.pytorch')
    monkeypatch.setattr(
        lightning_logger, 'handlers', [logging.StreamHandler(sys.stderr)]
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('default')
        # Python never shows these (its default filters); geosparse has a few.
        warnings.simplefilter('ignore', PendingDeprecationWarning)
        code = main(argv)
    out, err = capsys.readouterr()
    shown = '\n'.join(
        warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
        for w in caught
    )
    return code, out, err + shown


def test_demo_and_predict_are_quiet_and_end_with_a_summary(
    tmp_path, capsys, monkeypatch
):
    demo = tmp_path / 'demo'
    argv = ['demo', '--out', str(demo), '--size', '128', '--steps', '2']
    code, out, err = _run(argv, capsys, monkeypatch)
    assert code == 0
    for word in NOISE:
        assert word not in out + err, word
    # Progress bars go to stderr, the summary to stdout.
    assert 'train' in err and 'predict' in err
    assert '%|' not in out
    for name in ('landcover.tif', 'landcover.json', 'landcover.png', 'lsr.ckpt'):
        assert str(demo / name) in out, name
    assert 'accuracy against the synthetic truth' in out
    _check_fractions(out, demo / 'landcover.tif')

    maps = tmp_path / 'maps'
    args = ['predict', '--checkpoint', str(demo / 'lsr.ckpt'), '--out', str(maps)]
    args += ['--coarse', str(demo / 'scene' / 'scene_nlcd.tif'), '--block', '64']
    argv = [*args, str(demo / 'scene' / 'scene_naip.tif')]
    code, out, err = _run(argv, capsys, monkeypatch)
    assert code == 0
    for word in NOISE:
        assert word not in out + err, word
    assert 'predict' in err  # the block progress bar
    cog = maps / 'scene_naip_landcover.tif'
    [line] = [x for x in out.splitlines() if x.strip().startswith(f'{cog}:')]
    _check_fractions(line, cog)


def test_demo_verbose_shows_the_libraries_lines(tmp_path, capsys, monkeypatch):
    args = ['--verbose', 'demo', '--out', str(tmp_path), '--size', '128']
    code, out, err = _run([*args, '--steps', '1', '--quiet'], capsys, monkeypatch)
    assert code == 0
    assert 'GPU available' in err
    # TorchGeo's reprojection is one debug line with EPSG codes, never WKT.
    assert 'CoarseLabels: CRS EPSG:5070 -> EPSG:32618' in err
    assert 'PROJCS[' not in out + err
    # --quiet: no progress bar, the summary still shows.
    assert 'predict:' not in err and 'train:' not in err
    assert 'landcover.tif' in out


def test_verbose_and_quiet_go_before_or_after_the_command():
    from geosparse.cli import build_parser

    parser = build_parser()
    for argv in (['-v', 'demo'], ['demo', '-v'], ['--verbose', 'demo']):
        args = parser.parse_args(argv)
        assert args.verbose and not args.quiet
    args = parser.parse_args(['predict', '--checkpoint', 'c', '--out', 'o', '-q'])
    assert args.quiet and not args.verbose
    assert not parser.parse_args(['demo']).verbose


def test_quiet_hides_only_known_third_party_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')  # as pytest does: quiet must still win
        with quiet(lightning=False):
            warnings.warn(
                '`isinstance(treespec, LeafSpec)` is deprecated, use ...',
                DeprecationWarning,
                stacklevel=1,
            )
            warnings.warn('your raster has no nodata value', UserWarning, stacklevel=1)
            warnings.warn(
                'something else is deprecated', DeprecationWarning, stacklevel=1
            )
            # rasterio's transform helpers under affine 3
            from rasterio.transform import from_origin

            from_origin(0.0, 10.0, 1.0, 1.0)
    messages = [str(w.message) for w in caught]
    assert messages == [
        'your raster has no nodata value',
        'something else is deprecated',
    ]


def test_quiet_restores_lightning_logging():
    log = logging.getLogger('lightning.pytorch')
    before = log.level
    with quiet():
        assert log.level == logging.WARNING
    assert log.level == before
    ours = logging.getLogger('geosparse')
    level, handlers = ours.level, list(ours.handlers)
    with quiet(verbose=True):
        assert log.level == before
        assert ours.isEnabledFor(logging.DEBUG)
    assert ours.level == level and ours.handlers == handlers


def test_progress_in_a_log_file_is_bounded(tmp_path, monkeypatch):
    import sys

    path = tmp_path / 'log.txt'
    with open(path, 'w') as f:
        monkeypatch.setattr(sys, 'stderr', f)
        for _ in progress(range(5000), desc='blocks', unit='block'):
            pass
    text = path.read_text()
    assert text.count('\r') < 10
    assert '5000/5000' in text


def test_regression_summary_gives_ranges_and_ignores_nodata(tmp_path):
    data = np.full((2, 40, 50), np.nan, np.float32)
    data[0, :20] = np.linspace(1.5, 4.0, 20 * 50).reshape(20, 50)
    data[1, :20] = 0.25
    path = tmp_path / 'height.tif'
    write_raster(path, data, nodata=float('nan'))
    with rasterio.open(path, 'r+') as dst:
        dst.descriptions = ('mean', 'std')
        dst.update_tags(kind='regression')
    text = describe_output(path)
    assert 'mean 1.5..4 (mean 2.75)' in text
    assert 'std 0.25..0.25' in text
    assert 'overview' not in text


def test_big_rasters_are_summarised_from_a_decimated_read(tmp_path):
    data = np.zeros((1, 2100, 2100), np.uint8)
    data[0, :, :525] = 1  # a quarter
    path = tmp_path / 'big.tif'
    write_raster(path, data, nodata=255)
    fractions, decimated = class_fractions(path)
    assert decimated
    assert fractions[1] == pytest.approx(0.25, abs=0.01)


def test_benchmarks_take_verbose(tmp_path):
    import argparse

    from geosparse.console import verbose_option

    from ._scripts import run_script

    parser = argparse.ArgumentParser()
    verbose_option(parser)
    assert parser.parse_args(['--verbose']).verbose is True
    assert parser.parse_args([]).verbose is False
    res = run_script('loss_overhead.py', '--help', check=False)
    assert res.returncode == 0 and '--verbose' in res.stdout, res.stderr[-2000:]
