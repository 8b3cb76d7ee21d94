import numpy as np
import pytest
import torch

from geosparse.instances import geodesic_instances, voronoi_instances
from geosparse.trainers import PointInstanceTask


def _two_rectangles():
    """A big and a small rectangle touching along a strong edge, two points far from it."""
    image = np.full((1, 40, 60), 10.0)
    image[:, 10:30, 5:45] = 100.0  # big
    image[:, 10:30, 45:55] = 200.0  # small, touching at column 45
    points = np.array([[20.5, 10.5], [20.5, 52.5]])
    return image, points, np.array([7, 9])


def _zero_appearance(task):
    for layer in (task.model.to_query, task.model.to_key):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)


@pytest.mark.parametrize('prior', ['geodesic', 'euclidean'])
def test_without_appearance_the_split_is_the_hand_crafted_one(prior):
    torch.manual_seed(0)
    image, points, ids = _two_rectangles()
    task = PointInstanceTask(in_channels=1, stuff_queries=1, rounds=0, prior=prior)
    _zero_appearance(task)
    pred = task.predict_instances(image, points, ids)
    thing = pred.ids > 0
    nearest = pred.ids[
        np.argmin(np.where(thing[:, None, None], pred.distances[-1], np.inf), 0)
    ]
    foreground = np.zeros((40, 60), bool)
    foreground[10:30, 5:55] = True
    if prior == 'geodesic':
        expected = geodesic_instances(image, points, ids)
        # the geodesic follows the edge: most of the big rectangle stays whole
        # (Voronoi keeps 27 of its 40 columns)
        assert (nearest[10:30, 5:45] == 7).mean() > 0.8
    else:
        expected = voronoi_instances((40, 60), points, ids)
        # Voronoi cuts the big rectangle at the bisector (column 31.5)
        assert (nearest[10:30, 32:45] == 9).all()
    np.testing.assert_array_equal(nearest[foreground], expected[foreground])


def test_region_colour_splits_touching_objects_at_their_colour_change():
    """Two touching objects fill the window: the Euclidean term alone cuts the big
    one at the points' bisector, the region-colour term at the colour change."""
    image = np.full((1, 40, 60), 100.0)
    image[..., 45:] = 200.0
    points = np.array([[20.5, 10.5], [20.5, 52.5]])
    ids = np.array([7, 9])
    nearest = {}
    for colour_scale in (None, 0.5):
        torch.manual_seed(0)
        task = PointInstanceTask(
            in_channels=1,
            stuff_queries=1,
            rounds=2,
            prior='euclidean',
            colour_scale=colour_scale,
        )
        _zero_appearance(task)
        pred = task.predict_instances(image, points, ids)
        thing = pred.ids > 0
        d = np.where(thing[:, None, None], pred.distances[-1], np.inf)
        nearest[colour_scale] = pred.ids[np.argmin(d, 0)]
    assert (nearest[None][:, 32:45] == 9).all()  # Voronoi's cut at column 31.5
    assert (nearest[0.5][:, :45] == 7).all()
    assert (nearest[0.5][:, 45:] == 9).all()


def test_training_lowers_the_loss_and_predicts_point_ids():
    torch.manual_seed(0)
    image, points, ids = _two_rectangles()
    task = PointInstanceTask(in_channels=1, rounds=1, lr=3e-3)
    x = torch.tensor(image, dtype=torch.float32)[None].repeat(2, 1, 1, 1)
    bg = np.array([[5.5, 30.5]])
    pts = torch.tensor(np.concatenate([points, bg]), dtype=torch.float32)[None].repeat(
        2, 1, 1
    )
    values = torch.tensor([[7, 1, 0], [9, 1, 0], [0, 0, 1]], dtype=torch.float32)
    batch = {
        'image': x,
        'points': pts,
        'valid': torch.ones(2, 3, dtype=torch.bool),
        'values': values[None].repeat(2, 1, 1),
    }
    opt = task.configure_optimizers()
    task.train()
    losses = []
    for _ in range(15):
        out = task.forward_batch(batch)
        loss, terms = task.compute_loss(batch, out)
        assert torch.isfinite(loss)
        assert set(terms) == {'point', 'pairwise', 'foreground'}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    pred = task.predict_instances(
        image, pts[0].numpy(), [7, 9, 0], [False, False, True]
    )
    assert set(np.unique(pred.instances)) <= {0, 7, 9}
    # With the batch statistics it trained with, each point's pixel takes its own id
    # (in eval mode, after a few steps on one repeated image, the U-Net's batch-norm
    # running statistics still differ from them).
    task.train()
    with torch.no_grad():
        out = task.forward_batch(batch)
    labels, _ = task.pseudo_labels(out, batch['values'][..., 0])
    for (r, c), i in zip(points, ids, strict=True):
        assert int(labels[0, int(r), int(c)]) == i
    assert ((pred.uncertainty > 0) & (pred.uncertainty <= 1)).all()


