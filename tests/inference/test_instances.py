import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import torch
from rio_cogeo.cogeo import cog_validate
from scipy import ndimage

from geosparse.inference.instances import (
    GEOPACKAGE_MEDIA_TYPE,
    INSTANCE_NODATA,
    predict_instances,
)
from geosparse.io.spec import OutputSpec
from geosparse.trainers import PointInstanceTask

from ..conftest import UTM_ORIGIN, write_raster

SIZE = 64
# (row, col) pixel centres of the objects; the second sits across the row-32 block
# edge of block=32 (rows 26..37).
CENTRES = [(12, 12), (31, 40), (50, 18), (48, 52)]
IDS = [7, 3, 11, 5]
CLASSES = [1, 2, 1, 2]
RADIUS = 6


def _image(nodata_corner=False):
    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[:SIZE, :SIZE]
    img = 30 + rng.normal(0, 3, (SIZE, SIZE))
    for r, c in CENTRES:
        img[(rr - r) ** 2 + (cc - c) ** 2 <= RADIUS**2] = 200
    img = img.astype(np.float32)[None]
    if nodata_corner:
        img[:, :6, -6:] = -9999
    return img


def _xy(rows, cols):
    x, y = UTM_ORIGIN * (np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)
    return np.asarray(x), np.asarray(y)


def _points(path, crs='EPSG:32618', extra=None):
    rows = [r for r, _ in CENTRES]
    cols = [c for _, c in CENTRES]
    x, y = _xy(rows, cols)
    frame = gpd.GeoDataFrame(
        {'oid': IDS, 'kind': CLASSES},
        geometry=gpd.points_from_xy(x, y),
        crs='EPSG:32618',
    )
    if extra is not None:
        frame = gpd.GeoDataFrame(
            gpd.pd.concat([frame, extra], ignore_index=True), crs='EPSG:32618'
        )
    frame.to_crs(crs).to_file(path)
    return path


@pytest.fixture(scope='module')
def task():
    torch.manual_seed(0)
    # Untrained: the nearest query decides the foreground (its hand-crafted term
    # makes the pixels near a point its object), not the untrained head.
    return PointInstanceTask(
        in_channels=1,
        feature_dim=8,
        stuff_queries=2,
        rounds=1,
        scale=6.0,
        foreground='queries',
    ).eval()


@pytest.fixture
def scene(tmp_path):
    image = tmp_path / 'scene.tif'
    write_raster(image, _image(nodata_corner=True), nodata=-9999)
    return image, _points(tmp_path / 'points.gpkg')


def _run(task, scene, out, **kw):
    image, points = scene
    options = dict(id_column='oid', class_column='kind', progress=False)
    options.update(kw)
    return predict_instances(task, image, points, out, **options)


