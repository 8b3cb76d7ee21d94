from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geosparse.datasets import SyntheticScene, make_scene

ROOT = Path(__file__).resolve().parents[1]

if os.environ.get('PYTEST_XDIST_WORKER'):
    # pytest -n N: N workers share the cores, so each (and the processes it starts:
    # the CLI, notebooks, torchgeo fit) computes on one thread instead of all.
    os.environ['OMP_NUM_THREADS'] = '1'
    os.environ['MKL_NUM_THREADS'] = '1'
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README's examples first, then the other slow runs, then the rest.

    With ``pytest -n N`` (``--dist loadgroup``, set in ``pyproject.toml``: tests of one
    ``xdist_group`` share a worker, every other test is handed out alone, in this order)
    the runs of minutes start at once and the many short tests fill in around them (the
    longest-first rule). In file order the longest (the README's instance example, about
    4 minutes) came near the end, and one worker ran it alone while the other idled.
    """

    def tier(item: pytest.Item) -> int:
        if item.get_closest_marker('examples'):
            return 0
        return 1 if item.get_closest_marker('slow') else 2

    items.sort(key=tier)  # stable: file order within a tier


@pytest.fixture(scope='session')
def scene(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    return make_scene(tmp_path_factory.mktemp('scene'), size=192, seed=3)


@pytest.fixture(scope='session')
def data_dir() -> Path:
    path = Path(os.environ.get('GEOSPARSE_DATA_DIR', ROOT.parent / 'shared' / 'data'))
    if not (path / 'chesapeake-wv2014').is_dir():
        pytest.skip(
            f'real data not found at {path}: set GEOSPARSE_DATA_DIR to the shared data '
            'folder to run this test'
        )
    return path


UTM_ORIGIN = Affine(1, 0, 500000, 0, -1, 4200000)


def write_raster(path, data, transform=UTM_ORIGIN, crs='EPSG:32618', nodata=None):
    """Write a (bands, rows, cols) array as a GeoTIFF (no alpha band)."""
    with rasterio.open(
        path,
        'w',
        driver='GTiff',
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        photometric='MINISBLACK',
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return data


def random_raster(path, bands=4, h=700, w=600, nodata=None, seed=0):
    """A random uint8 raster (values 1..254) in UTM 18N at 1 m."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 255, (bands, h, w), dtype=np.uint8)
    return write_raster(path, data, nodata=nodata)


def counting_dm(objects, tmp_path, **kw):
    """A small CountingDataModule over a make_object_scene scene (cache in tmp_path)."""
    from geosparse.datamodules import CountingDataModule

    options = dict(
        patch_size=32,
        batch_size=4,
        length=8,
        eval_size=32,
        cache_dir=str(tmp_path / 'cache'),
        fit_steps=10,
    )
    options.update(kw)
    return CountingDataModule(str(objects.image), str(objects.points), **options)


def save_untrained(task, path):
    """Save a task with its initial weights as a Lightning checkpoint at ``path``."""
    import lightning.pytorch as pl

    trainer = pl.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path
