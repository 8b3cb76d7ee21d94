import numpy as np
import pytest
from affine import Affine
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geosparse.io.source import ImageSource

from ..conftest import write_raster as _write


@pytest.fixture
def tiles(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.integers(1, 255, (3, 100, 150), dtype=np.uint8)
    tr = Affine(2, 0, 500000, 0, -2, 4200000)
    # Two overlapping tiles (columns 0-89 and 60-149) and a separate one with a gap.
    _write(tmp_path / 'a.tif', full[:, :, :90], tr)
    _write(tmp_path / 'b.tif', full[:, :, 60:], tr * Affine.translation(60, 0))
    return full, tr, tmp_path


def test_mosaic_of_tiles_rebuilds_the_raster(tiles):
    full, tr, root = tiles
    src = ImageSource.mosaic([root / 'b.tif', root / 'a.tif'])
    assert src.grid.transform == tr and (src.grid.height, src.grid.width) == (100, 150)
    image, invalid = src.read(Window(0, 0, 150, 100))
    np.testing.assert_array_equal(image, full)
    assert not invalid.any()
    part, _ = src.read(Window(50, 10, 30, 20))  # a window across the seam
    np.testing.assert_array_equal(part, full[:, 10:30, 50:80])


def test_mosaic_marks_gaps_invalid(tiles, tmp_path):
    full, tr, root = tiles
    _write(tmp_path / 'c.tif', full[:, :20, :20], tr * Affine.translation(200, 0))
    src = ImageSource.mosaic([root / 'a.tif', tmp_path / 'c.tif'])
    assert src.grid.width == 220
    image, invalid = src.read(Window(0, 0, 220, 100))
    assert invalid[:, 90:200].all() and not invalid[:20, 200:].any()
    np.testing.assert_array_equal(image[:, :20, 200:], full[:, :20, :20])


def test_mosaic_reprojects_other_crs(tiles):
    _, _, root = tiles
    src = ImageSource.mosaic([root / 'a.tif'], crs='EPSG:4326', res=2e-5)
    assert src.grid.crs.to_epsg() == 4326
    image, invalid = src.read(Window(0, 0, src.grid.width, src.grid.height))
    assert 0.5 < (~invalid).mean() <= 1 and image[:, ~invalid].mean() > 50


def test_bad_inputs_are_named(tiles, tmp_path):
    _, tr, root = tiles
    _write(tmp_path / 'one.tif', np.zeros((1, 5, 5), np.uint8), tr)
    with pytest.raises(ValueError, match=r'one\.tif: 1 bands'):
        ImageSource.mosaic([root / 'a.tif', tmp_path / 'one.tif'])
    with pytest.raises(RasterioIOError, match=r'nope\.tif: cannot open'):
        ImageSource.open(tmp_path / 'nope.tif')
    with pytest.raises(ValueError, match='no input rasters'):
        ImageSource.mosaic([])


def test_a_window_opens_only_the_rasters_it_overlaps(tiles, tmp_path):
    full, tr, root = tiles
    _write(tmp_path / 'c.tif', full[:, :20, :20], tr * Affine.translation(200, 0))
    src = ImageSource.mosaic([root / 'a.tif', tmp_path / 'c.tif'])
    (tmp_path / 'c.tif').unlink()  # never opened for windows away from it
    image, _ = src.read(Window(0, 0, 90, 100))
    np.testing.assert_array_equal(image, full[:, :, :90])
    with pytest.raises(RasterioIOError):
        src.read(Window(200, 0, 20, 20))
