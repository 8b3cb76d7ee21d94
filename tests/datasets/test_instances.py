from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import torch

from geosparse.datasets import (
    INSTANCE_VALUES,
    InstancePolygons,
    match_points_to_polygons,
    points_on_one_pixel,
    read_instance_points,
)

from ..conftest import random_raster

UTM = 'EPSG:32618'
X0, Y1 = 500000.0, 4200000.0  # top-left corner of the test raster (conftest)
SIZE = 64
# (row, col) pixel of each object's centre, its id, class, and half side in pixels
CENTRES = [(10, 10), (10, 40), (40, 20), (45, 50), (25, 30)]
IDS = [7, 3, 12, 5, 9]
CLASSES = [1, 2, 1, 2, 1]
HALF = 4
BACKGROUND = (58, 4)  # a background click


def pixel_point(row, col):
    """The map point at the centre of pixel (row, col)."""
    return shapely.Point(X0 + col + 0.5, Y1 - row - 0.5)


def square(row, col, half=HALF):
    """The square of pixels rows/cols [row - half, row + half) (edges on the grid)."""
    cx, cy = X0 + col, Y1 - row
    return shapely.box(cx - half, cy - half, cx + half, cy + half)


def polygons_frame():
    return gpd.GeoDataFrame(
        {'obj_id': IDS, 'cls': CLASSES},
        geometry=[square(r, c) for r, c in CENTRES],
        crs=UTM,
    )


def points_frame():
    """Object points in reverse order, then a background point (no id, no class)."""
    rows = list(range(len(CENTRES)))[::-1]
    return gpd.GeoDataFrame(
        {
            'obj_id': [float(IDS[i]) for i in rows] + [np.nan],
            'cls': [float(CLASSES[i]) for i in rows] + [np.nan],
            'bg': [False] * len(rows) + [True],
        },
        geometry=[pixel_point(*CENTRES[i]) for i in rows] + [pixel_point(*BACKGROUND)],
        crs=UTM,
    )


def make_instance_scene(root):
    """A 64 x 64 raster, square polygons and their centre points (and in EPSG:4326)."""
    root.mkdir(parents=True, exist_ok=True)
    random_raster(root / 'image.tif', bands=3, h=SIZE, w=SIZE, seed=0)
    polygons_frame().to_file(root / 'polygons.gpkg')
    points_frame().to_file(root / 'points.gpkg')
    points_frame().to_crs('EPSG:4326').to_file(root / 'points_wgs84.geojson')
    return SimpleNamespace(
        root=root,
        image=root / 'image.tif',
        polygons=root / 'polygons.gpkg',
        points=root / 'points.gpkg',
        points_wgs84=root / 'points_wgs84.geojson',
    )


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    return make_instance_scene(tmp_path_factory.mktemp('instances'))


def window(size=SIZE):
    return (slice(X0, X0 + size, 1.0), slice(Y1 - size, Y1, 1.0))


# ---------------------------------------------------------------- points
def test_points_carry_ids_classes_and_background(scene):
    points = read_instance_points(
        scene.points, id_column='obj_id', class_column='cls', background_column='bg'
    )
    assert points.values == list(INSTANCE_VALUES)
    values = points.points[list(INSTANCE_VALUES)].to_numpy()
    expected = [[IDS[i], CLASSES[i], 0] for i in range(len(IDS))][::-1]
    np.testing.assert_array_equal(values, [*expected, [0, 0, 1]])
    sample = points[window()]
    assert sample['values'].dtype == torch.float32
    # the points land on their pixels
    rows_cols = sample['points'].floor().long().tolist()
    assert rows_cols == [*[list(CENTRES[i]) for i in range(5)][::-1], list(BACKGROUND)]


def test_default_ids_are_row_numbers_and_class_one(scene):
    points = read_instance_points(scene.points, background_column='bg')
    values = points.points[list(INSTANCE_VALUES)].to_numpy()
    np.testing.assert_array_equal(values[:, 0], [1, 2, 3, 4, 5, 0])
    np.testing.assert_array_equal(values[:, 1], [1, 1, 1, 1, 1, 0])


