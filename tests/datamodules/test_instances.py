import warnings

import pandas as pd
import pytest
import torch

from geosparse.datamodules import PointInstanceDataModule
from geosparse.errors import InputError
from geosparse.transforms import RandomFlipWithPoints

from ..datasets.test_instances import (
    CENTRES,
    IDS,
    make_instance_scene,
    pixel_point,
    points_frame,
)


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    return make_instance_scene(tmp_path_factory.mktemp('instances_dm'))


def make_dm(scene, **kw):
    args = {
        'image_paths': str(scene.image),
        'points_path': str(scene.points),
        'polygons_path': str(scene.polygons),
        'id_column': 'obj_id',
        'background_column': 'bg',
        'patch_size': 32,
        'batch_size': 4,
        'length': 8,
        **kw,
    }
    return PointInstanceDataModule(**args)


def assert_points_on_their_instances(batch):
    """The mask's id at each object point's pixel is the point's instance."""
    inst = batch['instances']
    checked = 0
    for b in range(len(inst)):
        for k in torch.nonzero(batch['valid'][b]).flatten().tolist():
            r, c = batch['points'][b, k].floor().long().tolist()
            instance, _, background = batch['values'][b, k].tolist()
            expected = 0 if background else int(instance)
            assert int(inst[b, r, c]) == expected
            checked += 1
    return checked


def test_fit_gives_random_windows_with_points(scene):
    dm = make_dm(scene)
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    assert batch['image'].shape == (4, 3, 32, 32)
    assert batch['image'].dtype == torch.float32
    n = batch['points'].shape[1]
    assert batch['values'].shape == (4, n, 3) and batch['valid'].shape == (4, n)
    pts = batch['points'][batch['valid']]
    assert ((pts >= 0) & (pts <= 32)).all()
    assert 'bounds' in batch
    assert len(dm.train_sampler) == 8


def test_validation_tiles_carry_instances_that_agree_with_points(scene):
    dm = make_dm(scene)
    dm.setup('validate')
    batches = list(dm.val_dataloader())
    batch = batches[0]
    assert batch['instances'].shape == (4, 32, 32)
    assert batch['instances'].dtype == torch.int64
    assert batch['values'].shape[-1] == 3
    # every point, background included, is seen once over the four tiles
    assert sum(assert_points_on_their_instances(b) for b in batches) == len(IDS) + 1
    assert set(batch['instances'].unique().tolist()) <= {0, *IDS}
    # flips keep the agreement
    torch.manual_seed(0)
    flipped = RandomFlipWithPoints(keys=('image', 'instances'))(
        {k: v for k, v in batch.items()}
    )
    assert not torch.equal(flipped['instances'], batch['instances'])
    assert assert_points_on_their_instances(flipped) > 0
    always = RandomFlipWithPoints(p=1.0, keys=('image', 'instances'))(dict(batch))
    assert assert_points_on_their_instances(always) > 0
    # test and predict tile the same way
    dm.setup('test')
    assert 'instances' in next(iter(dm.test_dataloader()))


def test_polygons_take_the_ids_of_their_points(scene):
    # no id_column: points and polygons are numbered by row, in different orders
    dm = make_dm(scene, id_column=None)
    dm.setup('validate')
    batch = next(iter(dm.val_dataloader()))
    assert assert_points_on_their_instances(batch) > 0


def test_without_polygons_there_is_no_validation(scene):
    dm = make_dm(scene, polygons_path=None)
    dm.setup('validate')
    assert dm.val_dataloader() == []
    dm.setup('test')
    batch = next(iter(dm.test_dataloader()))
    assert 'instances' not in batch and batch['values'].shape[-1] == 3


def test_points_in_another_crs(scene):
    dm = make_dm(scene, points_path=str(scene.points_wgs84))
    dm.setup('validate')
    assert sum(assert_points_on_their_instances(b) for b in dm.val_dataloader()) == 6


def test_points_off_the_imagery(scene, tmp_path):
    frame = points_frame()
    off = frame.iloc[:1].assign(geometry=[pixel_point(-20, 5)], obj_id=[77.0])
    path = tmp_path / 'some_off.gpkg'
    pd.concat([frame, off], ignore_index=True).to_file(path)
    dm = make_dm(scene, points_path=str(path))
    with pytest.warns(UserWarning, match=f'{path}: 1 of 7 points lie outside'):
        dm.setup('validate')
    assert len(dm.points) == 6
    far = tmp_path / 'all_off.gpkg'
    frame.assign(geometry=frame.geometry.translate(0, 1000)).to_file(far)
    with pytest.raises(InputError, match=f'{far}: none of its 6 points'):
        make_dm(scene, points_path=str(far)).setup('fit')


def test_two_points_on_one_pixel(scene, tmp_path):
    frame = points_frame()
    r, c = CENTRES[0]
    twin = frame.iloc[:1].assign(geometry=[pixel_point(r, c)], obj_id=[42.0])
    path = tmp_path / 'twins.gpkg'
    pd.concat([frame, twin], ignore_index=True).to_file(path)
    dm = make_dm(scene, points_path=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(InputError, match=f'{path}: object points 7 and 42') as err:
            dm.setup('fit')
    assert f'row {r}, col {c}' in str(err.value)