def test_outputs_cog_polygons_and_item(task, scene, tmp_path):
    out = tmp_path / 'out'
    paths = _run(task, scene, out, block=32, halo=16)
    assert paths.raster == out / 'scene_instances.tif'
    assert cog_validate(str(paths.raster))[0]
    with rasterio.open(paths.raster) as ds:
        assert ds.count == 3 and set(ds.dtypes) == {'uint32'}
        assert ds.nodata == INSTANCE_NODATA
        assert ds.descriptions == ('instance', 'class', 'uncertainty')
        assert ds.scales[2] == pytest.approx(1 / 254)
        data = ds.read()
    spec = OutputSpec.read(paths.raster)
    assert spec is not None and spec.kind == 'instances' and spec.count == 3
    assert spec.properties['points_used'] == 4
    # Nodata pixels are nodata in every band, the others are not.
    assert (data[:, :6, -6:] == INSTANCE_NODATA).all()
    valid = data[0] != INSTANCE_NODATA
    assert valid.sum() == SIZE * SIZE - 36
    inst, unc = data[0][valid], data[2][valid]
    assert set(np.unique(inst)) <= {0, *IDS}
    assert unc.max() <= 254
    # Each object point's pixel holds its id, and the class band its class.
    for (r, c), i, k in zip(CENTRES, IDS, CLASSES, strict=True):
        assert data[0, r, c] == i
        assert data[1, r, c] == k
    assert ((data[1] == 0) == (data[0] == 0))[valid].all()

    frame = gpd.read_file(paths.polygons)
    assert list(frame.columns) == ['instance', 'class', 'area', 'pixels', 'geometry']
    assert sorted(frame['instance']) == sorted(set(np.unique(inst)) - {0})
    assert frame['instance'].is_unique
    for row in frame.itertuples():
        assert row.pixels == (data[0] == row.instance).sum()
        assert row.area == pytest.approx(row.pixels)  # 1 m pixels
        assert row._2 == CLASSES[IDS.index(row.instance)]

    item = json.loads(paths.item.read_text())
    assert item['assets']['data']['href'] == './scene_instances.tif'
    polygons = item['assets']['polygons']
    assert polygons['href'] == './scene_instances.gpkg'
    assert polygons['type'] == GEOPACKAGE_MEDIA_TYPE
    assert 'file:checksum' in polygons
    assert item['properties']['geosparse:kind'] == 'instances'
    assert sorted(p.name for p in out.iterdir()) == [
        'scene_instances.gpkg',
        'scene_instances.json',
        'scene_instances.tif',
    ]


def test_an_object_on_a_block_edge_comes_out_whole(task, scene, tmp_path):
    blocked = _run(task, scene, tmp_path / 'a', block=32, halo=16)
    whole = _run(task, scene, tmp_path / 'b', block=SIZE, halo=0)
    edge = IDS[1]  # the object across row 32
    for paths in (blocked, whole):
        with rasterio.open(paths.raster) as ds:
            inst = ds.read(1)
        mask = inst == edge
        # The 4-connected region of the point's pixel crosses the edge (rows 31|32).
        labels, _ = ndimage.label(mask)
        region = labels == labels[CENTRES[1]]
        assert (region[31] & region[32]).any()
        # An untrained network may leave a stray pixel touching it at a corner.
        assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1
        frame = gpd.read_file(paths.polygons)
        feature = frame[frame['instance'] == edge]
        assert len(feature) == 1
        parts = shapely.get_parts(feature.geometry.iloc[0])
        largest = max(parts, key=lambda g: g.area)
        assert largest.area == pytest.approx(region.sum())
        assert largest.bounds[1] < 4200000 - 32 < largest.bounds[3]
        assert feature['pixels'].iloc[0] == mask.sum()


def test_points_in_wgs84_for_a_utm_raster(task, scene, tmp_path):
    image, _ = scene
    points = _points(tmp_path / 'points_wgs84.geojson', crs='EPSG:4326')
    paths = _run(task, (image, points), tmp_path / 'out', block=SIZE, halo=0)
    with rasterio.open(paths.raster) as ds:
        inst = ds.read(1)
    for (r, c), i in zip(CENTRES, IDS, strict=True):
        assert inst[r, c] == i


def test_points_off_the_raster_warn_and_a_block_without_points_is_background(
    task, tmp_path
):
    image = tmp_path / 'scene.tif'
    write_raster(image, _image())
    x, y = _xy([-40], [10])
    far = gpd.GeoDataFrame(
        {'oid': [99], 'kind': [1]}, geometry=gpd.points_from_xy(x, y), crs='EPSG:32618'
    )
    points = _points(tmp_path / 'points.gpkg', extra=far)
    with pytest.warns(UserWarning, match='1 of 5 points lie off'):
        paths = _run(task, (image, points), tmp_path / 'out', block=16, halo=4)
    with rasterio.open(paths.raster) as ds:
        data = ds.read()
    assert 99 not in data[0]
    # Block rows 0-15, cols 48-63 and its halo hold no object point: background.
    assert (data[:, :16, 52:] == 0).all()


