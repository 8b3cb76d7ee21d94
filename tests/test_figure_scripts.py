"""The scripts behind the documentation's pictures run on the shared real data.

Each trains briefly through the package and writes its figure; they are not in the docs
build's xdist group (they do not need the built site), so they run beside it.
"""

from __future__ import annotations

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ('script', 'needs'),
    [
        ('counting_figure.py', 'kootenay-trees'),
        ('instances_figure.py', 'spacenet-atlanta'),
        ('npp_figure.py', 'kootenay-trees'),
    ],
)
def test_figure_scripts_run_on_the_shared_data(data_dir, tmp_path, script, needs):
    """The scripts behind the pages' pictures run as their docstrings say (briefly)."""
    from ._scripts import run_python

    if not (data_dir / needs).is_dir():
        pytest.skip(f'{data_dir / needs}: not in the shared data')
    out = tmp_path / 'figure.png'
    res = run_python(
        ROOT / 'docs' / 'scripts' / script, data_dir, '--steps', 2, '--out', out
    )
    assert out.stat().st_size > 10_000, res.stdout
    assert f'{out}:' in res.stdout
