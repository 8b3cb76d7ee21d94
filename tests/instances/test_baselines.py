import numpy as np
import pytest

from geosparse.instances import (
    edge_cost,
    geodesic_distance,
    geodesic_instances,
    geodesic_point_distances,
    margin_uncertainty,
    voronoi_instances,
)


def _two_roofs():
    """A big (cols 0-44) and a small (cols 45-59) roof touching along a strong edge."""
    image = np.zeros((40, 60))
    image[:, :45] = 100.0
    image[:, 45:] = 200.0
    truth = np.zeros((40, 60), dtype=np.int64)
    truth[:, :45] = 1
    truth[:, 45:] = 2
    points = np.array([[20.5, 5.5], [20.5, 55.5]])  # far from the shared edge
    return image, truth, points


def test_voronoi_assigns_the_nearest_point_at_pixel_centres():
    points = np.array([[0.5, 0.5], [0.5, 3.5]])
    out = voronoi_instances((1, 4), points, np.array([7, 9]))
    # Centres 0.5, 1.5 | 2.5, 3.5: the midpoint is 2.0.
    assert out.tolist() == [[7, 7, 9, 9]]
    assert out.dtype == np.int64


def test_voronoi_keeps_background_zero():
    fg = np.array([[True, False, True, True]])
    out = voronoi_instances((1, 4), np.array([[0.5, 0.5], [0.5, 3.5]]), [1, 2], fg)
    assert out.tolist() == [[1, 0, 2, 2]]


def test_bad_points_are_refused():
    with pytest.raises(ValueError, match='outside'):
        voronoi_instances((4, 4), np.array([[5.0, 1.0]]), [1])
    with pytest.raises(ValueError, match='>= 1'):
        voronoi_instances((4, 4), np.array([[1.0, 1.0]]), [0])
    with pytest.raises(ValueError, match='ids'):
        voronoi_instances((4, 4), np.array([[1.0, 1.0]]), [1, 2])


def test_edge_cost_is_in_unit_range_and_zero_on_flat_images():
    image, _, _ = _two_roofs()
    g = edge_cost(image, sigma=1.0)
    assert g.min() >= 0 and g.max() == pytest.approx(1.0)
    assert g[:, 44:46].mean() > 0.5 and g[:, 10:30].max() < 1e-6
    assert not edge_cost(np.ones((5, 5))).any()


def test_geodesic_beats_voronoi_on_touching_roofs_of_different_sizes():
    image, truth, points = _two_roofs()
    ids = np.array([1, 2])
    vor = voronoi_instances(image.shape, points, ids)
    geo = geodesic_instances(image, points, ids, edge_weight=50.0, sigma=1.0)
    # Voronoi cuts the big roof at the midpoint column 30.5.
    assert (vor[:, 31:45] == 2).all()
    assert (vor != truth).mean() > 0.2
    # The geodesic boundary follows the image edge.
    assert (geo == truth).all()


def test_geodesic_without_edges_is_close_to_voronoi():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 50, (6, 2))
    ids = np.arange(1, 7)
    geo = geodesic_instances(np.zeros((50, 50)), points, ids, edge_weight=5.0)
    vor = voronoi_instances((50, 50), points, ids)
    assert (geo == vor).mean() > 0.9


def test_geodesic_distance_is_zero_at_the_seeds_and_grows():
    image, _, points = _two_roofs()
    ids_map, dist = geodesic_distance(image, points, [1, 2], edge_weight=0.0)
    assert dist[20, 5] == 0 and dist[20, 55] == 0
    assert dist[20, 10] == pytest.approx(5.0)
    assert dist[25, 10] == pytest.approx(5 * np.sqrt(2))
    assert ids_map[20, 5] == 1


