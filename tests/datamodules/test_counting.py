from types import SimpleNamespace

import geopandas as gpd
import pandas as pd
import pytest
import torch
from shapely.geometry import Point

import geosparse.gaussians as gaussians_module
from geosparse.compat import window_bounds
from geosparse.datamodules.counting import COV_COLUMNS
from geosparse.datasets import make_object_scene
from geosparse.trainers import DensityTask, brief_trainer
from geosparse.transforms import RandomFlipWithPoints

from ..conftest import counting_dm


@pytest.fixture(scope='module')
def objects(tmp_path_factory):
    return make_object_scene(
        tmp_path_factory.mktemp('objects'), size=128, n=80, radius=3, seed=1
    )


def make_dm(objects, tmp_path, **kw):
    return counting_dm(objects, tmp_path, **{'split': (0.5, 0.25, 0.25), **kw})


def boxes_disjoint(boxes):
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            overlap_x = min(a[2], b[2]) - max(a[0], b[0])
            overlap_y = min(a[3], b[3]) - max(a[1], b[1])
            if overlap_x > 1e-9 and overlap_y > 1e-9:
                return False
    return True


def test_region_split_and_batches(objects, tmp_path):
    dm = make_dm(objects, tmp_path)
    dm.setup('fit')
    boxes = dm.boxes
    every = [b for name in ('labelled', 'val', 'test') for b in boxes[name]]
    assert boxes_disjoint(every) and not boxes['unlabelled']
    # bands from the top: 64, 32 and 32 rows of the 128-pixel scene
    assert [round(b[3] - b[1]) for b in every] == [64, 32, 32]
    batch = next(iter(dm.train_dataloader()))
    assert batch['image'].shape == (4, 3, 32, 32)
    assert batch['labelled'].all()
    for bounds in batch['bounds']:  # training windows lie in the training band
        ymin = window_bounds(bounds)[1]
        assert ymin >= boxes['labelled'][0][1] - 1e-6
    assert (batch['points'][batch['valid']] >= 0).all()
    assert (batch['points'][batch['valid']] <= 32).all()
    # test tiles count every object of the test band exactly once (4 tiles of 32)
    dm.setup('test')
    tiles = list(dm.test_dataloader())
    n_test = sum(int(b['valid'].sum()) for b in tiles)
    xy = dm.points.xy()
    tb = boxes['test'][0]
    inside = (xy[:, 1] > tb[1]) & (xy[:, 1] <= tb[3])
    assert n_test == int(inside.sum()) > 0


def test_semi_supervised_tiles_hide_points(objects, tmp_path):
    dm = make_dm(objects, tmp_path, labelled_fraction=0.25, length=40, patch_size=16)
    dm.setup('fit')
    lab, unl = dm.boxes['labelled'], dm.boxes['unlabelled']
    assert len(lab) == 8 and len(unl) == 24  # 64 x 128 band in 16-pixel tiles
    assert boxes_disjoint(lab + unl)
    batches = list(dm.train_dataloader())
    # length 40 / batch_size 4: ten batches of 4 labelled then 4 unlabelled windows
    assert len(batches) == 10
    for batch in batches:
        assert batch['labelled'].tolist() == [True] * 4 + [False] * 4
        assert int(batch['valid'][4:].sum()) == 0  # hidden
    assert sum(int(b['valid'][:4].sum()) for b in batches) > 0
    half = make_dm(
        objects,
        tmp_path,
        labelled_fraction=0.25,
        length=40,
        patch_size=16,
        unlabelled_batch_size=3,
    )
    half.setup('fit')
    assert [len(b['labelled']) for b in half.train_dataloader()] == [7] * 10
    with pytest.raises(ValueError, match='unlabelled_batch_size'):
        make_dm(objects, tmp_path, labelled_fraction=0.25, unlabelled_batch_size=0)
    ref = make_dm(
        objects, tmp_path, labelled_fraction=0.25, patch_size=16, use_unlabelled=False
    )
    ref.setup('fit')
    assert all(b['labelled'].all() for b in ref.train_dataloader())