def test_empty_and_outside_points_fail_and_leave_nothing(task, scene, tmp_path):
    image, points = scene
    out = tmp_path / 'out'
    empty = tmp_path / 'empty.gpkg'
    gpd.read_file(points).iloc[:0].to_file(empty)
    with pytest.raises(ValueError, match=r'empty.gpkg: the points file is empty'):
        predict_instances(task, image, empty, out, progress=False)
    far = tmp_path / 'far.gpkg'
    frame = gpd.read_file(points)
    frame.geometry = frame.geometry.translate(10000, 0)
    frame.to_file(far)
    with pytest.raises(ValueError, match=r'far.gpkg: none of the 4 object points'):
        predict_instances(task, image, far, out, progress=False)
    assert not out.exists()


def test_two_object_points_on_one_pixel_fail_naming_the_file(task, tmp_path):
    image = tmp_path / 'scene.tif'
    write_raster(image, _image())
    x, y = _xy([CENTRES[0][0] + 0.2], [CENTRES[0][1] + 0.3])  # the pixel of id 7
    twin = gpd.GeoDataFrame(
        {'oid': [99], 'kind': [1]}, geometry=gpd.points_from_xy(x, y), crs='EPSG:32618'
    )
    points = _points(tmp_path / 'twins.gpkg', extra=twin)
    out = tmp_path / 'out'
    with pytest.raises(ValueError, match=r'twins.gpkg: object points 7 and 99 .* one'):
        _run(task, (image, points), out)
    assert not out.exists()
    # a background point may share an object's pixel
    bg = twin.assign(oid=[0], background=[1])
    points = _points(tmp_path / 'bg.gpkg', extra=bg)
    _run(task, (image, points), out, background_column='background', block=32)


def test_an_object_without_pixels_is_named_not_silently_dropped(
    task, scene, tmp_path, monkeypatch
):
    """The model may call a point's pixels background: the user is told which."""
    real = PointInstanceTask.predict_instances

    def drops_eleven(self, *args, **kwargs):
        pred = real(self, *args, **kwargs)
        pred.instances[pred.instances == 11] = 0
        return pred

    monkeypatch.setattr(PointInstanceTask, 'predict_instances', drops_eleven)
    with pytest.warns(
        UserWarning, match=r'points.gpkg: 1 of 4 object points \(ids 11\)'
    ):
        paths = _run(task, scene, tmp_path / 'out', block=32, halo=16)
    assert 11 not in set(gpd.read_file(paths.polygons)['instance'])


