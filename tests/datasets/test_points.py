import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import Point
from torch.utils.data import DataLoader

from geosparse.compat import window_bounds
from geosparse.datamodules import NPPDataModule
from geosparse.datasets import (
    ImageryDataset,
    SparsePoints,
    collate_points,
    spatial_split,
)
from geosparse.samplers import PointGeoSampler

from ..conftest import random_raster


@pytest.fixture
def files(tmp_path):
    # 1 m pixels from (500000, 4200000) down/right; points at pixel centres.
    pix = [(10, 20), (10, 21), (150, 40), (60, 180), (199, 199)]
    geoms = [Point(500000 + c + 0.5, 4200000 - r - 0.5) for r, c in pix]
    gdf = gpd.GeoDataFrame(
        {'height': [1.0, 2.0, 3.0, np.nan, 5.0], 'zinc': [10.0, 20, 30, 40, 50]},
        geometry=geoms,
        crs='EPSG:32618',
    )
    gdf.to_file(tmp_path / 'pts.gpkg')
    ll = gdf.to_crs('EPSG:4326')
    ll.assign(lon=ll.geometry.x, lat=ll.geometry.y).drop(columns='geometry').to_csv(
        tmp_path / 'pts.csv', index=False
    )
    random_raster(tmp_path / 'img.tif', bands=3, h=200, w=200)
    return tmp_path, pix


def test_points_in_a_window_come_as_pixel_coordinates(files):
    root, _ = files
    with pytest.warns(UserWarning, match='dropped 1 of 5 points'):
        ds = SparsePoints(root / 'pts.gpkg', ['height', 'zinc'], res=1.0)
    assert len(ds) == 4
    q = (slice(500000, 500064, 1.0), slice(4200000 - 64, 4200000, 1.0), slice(None))
    s = ds[q]
    np.testing.assert_allclose(s['points'].numpy(), [[10.5, 20.5], [10.5, 21.5]])
    np.testing.assert_allclose(s['values'].numpy(), [[1, 10], [2, 20]])
    with pytest.warns(UserWarning):
        csv = SparsePoints(root / 'pts.csv', 'height', crs='EPSG:32618')
    np.testing.assert_allclose(csv.xy(), ds.xy(), atol=1e-6)


def test_imagery_and_points_through_the_sampler_and_collate(files):
    root, _ = files
    image = ImageryDataset(root, glob='img.tif')
    with pytest.warns(UserWarning):
        points = SparsePoints(root / 'pts.gpkg', 'height', crs=image.crs, res=image.res)
    both = image & points
    sampler = PointGeoSampler(both, points, size=32, length=12)
    loader = DataLoader(both, sampler=sampler, batch_size=4, collate_fn=collate_points)
    with rasterio.open(root / 'img.tif') as src:
        data = src.read()
    n = 0
    for batch in loader:
        assert batch['image'].shape == (4, 3, 32, 32)
        assert batch['valid'].any(1).all()  # every window holds a point
        for b in range(4):
            for (r, c), ok in zip(batch['points'][b], batch['valid'][b], strict=True):
                if not ok:
                    continue
                # The point's pixel in the window is the raster's pixel at the point.
                img = batch['image'][b, :, int(r), int(c)].numpy()
                x, _, _, y = window_bounds(batch['bounds'][b])
                rr, cc = int(4200000 - y + r), int(x - 500000 + c)
                np.testing.assert_array_equal(img, data[:, rr, cc])
                n += 1
    assert n >= 12


def test_spatial_split_keeps_blocks_together():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10000, (500, 2))
    parts = spatial_split(xy, (0.6, 0.2, 0.2), block_size=1000, seed=1)
    assert sorted(np.concatenate(parts).tolist()) == list(range(500))
    sizes = [len(p) / 500 for p in parts]
    assert abs(sizes[0] - 0.6) < 0.1 and abs(sizes[1] - 0.2) < 0.1
    blocks = [
        set(map(tuple, np.floor(xy[p] / 1000).astype(int).tolist())) for p in parts
    ]
    assert not (blocks[0] & blocks[1]) and not (blocks[0] & blocks[2])
    with pytest.raises(ValueError, match='sum to 1'):
        spatial_split(xy, (0.5, 0.2))


def test_bad_point_files_are_named(files, tmp_path):
    root, _ = files
    with pytest.raises(ValueError, match="no value column 'ph'"):
        SparsePoints(root / 'pts.gpkg', 'ph')
    with pytest.raises(ValueError, match='no such points file'):
        SparsePoints(tmp_path / 'none.gpkg', 'zinc')
    (tmp_path / 'nan.csv').write_text('lon,lat,v\n-75,39,\n')
    with (
        pytest.raises(ValueError, match='no point has a finite value'),
        pytest.warns(UserWarning),
    ):
        SparsePoints(tmp_path / 'nan.csv', 'v')
    image = ImageryDataset(root, glob='img.tif')
    far = gpd.GeoDataFrame({'v': [1.0]}, geometry=[Point(0, 0)], crs='EPSG:32618')
    far.to_file(tmp_path / 'far.gpkg')
    pts = SparsePoints(tmp_path / 'far.gpkg', 'v', crs=image.crs)
    with pytest.raises(ValueError, match='none of the 1 points'):
        PointGeoSampler(image, pts, size=16, length=1)


