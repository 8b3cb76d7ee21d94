import inspect
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geosparse.datasets import (
    DISPLACEMENT_THRESHOLD,
    RadiometricShift,
    harmonize_folder,
    shift_folder,
)
from geosparse.errors import InputError
from geosparse.inference import Predictor


def _images(seed=0, n=3, bands=4):
    rng = np.random.default_rng(seed)
    return [rng.integers(20, 200, (bands, 32, 32)).astype(np.uint8) for _ in range(n)]


def test_a_shift_onto_the_same_distribution_is_the_identity():
    images = _images()
    shift = RadiometricShift.fit(images, images)
    out = shift(images[0])
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - images[0].astype(int)).max() <= 1


def test_a_shift_takes_source_quantiles_to_the_target_and_is_monotone():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 100, (2, 64, 64))
    target = np.stack([2 * source[0] + 10, np.sqrt(source[1])])  # gain, tone curve
    shift = RadiometricShift.fit([source], [target], quantiles=201)
    out = shift(source)
    assert out[0] == pytest.approx(target[0], abs=1.5)
    assert out[1] == pytest.approx(target[1], abs=0.2)
    ramp = np.linspace(-5, 105, 50)[None].repeat(2, 0)[..., None]
    assert (np.diff(shift(ramp)[..., 0], axis=1) >= 0).all()  # monotone, clamped


def test_a_shift_keeps_nan_and_clips_integers():
    images = [np.full((1, 4, 4), 100.0)]
    shift = RadiometricShift.fit(
        [np.arange(16.0).reshape(1, 4, 4)], [np.arange(16.0).reshape(1, 4, 4) * 40]
    )
    x = np.array([[[0.0, np.nan], [15.0, 3.0]]])
    out = shift(x)
    assert np.isnan(out[0, 0, 1]) and out[0, 1, 0] == pytest.approx(600.0)
    assert shift(np.full((1, 2, 2), 15, np.uint8)).max() == 255  # clipped
    with pytest.raises(InputError, match='3 bands'):
        shift(np.zeros((3, 2, 2)))
    with pytest.raises(InputError, match='same bands'):
        RadiometricShift.fit(images, [np.zeros((2, 4, 4))])
    with pytest.raises(InputError, match='band 1 has no valid pixel'):
        RadiometricShift.fit(images, [np.full((1, 4, 4), np.nan)])


def _write(path, data, nodata=None):
    profile = dict(
        driver='GTiff',
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype,
        crs='EPSG:32617',
        transform=from_origin(500000, 4100000, 1, 1),
        nodata=nodata,
        photometric='MINISBLACK',
    )
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(data)


def test_shift_folder_shifts_imagery_keeps_labels_and_georeference(tmp_path):
    src, out = tmp_path / 'src', tmp_path / 'out'
    src.mkdir()
    image = _images(n=1)[0]
    image[:, 0, 0] = 0  # nodata
    _write(src / 'a_naip.tif', image, nodata=0)
    labels = np.full((1, 32, 32), 41, np.uint8)
    _write(src / 'a_nlcd.tif', labels)
    target = [np.clip(image.astype(int) + 40, 0, 255).astype(np.uint8)]
    shift = RadiometricShift.fit([image], target, nodata=0)
    shift_folder(src, out, shift)
    with rasterio.open(out / 'a_naip.tif') as a, rasterio.open(src / 'a_naip.tif') as b:
        shifted = a.read()
        assert a.count == 4 and a.transform == b.transform and a.crs == b.crs
        assert a.nodata == 0 and (shifted[:, 0, 0] == 0).all()
    assert shifted[:, 1:, 1:].mean() == pytest.approx(
        image[:, 1:, 1:].mean() + 40, abs=1
    )
    with rasterio.open(out / 'a_nlcd.tif') as a:
        assert (a.read() == labels).all()
    assert not list(out.glob('.*'))  # no staging left
    with pytest.raises(InputError, match='is the source folder'):
        shift_folder(src, src, shift)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(InputError, match=r'holds no \*_naip.tif'):
        shift_folder(tmp_path / 'empty', tmp_path / 'y', shift)


