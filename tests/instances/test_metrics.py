import numpy as np
import pytest

from geosparse.instances import instance_scores


def _truth():
    truth = np.zeros((4, 8), dtype=np.int64)
    truth[:, 0:4] = 1  # 16 pixels
    truth[:, 4:6] = 2  # 8 pixels; columns 6-7 background (8 pixels)
    return truth


def test_perfect_prediction_scores_one():
    truth = _truth()
    s = instance_scores(truth.copy(), truth)
    assert s['instance_iou'] == 1.0 and s['pq'] == 1.0 and s['miou'] == 1.0
    assert (s['tp'], s['fp'], s['fn']) == (2, 0, 0)
    assert s['sq'] == 1.0 and s['rq'] == 1.0


def test_empty_prediction_scores_zero():
    truth = _truth()
    s = instance_scores(np.zeros_like(truth), truth)
    assert s['instance_iou'] == 0.0 and s['pq'] == 0.0 and s['rq'] == 0.0
    assert (s['tp'], s['fp'], s['fn']) == (0, 0, 2)
    # Background IoU 8/32, object IoU 0.
    assert s['miou'] == pytest.approx(0.125)


def test_two_instance_toy_by_hand():
    truth = _truth()
    pred = np.zeros_like(truth)
    pred[:, 0:3] = 1  # 12 of instance 1's 16 pixels: IoU 12/16
    pred[:, 3:7] = 2  # 16 pixels, 8 of them instance 2: IoU 8/16
    s = instance_scores(pred, truth)
    assert s['instance_iou'] == pytest.approx((0.75 + 0.5) / 2)
    # Only segment 1 matches (IoU 0.75 > 0.5; 0.5 is not > 0.5).
    assert (s['tp'], s['fp'], s['fn']) == (1, 1, 1)
    assert s['pq'] == pytest.approx(0.75 / 2)
    assert s['sq'] == pytest.approx(0.75) and s['rq'] == pytest.approx(0.5)
    # Background: pred 4 px (column 7), truth 8 px: IoU 4/8; objects 24/28.
    assert s['miou'] == pytest.approx((0.5 + 24 / 28) / 2)


def test_matching_ignores_ids_and_points_choose_the_ids():
    truth = _truth()
    pred = np.where(truth == 1, 5, np.where(truth == 2, 6, 0))
    s = instance_scores(pred, truth)
    assert s['pq'] == 1.0 and s['instance_iou'] == 0.0
    s = instance_scores(truth, truth, point_ids=[1, 3])
    assert s['instance_iou'] == pytest.approx(0.5)  # id 3 is nowhere: 0


def test_lower_threshold_matches_greedily_once():
    truth = _truth()
    pred = np.zeros_like(truth)
    pred[:, 0:3] = 1
    pred[:, 3:7] = 2
    s = instance_scores(pred, truth, iou_threshold=0.3)
    assert (s['tp'], s['fp'], s['fn']) == (2, 0, 0)
    assert s['pq'] == pytest.approx((0.75 + 0.5) / 2)


def test_scores_a_large_map_quickly():
    import time

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 1000, (1000, 1000))
    pred = truth.copy()
    pred[rng.random(pred.shape) < 0.1] = 0
    start = time.perf_counter()
    s = instance_scores(pred, truth)
    assert time.perf_counter() - start < 3.0
    assert s['tp'] == 999 and s['fp'] == 0


def test_shapes_must_agree():
    with pytest.raises(ValueError, match='shape'):
        instance_scores(np.zeros((2, 2)), np.zeros((2, 3)))
