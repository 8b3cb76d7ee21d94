import os

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT


@pytest.mark.parametrize(
    'name',
    [
        'label_super_resolution.ipynb',
        'stac_inference.ipynb',
        'neural_point_process.ipynb',
        'counting.ipynb',
        'point_instances.ipynb',
    ],
)
def test_notebook_runs(name, tmp_path, monkeypatch):
    monkeypatch.setenv('GEOSPARSE_NB_TINY', '1')
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    nb = nbformat.read(ROOT / 'docs' / 'tutorials' / name, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name='python3',
        resources={'metadata': {'path': str(tmp_path)}},
    ).execute()
    expected = {
        'label_super_resolution.ipynb': 'lsr-notebook/landcover.tif',
        'stac_inference.ipynb': 'stac-notebook/maps/mosaic_landcover.json',
        'neural_point_process.ipynb': 'npp-notebook/posterior.tif',
        'counting.ipynb': 'counting-notebook/counts.tif',
        'point_instances.ipynb': 'instances-notebook/maps/instances_instances.gpkg',
    }
    assert (tmp_path / expected[name]).exists()
    assert os.environ['GEOSPARSE_NB_TINY'] == '1'
