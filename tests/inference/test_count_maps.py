"""Counting maps with nodata: NaN pixels are not counted, and the outputs say so."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geosparse.cli import main
from geosparse.inference.count_maps import count_map, count_summary, count_with_std


def write_map(path, bands, kind, **tags):
    profile = dict(
        driver='GTiff',
        height=bands.shape[1],
        width=bands.shape[2],
        count=bands.shape[0],
        dtype='float32',
        crs='EPSG:32618',
        transform=from_origin(500000, 4200000, 1, 1),
        nodata=float('nan'),
    )
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(bands.astype(np.float32))
        dst.update_tags(counting=kind, **{k: str(v) for k, v in tags.items()})
    return path


@pytest.fixture
def density(tmp_path):
    """40 x 50 pixels of 0.01 objects each, the top-left 16 x 16 corner NaN."""
    d = np.full((1, 40, 50), 0.01)
    d[0, :16, :16] = np.nan
    return write_map(tmp_path / 'density.tif', d, 'density', count_dispersion=4)


def test_nodata_pixels_are_not_counted_and_the_summary_says_how_many(density):
    s = count_summary(density)
    assert s.pixels == 2000 and s.valid == 2000 - 256
    assert s.total == pytest.approx(0.01 * 1744)
    assert s.std == pytest.approx(np.sqrt(4 * 0.01 * 1744))  # dispersion 4
    assert s.nodata_fraction == pytest.approx(256 / 2000)
    assert count_with_std(density) == (s.total, s.std)


def test_cells_without_data_are_nan_and_partial_cells_say_their_share(
    density, tmp_path
):
    out = count_map(density, tmp_path / 'counts.tif', cell=16)
    with rasterio.open(out) as src:
        count, std, valid = src.read()
        assert src.descriptions == ('count', 'std', 'valid_fraction')
        assert np.isnan(src.nodata)
    assert count.shape == (3, 4)  # 40 x 50 in cells of 16: edge cells are smaller
    assert np.isnan(count[0, 0]) and np.isnan(std[0, 0]) and valid[0, 0] == 0
    assert valid[0, 1] == 1 and count[0, 1] == pytest.approx(2.56)
    # the last row (8 px) and column (2 px) cells are whole, just smaller
    assert valid[2, 3] == 1 and count[2, 3] == pytest.approx(0.01 * 8 * 2)
    assert np.nansum(count) == pytest.approx(count_summary(density).total, rel=1e-5)


def test_a_partly_covered_cell_reports_its_share(tmp_path):
    d = np.full((1, 8, 8), 0.5)
    d[0, :, :2] = np.nan  # a quarter of the only cell
    out = count_map(write_map(tmp_path / 'm.tif', d, 'density'), tmp_path / 'c.tif', 8)
    with rasterio.open(out) as src:
        count, _, valid = src.read()
    assert valid[0, 0] == pytest.approx(0.75) and count[0, 0] == pytest.approx(24)


def test_point_maps_count_their_detections_over_the_valid_pixels(tmp_path):
    prob = np.full((8, 8), 0.5)
    det = np.zeros((8, 8))
    det[1, 1] = det[6, 6] = 1
    prob[4:, :4] = det[4:, :4] = np.nan
    path = write_map(tmp_path / 'p.tif', np.stack([prob, det]), 'point map', stride=2)
    s = count_summary(path)
    assert s.total == 2 and s.valid == 48
    assert s.std == pytest.approx(np.sqrt(48 * 0.25 / 4))


def test_the_cli_says_what_was_not_counted(density, tmp_path, capsys):
    assert main(['count', str(density), '--cell', '16', '--quiet']) == 0
    out = capsys.readouterr().out
    assert '17.4 ± ' in out and '12.8 % nodata, not counted' in out


def test_a_map_without_data_is_a_clear_error(tmp_path, capsys):
    empty = write_map(tmp_path / 'e.tif', np.full((1, 8, 8), np.nan), 'density')
    assert main(['count', str(empty)]) == 2
    err = capsys.readouterr().err
    assert 'e.tif' in err and 'every pixel is nodata' in err


def _point_map(path, **tags):
    prob = np.full((2, 8, 8), 0.5)
    prob[1] = 0
    return write_map(path, prob, 'point map', **tags)


@pytest.mark.parametrize(
    ('make', 'match'),
    [
        (lambda p: _point_map(p, stride=0), r'stride tag \(0\) is not a number >= 1'),
        (lambda p: _point_map(p, stride='inf'), 'stride tag'),
        (
            lambda p: _point_map(p, count_dispersion='nan'),
            r'count_dispersion tag \(nan\) is not a positive number',
        ),
        (lambda p: _point_map(p, count_dispersion=-2), 'count_dispersion tag'),
        (
            lambda p: write_map(p, np.full((1, 8, 8), 0.5), 'point map'),
            'needs 2 bands',
        ),
        (
            lambda p: write_map(p, np.full((1, 8, 8), -0.1), 'density'),
            'negative densities',
        ),
        (
            lambda p: write_map(p, np.full((1, 8, 8), np.inf), 'density'),
            'infinite values',
        ),
        (
            lambda p: write_map(p, np.full((2, 8, 8), 1.5), 'point map'),
            r'probabilities outside \[0, 1\]',
        ),
    ],
)
def test_maps_no_prediction_writes_are_refused_in_one_line(
    tmp_path, capsys, make, match
):
    """Broken tags, too few bands and impossible values name the file (before: a
    ZeroDivisionError or IndexError traceback, or a count of '± nan' or below zero)."""
    path = make(tmp_path / 'm.tif')
    with pytest.raises(ValueError, match=match):
        count_summary(path)
    with pytest.raises(ValueError, match=match):
        count_map(path, tmp_path / 'c.tif', 4)
    assert not (tmp_path / 'c.tif').exists()
    assert main(['count', str(path), '--out', str(tmp_path / 'c.tif')]) == 2
    err = capsys.readouterr().err
    assert 'm.tif' in err and err.count('\n') == 1 and 'Traceback' not in err


def test_out_may_not_replace_the_map_or_fail_with_a_traceback(
    density, tmp_path, capsys
):
    before = density.read_bytes()
    assert (
        main(['count', str(density), '--out', str(tmp_path / '.' / 'density.tif')]) == 2
    )
    assert 'would replace it' in capsys.readouterr().err
    assert density.read_bytes() == before  # before: overwritten by the counts
    with pytest.raises(ValueError, match='would replace it'):  # the API refuses too
        count_map(density, density, 16)
    assert density.read_bytes() == before
    blocker = tmp_path / 'file'
    blocker.write_text('')
    assert main(['count', str(density), '--out', str(blocker / 'c.tif')]) == 2
    err = capsys.readouterr().err
    assert '--out' in err and 'cannot write there' in err and 'Traceback' not in err
