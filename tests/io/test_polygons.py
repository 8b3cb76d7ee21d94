import importlib.util

import geopandas as gpd
import numpy as np
import pytest
from rasterio.transform import from_origin

from geosparse.io.points import read_points_frame
from geosparse.io.polygons import instance_polygons, write_polygons

TRANSFORM = from_origin(500000.0, 4200000.0, 0.5, 0.5)
CRS = 'EPSG:32618'


def _instances():
    inst = np.zeros((10, 12), dtype=np.int64)
    inst[1:5, 1:7] = 3  # 24 pixels
    inst[6:9, 2:4] = 8  # 6 pixels
    inst[6:9, 9:11] = 8  # 6 more: a two-part instance
    return inst


def test_instances_become_polygons_with_the_right_areas():
    inst = _instances()
    classes = np.ones_like(inst)
    classes[6:9, :] = 2
    classes[6, 9] = 1
    frame = instance_polygons(inst, TRANSFORM, CRS, classes=classes)
    assert frame['instance'].tolist() == [3, 8]
    assert frame['pixels'].tolist() == [24, 12]
    assert frame['area'].tolist() == pytest.approx([24 * 0.25, 12 * 0.25])
    assert frame['class'].tolist() == [1, 2]
    assert frame.geometry.iloc[0].geom_type == 'Polygon'
    assert frame.geometry.iloc[1].geom_type == 'MultiPolygon'
    assert frame.crs.to_epsg() == 32618
    x0, y0 = 500000.0 + 0.5, 4200000.0 - 0.5
    assert frame.geometry.iloc[0].bounds == pytest.approx((x0, y0 - 2, x0 + 3, y0))


def test_default_class_and_point_ids():
    frame = instance_polygons(_instances(), TRANSFORM, CRS, point_ids=[8, 99])
    assert frame['instance'].tolist() == [8] and frame['class'].tolist() == [1]


def test_round_trip_through_a_geopackage(tmp_path):
    frame = instance_polygons(_instances(), TRANSFORM, CRS)
    path = write_polygons(frame, tmp_path / 'out.gpkg')
    back = gpd.read_file(path)
    assert back['instance'].tolist() == [3, 8]
    assert back['area'].tolist() == pytest.approx([6.0, 3.0])
    assert back.geometry.area.tolist() == pytest.approx([6.0, 3.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.gpkg']


def test_geoparquet(tmp_path):
    frame = instance_polygons(_instances(), TRANSFORM, CRS)
    back = gpd.read_parquet(write_polygons(frame, tmp_path / 'out.parquet'))
    assert back['pixels'].tolist() == [24, 12]
    assert back.crs == frame.crs


def test_geoparquet_without_pyarrow_is_one_line_with_the_fix(tmp_path, monkeypatch):
    """pyarrow is the optional parquet extra: without it, say so before any write."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        'find_spec',
        lambda name, *a: None if name == 'pyarrow' else real(name, *a),
    )
    frame = instance_polygons(_instances(), TRANSFORM, CRS)
    with pytest.raises(
        ValueError, match=r'out\.parquet: GeoParquet needs pyarrow.*parquet'
    ):
        write_polygons(frame, tmp_path / 'out.parquet')
    frame.to_parquet(tmp_path / 'pts.parquet')  # pyarrow is here, only hidden
    with pytest.raises(ValueError, match=r'pts\.parquet: GeoParquet needs pyarrow'):
        read_points_frame(tmp_path / 'pts.parquet', [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['pts.parquet']


def test_a_bad_suffix_names_the_path_and_the_choices(tmp_path):
    frame = instance_polygons(_instances(), TRANSFORM, CRS)
    with pytest.raises(ValueError, match=r'out\.shp.*\.gpkg.*\.parquet'):
        write_polygons(frame, tmp_path / 'out.shp')
    assert not list(tmp_path.iterdir())


def test_nothing_is_left_behind_on_failure(tmp_path, monkeypatch):
    frame = instance_polygons(_instances(), TRANSFORM, CRS)

    def boom(self, *args, **kwargs):
        raise RuntimeError('disk full')

    monkeypatch.setattr(gpd.GeoDataFrame, 'to_file', boom)
    with pytest.raises(RuntimeError, match='disk full'):
        write_polygons(frame, tmp_path / 'out.gpkg')
    assert not list(tmp_path.iterdir())
