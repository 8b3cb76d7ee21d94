import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geosparse.io.grid import RasterGrid

GRID = RasterGrid(CRS.from_epsg(32618), Affine(2, 0, 1000, 0, -2, 5000), 70, 50)


def test_blocks_tile_the_grid_without_overhang():
    blocks = GRID.blocks(32)
    assert len(blocks) == 3 * 2
    covered = np.zeros((70, 50), int)
    for w in blocks:
        (r0, r1), (c0, c1) = w.toranges()
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()
    assert blocks[-1].toranges() == ((64, 70), (32, 50))
    with pytest.raises(ValueError, match='block=0'):
        GRID.blocks(0)


def test_halo_windows_are_clipped_to_the_grid():
    w = GRID.with_halo(Window.from_slices((0, 32), (32, 50)), 8)
    assert w.toranges() == ((0, 40), (24, 50))


def test_world_to_pixel_and_the_block_of_a_pixel():
    xy = np.array([[1001.0, 4999.0], [1099.9, 4860.1], [999.0, 5000.0]])
    rows, cols = GRID.to_pixels(xy)
    np.testing.assert_allclose(rows, [0.5, 69.95, 0.0])
    np.testing.assert_allclose(cols, [0.5, 49.95, -0.5])
    r, c, inside = GRID.pixel_of(xy)
    assert inside.tolist() == [True, True, False]
    assert GRID.contains(xy).tolist() == [True, True, False]
    keys = GRID.block_of(r[:2], c[:2], 32)
    blocks = GRID.blocks(32)
    (r0, r1), (c0, c1) = blocks[int(keys[1])].toranges()
    assert r0 <= r[1] < r1 and c0 <= c[1] < c1


def test_window_bounds_and_a_grid_from_bounds():
    w = Window.from_slices((10, 20), (0, 5))
    assert GRID.window_bounds(w) == (1000.0, 4960.0, 1010.0, 4980.0)
    sub = GRID.window_grid(w)
    assert (sub.height, sub.width) == (10, 5) and sub.bounds == GRID.window_bounds(w)
    g = RasterGrid.from_bounds('EPSG:32618', (0.0, 0.0, 10.5, 4.0), (1.0, 1.0))
    assert (g.height, g.width) == (4, 11) and g.transform.f == 4.0


def test_a_decimated_grid_keeps_the_extent_in_fewer_pixels():
    grid = RasterGrid(
        CRS.from_epsg(32618), Affine(1.0, 0, 500000, 0, -1.0, 4200000), 400, 300
    )
    small = grid.decimated(1200)
    assert small.height * small.width <= 1200 and (small.height, small.width) == (
        40,
        30,
    )
    assert small.bounds == grid.bounds and small.crs == grid.crs
    assert grid.decimated(10**6) == grid  # small enough already
