"""Hostile and broken input through `geosparse predict` and the Python API.

Each case asserts the exit code (2: bad input, before any work; 1: a failed item),
the message (it names the file or parameter and the fix), and that nothing partial
or stray is left in --out, nor anything written outside it.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch

from geosparse.cli import main
from geosparse.compat import SemanticSegmentation
from geosparse.inference import Predictor
from geosparse.inference.predict import (
    PredictionJob,
    output_complete,
    output_stem,
    read_coarse_on_grid,
    run_jobs,
)

from .conftest import random_raster, save_untrained


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    task = SemanticSegmentation(
        model='fcn', in_channels=3, num_classes=3, num_filters=4
    )
    return save_untrained(task, tmp_path_factory.mktemp('ckpt') / 'seg.ckpt')


def _predict(ckpt, out, *more):
    return main(
        ['predict', '--checkpoint', str(ckpt), '--out', str(out), '--quiet', *more]
    )


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*'))


@pytest.mark.parametrize(
    ('name', 'stem'),
    [
        ('../../../x', 'x'),
        ('/tmp/abs_x', 'tmp_abs_x'),
        ('a/b\\c', 'a_b_c'),
        ('..', 'item'),
        ('.hidden', 'hidden'),
        ('ok-name_1.2', 'ok-name_1.2'),
        ('x' * 300, 'x' * 128),
    ],
)
def test_output_stems_cannot_leave_the_folder(name, stem):
    assert output_stem(name) == stem


def test_hostile_item_ids_stay_inside_out(tmp_path, ckpt):
    """Jobs as stac_jobs makes them from item ids (the API path of --stac)."""
    image = tmp_path / 'in.tif'
    random_raster(image, 3, 64, 64)
    out = tmp_path / 'deep' / 'out'
    jobs = [
        PredictionJob(output_stem(i), [str(image)])
        for i in ('../../../escaped', str(tmp_path / 'abs'))
    ]
    report = run_jobs(
        Predictor(checkpoint=ckpt), jobs, out, progress=False, log=lambda _: None
    )
    assert not report.failures
    assert _files(tmp_path) == sorted(
        ['deep', 'deep/out', 'in.tif', *(f'deep/out/{n}' for n in _files(out))]
    )
    assert {p.parent for p in report.written} == {out}
    # jobs made by hand are sanitised too
    report = run_jobs(
        Predictor(checkpoint=ckpt),
        [PredictionJob('../up', [str(image)])],
        out,
        progress=False,
    )
    assert report.written == [out / 'up_segmentation.tif']


def test_two_inputs_with_one_name_are_refused_before_any_work(tmp_path, ckpt, capsys):
    for sub in ('a', 'b'):
        (tmp_path / sub).mkdir()
        random_raster(tmp_path / sub / 'scene.tif', 3, 64, 64)
    out = tmp_path / 'out'
    code = _predict(
        ckpt, out, str(tmp_path / 'a' / 'scene.tif'), str(tmp_path / 'b' / 'scene.tif')
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'a/scene.tif' in err and 'b/scene.tif' in err and 'separate --out' in err
    assert not out.exists() or not _files(out)


def test_an_output_that_would_replace_an_input_is_refused(tmp_path, ckpt, capsys):
    """Predicting x.tif into its own folder writes x_segmentation.tif: an input of
    that name would be replaced before it is read (before: silently overwritten)."""
    for name in ('x', 'x_segmentation'):
        random_raster(tmp_path / f'{name}.tif', 3, 64, 64)
    before = (tmp_path / 'x_segmentation.tif').read_bytes()
    code = _predict(
        ckpt, tmp_path, str(tmp_path / 'x.tif'), str(tmp_path / 'x_segmentation.tif')
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'would replace the input' in err and 'x_segmentation.tif' in err
    assert (tmp_path / 'x_segmentation.tif').read_bytes() == before
    assert _files(tmp_path) == ['x.tif', 'x_segmentation.tif']


def test_out_naming_a_file_is_refused(tmp_path, ckpt, capsys):
    random_raster(tmp_path / 'in.tif', 3, 64, 64)
    (tmp_path / 'out').write_text('')
    assert _predict(ckpt, tmp_path / 'out', str(tmp_path / 'in.tif')) == 2
    err = capsys.readouterr().err
    assert '--out' in err and 'is a file' in err and 'Errno' not in err


def test_raster_without_crs_fails_and_leaves_nothing(tmp_path, ckpt, capsys):
    path = tmp_path / 'nocrs.tif'
    profile = dict(driver='GTiff', width=64, height=64, count=3, dtype='uint8')
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(random_raster(tmp_path / 'tmp.tif', 3, 64, 64))
    out = tmp_path / 'out'
    assert _predict(ckpt, out, str(path)) == 1
    err = capsys.readouterr().err
    assert 'nocrs.tif' in err and 'no CRS' in err and 'gdal_edit.py' in err
    assert not out.exists() or not _files(out)


def test_resume_redoes_truncated_or_empty_outputs(tmp_path, ckpt, capsys):
    image = tmp_path / 'in.tif'
    random_raster(image, 3, 96, 96)
    out = tmp_path / 'out'
    assert _predict(ckpt, out, str(image)) == 0
    cog, meta = out / 'in_segmentation.tif', out / 'in_segmentation.json'
    good = cog.read_bytes()
    assert output_complete(meta)
    item = json.loads(meta.read_text())
    assert item['assets']['data']['file:checksum'].startswith('1220')
    for damage in (
        lambda: cog.write_bytes(good[: len(good) // 2]),
        lambda: cog.write_bytes(b''),
    ):
        damage()
        assert not output_complete(meta)
        capsys.readouterr()
        assert _predict(ckpt, out, '--resume', str(image)) == 0
        assert 'skipped' not in capsys.readouterr().out
        assert cog.read_bytes() == good
    meta.write_text('{}')  # an item that lists nothing proves nothing
    assert _predict(ckpt, out, '--resume', str(image)) == 0
    assert output_complete(meta) and cog.read_bytes() == good
    capsys.readouterr()
    assert _predict(ckpt, out, '--resume', str(image)) == 0
    assert 'skipped' in capsys.readouterr().out


def test_staging_of_a_killed_run_is_removed_by_the_next(tmp_path, ckpt):
    image = tmp_path / 'in.tif'
    random_raster(image, 3, 64, 64)
    out = tmp_path / 'out'
    out.mkdir()
    # what kill -9 leaves: cog_writer's staging folder and atomic_path's temp files
    (out / '.in_segmentation.tif.abc123').mkdir()
    (out / '.in_segmentation.tif.abc123' / 'stage.tif').write_bytes(b'x' * 1000)
    (out / '.in_segmentation.tif.xyz.tif').write_bytes(b'x')
    (out / '.in_segmentation.json.q1w2').write_bytes(b'{')
    assert _predict(ckpt, out, str(image)) == 0
    assert _files(out) == ['in_segmentation.json', 'in_segmentation.tif']


def test_kill_9_mid_run_then_resume_gives_the_same_bytes(tmp_path, ckpt):
    """A real kill -9 of `geosparse predict` while it writes, then --resume."""
    images = []
    for i in range(4):
        images.append(tmp_path / f'in{i}.tif')
        random_raster(images[-1], 3, 1024, 1024, seed=i)
    ref, out = tmp_path / 'ref', tmp_path / 'out'
    cmd = [sys.executable, '-m', 'geosparse.cli', 'predict', '--checkpoint', str(ckpt)]
    cmd += ['--quiet', '--block', '128', *map(str, images)]
    env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
    subprocess.run([*cmd, '--out', str(ref)], check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        [*cmd, '--out', str(out)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first output is written: kill mid-run
    assert '->' in first and proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    subprocess.run(
        [*cmd, '--out', str(out), '--resume'], check=True, env=env, capture_output=True
    )
    assert _files(out) == _files(ref)
    for name in _files(ref):
        if name.endswith('.tif'):
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name


PREDICT = ['predict', '--checkpoint', 'x.ckpt', '--out', 'o', 'a.tif']


@pytest.mark.parametrize(
    ('args', 'message'),
    [
        (['demo', '--size', '10'], 'argument --size: must be at least 128 (got 10)'),
        (['demo', '--steps', '0'], 'argument --steps: must be at least 1 (got 0)'),
        ([*PREDICT, '--block', '0'], 'argument --block: must be at least 1 (got 0)'),
        ([*PREDICT, '--block', 'big'], "argument --block: 'big' is not an integer"),
        ([*PREDICT, '--halo', '-1'], 'argument --halo: must be at least 0 (got -1)'),
        (
            [*PREDICT, '--workers', '0'],
            'argument --workers: must be at least 1 (got 0)',
        ),
        (
            [*PREDICT, '--workers', '-1'],
            'argument --workers: must be at least 1 (got -1)',
        ),
        (
            [*PREDICT, '--threads', '0'],
            'argument --threads: must be at least 1 (got 0)',
        ),
        (
            ['count', 'map.tif', '--cell', '0'],
            'argument --cell: must be at least 1 (got 0)',
        ),
    ],
)
def test_bad_numbers_are_refused_by_name_before_any_work(
    tmp_path, capsys, monkeypatch, args, message
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def _float_raster(path, data, nodata=None):
    profile = dict(
        driver='GTiff',
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype='float32',
        crs='EPSG:32618',
        transform=rasterio.transform.from_origin(360000, 4310000, 1, 1),
        nodata=nodata,
        photometric='MINISBLACK',
    )
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data.astype('float32'))


@pytest.mark.parametrize('bad', [float('nan'), float('inf'), -float('inf')])
def test_a_non_finite_pixel_is_nodata_and_spares_its_block(tmp_path, ckpt, bad):
    """One bad pixel in a 1024² float raster: it alone is nodata (not the block)."""
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 255, (3, 1024, 1024))
    zeroed = data.copy()
    zeroed[:, 100, 200] = 0  # what the model sees in place of the bad pixel
    data[1, 100, 200] = bad
    _float_raster(tmp_path / 'bad.tif', data)
    _float_raster(tmp_path / 'zeroed.tif', zeroed)
    out = tmp_path / 'out'
    assert (
        _predict(ckpt, out, str(tmp_path / 'bad.tif'), str(tmp_path / 'zeroed.tif'))
        == 0
    )
    with (
        rasterio.open(out / 'bad_segmentation.tif') as a,
        rasterio.open(out / 'zeroed_segmentation.tif') as b,
    ):
        got, ref = a.read(), b.read()
    assert (got[:, 100, 200] == 255).all()
    got[:, 100, 200] = ref[:, 100, 200]
    np.testing.assert_array_equal(got, ref)
    assert (ref[0] < 3).all()


def test_nan_nodata_is_masked(tmp_path, ckpt):
    data = np.random.default_rng(1).uniform(0, 255, (3, 128, 128))
    data[:, :40, :] = np.nan
    _float_raster(tmp_path / 'in.tif', data, nodata=float('nan'))
    assert _predict(ckpt, tmp_path / 'out', str(tmp_path / 'in.tif')) == 0
    with rasterio.open(tmp_path / 'out' / 'in_segmentation.tif') as src:
        out = src.read()
    assert (out[:, :40] == 255).all() and (out[0, 40:] < 3).all()


def test_regression_gives_nan_where_the_input_is_not_finite(tmp_path, reg_ckpt):
    data = np.random.default_rng(2).uniform(0, 255, (3, 64, 64))
    data[0, 10, 20] = np.inf
    data[2, 30, 5] = np.nan
    _float_raster(tmp_path / 'in.tif', data)
    assert _predict(reg_ckpt, tmp_path / 'out', str(tmp_path / 'in.tif')) == 0
    with rasterio.open(tmp_path / 'out' / 'in_regression.tif') as src:
        mean = src.read(1)
    assert np.isnan(mean[10, 20]) and np.isnan(mean[30, 5])
    assert np.isfinite(mean).sum() == 64 * 64 - 2


@pytest.fixture(scope='module')
def lsr_ckpt(tmp_path_factory):
    from geosparse.trainers import LabelSuperResolutionTask

    task = LabelSuperResolutionTask(model='fcn', num_filters=4, prior_weight=1)
    return save_untrained(task, tmp_path_factory.mktemp('lsr') / 'lsr.ckpt')


def _coarse(path, west, north, codes=None):
    codes = np.full((1, 4, 4), 41, dtype=np.uint8) if codes is None else codes
    floating = codes.dtype.kind == 'f'
    profile = dict(
        driver='GTiff',
        width=4,
        height=4,
        count=1,
        dtype=codes.dtype.name,
        crs='EPSG:32618',
        transform=rasterio.transform.from_origin(west, north, 30, 30),
        nodata=float('nan') if floating else 0,
    )
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(codes)


def _with_coarse(ckpt, out, tmp_path, coarse):
    return _predict(
        ckpt, out, str(tmp_path / 'in.tif'), '--coarse', str(tmp_path / coarse)
    )


def test_coarse_that_misses_the_imagery_is_an_error(tmp_path, lsr_ckpt, capsys):
    random_raster(tmp_path / 'in.tif', 4, 64, 64)  # UTM 18N, west 500000, north 4200000
    _coarse(tmp_path / 'far.tif', 300000, 4000000)
    out = tmp_path / 'out'
    assert _with_coarse(lsr_ckpt, out, tmp_path, 'far.tif') == 1
    err = capsys.readouterr().err
    assert 'far.tif does not overlap' in err and 'in.tif' in err
    assert not out.exists() or not _files(out)


def test_coarse_codes_outside_the_table_are_named_before_any_block(
    tmp_path, lsr_ckpt, capsys
):
    random_raster(tmp_path / 'in.tif', 4, 64, 64)
    codes = np.full((1, 4, 4), 41, dtype=np.uint8)
    codes[0, 0, :] = 12  # perennial ice: not in the NLCD -> land-cover table
    _coarse(tmp_path / 'ice.tif', 500000, 4200000, codes)
    out = tmp_path / 'out'
    assert _with_coarse(lsr_ckpt, out, tmp_path, 'ice.tif') == 1
    err = capsys.readouterr().err
    assert (
        'ice.tif: coarse codes [12] are not in the joint' in err and '--coarse' in err
    )
    assert not out.exists() or not _files(out)


def test_nan_in_float_coarse_labels_is_nodata(tmp_path, lsr_ckpt):
    random_raster(tmp_path / 'in.tif', 4, 64, 64)
    codes = np.full((1, 4, 4), 41.0, dtype=np.float32)
    codes[0, 0, :] = np.nan
    _coarse(tmp_path / 'nan.tif', 500000, 4200000, codes)
    on_grid = read_coarse_on_grid(tmp_path / 'nan.tif', tmp_path / 'in.tif')
    assert on_grid.dtype == np.int64 and set(np.unique(on_grid)) == {0, 41}
    assert (on_grid[:30] == 0).all() and (on_grid[30:] == 41).all()
    assert _with_coarse(lsr_ckpt, tmp_path / 'out', tmp_path, 'nan.tif') == 0


def test_coarse_used_is_recorded_in_tags_and_item(tmp_path, lsr_ckpt):
    random_raster(tmp_path / 'in.tif', 4, 64, 64)
    _coarse(tmp_path / 'half.tif', 500000 - 60, 4200000)  # 60 of the 64 columns
    out = tmp_path / 'out'
    assert _with_coarse(lsr_ckpt, out, tmp_path, 'half.tif') == 0
    with rasterio.open(out / 'in_landcover.tif') as src:
        tags = src.tags()
    assert tags['coarse'] == 'half.tif' and float(tags['coarse_coverage']) == 0.9375
    props = json.loads((out / 'in_landcover.json').read_text())['properties']
    assert props['geosparse:coarse'] == 'half.tif'
    assert props['geosparse:coarse_coverage'] == 0.9375


def test_coarse_for_a_model_without_coarse_labels_is_warned(tmp_path, ckpt, capsys):
    random_raster(tmp_path / 'in.tif', 3, 64, 64)
    _coarse(tmp_path / 'c.tif', 500000, 4200000)
    assert _with_coarse(ckpt, tmp_path / 'out', tmp_path, 'c.tif') == 0
    err = capsys.readouterr().err
    assert 'warning: --coarse' in err and 'c.tif is not used' in err


def test_coarse_for_lsr_without_the_prior_is_warned(tmp_path, capsys):
    """The default LSR model predicts from the imagery alone: --coarse is unused."""
    from geosparse.trainers import LabelSuperResolutionTask

    ckpt = save_untrained(LabelSuperResolutionTask(num_filters=4), tmp_path / 'a.ckpt')
    random_raster(tmp_path / 'in.tif', 4, 64, 64)
    _coarse(tmp_path / 'c.tif', 500000, 4200000)
    assert _with_coarse(ckpt, tmp_path / 'out', tmp_path, 'c.tif') == 0
    err = capsys.readouterr().err
    assert 'c.tif is not used' in err and 'prior_weight is 0' in err
    with rasterio.open(tmp_path / 'out' / 'in_landcover.tif') as src:
        assert 'coarse' not in src.tags()


@pytest.fixture(scope='module')
def reg_ckpt(tmp_path_factory):
    from geosparse.compat import PixelwiseRegression

    task = PixelwiseRegression(model='fcn', in_channels=3, num_outputs=1, num_filters=4)
    return save_untrained(task, tmp_path_factory.mktemp('reg') / 'reg.ckpt')


def _reveal(ckpt, tmp_path, points, *more):
    random_raster(tmp_path / 'in.tif', 3, 64, 64)
    args = ['--reveal', str(points), '--value', 'v', '--lengthscale', '10']
    args += ['--kernel-variance', '1', *more]
    return _predict(ckpt, tmp_path / 'out', str(tmp_path / 'in.tif'), *args)


def test_points_off_the_raster_are_an_error(tmp_path, reg_ckpt, capsys):
    csv = tmp_path / 'p.csv'
    csv.write_text('x,y,v\n300000,4000000,1\n300010,4000010,2\n')
    assert _reveal(reg_ckpt, tmp_path, csv, '--points-crs', 'EPSG:32618') == 1
    err = capsys.readouterr().err
    assert 'none of the 2 revealed points lies on' in err and '--points-crs' in err
    assert not (tmp_path / 'out').exists() or not _files(tmp_path / 'out')


def test_points_partly_off_are_counted_as_used(tmp_path, reg_ckpt):
    csv = tmp_path / 'p.csv'
    csv.write_text(
        'x,y,v\n500010,4199990,1\n500020,4199980,2\n300000,4000000,3\n,4199990,4\n'
    )
    with pytest.warns(UserWarning) as record:
        assert _reveal(reg_ckpt, tmp_path, csv, '--points-crs', 'EPSG:32618') == 0
    text = ' '.join(str(w.message) for w in record)
    assert 'dropped 1 of 4 points' in text and '1 of 3 revealed points lie off' in text
    with rasterio.open(tmp_path / 'out' / 'in_regression.tif') as src:
        tags = src.tags()
    assert tags['revealed_points'] == '2' and tags['revealed_points_outside'] == '1'
    props = json.loads((tmp_path / 'out' / 'in_regression.json').read_text())[
        'properties'
    ]
    assert props['geosparse:revealed_points'] == 2


def test_geojson_without_crs_holding_utm_is_named(tmp_path, reg_ckpt, capsys):
    gj = tmp_path / 'p.geojson'
    feature = {
        'type': 'Feature',
        'properties': {'v': 1.0},
        'geometry': {'type': 'Point', 'coordinates': [500010.0, 4199990.0]},
    }
    gj.write_text(json.dumps({'type': 'FeatureCollection', 'features': [feature]}))
    assert _reveal(reg_ckpt, tmp_path, gj) == 2
    err = capsys.readouterr().err
    assert (
        'p.geojson' in err
        and 'not longitude and latitude' in err
        and '--points-crs' in err
    )


def test_duplicate_points_with_other_values_are_warned(tmp_path, reg_ckpt):
    csv = tmp_path / 'p.csv'
    # Two points 0.3 m apart (one pixel) with other values.
    csv.write_text('x,y,v\n500010,4199990,1\n500010.3,4199990,50\n500030,4199970,2\n')
    with pytest.warns(UserWarning) as record:
        assert _reveal(reg_ckpt, tmp_path, csv, '--points-crs', 'EPSG:32618') == 0
    text = ' '.join(str(w.message) for w in record)
    assert '1 pixels hold revealed points with different values' in text
    # Three points cannot re-fit the kernel: said, and the kernel given is used.
    assert '3 revealed points are too few to re-fit the kernel' in text


def test_revealed_points_of_one_value_keep_the_given_kernel(tmp_path, reg_ckpt):
    """Twelve points that all hold 3: said, and a stable map (no std of thousands)."""
    csv = tmp_path / 'p.csv'
    rows = [f'{500005 + 5 * i},{4199995 - 4 * i},3' for i in range(12)]
    csv.write_text('x,y,v\n' + '\n'.join(rows) + '\n')
    with pytest.warns(UserWarning) as record:
        assert _reveal(reg_ckpt, tmp_path, csv, '--points-crs', 'EPSG:32618') == 0
    text = ' '.join(str(w.message) for w in record)
    assert 'all 12 revealed points hold the value 3' in text
    with rasterio.open(tmp_path / 'out' / 'in_regression.tif') as src:
        mean, std = src.read(1), src.read(2)
        kernel = json.loads(src.tags()['kernel'])
    assert np.isfinite(mean).all() and np.isfinite(std).all()
    assert 0 < std.max() < 10 and kernel['refit'].startswith('not done: all 12')


def _nan_scene(tmp_path, rows, cols):
    """A synthetic scene whose imagery is float32 with NaN in ``[rows, cols]``."""
    from geosparse.datamodules import LabelSuperResolutionDataModule
    from geosparse.datasets import make_scene

    scene = make_scene(tmp_path / 'scene', size=128)
    with rasterio.open(scene.image) as src:
        data, profile = src.read().astype('float32'), src.profile
    data[:, rows, cols] = np.nan  # no nodata value: nothing masks them on reading
    profile.update(dtype='float32')
    nan_image = tmp_path / 'nan_naip.tif'
    with rasterio.open(nan_image, 'w', **profile) as dst:
        dst.write(data)
    return LabelSuperResolutionDataModule(
        image_paths=str(nan_image),
        coarse_paths=str(scene.coarse),
        patch_size=64,
        batch_size=4,
        length=8,
        val_fraction=0.0,
    )


def test_nan_training_pixels_are_left_out_of_the_loss(tmp_path):
    """Training used to end with train_loss = nan and exit 0."""
    from geosparse.trainers import LabelSuperResolutionTask, brief_trainer

    dm = _nan_scene(tmp_path, slice(30, 90), slice(30, 90))
    task = LabelSuperResolutionTask(model='fcn', num_filters=4)
    trainer = brief_trainer(2)
    with pytest.warns(
        UserWarning, match=r'nan_naip\.tif: nodata, NaN or infinite training pixels'
    ):
        trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics['train_loss'])
    assert all(torch.isfinite(p).all() for p in task.parameters())


def test_declared_nodata_pixels_are_left_out_of_training(tmp_path):
    """Pixels at the raster's nodata value (a black collar) used to train as data."""
    from geosparse.datamodules import LabelSuperResolutionDataModule
    from geosparse.datasets import ImageryDataset, make_scene
    from geosparse.trainers import LabelSuperResolutionTask, brief_trainer

    scene = make_scene(tmp_path / 'scene', size=128)
    with rasterio.open(scene.image) as src:
        data, profile = src.read(), src.profile
    data[:, :, :40] = 0  # a black collar, declared nodata
    profile.update(nodata=0)
    collar = tmp_path / 'collar_naip.tif'
    with rasterio.open(collar, 'w', **profile) as dst:
        dst.write(data)
    ds = ImageryDataset(collar)
    image = ds[ds.bounds[0], ds.bounds[1]]['image']
    assert (
        torch.isnan(image[:, :, :40]).all() and torch.isfinite(image[:, :, 40:]).all()
    )
    dm = LabelSuperResolutionDataModule(
        image_paths=str(collar),
        coarse_paths=str(scene.coarse),
        patch_size=32,
        batch_size=8,
        length=32,
        val_fraction=0.5,
        balance=0.0,
    )
    task = LabelSuperResolutionTask(model='fcn', num_filters=4)
    trainer = brief_trainer(4, val_batches=2)
    with pytest.warns(UserWarning, match=r'collar_naip\.tif: nodata, NaN or infinite'):
        trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 4
    assert all(torch.isfinite(p).all() for p in task.parameters())
    scores = {k: v for k, v in trainer.callback_metrics.items() if k.startswith('val')}
    assert scores and all(torch.isfinite(v) for v in scores.values()), scores