def test_nodata_pixels_are_nodata_in_the_prediction():
    image, points, ids = _two_rectangles()
    image[:, :5, :5] = np.nan
    task = PointInstanceTask(in_channels=1, rounds=1)
    pred = task.predict_instances(image, points, ids)
    assert (pred.instances[:5, :5] == 0).all()
    assert np.isnan(pred.uncertainty[:5, :5]).all()
    assert np.isfinite(pred.uncertainty[5:]).all()


def test_bad_prior_and_foreground():
    with pytest.raises(ValueError, match='prior'):
        PointInstanceTask(prior='manhattan')
    with pytest.raises(ValueError, match="foreground='nearest'"):
        PointInstanceTask(foreground='nearest')
    for bad in (-1.0, float('nan')):
        with pytest.raises(ValueError, match=r'stuff_margin=.*margin >= 0'):
            PointInstanceTask(stuff_margin=bad)


def _set_head(task, background: float, obj: float):
    head = task.model.to_foreground
    if task.hparams['separate_foreground']:
        head = head.segmentation_head[0]  # the U-Net's last convolution
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([background, obj]))


def test_the_foreground_head_decides_objects_and_the_distance_splits_them():
    torch.manual_seed(0)
    image, points, ids = _two_rectangles()
    task = PointInstanceTask(in_channels=1, rounds=1, stuff_queries=2)
    assert task.hparams['foreground'] == 'head'
    _set_head(task, 0.0, 5.0)  # every pixel an object
    pred = task.predict_instances(image, points, ids)
    thing = pred.ids > 0
    nearest = pred.ids[
        np.argmin(np.where(thing[:, None, None], pred.distances[-1], np.inf), 0)
    ]
    # every pixel is an object, given to the nearest thing query (never stuff)
    np.testing.assert_array_equal(pred.instances, nearest)
    assert pred.foreground.all()
    _set_head(task, 5.0, 0.0)  # every pixel background
    pred = task.predict_instances(image, points, ids)
    assert not pred.foreground.any() and (pred.instances == 0).all()
    # on background the uncertainty is the ratio of the two classes' probabilities
    np.testing.assert_allclose(pred.uncertainty, np.exp(-5.0), rtol=1e-5)
    # 'queries': the nearest query decides, whatever the head says
    task.hparams['foreground'] = 'queries'
    pred = task.predict_instances(image, points, ids)
    every = pred.ids[np.argmin(pred.distances[-1], 0)]
    np.testing.assert_array_equal(pred.instances, every)
    # 'head' with a stuff margin: the head's objects within the margin of the
    # nearest stuff query; at 0 those whose nearest query is a thing
    task.hparams['foreground'] = 'head'
    _set_head(task, 0.0, 5.0)  # every pixel an object for the head
    d = pred.distances[-1]
    gap = d[pred.ids > 0].min(0) - d[pred.ids == 0].min(0)
    for margin in (0.0, float(np.median(gap))):
        task.hparams['stuff_margin'] = margin
        got = task.predict_instances(image, points, ids).instances
        np.testing.assert_array_equal(got, np.where(gap < margin, nearest, 0))
    assert 0 < (np.median(gap) > gap).sum() < gap.size
    task.hparams['stuff_margin'] = float('inf')
    np.testing.assert_array_equal(
        task.predict_instances(image, points, ids).instances, nearest
    )


