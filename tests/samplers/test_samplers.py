import pytest

from geosparse.datasets import CoarseLabels, ImageryDataset
from geosparse.samplers import CoarseBalancedGeoSampler, CoverGeoSampler, cover_offsets


def test_cover_offsets_stay_inside():
    assert cover_offsets(100, 40, 40) == [0, 40, 60]
    assert cover_offsets(30, 40, 40) == [0.0]


def test_cover_sampler_has_no_overhang(scene):
    ds = ImageryDataset(scene.image.parent, glob='*_naip.tif')
    windows = list(CoverGeoSampler(ds, 128))
    b = ds.bounds
    assert len(windows) == 4
    for x, y, _ in windows:
        assert x.start >= b[0].start and x.stop <= b[0].stop
        assert y.start >= b[1].start and y.stop <= b[1].stop


def test_balanced_sampler_favours_rare_classes(scene):
    co = CoarseLabels(scene.coarse.parent, glob='*_nlcd.tif')
    ds = ImageryDataset(scene.image.parent, glob='*_naip.tif') & co
    s = CoarseBalancedGeoSampler(ds, co, 64, length=10, pool=64)
    assert len(list(s)) == 10
    assert s.weights.max() > s.weights.min()
    assert sum(s.class_frequency.values()) == pytest.approx(1.0)
