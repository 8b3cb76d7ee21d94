"""Every example in the README and the documentation runs as written.

The README's examples run in order in one fresh folder (the repository's ``examples`` and
``benchmarks`` linked into it), bash blocks with bash and Python blocks with Python. A block
of the documentation runs too, unless it is also in the README (it ran there). Benchmark
commands (``python benchmarks/...``) take real data and minutes: they run as written with
``python`` standing for a wrapper that stops each script right after it parsed its
arguments, so every option they show must exist. ``pip install`` lines are what CI's
fresh-environment step runs, and ``sphinx-build`` what ``tests/test_docs.py`` runs; they
are not repeated here.

These tests train every capability briefly (a few minutes in all); CI runs them once, in
its first step (marker ``examples``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.examples

BLOCK = re.compile(r'^```(bash|python)\n(.*?)^```', re.M | re.S)
DOC_PAGES = sorted((ROOT / 'docs').glob('**/*.md'))

# Stops a benchmark script once its arguments are parsed (exit 0), or fails.
PARSE_ONLY = r"""
import argparse, runpy, sys
class Parsed(Exception):
    pass
original = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    original(self, args, namespace)
    raise Parsed
argparse.ArgumentParser.parse_args = parse_args
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except Parsed:
    sys.exit(0)
sys.exit(f'{sys.argv[0]} never parsed its arguments')
"""
BASH_PRELUDE = """set -euo pipefail
python() {
    if [[ "${1:-}" == benchmarks/* ]]; then command python -c "$PARSE_ONLY" "$@";
    else command python "$@"; fi
}
"""


def blocks(path: Path) -> list[tuple[str, str]]:
    """The ``(language, code)`` of every bash and python block of a Markdown file."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(path.read_text())]


def runnable(code: str) -> str:
    """A bash block without its ``pip install`` and ``sphinx-build`` lines."""
    skip = ('pip install', 'sphinx-build')
    return '\n'.join(line for line in code.splitlines() if not line.startswith(skip))


def run_block(lang: str, code: str, cwd: Path) -> None:
    env = {
        **os.environ,
        'PARSE_ONLY': PARSE_ONLY,
        'MPLBACKEND': 'Agg',
        'PYTHONPATH': str(ROOT),
    }
    if lang == 'python':
        cmd = [sys.executable, '-c', code]
    else:
        cmd = ['bash', '-c', BASH_PRELUDE + runnable(code)]
    # A block may start a server in the background, which keeps any pipe open: the
    # output goes to a file, and the block's whole process group goes at the end.
    log = cwd / '.block.log'
    with open(log, 'w') as sink:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=900)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    out = log.read_text()
    assert proc.returncode == 0, (
        f'{lang} block failed:\n{code}\n--- output ---\n{out[-4000:]}'
    )


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A fresh folder that looks like the repository's root to the examples."""
    ws = tmp_path_factory.mktemp('examples')
    for name in ('examples', 'benchmarks', 'constraints.txt'):
        (ws / name).symlink_to(ROOT / name)
    return ws


def test_readme_examples_run_as_written(workspace):
    done = 0
    for lang, code in blocks(ROOT / 'README.md'):
        if not runnable(code).strip() or 'python -m pytest' in code:
            continue
        run_block(lang, code, workspace)
        done += 1
    assert done >= 8  # the examples of the four capabilities, CLI and Python
    assert (workspace / 'maps' / 'scene_naip_landcover.tif').exists()
    assert (workspace / 'maps' / 'counts.tif').exists()
    assert (workspace / 'maps' / 'instances_instances.gpkg').exists()


@pytest.mark.parametrize('page', DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_examples_run_as_written(page, workspace, tmp_path):
    readme = {code for _, code in blocks(ROOT / 'README.md')}
    todo = [(lang, code) for lang, code in blocks(page) if code not in readme]
    if not todo:
        pytest.skip(f'{page.name}: every example is one of the README, run there')
    if any('geosparse-demo/' in code for _, code in todo):
        # Its examples start from the demo's outputs: a short demo makes them.
        demo = subprocess.run(
            [shutil.which('geosparse') or 'geosparse', 'demo', '--steps', '3'],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert demo.returncode == 0, demo.stderr[-2000:]
        for name in ('examples', 'benchmarks', 'constraints.txt'):
            (tmp_path / name).symlink_to(ROOT / name)
        cwd = tmp_path
    else:
        cwd = workspace
    for lang, code in todo:
        run_block(lang, code, cwd)


def test_parse_only_wrapper_catches_a_wrong_option(workspace):
    with pytest.raises(AssertionError, match='block failed'):
        run_block(
            'bash', 'python benchmarks/counting.py --no-such-option 1\n', workspace
        )
