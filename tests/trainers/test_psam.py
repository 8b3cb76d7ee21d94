import numpy as np
import pytest
import torch

from geosparse.trainers import PointMapTask, point_activation_maps


@pytest.fixture
def task():
    torch.manual_seed(0)
    return PointMapTask(model='fcn', num_filters=8, stride=4, radius=8.0)


def test_each_point_moves_only_the_features_of_its_region(task):
    image = torch.rand(3, 64, 64) * 255
    points = torch.tensor([[10.0, 10.0], [50.0, 50.0]])
    act = point_activation_maps(task, image, points, torch.tensor([0.9, 0.6]))
    assert act.points.shape == (2, 64, 64) and act.background.shape == (64, 64)
    assert act.points[0].sum() > 0 and act.points[1].sum() > 0
    # fcn's last convolution is 1x1: the gradient stays in the region's cells
    # (radius 8 px, cells of 4 px), far from the other point
    rr, cc = np.meshgrid(np.arange(64), np.arange(64), indexing='ij')
    far = torch.from_numpy(np.hypot(rr - 10, cc - 10) > 8 + 2 * 4)
    assert act.points[0][far].abs().max() == 0
    assert act.points[0][~far].sum() > 0
    assert act.background[~far].sum() < act.background[far].sum()
    assert np.isclose(sum(act.shares.values()), 1.0)
    assert act.shares['region_negative'] > 0 and act.shares['background'] > 0
    assert not task.model.training or task.training  # mode restored


def test_p2p_leaves_no_region_negatives_and_truth_flags_pushed_objects(task):
    image = torch.rand(3, 64, 64) * 255
    pseudo = torch.tensor([[10.0, 10.0]])
    hidden = torch.tensor([[10.0, 10.0], [40.0, 40.0]])  # one object missed
    p2p = point_activation_maps(task, image, pseudo, scheme='p2p', truth=hidden)
    assert p2p.shares['region_negative'] == 0
    found = point_activation_maps(task, image, pseudo, truth=hidden[:1])
    missed = point_activation_maps(task, image, pseudo, truth=hidden)
    assert (
        0 <= found.shares['negative_on_objects'] < missed.shares['negative_on_objects']
    )
    # a teacher that found nothing: all the gradient says "nothing here"
    empty = point_activation_maps(task, image, torch.zeros(0, 2), truth=hidden)
    assert empty.points.shape == (0, 64, 64) and empty.shares['background'] == 1
    assert empty.shares['negative_on_objects'] > missed.shares['negative_on_objects']
    with pytest.raises(ValueError, match='scheme'):
        point_activation_maps(task, image, pseudo, scheme='p2x')  # type: ignore[arg-type]