def test_a_failure_while_writing_leaves_nothing(task, scene, tmp_path, monkeypatch):
    import geosparse.inference.instances as module

    def broken(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(module, 'write_polygons', broken)
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises(OSError, match='disk full'):
        _run(task, scene, out, block=SIZE, halo=0)
    assert list(out.iterdir()) == []


def test_auto_split_is_the_tasks_default_split_and_is_recorded(task, scene, tmp_path):
    assert task.hparams['colour_scale'] is not None
    runs = {}
    for split in ('auto', 'learned', 'geodesic'):
        paths = _run(task, scene, tmp_path / split, block=32, halo=16, split=split)
        spec = OutputSpec.read(paths.raster)
        assert spec is not None
        runs[split] = spec.properties['split']
        with rasterio.open(paths.raster) as ds:
            runs[split, 'data'] = ds.read()  # the uncertainty differs by split
    assert runs['auto'] == 'learned' and runs['geodesic'] == 'geodesic'
    np.testing.assert_array_equal(runs['auto', 'data'], runs['learned', 'data'])
    assert not np.array_equal(runs['auto', 'data'], runs['geodesic', 'data'])
    saved = task.hparams['colour_scale']
    task.hparams['colour_scale'] = None  # as a checkpoint from before the term
    try:
        paths = _run(task, scene, tmp_path / 'old', block=32, halo=16)
    finally:
        task.hparams['colour_scale'] = saved
    spec = OutputSpec.read(paths.raster)
    assert spec is not None and spec.properties['split'] == 'geodesic'
    with pytest.raises(ValueError, match='split'):
        _run(task, scene, tmp_path / 'bad', split='nearest')
    assert not (tmp_path / 'bad').exists()


def test_predict_cli_routes_instance_checkpoints(task, scene, tmp_path, capsys):
    from geosparse.cli import main
    from geosparse.inference.checkpoints import read_checkpoint, task_class_for

    from ..conftest import save_untrained

    image, points = scene
    task.hparams['window'] = 32  # as fitting on windows of 32 pixels sets it
    ckpt = save_untrained(task, tmp_path / 'inst.ckpt')
    hparams = read_checkpoint(ckpt)['hyper_parameters']  # plain data, no unpickling
    assert task_class_for(hparams) is PointInstanceTask
    assert hparams['window'] == 32
    out = tmp_path / 'maps'
    args = ['predict', '--checkpoint', str(ckpt), str(image), '--out', str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert 'holds a PointInstanceTask' in err and '--points' in err
    assert not out.exists()
    more = ['--points', str(points), '--id-column', 'oid', '--class-column', 'kind']
    assert main([*args, *more, '--quiet']) == 0
    assert 'scene_instances.tif' in capsys.readouterr().out
    spec = OutputSpec.read(out / 'scene_instances.tif')
    assert spec is not None and spec.properties['checkpoint'] == 'inst.ckpt'
    # blocks of the training window by default, with a quarter of it as halo
    assert (spec.properties['block'], spec.properties['halo']) == (32, 8)
    # the split the checkpoint's distance measured better with (--split auto)
    assert spec.properties['split'] == 'learned'
    with rasterio.open(out / 'scene_instances.tif') as ds:
        inst = ds.read(1)
    for (r, c), i in zip(CENTRES, IDS, strict=True):
        assert inst[r, c] == i
    item = json.loads((out / 'scene_instances.json').read_text())
    assert item['properties']['geosparse:checkpoint'] == 'inst.ckpt'
    assert set(item['assets']) == {'data', 'polygons'}
    assert main([*args, *more, '--quiet', '--resume']) == 0
    assert 'skipped' in capsys.readouterr().out
    # A bad column is a failed input, named, and leaves nothing.
    bad = ['--points', str(points), '--id-column', 'nope', '--quiet']
    assert main([*args[:-1], str(tmp_path / 'other'), *bad]) == 1
    assert 'nope' in capsys.readouterr().err
    assert not (tmp_path / 'other').exists()


def test_points_with_another_task_are_unused(scene, tmp_path, capsys):
    from geosparse.cli import main
    from geosparse.compat import SemanticSegmentation

    from ..conftest import save_untrained

    image, points = scene
    seg = SemanticSegmentation(model='fcn', in_channels=1, num_classes=2, num_filters=4)
    ckpt = save_untrained(seg, tmp_path / 'seg.ckpt')
    out = tmp_path / 'maps'
    args = ['predict', '--checkpoint', str(ckpt), str(image), '--out', str(out)]
    assert main([*args, '--points', str(points), '--quiet', '--threads', '1']) == 0
    err = capsys.readouterr().err
    assert f'--points {points} is not used' in err
    assert (out / 'scene_segmentation.tif').is_file()


def test_instance_predict_warns_unused_options_and_refuses_mosaic(
    task, scene, tmp_path, capsys
):
    from geosparse.cli import main

    from ..conftest import save_untrained

    image, points = scene
    ckpt = save_untrained(task, tmp_path / 'inst.ckpt')
    out = tmp_path / 'maps'
    args = ['predict', '--checkpoint', str(ckpt), str(image), '--out', str(out)]
    more = ['--points', str(points), '--id-column', 'oid', '--quiet']
    assert main([*args, *more, '--mosaic']) == 2
    assert (
        '--mosaic is not supported for instance checkpoints' in capsys.readouterr().err
    )
    assert not out.exists()
    assert main([*args, *more, '--coarse', 'c.tif']) == 0
    err = capsys.readouterr().err
    assert 'warning: --coarse c.tif is not used' in err
    assert 'PointInstanceTask, which takes only --points' in err
    assert (out / 'scene_instances.tif').is_file()