def test_shift_fitted_on_real_naip_moves_the_tile_onto_the_other_acquisition(
    data_dir, tmp_path
):
    """The second-acquisition test of the LSR benchmark, on the real data."""
    tile = sorted((data_dir / 'chesapeake-wv2014' / 'train').glob('*_naip.tif'))
    other = data_dir / 'naip-samples' / 'm_3211605_ne_11_060_20200415.tif'
    shift = RadiometricShift.from_files(tile, [other])
    shifted = shift_folder(tile[0].parent, tmp_path / 'shifted', shift)
    pooled = np.concatenate(
        [rasterio.open(p).read().reshape(4, -1) for p in shifted], axis=1
    )
    with rasterio.open(other) as src:
        target = src.read().reshape(4, -1)
    for b in range(4):  # the tile now has the other acquisition's distribution
        q = [5, 50, 95]
        assert np.percentile(pooled[b], q) == pytest.approx(
            np.percentile(target[b], q), abs=3
        )
    assert len(list((tmp_path / 'shifted').glob('*_lc.tif'))) == len(tile)


def test_harmonize_folder_maps_a_far_acquisition_onto_the_reference(tmp_path):
    rng = np.random.default_rng(0)
    profile = {'driver': 'GTiff', 'width': 32, 'height': 32, 'dtype': 'uint8'}

    def patches(folder: Path, images: list[np.ndarray]) -> None:
        folder.mkdir()
        for i, image in enumerate(images):
            stem = folder / f'm_0_{i:02d}'
            for suffix, data in (
                ('naip', image),
                ('nlcd', image[:1]),
                ('lc', image[:1]),
            ):
                with rasterio.open(
                    f'{stem}_{suffix}.tif', 'w', count=len(data), **profile
                ) as dst:
                    dst.write(data)

    fine = [rng.integers(0, 120, (4, 32, 32), dtype=np.uint8) for _ in range(2)]
    patches(tmp_path / 'fine', fine)
    # Another acquisition: brighter, with less contrast (displacement > 0.5).
    patches(tmp_path / 'far', [(100 + f // 2).astype(np.uint8) for f in fine])
    patches(tmp_path / 'near', [f + 1 for f in fine])
    near = harmonize_folder(tmp_path / 'near', tmp_path / 'fine', tmp_path / 'a')
    assert not near['matched'] and max(near['displacement']) < 0.5
    assert not (tmp_path / 'a').exists() and 'out' not in near
    far = harmonize_folder(tmp_path / 'far', tmp_path / 'fine', tmp_path / 'b')
    assert far['matched'] and min(far['displacement']) > 0.5
    out = tmp_path / 'b'
    assert far['out'] == str(out)
    with rasterio.open(out / 'm_0_00_naip.tif') as src:
        mapped = src.read()
    assert mapped.shape == (4, 32, 32)  # four bands stay four
    assert np.abs(mapped.astype(float) - fine[0]).mean() < 3  # undone
    assert (out / 'm_0_00_lc.tif').exists()  # labels come along
    forced = harmonize_folder(
        tmp_path / 'near', tmp_path / 'fine', tmp_path / 'c', mode='match'
    )
    assert forced['matched']
    with pytest.raises(InputError, match="mode='nearest'"):
        harmonize_folder(tmp_path / 'far', tmp_path / 'fine', tmp_path / 'd', 'nearest')
    with pytest.raises(InputError, match=r'reference=.*holds no'):
        harmonize_folder(tmp_path / 'far', tmp_path / 'nothing', tmp_path / 'd')
    # The predictor's auto decides by the same threshold.
    assert (
        inspect.signature(Predictor).parameters['radiometry_threshold'].default
        == DISPLACEMENT_THRESHOLD
    )