def test_a_window_without_data_gives_no_labels_beside_windows_with_data():
    from geosparse.trainers import LabelSuperResolutionTask

    task = LabelSuperResolutionTask(model='fcn', num_filters=4)
    image = torch.rand(2, 4, 8, 8)
    image[0] = float('nan')  # all nodata
    batch = {'image': image, 'coarse': torch.full((2, 8, 8), 41)}
    with pytest.warns(UserWarning, match='nodata, NaN or infinite'):
        task.on_train_batch_start(batch, 0)
    assert (batch['coarse'][0] == 0).all() and (batch['coarse'][1] == 41).all()
    assert (batch['image'][0] == 0).all() and torch.equal(batch['image'][1], image[1])


def test_a_window_without_finite_pixels_stops_training(tmp_path):
    from geosparse.trainers import LabelSuperResolutionTask, brief_trainer

    dm = _nan_scene(tmp_path, slice(None), slice(None))
    task = LabelSuperResolutionTask(model='fcn', num_filters=4)
    with pytest.raises(
        ValueError, match=r'nan_naip\.tif: a training window .* has no finite pixel'
    ):
        brief_trainer(2).fit(task, datamodule=dm)


def test_nan_pixels_make_points_invalid():
    from geosparse.trainers import NPPTask

    task = NPPTask(model='fcn', num_filters=4)
    image = torch.rand(1, 3, 8, 8)
    image[0, 1, 2, 3] = float('nan')
    batch = {
        'image': image,
        'points': torch.tensor([[[2.5, 3.5], [5.0, 5.0]]]),
        'valid': torch.tensor([[True, True]]),
    }
    with pytest.warns(UserWarning, match='are left out'):
        task.on_train_batch_start(batch, 0)
    assert batch['valid'].tolist() == [[False, True]]
    assert (
        torch.isfinite(batch['image']).all() and batch['image'][0, :, 2, 3].eq(0).all()
    )