def test_transductive_windows_come_from_the_held_out_bands_without_points(
    objects, tmp_path
):
    dm = make_dm(
        objects,
        tmp_path,
        labelled_fraction=0.25,
        length=80,
        patch_size=16,
        transductive=True,
    )
    dm.setup('fit')
    held_out = dm.boxes['val'] + dm.boxes['test']
    assert dm.unlabelled_pool() == dm.boxes['unlabelled'] + held_out
    train_band = dm.boxes['labelled'] + dm.boxes['unlabelled']
    band_bottom = min(b[1] for b in train_band)
    below = 0
    for batch in dm.train_dataloader():
        assert batch['labelled'].tolist() == [True] * 4 + [False] * 4
        assert int(batch['valid'][4:].sum()) == 0  # hidden, in every band
        for bounds, lab in zip(batch['bounds'], batch['labelled'], strict=True):
            top = window_bounds(bounds)[3]
            if top <= band_bottom + 1e-6:
                below += 1
                assert not lab  # a held-out band window is never labelled
    assert below > 0  # some unlabelled windows lie in the held-out bands
    # ... while the held-out bands are still scored: their tiles stay labelled
    dm.setup('test')
    tiles = list(dm.test_dataloader())
    assert all(b['labelled'].all() for b in tiles)
    assert sum(int(b['valid'].sum()) for b in tiles) > 0
    plain = make_dm(objects, tmp_path, labelled_fraction=0.25, patch_size=16)
    plain.setup('fit')
    assert plain.unlabelled_pool() == plain.boxes['unlabelled']
    narrow = make_dm(
        objects,
        tmp_path,
        split=(0.8, 0.1, 0.1),
        labelled_fraction=0.25,
        patch_size=16,
        eval_size=8,
        transductive=True,
    )
    with pytest.raises(ValueError, match='hold no training window of patch_size=16'):
        narrow.setup('fit')  # 13-pixel bands
    for bad in (dict(labelled_fraction=1.0), dict(use_unlabelled=False)):
        with pytest.raises(ValueError, match='transductive=True needs unlabelled'):
            make_dm(
                objects,
                tmp_path,
                **{'labelled_fraction': 0.25, **bad},
                transductive=True,
            )


def test_gaussians_are_fitted_once_and_travel_with_points(
    objects, tmp_path, monkeypatch
):
    dm = make_dm(objects, tmp_path, gaussians=True)
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    assert batch['covariances'].shape[-1] == len(COV_COLUMNS)
    covs = batch['covariances'][batch['valid']]
    det = covs[:, 0] * covs[:, 2] - covs[:, 1] ** 2
    assert (covs[:, 0] > 0).all() and (det > 0).all()  # positive definite
    assert len(list((tmp_path / 'cache').glob('gst-*.npz'))) == 1

    def refit(*args, **kwargs):
        raise AssertionError('the cached fit should be reused')

    monkeypatch.setattr(gaussians_module, 'fit_gaussians', refit)
    again = make_dm(objects, tmp_path, gaussians=True)
    again.setup('fit')  # from the cache, no refit
    # other points (another labelled set): never the stale cache
    other = make_dm(objects, tmp_path, gaussians=True, split=(0.75, 0.0, 0.25))
    with pytest.raises(AssertionError, match='cached fit'):
        other.setup('fit')


def _flips_of(before, after):
    """The (horizontal, vertical) flips of each sample that turn before into after."""
    h, w = before['image'].shape[-2:]
    found = []
    for i in range(len(before['image'])):
        options = []
        for hf in (False, True):
            for vf in (False, True):
                dims = [d for d, f in ((-1, hf), (-2, vf)) if f]
                image = before['image'][i].flip(dims) if dims else before['image'][i]
                points = before['points'][i].clone()
                if hf:
                    points[:, 1] = w - points[:, 1]
                if vf:
                    points[:, 0] = h - points[:, 0]
                if torch.equal(image, after['image'][i]) and torch.equal(
                    points, after['points'][i]
                ):
                    options.append((hf, vf))
        assert options, f'sample {i}: not a flip of the image and its points'
        found.append(options[0])
    return found


def test_training_batches_flip_points_and_covariances_with_the_image(objects, tmp_path):
    dm = make_dm(objects, tmp_path, gaussians=True, batch_size=8)
    assert isinstance(dm.train_aug, RandomFlipWithPoints)
    dm.setup('fit')
    batch = next(iter(dm.train_dataloader()))
    before = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    image = batch['image']
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    after = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(before['image'], image)  # copied, not changed in place
    flips = _flips_of(before, after)
    assert len(set(flips)) > 1  # the flips are drawn per window
    for i, (hf, vf) in enumerate(flips):
        ok = before['valid'][i]
        assert torch.equal(after['valid'][i], ok)
        assert torch.equal(after['labelled'], before['labelled'])
        # The pixel under each point keeps its value.
        for p0, p1 in zip(before['points'][i][ok], after['points'][i][ok], strict=True):
            r0, c0 = p0.floor().long().tolist()
            r1, c1 = p1.floor().long().tolist()
            assert torch.equal(
                after['image'][i, :, r1, c1], before['image'][i, :, r0, c0]
            )
        # cov_rr and cov_cc stay, cov_rc changes sign on one flip (not on two).
        c0, c1 = before['covariances'][i], after['covariances'][i]
        assert torch.equal(c1[:, [0, 2]], c0[:, [0, 2]])
        assert torch.equal(c1[:, 1], -c0[:, 1] if hf != vf else c0[:, 1])
    assert int(before['valid'].sum()) > 0


