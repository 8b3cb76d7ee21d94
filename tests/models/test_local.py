import pytest
import torch

from geosparse.models import LocalContextNet


def test_output_shape_and_features():
    net = LocalContextNet(4, 3, scales=(3, 5), hidden=8)
    x = torch.rand(2, 4, 17, 19)
    assert net(x).shape == (2, 3, 17, 19)
    feats = net.features(x)
    assert feats.shape == (2, 4 + 2 * 2, 17, 19)
    # Interior pixel: the 3x3 mean and standard deviation of the brightness.
    b = x.mean(1)[0, 7:10, 8:11]
    torch.testing.assert_close(feats[0, 4, 8, 9], b.mean())
    torch.testing.assert_close(
        feats[0, 5, 8, 9], ((b - b.mean()) ** 2).mean().add(1e-6).sqrt()
    )


def test_receptive_field_is_the_largest_window():
    torch.manual_seed(0)
    net = LocalContextNet(4, 2, scales=(5, 15)).eval()
    x = torch.rand(1, 4, 40, 40)
    base = net(x)
    far, near = x.clone(), x.clone()
    far[..., 20, 28] += 1  # 8 px away: outside the 15 px window of pixel (20, 20)
    near[..., 20, 27] += 1  # 7 px away: inside it
    assert torch.equal(net(far)[..., 20, 20], base[..., 20, 20])
    assert not torch.equal(net(near)[..., 20, 20], base[..., 20, 20])


@pytest.mark.parametrize('scales', [(4,), (0,), (5, 2.5)])
def test_bad_scales_are_named(scales):
    with pytest.raises(ValueError, match='odd positive'):
        LocalContextNet(4, 2, scales=scales)


def test_depth_zero_is_linear():
    net = LocalContextNet(4, 2, scales=(), depth=0).eval()
    x = torch.rand(1, 4, 3, 3)
    y = net(x) - net(torch.zeros_like(x))
    torch.testing.assert_close(net(2 * x) - net(torch.zeros_like(x)), 2 * y)
