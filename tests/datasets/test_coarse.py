import numpy as np
import pytest
import rasterio
import torch
from torchgeo.samplers import RandomGeoSampler

from geosparse.datasets import CoarseLabels, FineLabels, ImageryDataset, make_scene


def test_scene_is_deterministic(tmp_path):
    a = make_scene(tmp_path / 'a', size=96, seed=5)
    b = make_scene(tmp_path / 'b', size=96, seed=5)
    for x, y in zip(
        (a.image, a.coarse, a.fine), (b.image, b.coarse, b.fine), strict=True
    ):
        with rasterio.open(x) as s, rasterio.open(y) as t:
            np.testing.assert_array_equal(s.read(), t.read())
    with rasterio.open(a.image) as s:
        assert (
            s.count == 4
            and s.crs.to_epsg() == 32618
            and s.colorinterp[3].name != 'alpha'
        )
    with rasterio.open(a.coarse) as s:
        assert s.crs.to_epsg() == 5070 and s.res == (30.0, 30.0)


def test_blocks_follow_the_coarse_grid(scene):
    ds = (
        ImageryDataset(scene.image.parent, glob='*_naip.tif')
        & CoarseLabels(scene.coarse.parent, glob='*_nlcd.tif')
        & FineLabels(scene.fine.parent, glob='*_lc.tif')
    )
    q = next(iter(RandomGeoSampler(ds, 96, length=1)))
    s = ds[q]
    block, coarse = s['block'].numpy(), s['coarse'].numpy()
    assert s['image'].shape == (4, 96, 96) and s['mask'].shape == (96, 96)
    # every block holds a single coarse code, and blocks are about 30 x 30 m
    for b in np.unique(block[block >= 0]):
        assert len(np.unique(coarse[block == b])) == 1
    sizes = np.bincount(block[block >= 0].ravel())
    assert sizes.max() <= 31 * 31 + 62
    assert (block[coarse == 0] == -1).all()


def test_cells_cut_regions(scene):
    co = CoarseLabels(
        scene.coarse.parent, glob='*_nlcd.tif', blocks='cells', cell_size=30
    )
    ds = ImageryDataset(scene.image.parent, glob='*_naip.tif') & co
    s = ds[next(iter(RandomGeoSampler(ds, 64, length=1)))]
    block = s['block'].numpy()
    assert block.max() >= 3


def test_misaligned_coarse_grids_are_rejected(tmp_path, scene):
    import shutil

    folder = tmp_path / 'c'
    folder.mkdir()
    shutil.copy(scene.coarse, folder / 'a_nlcd.tif')
    with rasterio.open(scene.coarse) as src:
        prof, data = src.profile, src.read()
    t = prof['transform']
    prof['transform'] = rasterio.Affine(t.a, 0, t.c + 7, 0, t.e, t.f)
    with rasterio.open(folder / 'b_nlcd.tif', 'w', **prof) as dst:
        dst.write(data)
    with pytest.raises(ValueError, match='share one grid'):
        CoarseLabels(folder, glob='*_nlcd.tif')


def _float_copy(scene, folder, edit, which='coarse'):
    """The scene's coarse (or fine) labels as float32 with NaN nodata, edited."""
    folder.mkdir()
    path = getattr(scene, which)
    with rasterio.open(path) as src:
        prof, data = src.profile, src.read().astype(np.float32)
    edit(data)
    prof.update(dtype='float32', nodata=float('nan'))
    with rasterio.open(folder / path.name, 'w', **prof) as dst:
        dst.write(data)
    with rasterio.open(path) as src:
        return src.read(1)


def _whole(ds):
    return ds[ds.bounds[0], ds.bounds[1]]


def test_nan_in_float_coarse_labels_is_nodata(tmp_path, scene):
    def holes(data):
        data[0, :3] = np.nan

    codes = _float_copy(scene, tmp_path / 'c', holes)
    s = _whole(CoarseLabels(tmp_path / 'c', glob='*_nlcd.tif'))
    ref = _whole(CoarseLabels(scene.coarse.parent, glob='*_nlcd.tif'))
    assert s['coarse'].dtype == torch.int64
    got, want = s['coarse'].numpy(), ref['coarse'].numpy()
    assert set(np.unique(got)) <= set(np.unique(codes)) | {0}
    assert (got == 0).sum() > (want == 0).sum()  # the NaN rows became nodata
    assert ((got == want) | (got == 0)).all()  # nearest codes, not interpolated
    assert (s['block'].numpy()[got == 0] == -1).all()
    with pytest.raises(
        ValueError, match=r'NaN coarse pixels but no nodata code; .*\(coarse_nodata\)'
    ):
        _whole(CoarseLabels(tmp_path / 'c', glob='*_nlcd.tif', nodata=None))


def test_fractional_coarse_values_are_refused(tmp_path, scene):
    def fractions(data):
        data[0, 0, 0] = 41.5

    _float_copy(scene, tmp_path / 'c', fractions)
    with pytest.raises(ValueError, match=r'_nlcd\.tif: coarse labels must be whole'):
        _whole(CoarseLabels(tmp_path / 'c', glob='*_nlcd.tif'))


def test_nan_in_float_fine_labels_is_nodata(tmp_path, scene):
    """TorchGeo cast a NaN fine label to an arbitrary integer (an unknown code)."""

    def holes(data):
        data[0, :5] = np.nan

    codes = _float_copy(scene, tmp_path / 'f', holes, which='fine')
    got = _whole(FineLabels(tmp_path / 'f', glob='*_lc.tif'))['mask']
    want = _whole(FineLabels(scene.fine.parent, glob='*_lc.tif'))['mask'].numpy()
    assert got.dtype == torch.int64
    got = got.numpy()
    assert (got[:5] == 0).all() and set(np.unique(got)) <= set(np.unique(codes)) | {0}
    assert (got[5:] == want[5:]).all()  # nearest codes, not interpolated
    moved = _whole(FineLabels(tmp_path / 'f', glob='*_lc.tif', nodata=9))['mask']
    assert (moved.numpy()[:5] == 9).all()
    with pytest.raises(
        ValueError, match=r'_lc\.tif: NaN fine pixels .*\(fine_nodata\)'
    ):
        _whole(FineLabels(tmp_path / 'f', glob='*_lc.tif', nodata=None))


def test_fractional_fine_values_are_refused(tmp_path, scene):
    def fractions(data):
        data[0, 0, 0] = 2.5

    _float_copy(scene, tmp_path / 'f', fractions, which='fine')
    with pytest.raises(ValueError, match=r'_lc\.tif: fine labels must be whole'):
        _whole(FineLabels(tmp_path / 'f', glob='*_lc.tif'))
