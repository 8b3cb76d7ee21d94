from __future__ import annotations

import os
from pathlib import Path

import pytest

from geosparse.datasets import SyntheticScene, make_scene

ROOT = Path(__file__).resolve().parents[1]


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
