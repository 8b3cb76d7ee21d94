import math

import pytest
import torch
from torch import nn

from geosparse.losses import p2r_targets
from geosparse.teacher import (
    EMATeacher,
    frozen_norm_statistics,
    pseudo_points,
    unlabelled_weight,
)


def test_teacher_is_the_moving_average_and_gets_no_gradients():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
    teacher = EMATeacher(student, decay=0.9)
    before = [p.clone() for p in teacher.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    bn_before = teacher.model[1].running_var.clone()
    student.train()(torch.randn(4, 1, 8, 8))  # moves the BatchNorm statistics
    teacher.update(student)
    for t, b, s in zip(
        teacher.model.parameters(), before, student.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
        assert not t.requires_grad
    torch.testing.assert_close(  # statistics averaged like the weights
        teacher.model[1].running_var, 0.9 * bn_before + 0.1 * student[1].running_var
    )
    assert teacher.model[1].num_batches_tracked == student[1].num_batches_tracked
    assert not teacher(torch.randn(1, 1, 8, 8)).requires_grad
    with pytest.raises(ValueError, match='decay'):
        EMATeacher(student, decay=1.0)


def test_pseudo_points_are_confident_peaks_and_feed_p2r():
    logits = torch.full((10, 12), -4.0)
    logits[2, 3], logits[2, 4] = 3.0, 2.0  # one peak, its shoulder suppressed
    logits[7, 9] = 1.0
    logits[5, 0] = -0.5  # a peak below the threshold
    pts, conf = pseudo_points(logits, threshold=0.5)
    torch.testing.assert_close(
        pts, torch.tensor([[2.5, 3.5], [7.5, 9.5]], dtype=torch.float64)
    )
    torch.testing.assert_close(conf, torch.sigmoid(torch.tensor([3.0, 1.0])).double())
    target, weight = p2r_targets(torch.zeros(10, 12), pts, radius=3.0, confidence=conf)
    assert target.sum() == 2 and weight[7, 10] == pytest.approx(float(conf[1]))
    with pytest.raises(ValueError, match='odd'):
        pseudo_points(logits, window=2)


def test_unlabelled_weight_ramps_up_from_exp_minus_5():
    assert unlabelled_weight(0, 100, 2.0) == pytest.approx(2 * math.exp(-5))
    assert unlabelled_weight(50, 100) == pytest.approx(math.exp(-1.25))
    assert unlabelled_weight(100, 100) == 1.0 and unlabelled_weight(5, 0) == 1.0


def test_frozen_norm_statistics_normalise_by_the_batch_but_keep_running_estimates():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.BatchNorm2d(3, momentum=None)
    )
    net.train()
    x = 5 + 3 * torch.randn(4, 2, 6, 6)
    before = [b.clone() for b in net.buffers() if b.is_floating_point()]
    with frozen_norm_statistics(net):
        frozen = net(x)
    after = [b for b in net.buffers() if b.is_floating_point()]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # the momenta come back, and the same forward then moves the estimates
    assert net[1].momentum == 0.1 and net[2].momentum is None
    moving = net(x)
    torch.testing.assert_close(frozen, moving)  # batch statistics either way
    moved = [b for b in net.buffers() if b.is_floating_point()]
    assert not torch.equal(before[0], moved[0])
    assert not torch.equal(before[2], moved[2])
