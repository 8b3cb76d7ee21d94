import numpy as np
import pytest

from geosparse.instances import point_components


def test_each_instance_keeps_the_piece_that_holds_its_point():
    a = np.zeros((6, 8), np.int64)
    a[0:2, 0:2] = 1
    a[2, 2] = 1  # touches the first piece diagonally: the same piece
    a[4:6, 5:8] = 1  # a stray piece of instance 1
    a[3, 0] = 2  # a stray piece of instance 2
    a[0, 7] = 2
    out = point_components(a, np.array([[0.5, 0.5], [0.5, 7.5]]), np.array([1, 2]))
    want = np.zeros_like(a)
    want[0:2, 0:2] = 1
    want[2, 2] = 1
    want[0, 7] = 2
    np.testing.assert_array_equal(out, want)
    assert out.dtype == a.dtype


def test_touching_instances_are_separate_pieces():
    # Two ids side by side, each point in its own: nothing is removed, and a
    # piece of id 1 beyond id 2 is removed although the foreground connects it.
    a = np.zeros((4, 9), np.int64)
    a[:, 0:3] = 1
    a[:, 3:6] = 2
    a[:, 6:9] = 1
    out = point_components(a, np.array([[1.5, 1.5], [1.5, 4.5]]), np.array([1, 2]))
    assert (out[:, 0:6] == a[:, 0:6]).all() and (out[:, 6:] == 0).all()


def test_a_point_off_its_mask_keeps_the_nearest_piece():
    a = np.zeros((6, 6), np.int64)
    a[0, 0] = 3
    a[5, 4:6] = 3
    out = point_components(a, np.array([[5.5, 2.5]]), np.array([3]))
    assert (out[5, 4:6] == 3).all() and out.sum() == 6  # never emptied


def test_points_outside_and_mismatched_ids():
    a = np.full((3, 3), 4)
    # A point outside the array keeps nothing, one inside keeps all.
    assert (point_components(a, np.array([[10.0, 10.0]]), np.array([4])) == 0).all()
    assert (point_components(a, np.array([[1.2, 1.2]]), np.array([4])) == 4).all()
    with pytest.raises(ValueError, match='one id per point'):
        point_components(a, np.zeros((2, 2)), np.array([4]))


def test_keep_edge_keeps_pieces_that_may_join_their_point_outside():
    a = np.zeros((5, 5), np.int64)
    a[0:2, 0:2] = 1
    a[4, 2:5] = 1  # on the bottom edge
    a[2, 3] = 1  # inside, apart
    points, ids = np.array([[0.5, 0.5]]), np.array([1])
    cut = point_components(a, points, ids)
    assert cut[4].sum() == 0 and cut[2, 3] == 0
    kept = point_components(a, points, ids, keep_edge=True)
    assert (kept[4, 2:5] == 1).all() and kept[2, 3] == 0