def test_points_in_another_crs_are_reprojected(scene, tmp_path):
    points = read_instance_points(
        scene.points_wgs84, id_column='obj_id', background_column='bg', crs=UTM
    )
    expected = read_instance_points(scene.points, background_column='bg').xy()
    np.testing.assert_allclose(points.xy(), expected, atol=1e-3)
    # and a CSV of longitudes and latitudes
    wgs = gpd.read_file(scene.points_wgs84)
    csv = tmp_path / 'clicks.csv'
    pd.DataFrame(
        {'lon': wgs.geometry.x, 'lat': wgs.geometry.y, 'bg': wgs['bg'].astype(int)}
    ).to_csv(csv, index=False)
    from_csv = read_instance_points(csv, background_column='bg', crs=UTM)
    np.testing.assert_allclose(from_csv.xy(), expected, atol=1e-3)


@pytest.mark.parametrize(
    ('change', 'kwargs', 'match'),
    [
        (lambda f: f.iloc[:0], {}, 'holds no points'),
        (lambda f: f, {'id_column': 'nope'}, r"'nope' \(id_column\)"),
        (lambda f: f, {'class_column': 'nope'}, r"'nope' \(class_column\)"),
        (
            lambda f: f.assign(obj_id=[7.0, 7.0, 1.0, 2.0, 3.0, np.nan]),
            {'id_column': 'obj_id', 'background_column': 'bg'},
            'repeats 1 instance ids',
        ),
        (
            lambda f: f.assign(obj_id=[0.0, 1.0, 2.0, 3.0, 4.0, np.nan]),
            {'id_column': 'obj_id', 'background_column': 'bg'},
            r'id_column=.*\[1, 2\*\*24\)',
        ),
        (
            lambda f: f.assign(obj_id=[2.0**24, 1.0, 2.0, 3.0, 4.0, np.nan]),
            {'id_column': 'obj_id', 'background_column': 'bg'},
            r'2\*\*24',
        ),
        (
            lambda f: f.assign(geometry=f.geometry.buffer(1.0)),
            {},
            'must be a Point .*Polygon',
        ),
    ],
)
def test_bad_points_name_the_file(scene, tmp_path, change, kwargs, match):
    path = tmp_path / 'bad.gpkg'
    change(points_frame()).to_file(path)
    with pytest.raises(ValueError, match=match) as err:
        read_instance_points(path, **kwargs)
    assert str(path) in str(err.value)


def test_background_points_need_no_id(scene):
    # without background_column, the background row is an object with a missing id
    with pytest.raises(ValueError, match=r'obj_id.*missing'):
        read_instance_points(scene.points, id_column='obj_id')


# ---------------------------------------------------------------- polygons
def test_polygons_rasterise_exact_ids_at_their_pixels(scene):
    polygons = InstancePolygons(
        scene.polygons, id_column='obj_id', class_column='cls', res=1.0
    )
    sample = polygons[window()]
    inst, cls = sample['instances'], sample['classes']
    assert inst.shape == (SIZE, SIZE) and inst.dtype == torch.int64
    assert cls.dtype == torch.int64
    for (r, c), i, k in zip(CENTRES, IDS, CLASSES, strict=True):
        assert int(inst[r, c]) == i and int(cls[r, c]) == k
        # the square spans rows/cols [r - 4, r + 4) (pixel centres inside it)
        assert (inst[r - 4 : r + 4, c - 4 : c + 4] == i).all()
        assert int(inst[r - 5, c]) == 0 and int(inst[r + 4, c]) == 0
        assert int(inst[r, c - 5]) == 0 and int(inst[r, c + 4]) == 0
        assert int((inst == i).sum()) == (2 * HALF) ** 2
    assert int((inst > 0).sum()) == len(IDS) * (2 * HALF) ** 2
    # a window of part of the raster: same pixels, shifted
    sub = polygons[(slice(X0 + 8, X0 + 40, 1.0), slice(Y1 - 40, Y1 - 8, 1.0))]
    assert sub['instances'].shape == (32, 32)
    assert int(sub['instances'][10 - 8, 10 - 8]) == 7


