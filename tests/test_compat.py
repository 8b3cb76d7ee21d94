import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rasterio.crs import CRS

from geosparse import compat
from geosparse.compat import georeference, window_bounds

PACKAGE = Path(compat.__file__).parent


def test_unsupported_torchgeo_is_refused_at_import_in_one_line():
    code = (
        'import importlib.metadata as m\n'
        'real = m.version\n'
        "m.version = lambda name: '0.7.2' if name == 'torchgeo' else real(name)\n"
        'import geosparse\n'
    )
    res = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(
        'ImportError: geosparse supports torchgeo 0.8.1 (Python 3.11)'
    )
    assert '0.10.x (Python >= 3.12)' in last and '0.7.2 is installed' in last


@pytest.mark.parametrize(
    ('text', 'parsed'),
    [
        ('0.8.1', (0, 8, 1)),
        ('0.10.1', (0, 10, 1)),
        ('0.11.0rc1', (0, 11, 0)),
        ('1.0', (1, 0, 0)),
    ],
)
def test_version_parsing(text, parsed):
    assert compat._parse(text) == parsed


def test_only_compat_knows_the_torchgeo_version():
    """Nothing but geosparse.compat branches on the release or imports its old paths."""
    pattern = re.compile(
        r'torchgeo\.trainers|TORCHGEO_VERSION|_CURRENT|version\(.torchgeo.\)'
    )
    offenders = [
        f'{path.relative_to(PACKAGE)}:{i}'
        for path in PACKAGE.rglob('*.py')
        if path.name != 'compat.py'
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders


def test_georeference_gives_back_its_window():
    x, y = slice(360000.0, 360064.0, 0.5), slice(4309936.0, 4310000.0, 0.5)
    sample = georeference(CRS.from_epsg(32618), x, y)
    assert window_bounds(sample['bounds']) == (360000.0, 4309936.0, 360064.0, 4310000.0)
    if compat.GEO_KEYS:  # 0.8.1: the CRS travels with the sample
        assert sample['crs'] == CRS.from_epsg(32618)
    else:  # 0.10: float64 tensors, exact at UTM northings, and an affine transform
        assert sample['bounds'].dtype == torch.float64
        assert sample['transform'][:6].tolist() == [
            0.5,
            0,
            360000.0,
            0,
            -0.5,
            4310000.0,
        ]


def test_window_bounds_reads_both_formats():
    slices = (slice(1.0, 3.0), slice(10.0, 14.0), slice(0, 1))
    assert window_bounds(slices) == (1.0, 10.0, 3.0, 14.0)
    # 0.10: (xmin, xmax, xres, ymin, ymax, yres, tmin, tmax, tres); A & B concatenates
    first = torch.tensor([1.0, 3.0, 1.0, 10.0, 14.0, 1.0, 0.0, 0.0, 0.0])
    both = torch.cat([first, first + 100])
    assert window_bounds(first) == window_bounds(both) == (1.0, 10.0, 3.0, 14.0)