@pytest.mark.parametrize('split', ['learned', 'geodesic'])
def test_connected_cuts_each_object_to_the_piece_that_holds_its_point(split):
    from geosparse.instances import point_components

    torch.manual_seed(0)
    image, points, ids = _two_rectangles()
    image[:, 34:38, 2:6] = 100.0  # a stray patch like the big rectangle, apart
    task = PointInstanceTask(in_channels=1, rounds=1, stuff_queries=2)
    objects = torch.from_numpy(image[0] >= 100.0).float()

    # A head that calls the rectangles and the patch objects (logits 5 / 0)
    class Head(torch.nn.Module):
        def forward(self, x):
            logits = torch.stack([5.0 * (1 - objects), 5.0 * objects])
            return logits[None].expand(len(x), -1, -1, -1)

    task.model.to_foreground = Head()
    task.hparams['stuff_margin'] = float('inf')
    assert task.hparams['connected'] is True  # the default
    task.hparams['connected'] = False
    whole = task.predict_instances(image, points, ids, split=split)
    task.hparams['connected'] = True
    cut = task.predict_instances(image, points, ids, split=split)
    np.testing.assert_array_equal(
        cut.instances, point_components(whole.instances, points, ids, keep_edge=True)
    )
    removed = (whole.instances > 0) & (cut.instances == 0)
    assert removed[34:38, 2:6].all()  # the stray patch is gone
    # The removed pixels get the head's background uncertainty, the kept ones keep
    # theirs.
    np.testing.assert_allclose(cut.uncertainty[removed], np.exp(-5.0), rtol=1e-5)
    kept = cut.instances > 0
    np.testing.assert_array_equal(cut.uncertainty[kept], whole.uncertainty[kept])
    for k, (r, c) in zip(ids, points.astype(int), strict=True):
        assert cut.instances[r, c] == k


def test_foreground_loss_teaches_the_head_from_points():
    from geosparse.losses import colour_similarity, foreground_loss

    torch.manual_seed(0)
    image, points, _ = _two_rectangles()
    x = torch.tensor(image, dtype=torch.float32)[None]
    pts = torch.tensor([[*points[0]], [*points[1]], [5.5, 30.5]])[None].float()
    valid = torch.ones(1, 3, dtype=torch.bool)
    background = torch.tensor([[False, False, True]])
    sim = colour_similarity(x / 100.0)
    right = torch.zeros(1, 2, 40, 60)
    right[:, 1, 10:30, 5:55] = 4.0  # object logits on the rectangles
    right[:, 0] = 4.0 - right[:, 1]
    wrong = right.flip(1)
    good = foreground_loss(right, pts, valid, background, sim)
    bad = foreground_loss(wrong, pts, valid, background, sim)
    assert float(good) < 0.1 < float(bad)
    # no point: the point term is 0 and the loss still has a gradient
    logits = torch.zeros(1, 2, 40, 60, requires_grad=True)
    none = foreground_loss(logits, pts, torch.zeros_like(valid), background, sim)
    none.backward()
    assert logits.grad is not None


def test_geodesic_split_divides_the_task_foreground_by_the_geodesic():
    torch.manual_seed(0)
    image, points, ids = _two_rectangles()
    # the masks whole (the cut to each point's piece is tested on its own)
    task = PointInstanceTask(in_channels=1, rounds=1, connected=False)
    learned = task.predict_instances(image, points, ids)
    split = task.predict_instances(image, points, ids, split='geodesic')
    np.testing.assert_array_equal(split.foreground, learned.foreground)
    expected = geodesic_instances(image, points, ids, learned.foreground)
    np.testing.assert_array_equal(split.instances, expected)
    inside = split.foreground
    assert ((split.uncertainty[inside] >= 0) & (split.uncertainty[inside] <= 1)).all()
    with pytest.raises(ValueError, match='split'):
        task.predict_instances(image, points, ids, split='nearest')