def test_only_training_batches_are_augmented(objects, tmp_path):
    dm = make_dm(objects, tmp_path)
    dm.setup('fit')
    batch = next(iter(dm.val_dataloader()))
    before = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    dm.trainer = SimpleNamespace(training=False)  # validating, testing, predicting
    after = dm.on_after_batch_transfer(batch, 0)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert make_dm(objects, tmp_path, augment=False).train_aug is None
    # Through Lightning: train_aug runs on every training batch and nothing else.
    dm = make_dm(objects, tmp_path, length=8)
    stages = []
    aug = dm.train_aug

    def record(b):
        stages.append(dm.trainer.state.stage)
        return aug(b)

    dm.train_aug = record
    task = DensityTask(loss='mse', model='fcn', num_filters=4)
    trainer = brief_trainer(2, val_batches=2)
    trainer.fit(task, dm)
    assert [s.value for s in stages] == ['train', 'train']
    trainer.validate(task, dm, verbose=False)
    trainer.test(task, dm, verbose=False)
    assert len(stages) == 2


def test_box_csv_duplicates_and_points_off_the_image(objects, tmp_path):
    dm = make_dm(objects, tmp_path)
    dm.hparams['points_path'] = str(objects.boxes)
    dm.setup('fit')
    assert len(dm.points) == objects.count  # box centres
    frame = gpd.read_file(objects.points)
    extra = gpd.GeoDataFrame(
        {'object': [-1, -2]},
        geometry=[frame.geometry.iloc[0], Point(0, 0)],  # a duplicate, one far off
        crs=frame.crs,
    )
    path = tmp_path / 'dups.gpkg'
    pd.concat([frame, extra]).to_file(path)
    dm = make_dm(objects, tmp_path)
    dm.hparams['points_path'] = str(path)
    with pytest.warns(UserWarning) as record:
        dm.setup('fit')
    text = ' '.join(str(w.message) for w in record)
    assert 'outside the imagery' in text and 'merge_distance' in text
    assert 'dups.gpkg' in text
    assert len(dm.points) == objects.count


def test_bad_input_is_named(objects, tmp_path):
    far = tmp_path / 'far.gpkg'
    gpd.GeoDataFrame(geometry=[Point(0, 0)], crs='EPSG:32618').to_file(far)
    dm = make_dm(objects, tmp_path)
    dm.hparams['points_path'] = str(far)
    with pytest.raises(ValueError, match=r'far\.gpkg: none of its 1 points'):
        dm.setup('fit')
    with pytest.raises(ValueError, match='eval_size=48'):
        make_dm(objects, tmp_path, eval_size=48).setup('fit')
    with pytest.raises(ValueError, match='split='):
        make_dm(objects, tmp_path, split=(0.5, 0.5))
    with pytest.raises(ValueError, match='labelled_fraction'):
        make_dm(objects, tmp_path, labelled_fraction=0)
    bad = tmp_path / 'boxes.csv'
    pd.DataFrame({'xmin': [5], 'ymin': [5], 'xmax': [4], 'ymax': [9]}).to_csv(bad)
    dm = make_dm(objects, tmp_path)
    dm.hparams['points_path'] = str(bad)
    with pytest.raises(ValueError, match=r'boxes\.csv: 1 boxes have xmax <= xmin'):
        dm.setup('fit')


def test_region_sampler_needs_room(objects, tmp_path):
    with pytest.raises(ValueError, match='patch_size'):
        make_dm(objects, tmp_path, patch_size=80, eval_size=16).setup('fit')


@pytest.mark.parametrize(
    ('option', 'value', 'match'),
    [
        ('patch_size', 0, 'patch_size=0 must be a whole number >= 1'),
        ('patch_size', 2.5, 'patch_size=2.5'),
        ('batch_size', 0, 'batch_size=0'),
        ('length', 0, 'length=0'),
        ('eval_size', -32, 'eval_size=-32'),
        ('merge_distance', -1.0, 'merge_distance=-1.0 must be a number >= 0'),
        ('merge_distance', float('nan'), 'merge_distance=nan'),
        ('res', -1.0, 'res=-1.0 must be a number > 0'),
        ('fit_max_scale', 0.0, 'fit_max_scale=0.0'),
    ],
)
def test_numbers_out_of_range_are_refused_by_name(
    objects, tmp_path, option, value, match
):
    """Before: a ZeroDivisionError (patch_size=0), a message about a resolution of
    -1 from the sampler, or silently no merging (a negative or NaN distance)."""
    from geosparse.errors import InputError

    with pytest.raises(InputError, match=f'CountingDataModule: {match}'):
        make_dm(objects, tmp_path, **{option: value})