def test_default_polygon_ids_and_later_wins(scene):
    frame = polygons_frame()
    frame.loc[5] = [99, 1, square(12, 12)]  # overlaps id 7's square, comes later
    polygons = InstancePolygons(frame)  # ids: row number + 1
    inst = polygons[window()]['instances']
    assert int(inst[12, 12]) == 6  # the later polygon
    assert int(inst[6, 6]) == 1  # the first polygon where it is alone
    assert 'classes' not in polygons[window()]


def test_polygons_crs_setter_reprojects(scene):
    polygons = InstancePolygons(scene.polygons.as_posix(), id_column='obj_id')
    wgs = polygons.frame.to_crs('EPSG:4326')
    other = InstancePolygons(wgs, id_column='instance', crs=UTM)
    np.testing.assert_allclose(other.frame.total_bounds, polygons.frame.total_bounds)
    polygons.crs = 'EPSG:4326'
    assert polygons.frame.crs.to_epsg() == 4326
    assert polygons.index.crs.to_epsg() == 4326


@pytest.mark.parametrize(
    ('change', 'kwargs', 'match'),
    [
        (lambda f: f.iloc[:0], {}, 'holds no polygons'),
        (lambda f: f, {'id_column': 'nope'}, r"'nope' \(id_column\)"),
        (lambda f: f.assign(obj_id=1), {'id_column': 'obj_id'}, 'repeats'),
        (
            lambda f: f.assign(geometry=f.geometry.centroid),
            {},
            'must be a .*Polygon, found Point',
        ),
    ],
)
def test_bad_polygons_name_the_file(tmp_path, change, kwargs, match):
    path = tmp_path / 'bad_polygons.gpkg'
    change(polygons_frame()).to_file(path)
    with pytest.raises(ValueError, match=match) as err:
        InstancePolygons(path, **kwargs)
    assert str(path) in str(err.value)


# ---------------------------------------------------------------- matching
def test_match_points_to_polygons(scene):
    points = read_instance_points(
        scene.points, id_column='obj_id', background_column='bg'
    )
    polygons = InstancePolygons(scene.polygons, id_column='obj_id')
    matched = match_points_to_polygons(points, polygons)
    np.testing.assert_array_equal(matched, [*IDS[::-1], 0])  # background: 0


def test_match_warns_and_fails_naming_the_files(scene):
    polygons = InstancePolygons(scene.polygons, id_column='obj_id')
    lonely = points_frame().iloc[1:]  # drops a point; the background row is kept
    lonely = lonely.assign(background=0.0)  # ... as an object point, off polygons
    with pytest.warns(UserWarning) as record:
        match_points_to_polygons(lonely, polygons, 'pts.gpkg')
    messages = [str(w.message) for w in record]
    assert any(
        'pts.gpkg: 1 of 5 object points lie in no polygon' in m for m in messages
    )
    assert any(
        m.startswith(f'{scene.polygons}: 1 of 5 polygons hold no point')
        for m in messages
    )
    two = points_frame().iloc[:5]
    extra = two.iloc[:1].assign(geometry=[pixel_point(46, 51)], obj_id=[42.0])
    two = pd.concat([two, extra], ignore_index=True).rename(
        columns={'obj_id': 'instance'}
    )
    with pytest.raises(
        ValueError, match=r'instance 5 and instance 42 both fall'
    ) as err:
        match_points_to_polygons(two, polygons, 'pts.gpkg')
    assert 'pts.gpkg' in str(err.value) and str(scene.polygons) in str(err.value)


def test_points_on_one_pixel_finds_the_first_shared_pixel():
    assert points_on_one_pixel(np.array([]), np.array([])).tolist() == []
    assert points_on_one_pixel(np.array([3]), np.array([4])).tolist() == []
    assert points_on_one_pixel(np.array([1, 2, 1]), np.array([1, 1, 2])).tolist() == []
    rows, cols = np.array([5, 1, 9, 1, 5, 1]), np.array([5, 2, 9, 2, 5, 2])
    # two pixels are shared; the first point of either (index 0) picks (5, 5)
    assert points_on_one_pixel(rows, cols).tolist() == [0, 4]
    assert points_on_one_pixel(rows[1:], cols[1:]).tolist() == [0, 2, 4]
