import pytest
import torch

from geosparse.transforms import RandomFlipWithPoints, flip_batch


def test_flip_batch_moves_points_and_covariances():
    image = torch.zeros(1, 1, 8, 10)
    image[0, 0, 2, 7] = 1.0
    batch = {
        'image': image,
        'points': torch.tensor([[[2.5, 7.5]]]),
        'covariances': torch.tensor([[[4.0, 1.0, 2.0]]]),
    }
    flip_batch(batch, torch.tensor([True]), torch.tensor([True]))
    r, c = batch['points'][0, 0].floor().long().tolist()
    assert (r, c) == (5, 2) and batch['image'][0, 0, r, c] == 1.0
    assert batch['covariances'][0, 0].tolist() == [4.0, 1.0, 2.0]  # two flips: back
    flip_batch(batch, torch.tensor([True]), torch.tensor([False]))
    assert batch['covariances'][0, 0, 1] == -1.0


def test_random_flip_with_points_copies_and_keeps_padding_with_the_mask():
    torch.manual_seed(0)
    image = torch.rand(16, 2, 6, 9)
    points = torch.rand(16, 3, 2) * torch.tensor([6.0, 9.0])
    points[:, 2] = 0.0  # padding
    valid = torch.tensor([True, True, False]).expand(16, 3)
    batch = {'image': image, 'points': points, 'valid': valid}
    out = RandomFlipWithPoints()(dict(batch))
    assert out['image'] is not image and torch.equal(batch['image'], image)
    assert out['valid'] is valid  # points keep their order
    moved = (out['points'] != points).any(-1)  # per sample and point
    assert moved[:, :2].any() and not moved[:, :2].all()
    # padded points move like the rest (0 -> H or W), and stay masked out
    assert set(out['points'][:, 2].unique().tolist()) <= {0.0, 6.0, 9.0}
    assert torch.equal(RandomFlipWithPoints(p=0.0)(dict(batch))['image'], image)


def test_random_radiometry_changes_each_band_within_range_and_keeps_nan():
    from geosparse.transforms import RandomRadiometry

    torch.manual_seed(0)
    image = torch.rand(3, 4, 16, 16) * 255
    image[0, 0, 0, 0] = float('nan')
    out = RandomRadiometry(0.3)({'image': image.clone()})['image']
    assert out.shape == image.shape and torch.isnan(out[0, 0, 0, 0])
    finite = out[~torch.isnan(out)]
    assert finite.min() >= 0 and finite.max() <= 255
    change = (out - image).nan_to_num().abs().mean(dim=(2, 3))
    assert (change > 0.5).all()  # every band of every sample moves
    ratio = out.nanmean(dim=(2, 3)) / image.nanmean(dim=(2, 3))
    assert ratio.std(dim=1).min() > 0.01  # and the bands move differently
    same = RandomRadiometry(0.0)({'image': image.clone()})['image']
    assert torch.equal(same.nan_to_num(), image.nan_to_num())
    with pytest.raises(ValueError, match='strength'):
        RandomRadiometry(-1)
