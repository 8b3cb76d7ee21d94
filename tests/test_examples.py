"""Every example in the README and the documentation runs as written.

The README's examples run section by section (a capability each, in the order written),
every section in its own fresh folder (the repository's ``examples`` and ``benchmarks``
linked into it), so that the sections run in parallel and none leans on another's files;
bash blocks run with bash and Python blocks with Python. A block of the documentation runs
too, unless it is also in the README (it ran there); a page whose examples continue a README
section (``FOLLOW_UPS``) runs right after that section, in its folder. Benchmark
commands (``python benchmarks/...``) take real data and minutes: they run as written, but
each stops right after it parsed its arguments (``python`` stands for a function that
records them; after the test's blocks, one process runs every recorded command up to that
point), so every option they show must exist. ``pip install`` lines are what CI's
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
#: A section of the README starts at a heading or at a line in bold alone.
TITLE = re.compile(r'^(?:#+ (.+)|\*\*(.+)\*\*)$', re.M)
DOC_PAGES = sorted((ROOT / 'docs').glob('**/*.md'))
#: What each README section must leave behind (a leading word of its title: the files).
OUTPUTS = {
    'Land cover': ['maps/scene_naip_landcover.tif', 'maps/lsr.tif'],
    'Regression': ['maps/scene_naip_regression.tif'],
    'Counting': ['maps/objects_regression.tif', 'maps/counts.tif'],
    'Instance': ['maps/instances_instances.gpkg', 'maps/instances_instances.tif'],
}
#: Documentation pages whose examples start from a README section's outputs.
FOLLOW_UPS = {'docs/capabilities/instances.md': 'Instance'}

# Runs each benchmark command a test's blocks recorded (argv records, NUL-separated, each
# ended by \x01\0) up to the end of its argument parsing (exit 0 if they all parse), in
# one process, so that torch and the rest are imported once for all of them.
PARSE_ONLY = r"""
import argparse, runpy, sys
class Parsed(Exception):
    pass
original = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    original(self, args, namespace)
    raise Parsed
argparse.ArgumentParser.parse_args = parse_args
with open(sys.argv[1], 'rb') as f:
    records = [r for r in f.read().split(b'\x01\x00') if r]
for record in records:
    sys.argv = [a.decode() for a in record.split(b'\x00')[:-1]]
    command = 'python ' + ' '.join(sys.argv)
    try:
        runpy.run_path(sys.argv[0], run_name='__main__')
    except Parsed:
        continue
    except SystemExit as exc:
        sys.exit(f'{command}: exit status {exc.code}')
    sys.exit(f'{command}: never parsed its arguments')