def test_geoparquet_points_read_as_the_geopackage(files, tmp_path):
    root, _ = files
    gpd.read_file(root / 'pts.gpkg').to_parquet(tmp_path / 'pts.parquet')
    with pytest.warns(UserWarning, match='dropped 1 of 5 points'):
        a = SparsePoints(root / 'pts.gpkg', 'height')
    with pytest.warns(UserWarning, match='dropped 1 of 5 points'):
        b = SparsePoints(tmp_path / 'pts.parquet', 'height')
    assert len(a) == len(b) == 4


def test_missing_geometries_are_dropped_like_missing_values(files, tmp_path):
    """A null geometry and an empty point are the same thing: a point without place."""
    root, _ = files
    gdf = gpd.read_file(root / 'pts.gpkg')
    holes = gdf.copy()
    holes.loc[0, 'geometry'] = None
    holes.loc[1, 'geometry'] = Point()
    holes.to_file(tmp_path / 'holes.gpkg')
    with pytest.warns(UserWarning, match=f'dropped 2 of {len(gdf)} points'):
        pts = SparsePoints(tmp_path / 'holes.gpkg', 'zinc')
    assert len(pts) == len(gdf) - 2
    gdf.assign(geometry=None).set_crs(gdf.crs).to_file(tmp_path / 'none.gpkg')
    with (
        pytest.raises(ValueError, match=r'none\.gpkg: no point has coordinates'),
        pytest.warns(UserWarning),
    ):
        SparsePoints(tmp_path / 'none.gpkg', 'zinc')


def test_projected_csv_read_as_lon_lat_names_points_crs(files, tmp_path):
    root, _ = files
    gdf = gpd.read_file(root / 'pts.gpkg')
    frame = gdf.assign(x=gdf.geometry.x, y=gdf.geometry.y).drop(columns='geometry')
    frame.to_csv(tmp_path / 'utm.csv', index=False)
    # refused on reading, before any projection: the numbers cannot be degrees
    with pytest.raises(
        ValueError,
        match=r'utm\.csv: coordinates such as .* are not longitude and latitude, but '
        r'the points CRS is EPSG:4326.*points_crs',
    ):
        SparsePoints(tmp_path / 'utm.csv', 'height', crs='EPSG:32618')
    with pytest.warns(UserWarning, match='dropped 1'):
        ok = SparsePoints(
            tmp_path / 'utm.csv', 'height', crs='EPSG:32618', points_crs='EPSG:32618'
        )
    assert len(ok) == 4


def test_datamodule_warns_about_points_off_the_imagery(files, tmp_path):
    root, pix = files
    geoms = [Point(500000 + c + 0.5, 4200000 - r - 0.5) for r, c in pix]
    geoms += [Point(499000, 4200000 - 10)] * 2  # 1 km west of the raster
    pts = gpd.GeoDataFrame({'v': np.arange(7.0)}, geometry=geoms, crs='EPSG:32618')
    pts.to_file(tmp_path / 'some_off.gpkg')
    dm = NPPDataModule(
        str(root / 'img.tif'),
        str(tmp_path / 'some_off.gpkg'),
        'v',
        patch_size=16,
        split=(0.6, 0.4),
        block_size=50,
    )
    with pytest.warns(UserWarning, match='2 of 7 points lie outside the imagery'):
        dm.setup('fit')
    pts.iloc[5:].to_file(tmp_path / 'all_off.gpkg')
    dm = NPPDataModule(str(root / 'img.tif'), str(tmp_path / 'all_off.gpkg'), 'v')
    with pytest.raises(
        ValueError, match=r'all_off\.gpkg: none of its 2 points lies on'
    ):
        dm.setup('fit')


def test_point_labels_of_a_field_the_imagery_does_not_show(tmp_path):
    import rasterio

    from geosparse.datasets import make_point_labels, make_scene

    scene = make_scene(tmp_path, size=96, seed=0)
    make_point_labels(scene, n=5, field='land_cover')
    with rasterio.open(tmp_path / 'scene_height.tif') as src:
        cover = src.read(1)
    make_point_labels(scene, n=5, field='independent')
    with rasterio.open(tmp_path / 'scene_height.tif') as src:
        field = src.read(1)
    assert abs(field.mean() - 10) < 3 and 3 < field.std() < 7
    assert abs(np.corrcoef(cover.ravel(), field.ravel())[0, 1]) < 0.5
    with pytest.raises(ValueError, match="field='nope'"):
        make_point_labels(scene, field='nope')