def test_foreground_restriction_keeps_paths_off_the_background():
    # Two blobs split by a background gap; point 1 sits at blob A's edge next to
    # blob B, point 2 at the far end of blob B.
    image = np.zeros((10, 40))
    fg = np.zeros((10, 40), dtype=bool)
    fg[:, :18] = True  # blob A
    fg[:, 22:] = True  # blob B
    points = np.array([[5.5, 17.5], [5.5, 39.5]])
    vor = voronoi_instances(fg.shape, points, [1, 2], fg)
    assert (vor[:, 22:] == 1).any()  # Voronoi leaks point 1 into blob B
    ids_map, dist = geodesic_distance(image, points, [1, 2], fg, edge_weight=0.0)
    assert (ids_map[:, :18] == 1).all() and (ids_map[:, 22:] == 2).all()
    assert (ids_map[~fg] == 0).all() and np.isinf(dist[~fg]).all()


def test_unreachable_foreground_falls_back_to_voronoi():
    fg = np.zeros((5, 30), dtype=bool)
    fg[:, :10] = True
    fg[:, 20:] = True  # no point here
    points = np.array([[2.5, 2.5], [2.5, 8.5]])
    ids_map, dist = geodesic_distance(np.zeros(fg.shape), points, [3, 4], fg)
    assert (ids_map[:, 20:] == 4).all()  # nearest point in the plane
    assert np.isinf(dist[:, 20:]).all() and np.isfinite(dist[:, :10]).all()


def test_a_seed_on_the_background_still_grows_into_the_foreground():
    fg = np.zeros((5, 10), dtype=bool)
    fg[:, 1:] = True
    ids_map = geodesic_instances(np.zeros(fg.shape), np.array([[2.5, 0.5]]), [5], fg)
    assert ids_map[:, 0].tolist() == [0] * 5 and (ids_map[:, 1:] == 5).all()


def test_point_distances_and_margin_uncertainty():
    image, _, points = _two_roofs()
    d = geodesic_point_distances(image, points, edge_weight=0.0)
    assert d.shape == (2, 40, 60) and d.dtype == np.float32
    assert d[0, 20, 5] == 0 and d[1, 20, 55] == 0
    u = margin_uncertainty(d)
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() <= 1
    assert u[20, 30] == pytest.approx(1.0)  # equidistant (cols 30.5 from both)
    assert u[20, 5] == pytest.approx(np.exp(-50.0), abs=1e-12)


def test_margin_uncertainty_edge_cases():
    # One point (an isolated object's window) is certain where it reaches, as two
    # points are where only one reaches; it was 1 everywhere (the whole object
    # "maximally uncertain" in geosparse predict's geodesic split).
    one = margin_uncertainty(np.array([[[0.0, 2.0, np.inf]]]))
    assert one.tolist() == [[0.0, 0.0, 1.0]]
    assert (margin_uncertainty(np.zeros((0, 3, 3))) == 1).all()
    d = np.array([[[1.0, np.inf, 2.0]], [[3.0, np.inf, np.inf]]])
    u = margin_uncertainty(d)
    assert u[0, 0] == pytest.approx(np.exp(-2.0))
    assert u[0, 1] == 1.0  # nobody reaches
    assert u[0, 2] == 0.0  # only one point reaches


def test_transport_balances_sizes_unless_told_otherwise():
    from geosparse.instances import transport_instances

    image = np.zeros((1, 20))
    points = np.array([[0.5, 2.5], [0.5, 13.5]])
    geo = geodesic_instances(image, points, [1, 2], edge_weight=0.0)
    assert (geo == 1).sum() == 8  # cells split midway, at 8.0
    equal = transport_instances(image, points, [1, 2], edge_weight=0.0, epsilon=0.3)
    assert equal[0].tolist() == [1] * 10 + [2] * 10
    sized = transport_instances(
        image, points, [1, 2], sizes=[8, 12], edge_weight=0.0, epsilon=0.3
    )
    assert (sized == 1).sum() == 8 and (sized[0, :8] == 1).all()
    with pytest.raises(ValueError, match='sizes'):
        transport_instances(image, points, [1, 2], sizes=[1, 0])


def test_transport_respects_the_foreground():
    from geosparse.instances import transport_instances

    fg = np.zeros((4, 12), dtype=bool)
    fg[:, :8] = True
    out = transport_instances(
        np.zeros(fg.shape), np.array([[1.5, 1.5], [1.5, 6.5]]), [4, 9], fg
    )
    assert (
        (out[:, 8:] == 0).all() and (out[:, :4] == 4).all() and (out[:, 4:8] == 9).all()
    )