def test_default_split_follows_the_colour_term():
    assert PointInstanceTask(in_channels=1).default_split == 'learned'
    bare = PointInstanceTask(in_channels=1, colour_scale=None)
    assert bare.default_split == 'geodesic'


def test_without_background_points_the_nearest_query_decides_with_a_warning():
    from types import SimpleNamespace

    task = PointInstanceTask(in_channels=1)
    dm = SimpleNamespace(patch_size=64, hparams={'background_column': 'background'})
    task._trainer = SimpleNamespace(datamodule=dm)
    task.on_fit_start()
    assert task.hparams['foreground'] == 'head'
    dm.hparams['background_column'] = None
    with pytest.warns(UserWarning, match='background_column'):
        task.on_fit_start()
    assert task.hparams['foreground'] == 'queries'
    assert task.hparams['window'] == 64


def test_the_nearest_query_reading_does_not_run_the_foreground_head():
    torch.manual_seed(0)
    image, points, ids = _two_rectangles()
    task = PointInstanceTask(in_channels=1, rounds=1, foreground='queries')
    calls = []
    task.model.to_foreground.register_forward_hook(lambda *_: calls.append(1))
    pred = task.predict_instances(image, points, ids)
    assert not calls  # the separate U-Net is skipped: nothing reads it
    assert set(np.unique(pred.instances)) <= {0, *ids}
    # the head's reading on an output without the head is an error, not a guess
    x = torch.as_tensor(image)[None]
    pts = torch.as_tensor(points, dtype=torch.float32)[None]
    out = task.model(
        x, pts, torch.ones(1, len(ids), dtype=torch.bool), foreground=False
    )
    with pytest.raises(ValueError, match='foreground head'):
        task.pseudo_labels(out, torch.as_tensor(ids)[None], 1.0, 'head')
    task.hparams['foreground'] = 'head'
    task.predict_instances(image, points, ids)
    assert calls  # and run when it decides


def test_training_resumes_from_a_checkpoint_made_before_the_separate_head(tmp_path):
    """``fit(ckpt_path=old)``: the model is rebuilt before the optimizer is made."""
    from geosparse.trainers import brief_trainer

    from ..datamodules.test_instances import make_dm
    from ..datasets.test_instances import make_instance_scene

    scene = make_instance_scene(tmp_path / 'scene')

    torch.manual_seed(0)
    fit = brief_trainer(1, default_root_dir=tmp_path)
    fit.fit(
        PointInstanceTask(in_channels=3, rounds=1, separate_foreground=False),
        datamodule=make_dm(scene, length=4),
    )
    ckpt = tmp_path / 'old.ckpt'
    fit.save_checkpoint(ckpt)
    data = torch.load(ckpt, weights_only=True)
    del data['hyper_parameters']['separate_foreground']  # as 0.1 before the choice
    del data['hyper_parameters']['stuff_margin']  # and before the margin
    del data['hyper_parameters']['connected']  # and before the pieces were cut
    del data['hyper_parameters']['colour_scale']  # and before the region colour
    assert len(data['optimizer_states'][0]['state']) > 0
    torch.save(data, ckpt)

    task = PointInstanceTask(in_channels=3, rounds=1)  # the new default head
    # as many epochs as the three steps take (brief_trainer stops after one)
    resumed = brief_trainer(3, max_epochs=None, default_root_dir=tmp_path)
    resumed.fit(task, datamodule=make_dm(scene, length=8), ckpt_path=str(ckpt))
    assert resumed.global_step == 3
    assert isinstance(task.model.to_foreground, torch.nn.Conv2d)
    assert task.hparams['stuff_margin'] == float('inf')  # the head alone, as trained
    assert task.hparams['connected'] is False  # its masks as it made them
    assert task.hparams['colour_scale'] is None  # its distance as trained
    assert task.model.colour_scale is None
    assert task.default_split == 'geodesic'  # the split chosen for it
    params = [
        p for group in resumed.optimizers[0].param_groups for p in group['params']
    ]
    assert {id(p) for p in params} == {id(p) for p in task.parameters()}
