import numpy as np
import pytest
import torch

from geosparse.models import LearnableDistance
from geosparse.models.distance import sample_features, standardise


def _zero_appearance(model: LearnableDistance) -> None:
    """Leave only the Euclidean term of the distance."""
    for layer in (model.to_query, model.to_key):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)


def test_without_appearance_the_distance_is_voronoi():
    torch.manual_seed(0)
    model = LearnableDistance(in_channels=1, stuff_queries=0, rounds=0)
    _zero_appearance(model)
    points = torch.tensor([[[5.5, 5.5], [20.5, 30.5], [28.0, 4.0]]])
    out = model(torch.rand(1, 1, 32, 40), points, torch.ones(1, 3, dtype=torch.bool))
    nearest = out.distances[-1][0].argmin(0).numpy()
    rows, cols = np.mgrid[0:32, 0:40] + 0.5
    d = [(rows - r) ** 2 + (cols - c) ** 2 for r, c in points[0].numpy()]
    np.testing.assert_array_equal(nearest, np.argmin(d, 0))
    # the distance at a point's own pixel centre is 0 for its query
    assert float(out.distances[0][0, 0, 5, 5].detach()) == pytest.approx(0.0, abs=1e-6)


def test_rounds_padding_and_stuff():
    torch.manual_seed(0)
    model = LearnableDistance(in_channels=2, stuff_queries=3, rounds=2)
    points = torch.tensor([[[4.5, 4.5], [10.5, 10.5]], [[8.5, 2.5], [0.0, 0.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    background = torch.tensor([[False, True], [False, False]])
    out = model(torch.randn(2, 2, 24, 20), points, valid, background)
    assert len(out.distances) == 3
    assert out.distances[0].shape == (2, 5, 24, 20)
    assert torch.isinf(out.distances[-1][1, 1]).all()  # padding
    assert torch.isfinite(out.distances[-1][0]).all()
    assert out.stuff.tolist() == [
        [False, True, True, True, True],
        [False, False, True, True, True],
    ]
    assert out.query_valid[1].tolist() == [True, False, True, True, True]
    # round 1 differs from round 0: the queries were refined
    assert not torch.allclose(out.distances[0][0], out.distances[1][0])


def test_no_aggregation_no_enhancement_means_no_rounds():
    model = LearnableDistance(
        in_channels=1, rounds=3, aggregation=False, enhancement=False
    )
    out = model(
        torch.randn(1, 1, 16, 16),
        torch.tensor([[[3.5, 3.5]]]),
        torch.ones(1, 1, dtype=torch.bool),
    )
    assert len(out.distances) == 1


def test_window_size_not_a_multiple_of_eight():
    model = LearnableDistance(in_channels=1)
    out = model(
        torch.randn(1, 1, 13, 21),
        torch.tensor([[[3.5, 3.5]]]),
        torch.ones(1, 1, dtype=torch.bool),
    )
    assert out.distances[-1].shape[-2:] == (13, 21)


def test_bad_arguments():
    with pytest.raises(ValueError, match='rounds'):
        LearnableDistance(rounds=-1)
    with pytest.raises(ValueError, match='scale'):
        LearnableDistance(scale=0)
    with pytest.raises(ValueError, match='heads'):
        LearnableDistance(feature_dim=30, heads=4)


def test_standardise_ignores_nan_and_sample_features_reads_pixel_centres():
    x = torch.tensor([[[[1.0, 3.0], [float('nan'), 5.0]]]])
    s = standardise(x)
    assert s[0, 0, 1, 0] == 0
    finite = s[torch.isfinite(x)]
    assert float(finite.mean()) == pytest.approx(0.0, abs=1e-5)
    feats = torch.arange(12.0).view(1, 1, 3, 4)
    out = sample_features(feats, torch.tensor([[[1.5, 2.5], [0.5, 0.5]]]))
    assert out[0, :, 0].tolist() == pytest.approx([6.0, 0.0], abs=1e-5)


def test_region_colour_moves_the_boundary_to_the_colour_change():
    """Two touching flat regions: the Euclidean term cuts them half-way between the
    points, the region-colour term (rounds 1 and 2) at the colour change."""
    image = torch.zeros(1, 1, 32, 40)
    image[..., :25] = 1.0  # roof A: columns 0-24; roof B: 25-39
    points = torch.tensor([[[16.5, 3.5], [16.5, 30.5]]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    truth = np.where(np.arange(40) < 25, 0, 1)
    splits = {}
    for colour_scale in (None, 0.5):
        torch.manual_seed(0)
        model = LearnableDistance(
            in_channels=1, stuff_queries=0, rounds=2, colour_scale=colour_scale
        )
        _zero_appearance(model)
        out = model(image, points, valid)
        splits[colour_scale] = [d[0].argmin(0).numpy() for d in out.distances]
    voronoi = np.where(np.arange(40) < 17, 0, 1)
    for labels in splits[None]:  # no colour: the points' bisector every round
        assert (labels == voronoi).all()
    assert (splits[0.5][0] == voronoi).all()  # round 0 has no region yet
    assert (splits[0.5][-1] == truth).all()


def test_colour_scale_must_be_positive():
    for bad in (0.0, -1.0, float('nan')):
        with pytest.raises(ValueError, match='colour_scale'):
            LearnableDistance(colour_scale=bad)


def test_pixels_without_data_count_in_no_region_colour():
    """A region's mean colour leaves out its nodata pixels (NaN, standardised to 0)."""
    model = LearnableDistance(in_channels=1, stuff_queries=0, colour_scale=1.0)
    colour = torch.tensor([[[[2.0, 2.0, 0.0, -1.0]]]])
    distances = torch.tensor([[[[0.0, 0.0, 0.0, 1.0]], [[1.0, 1.0, 1.0, 0.0]]]])
    points = torch.tensor([[[0.5, 0.5], [0.5, 3.5]]])
    finite = torch.tensor([[[True, True, False, True]]])
    with_nodata = model.region_colour(colour, distances, points)
    without = model.region_colour(colour, distances, points, finite)
    # query 0's region holds columns 0-2; column 2 has no data
    assert float(with_nodata[0, 0, 0, 0]) == pytest.approx((2 - 4 / 3) ** 2)
    assert float(without[0, 0, 0, 0]) == pytest.approx(0.0)
    assert float(without[0, 1, 0, 3]) == pytest.approx(0.0)