"""
# A benchmark command only records its arguments (in the workspace's COMMANDS file);
# check_benchmark_commands runs PARSE_ONLY on them after the test's blocks.
COMMANDS = '.benchmark-commands'
BASH_PRELUDE = """set -euo pipefail
python() {
    if [[ "${1:-}" == benchmarks/* ]]; then
        printf '%s\\0' "$@" >> "$BENCHMARK_COMMANDS"; printf '\\1\\0' >> "$BENCHMARK_COMMANDS"
    else command python "$@"; fi
}
"""


def blocks(path: Path) -> list[tuple[str, str]]:
    """The ``(language, code)`` of every bash and python block of a Markdown file."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(path.read_text())]


def sections(path: Path) -> dict[str, list[tuple[str, str]]]:
    """The runnable blocks of a Markdown file by section title, in order."""
    text = path.read_text()
    prose = BLOCK.sub(lambda m: ' ' * len(m.group(0)), text)  # no titles in code
    starts = [(m.start(), m.group(1) or m.group(2)) for m in TITLE.finditer(prose)]
    out: dict[str, list[tuple[str, str]]] = {}
    for m in BLOCK.finditer(text):
        title = max(((at, t) for at, t in starts if at < m.start()), default=(0, ''))[1]
        if runnable(m.group(2)).strip() and 'python -m pytest' not in m.group(2):
            out.setdefault(title, []).append((m.group(1), m.group(2)))
    return out


def runnable(code: str) -> str:
    """A bash block without its ``pip install`` and ``sphinx-build`` lines."""
    skip = ('pip install', 'sphinx-build')
    return '\n'.join(line for line in code.splitlines() if not line.startswith(skip))


README_SECTIONS = sections(ROOT / 'README.md')


def section_of(word: str) -> str:
    """The README section whose title starts with ``word``."""
    (title,) = [t for t in README_SECTIONS if t.startswith(word)]
    return title


def run_block(lang: str, code: str, cwd: Path) -> None:
    env = {
        **os.environ,
        'BENCHMARK_COMMANDS': str(cwd / COMMANDS),
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


def check_benchmark_commands(cwd: Path) -> None:
    """Every benchmark command the blocks run in ``cwd`` recorded parses its arguments."""
    commands = cwd / COMMANDS
    if not commands.exists():
        return
    parsed = subprocess.run(
        [sys.executable, '-c', PARSE_ONLY, str(commands)],
        cwd=cwd,
        env={**os.environ, 'PYTHONPATH': str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    commands.unlink()
    assert parsed.returncode == 0, (
        f'a benchmark command of the examples failed:\n{parsed.stderr[-4000:]}'
    )


def make_workspace(ws: Path) -> Path:
    """``ws`` made to look like the repository's root to the examples."""
    for name in ('examples', 'benchmarks', 'constraints.txt'):
        (ws / name).symlink_to(ROOT / name)
    return ws


def doc_blocks(page: Path) -> list[tuple[str, str]]:
    """The blocks of a documentation page that the README does not hold."""
    readme = {code for _, code in blocks(ROOT / 'README.md')}
    return [(lang, code) for lang, code in blocks(page) if code not in readme]


def test_readme_sections_are_the_capabilities():
    # Every runnable README block lies in a section with its expected outputs.
    assert sorted(README_SECTIONS) == sorted(map(section_of, OUTPUTS))
    assert sum(map(len, README_SECTIONS.values())) >= 8  # CLI and Python each
    for page, word in FOLLOW_UPS.items():
        assert doc_blocks(ROOT / page), page
        assert section_of(word)


@pytest.mark.parametrize('word', sorted(OUTPUTS))
def test_readme_examples_run_as_written(word, tmp_path):
    ws = make_workspace(tmp_path)
    for lang, code in README_SECTIONS[section_of(word)]:
        run_block(lang, code, ws)
    for name in OUTPUTS[word]:
        assert (ws / name).exists(), f'README section {section_of(word)!r}: no {name}'
    for page, after in FOLLOW_UPS.items():
        if after == word:
            for lang, code in doc_blocks(ROOT / page):
                run_block(lang, code, ws)
    check_benchmark_commands(ws)


@pytest.mark.parametrize('page', DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_examples_run_as_written(page, tmp_path):
    name = str(page.relative_to(ROOT))
    todo = doc_blocks(page)
    if not todo:
        pytest.skip(f'{page.name}: every example is one of the README, run there')
    if name in FOLLOW_UPS:
        pytest.skip(f'{page.name}: runs after the README section {FOLLOW_UPS[name]!r}')
    if any('geosparse-demo/' in code for _, code in todo):
        # Its examples start from the demo's outputs: a short demo makes them.
        demo = subprocess.run(
            [shutil.which('geosparse') or 'geosparse', 'demo', '--steps', '3'],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert demo.returncode == 0, demo.stderr[-2000:]
    ws = make_workspace(tmp_path)
    for lang, code in todo:
        run_block(lang, code, ws)
    check_benchmark_commands(ws)


def test_parse_only_wrapper_catches_a_wrong_option(tmp_path):
    ws = make_workspace(tmp_path)
    good = 'python benchmarks/counting.py --image x.tif --points p.gpkg --seeds 0 1\n'
    run_block('bash', good + 'python benchmarks/counting.py --no-such-option 1\n', ws)
    # The good command parses and the check goes on to the next one, which fails.
    with pytest.raises(AssertionError, match=r'counting\.py --no-such-option 1: exit'):
        check_benchmark_commands(ws)
    assert not (ws / COMMANDS).exists()  # the next test's check starts afresh
