import numpy as np
import pytest
import torch
from affine import Affine

from geosparse.datasets import CoarseLabels, ImageryDataset
from geosparse.samplers import (
    CoarseBalancedGeoSampler,
    CoverGeoSampler,
    RegionGeoSampler,
    cover_offsets,
    window_positions,
)

from ..conftest import write_raster


def test_cover_offsets_stay_inside():
    assert cover_offsets(100, 40, 40) == [0, 40, 60]
    assert cover_offsets(30, 40, 40) == [0.0]


def test_cover_sampler_has_no_overhang(scene):
    ds = ImageryDataset(scene.image.parent, glob='*_naip.tif')
    windows = list(CoverGeoSampler(ds, 128))
    b = ds.bounds
    assert len(windows) == 4
    for x, y, _ in windows:
        assert x.start >= b[0].start and x.stop <= b[0].stop
        assert y.start >= b[1].start and y.stop <= b[1].stop


def test_balanced_sampler_favours_rare_classes(scene):
    co = CoarseLabels(scene.coarse.parent, glob='*_nlcd.tif')
    ds = ImageryDataset(scene.image.parent, glob='*_naip.tif') & co
    s = CoarseBalancedGeoSampler(ds, co, 64, length=10, pool=64)
    assert len(list(s)) == 10
    assert s.weights.max() > s.weights.min()
    assert sum(s.class_frequency.values()) == pytest.approx(1.0)


def test_region_sampler_windows_lie_in_boxes_on_an_off_origin_grid(tmp_path):
    # origin 0.1 m off the multiples of the 0.2 m resolution (like NEON's tiles)
    path = tmp_path / 'off.tif'
    write_raster(
        path,
        np.zeros((1, 50, 60), dtype=np.uint8),
        transform=Affine(0.2, 0, 1000.1, 0, -0.2, 2000.1),
    )
    ds = ImageryDataset(str(path))
    boxes = [(1000.1, 2000.1 - 10 * 0.2, 1000.1 + 16 * 0.2, 2000.1)]  # 10 x 16 px
    sampler = RegionGeoSampler(ds, 8, 30, boxes, torch.Generator().manual_seed(0))
    seen = set()
    for x, y, _ in sampler:
        col, row = (x.start - 1000.1) / 0.2, (2000.1 - y.stop) / 0.2
        assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6
        assert 0 <= round(col) <= 8 and 0 <= round(row) <= 2
        assert ds[(x, y, _)]['image'].shape == (1, 8, 8)
        seen.add((round(col), round(row)))
    assert len(seen) > 5
    with pytest.raises(ValueError, match='patch_size'):
        RegionGeoSampler(ds, 12, 1, boxes)


def test_point_sampler_follows_an_off_origin_raster_grid(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    from geosparse.datasets import SparsePoints
    from geosparse.samplers import PointGeoSampler

    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (1, 40, 50), dtype=np.uint8)
    ox, oy, res = 1000.1, 2000.1, 0.2  # origin off the multiples of the resolution
    write_raster(tmp_path / 'off.tif', data, transform=Affine(res, 0, ox, 0, -res, oy))
    rows, cols = rng.integers(0, 40, 20), rng.integers(0, 50, 20)
    pts = gpd.GeoDataFrame(
        geometry=[
            Point(ox + (c + 0.5) * res, oy - (r + 0.5) * res)
            for r, c in zip(rows, cols, strict=True)
        ],
        crs='EPSG:32618',
    )
    image = ImageryDataset(str(tmp_path / 'off.tif'))
    points = SparsePoints(pts, crs=image.crs, res=image.res)
    both = image & points
    x, y, _ = image.bounds
    sampler = PointGeoSampler(
        both, points, 8, 20, torch.Generator().manual_seed(0), origin=(x.start, y.stop)
    )
    for window in sampler:
        c0 = (window[0].start - ox) / res
        r0 = (oy - window[1].stop) / res
        assert abs(c0 - round(c0)) < 1e-6 and abs(r0 - round(r0)) < 1e-6
        got = both[window]['image'].numpy()
        r0, c0 = round(r0), round(c0)
        np.testing.assert_array_equal(got, data[:, r0 : r0 + 8, c0 : c0 + 8])


def test_window_positions_counts_whole_windows_on_the_box_grid():
    # a 10 x 6 pixel box of 0.5 m pixels: 10 - 4 + 1 positions across, 6 - 4 + 1 down
    assert window_positions((100.0, 200.0, 105.0, 203.0), (0.5, 0.5), (4, 4)) == (7, 3)
    # a box narrower than the window along y holds none
    nx, ny = window_positions((0.0, 0.0, 5.0, 1.0), (0.5, 0.5), (4, 4))
    assert nx == 7 and ny <= 0
