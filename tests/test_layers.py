"""The package's layers depend one way: datasets → samplers → datamodules → tasks → inference → CLI."""

import ast
from pathlib import Path

import pytest

import geosparse

PACKAGE = Path(geosparse.__file__).parent

# Each layer, and the layers above it that it must never import.
ORDER = ['datasets', 'samplers', 'datamodules', 'trainers', 'inference', 'cli']


def _imports(path: Path) -> set[str]:
    """Absolute names of the geosparse modules a file imports."""
    tree = ast.parse(path.read_text())
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    package = parts[:-1] if parts[-1] != '__init__' else parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = '.'.join([*base, *(node.module or '').split('.')]).rstrip('.')
            else:
                name = node.module or ''
            out.add(name)
            out.update(f'{name}.{a.name}' for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {n for n in out if n.startswith('geosparse')}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix('.py')


@pytest.mark.parametrize('layer', ORDER[:-1])
def test_a_layer_never_imports_the_layers_above_it(layer):
    above = ORDER[ORDER.index(layer) + 1 :]
    files = sorted(PACKAGE.rglob('*.py'))
    offenders = []
    for path in files:
        if _layer(path) != layer:
            continue
        for name in _imports(path):
            sub = name.split('.')
            if len(sub) > 1 and sub[1] in above:
                offenders.append(f'{path.relative_to(PACKAGE)} imports {name}')
    assert not offenders, offenders


def test_the_gp_io_losses_and_instances_sit_below_the_tasks():
    above = {'datamodules', 'trainers', 'inference', 'cli'}
    offenders = [
        f'{path.relative_to(PACKAGE)} imports {name}'
        for low in ('gp', 'io', 'losses', 'instances')
        for path in sorted((PACKAGE / low).rglob('*.py'))
        for name in _imports(path)
        if len(name.split('.')) > 1 and name.split('.')[1] in above
    ]
    assert not offenders, offenders


def test_tasks_and_data_modules_do_not_import_each_other():
    # Both sit between the samplers and inference; a task gets its batches through
    # Lightning, never from a data module's code (TorchGeo keeps them apart too).
    offenders = [
        f'{path.relative_to(PACKAGE)} imports {name}'
        for low, high in (('trainers', 'datamodules'), ('datamodules', 'trainers'))
        for path in sorted((PACKAGE / low).rglob('*.py'))
        for name in _imports(path)
        if len(name.split('.')) > 1 and name.split('.')[1] == high
    ]
    assert not offenders, offenders


def test_the_import_scan_sees_relative_imports():
    names = _imports(PACKAGE / 'inference' / 'predictor.py')
    assert 'geosparse.trainers.heads' in names
    assert 'geosparse.inference.checkpoints' in names
