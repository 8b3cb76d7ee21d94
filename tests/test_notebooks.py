import os

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT


@pytest.mark.parametrize('name', ['label_super_resolution.ipynb'])
def test_notebook_runs(name, tmp_path, monkeypatch):
    monkeypatch.setenv('GEOSPARSE_NB_TINY', '1')
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    nb = nbformat.read(ROOT / 'notebooks' / name, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name='python3',
        resources={'metadata': {'path': str(tmp_path)}},
    ).execute()
    assert (tmp_path / 'lsr-notebook' / 'landcover.tif').exists()
    assert os.environ['GEOSPARSE_NB_TINY'] == '1'
