import geopandas as gpd
import numpy as np
import pytest
import rasterio

from geosparse.datasets import InstanceScene, make_instance_scene


@pytest.fixture(scope='module')
def scene(tmp_path_factory: pytest.TempPathFactory) -> InstanceScene:
    return make_instance_scene(tmp_path_factory.mktemp('inst'), size=256, seed=1)


def test_files_and_counts(scene):
    for path in (
        scene.image,
        scene.polygons,
        scene.points,
        scene.background,
        scene.truth,
    ):
        assert path.exists(), path
    assert 20 <= scene.count <= 40
    polys = gpd.read_file(scene.polygons)
    pts = gpd.read_file(scene.points)
    bg = gpd.read_file(scene.background)
    assert sorted(polys['instance']) == list(range(1, scene.count + 1))
    assert sorted(pts['instance']) == list(range(1, scene.count + 1))
    assert len(bg) == 30 and (bg['background'] == 1).all()
    with rasterio.open(scene.image) as src:
        assert src.count == 3 and src.dtypes[0] == 'uint8'
        assert src.res == (0.5, 0.5) and src.crs.to_epsg() == 32618
        assert polys.crs == src.crs


def test_each_point_is_inside_its_polygon_and_background_points_outside(scene):
    polys = gpd.read_file(scene.polygons).set_index('instance')
    pts = gpd.read_file(scene.points).set_index('instance')
    for k, point in pts.geometry.items():
        assert polys.geometry[k].contains(point), k
    bg = gpd.read_file(scene.background)
    union = polys.geometry.union_all()
    assert not bg.geometry.intersects(union).any()


def test_polygons_match_the_truth_raster(scene):
    polys = gpd.read_file(scene.polygons).set_index('instance')
    with rasterio.open(scene.truth) as src:
        truth = src.read(1)
    counts = np.bincount(truth.ravel(), minlength=scene.count + 1)[1:]
    assert polys.geometry.area.sort_index().to_numpy() == pytest.approx(counts * 0.25)


def test_some_objects_touch_and_sizes_vary(scene):
    polys = gpd.read_file(scene.polygons).geometry.to_list()
    touching = sum(
        polys[i].intersects(polys[j].buffer(0.01))
        for i in range(len(polys))
        for j in range(i + 1, len(polys))
    )
    assert touching >= 5
    areas = np.array([p.area for p in polys])
    assert areas.max() > 5 * areas.min()
    # Touching polygons share a wall but do not overlap.
    assert all(
        polys[i].intersection(polys[j]).area == 0
        for i in range(len(polys))
        for j in range(i + 1, len(polys))
    )


def test_deterministic_per_seed(tmp_path, scene):
    again = make_instance_scene(tmp_path / 'a', size=256, seed=1)
    other = make_instance_scene(tmp_path / 'b', size=256, seed=2)
    with rasterio.open(scene.image) as a, rasterio.open(again.image) as b:
        assert np.array_equal(a.read(), b.read())
    with rasterio.open(scene.image) as a, rasterio.open(other.image) as b:
        assert not np.array_equal(a.read(), b.read())
    p, q = gpd.read_file(scene.points), gpd.read_file(again.points)
    assert p.geometry.geom_equals_exact(q.geometry, 0).all()


def test_one_band_and_bad_arguments(tmp_path):
    grey = make_instance_scene(tmp_path, size=128, seed=0, bands=1)
    with rasterio.open(grey.image) as src:
        assert src.count == 1
    with pytest.raises(ValueError, match='bands'):
        make_instance_scene(tmp_path, bands=2)
    with pytest.raises(ValueError, match='96'):
        make_instance_scene(tmp_path, size=64)


def test_hand_crafted_distances_fall_short(scene):
    from geosparse.instances import (
        geodesic_instances,
        instance_scores,
        voronoi_instances,
    )

    with rasterio.open(scene.image) as src:
        image, transform = src.read(), src.transform
    with rasterio.open(scene.truth) as src:
        truth = src.read(1).astype(np.int64)
    pts = gpd.read_file(scene.points)
    rc = np.array([~transform * (g.x, g.y) for g in pts.geometry])[:, ::-1]
    ids = pts['instance'].to_numpy()
    vor = instance_scores(voronoi_instances(truth.shape, rc, ids, truth > 0), truth)
    geo = instance_scores(geodesic_instances(image, rc, ids, truth > 0), truth)
    assert vor['pq'] < 0.85 and geo['pq'] < 0.9