def test_a_nan_loss_stops_training():
    from geosparse.trainers import NPPTask

    task = NPPTask(model='fcn', num_filters=4)
    with pytest.raises(FloatingPointError, match='train_loss is nan at step 0'):
        task.on_before_backward(torch.tensor(float('nan')))
    task.on_before_backward(torch.tensor(1.0))  # a finite loss passes


def test_lsr_task_takes_a_joint_distribution_object():
    from geosparse.priors import JointDistribution, PriorError
    from geosparse.trainers import LabelSuperResolutionTask

    table = JointDistribution.builtin('nlcd-landcover4')
    task = LabelSuperResolutionTask(model='fcn', num_filters=4, priors=table)
    assert task.table.to_dict() == table.to_dict()
    with pytest.raises(PriorError, match='priors=int: give a built-in table name'):
        LabelSuperResolutionTask(model='fcn', priors=3)


def _labels(path, data, nodata=0, dtype='uint8', top=4200000):
    profile = dict(
        driver='GTiff',
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=dtype,
        crs='EPSG:32618',
        transform=rasterio.transform.from_origin(500000, top, 1, 1),
        nodata=nodata,
    )
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data[None].astype(dtype))


@pytest.mark.parametrize(
    ('case', 'message'),
    [
        ('letters', '--fine-codes a,b: give integers separated by commas'),
        ('missing', '--coarse nothere.tif: no such file'),
        ('empty', 'no valid pixel in common'),
        ('absent codes', 'not among the fine codes [7, 8, 9]'),
        ('fractions', 'coarse labels must be whole-number class codes'),
        ('fine fractions', 'fine labels must be whole-number class codes'),
    ],
)
def test_priors_estimate_bad_input_is_one_line(
    tmp_path, capsys, monkeypatch, case, message
):
    monkeypatch.chdir(tmp_path)
    fine = np.random.default_rng(0).integers(1, 5, (60, 60))
    _labels(tmp_path / 'coarse.tif', np.full((60, 60), 41))
    _labels(tmp_path / 'fine.tif', fine)
    _labels(tmp_path / 'empty.tif', np.zeros((60, 60)))
    _labels(tmp_path / 'frac.tif', np.full((60, 60), 41.5), dtype='float32')
    args = ['priors', 'estimate', '--coarse', 'coarse.tif', '--fine', 'fine.tif']
    args += ['--out', 't.csv', '--blocks', 'cells']
    more = {
        'letters': ['--fine-codes', 'a,b'],
        'missing': ['--coarse', 'nothere.tif'],
        'empty': ['--coarse', 'empty.tif', '--fine', 'empty.tif'],
        'absent codes': ['--fine-codes', '7,8,9', '--fine-names', 'a,b,c'],
        'fractions': ['--coarse', 'frac.tif'],
        'fine fractions': ['--fine', 'frac.tif'],
    }[case]
    assert main([*args, *more]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('geosparse: error:')
    assert message in err
    assert not (tmp_path / 't.csv').exists()


def test_priors_estimate_reads_nan_fine_labels_as_nodata(tmp_path, monkeypatch):
    """A float fine raster's NaN is fine nodata: the table equals the integer one's."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    coarse = np.repeat(np.repeat(rng.choice([41, 82], (2, 2)), 30, 0), 30, 1)
    fine = rng.integers(1, 5, (60, 60))
    fine[:20] = 0
    _labels(tmp_path / 'coarse.tif', coarse)
    _labels(tmp_path / 'fine.tif', fine)
    _labels(tmp_path / 'nan.tif', np.where(fine == 0, np.nan, fine), None, 'float32')
    args = ['priors', 'estimate', '--coarse', 'coarse.tif', '--blocks', 'cells']
    assert main([*args, '--fine', 'fine.tif', '--out', 'int.csv']) == 0
    assert main([*args, '--fine', 'nan.tif', '--out', 'nan.csv']) == 0
    assert (tmp_path / 'nan.csv').read_text() == (tmp_path / 'int.csv').read_text()


def test_priors_estimate_pools_several_raster_pairs(tmp_path, monkeypatch, capsys):
    """Two halves given as two pairs give the table of the whole raster (blocks of
    30 m cells that the split does not cut); mismatched lists are refused."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(2)
    coarse = np.repeat(np.repeat(rng.choice([41, 82, 21], (4, 2)), 30, 0), 30, 1)
    fine = rng.integers(1, 5, (120, 60))
    _labels(tmp_path / 'coarse.tif', coarse)
    _labels(tmp_path / 'fine.tif', fine)
    _labels(tmp_path / 'top.tif', fine[:60])
    _labels(tmp_path / 'bottom.tif', fine[60:], top=4200000 - 60)
    args = ['priors', 'estimate', '--blocks', 'cells', '--out']
    assert main([*args, 'one.csv', '--coarse', 'coarse.tif', '--fine', 'fine.tif']) == 0
    two = ['--coarse', 'coarse.tif', 'coarse.tif', '--fine', 'top.tif', 'bottom.tif']
    assert main([*args, 'two.csv', *two]) == 0
    assert 'from 2 raster pairs' in capsys.readouterr().out
    assert (tmp_path / 'two.csv').read_text() == (tmp_path / 'one.csv').read_text()
    bad = ['--coarse', 'coarse.tif', '--fine', 'top.tif', 'bottom.tif']
    assert main([*args, 'bad.csv', *bad]) == 2
    assert '--fine has 2 rasters but --coarse 1' in capsys.readouterr().err
    assert not (tmp_path / 'bad.csv').exists()


def test_a_truncated_raster_is_named_as_damaged(tmp_path, ckpt, capsys):
    random_raster(tmp_path / 'good.tif', 3, 300, 300)
    data = (tmp_path / 'good.tif').read_bytes()
    (tmp_path / 'trunc.tif').write_bytes(data[: len(data) // 2])
    assert _predict(ckpt, tmp_path / 'out', str(tmp_path / 'trunc.tif')) == 1
    err = capsys.readouterr().err
    assert 'trunc.tif: cannot read rows' in err and 'damaged or truncated' in err
    assert 'See previous exception' not in err
    assert not (tmp_path / 'out').exists() or not _files(tmp_path / 'out')


def test_a_config_keeps_a_priors_csv_as_a_path(tmp_path, monkeypatch):
    """LightningCLI (jsonargparse) parses the task's signature: a CSV path given as
    priors in a `torchgeo fit` config must reach the task as a path, not as the
    file's text."""
    from jsonargparse import ActionConfigFile, ArgumentParser
    from lightning.pytorch import LightningModule

    from geosparse.priors import JointDistribution
    from geosparse.trainers import LabelSuperResolutionTask

    monkeypatch.chdir(tmp_path)
    JointDistribution.builtin('nlcd-landcover4').to_csv('table.csv')
    (tmp_path / 'fit.yaml').write_text(
        'model:\n  class_path: geosparse.trainers.LabelSuperResolutionTask\n'
        '  init_args:\n    priors: table.csv\n'
    )
    parser = ArgumentParser()
    parser.add_argument('--config', action=ActionConfigFile)
    parser.add_subclass_arguments(LightningModule, 'model')  # as LightningCLI does
    cfg = parser.parse_args(['--config', 'fit.yaml'])
    priors = cfg.model.init_args.priors
    assert priors == 'table.csv'
    assert LabelSuperResolutionTask(model='fcn', priors=priors).table.num_fine == 4


def test_a_wrong_coarse_asset_key_names_coarse(tmp_path, lsr_ckpt, capsys, monkeypatch):
    import datetime as dt

    import pystac

    import geosparse.inference.predict as predict_module

    random_raster(tmp_path / 'in.tif', 4, 64, 64)
    item = pystac.Item('tile0', None, None, dt.datetime(2020, 1, 1), {})
    item.add_asset('image', pystac.Asset(str(tmp_path / 'in.tif')))
    monkeypatch.setattr(predict_module, 'search_items', lambda *a, **k: [item])
    args = ['--stac', 'http://127.0.0.1:1', '--asset', 'image', '--coarse', 'nlcd']
    assert _predict(lsr_ckpt, tmp_path / 'out', *args) == 1
    err = capsys.readouterr().err
    assert (
        "no asset 'nlcd' (it has image); pass --coarse" in err and '--asset' not in err
    )


@pytest.mark.parametrize('case', ['bad prior table', 'no overlap'])
def test_torchgeo_fit_reports_input_errors_in_one_line(tmp_path, case):
    """`torchgeo fit` used to print ~75 lines of traceback around the message."""
    import shutil
    import subprocess

    from geosparse.datasets import make_scene

    from .conftest import ROOT

    make_scene(tmp_path / 'data' / 'synthetic', size=128, seed=1)
    args = []
    if case == 'bad prior table':
        (tmp_path / 'bad.csv').write_text('water,1\n')
        args += ['--model.init_args.priors', 'bad.csv']
        expected = 'torchgeo: error: bad.csv: the table has no rows.'
    else:
        make_scene(
            tmp_path / 'elsewhere', size=128, seed=1, origin=(400000.0, 4310000.0)
        )
        args += ['--data.init_args.coarse_paths', 'elsewhere']
        expected = 'do not overlap; check that they cover the same area'
    cmd = [shutil.which('torchgeo') or 'torchgeo', 'fit', '--config']
    cmd += [str(ROOT / 'examples' / 'configs' / 'lsr_synthetic.yaml'), *args]
    cmd += ['--trainer.default_root_dir', str(tmp_path / 'runs')]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 1
    assert 'Traceback' not in res.stderr, res.stderr[-2000:]
    errors = [line for line in res.stderr.splitlines() if 'error:' in line]
    assert len(errors) == 1 and errors[0].startswith('torchgeo: error: ')
    assert expected in errors[0]


def test_other_errors_keep_their_traceback_and_other_programs_their_hook():
    import subprocess

    code = 'import sys, geosparse; assert sys.excepthook is sys.__excepthook__'
    assert subprocess.run([sys.executable, '-c', code], timeout=300).returncode == 0
