"""Points and box CSVs from strangers: unreadable, empty, text or missing values."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geosparse.io.points import box_centres, is_box_csv, read_points_frame


@pytest.fixture
def raster(tmp_path):
    path = tmp_path / 'r.tif'
    profile = dict(
        driver='GTiff',
        height=64,
        width=64,
        count=1,
        dtype='uint8',
        crs='EPSG:32611',
        transform=from_origin(500000, 4000064, 1, 1),
    )
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(np.zeros((1, 64, 64), dtype=np.uint8))
    return path


@pytest.mark.parametrize(
    ('content', 'match'),
    [
        (b'\xff\xfe\x00\x89PNG', 'not a UTF-8 text CSV'),
        (b'', 'the file is empty'),
        (b'xmin,ymin,xmax,ymax\n1,1,5,5\na,1,5,5\n', "'xmin' holds 'a' at data row 2"),
    ],
)
def test_unreadable_box_csvs_name_the_file(tmp_path, raster, content, match):
    """Before: a UnicodeDecodeError, pandas' EmptyDataError or 'could not convert
    string to float' without the file's name."""
    path = tmp_path / 'boxes.csv'
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        if is_box_csv(path):
            box_centres(path, raster)
        else:
            read_points_frame(path, [])
    assert 'boxes.csv' in str(err.value)


def test_boxes_without_coordinates_are_dropped_with_a_warning(tmp_path, raster):
    """Before: a box with an empty cell became a point at NaN, silently."""
    path = tmp_path / 'boxes.csv'
    path.write_text('xmin,ymin,xmax,ymax\n1,1,5,5\n,1,5,5\n2,2,nan,6\n')
    with pytest.warns(UserWarning, match='dropped 2 of 3 boxes.*data row 2'):
        points = box_centres(path, raster)
    assert len(points) == 1 and np.isfinite(points.geometry.x).all()
    assert points['width'].tolist() == [4.0]
    path.write_text('xmin,ymin,xmax,ymax\n,1,5,5\n')
    with pytest.raises(ValueError, match='no box has all four finite'):
        box_centres(path, raster)


def test_text_in_point_coordinates_names_the_column_and_row(tmp_path):
    path = tmp_path / 'pts.csv'
    path.write_text('x,y,v\n500001,4000001,3\n500002,north,4\n')
    with pytest.raises(
        ValueError, match=r"pts.csv: column 'y' holds 'north' at data row 2"
    ):
        read_points_frame(path, ['v'], points_crs='EPSG:32611')
