"""The documentation builds without warnings, and its tutorials show their figures.

The build executes the tutorial notebooks on tiny settings (``GEOSPARSE_NB_TINY=1``), so
this is also the test that every notebook runs. Its pages are then opened in a real
headless browser (Debian's chromium, driven by Playwright), which checks that each page
loads and that its figures decode. Set ``GEOSPARSE_REQUIRE_BROWSER=1`` (CI does) to make a
missing browser a failure rather than a skip.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

#: The build executes every tutorial (CI: once, in its first step); its tests share one
#: worker, and so one build, under pytest-xdist.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group('docs')]

TUTORIALS = sorted(p.stem for p in (ROOT / 'docs' / 'tutorials').glob('*.ipynb'))


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> Path:
    pytest.importorskip('sphinx')
    pytest.importorskip('myst_nb')
    out = tmp_path_factory.mktemp('docs')
    env = {**os.environ, 'GEOSPARSE_NB_TINY': '1'}
    env.pop('GEOSPARSE_DOCS_EXECUTE', None)
    res = subprocess.run(
        [
            sys.executable,
            '-m',
            'sphinx',
            '-W',
            '--keep-going',
            '-q',
            '-b',
            'html',
            '-d',
            str(out / 'doctrees'),
            str(ROOT / 'docs'),
            str(out / 'html'),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    return out / 'html'


def browser_path() -> str | None:
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        if found := shutil.which(name):
            return found
    return None


def test_every_tutorial_is_a_page_with_figures(site):
    assert len(TUTORIALS) >= 5
    for name in TUTORIALS:
        page = (site / 'tutorials' / f'{name}.html').read_text()
        # Executed at build time: its figures are images in the page.
        figures = re.findall(r'<img [^>]*src="([^"]+)"', page)
        assert figures, f'{name}: no figure in the built page'
        for src in figures:
            if not src.startswith('data:'):
                assert (site / 'tutorials' / html.unescape(src)).exists(), src


def test_tutorials_load_and_show_their_figures_in_a_browser(site, tmp_path):
    browser = browser_path()
    if browser is None:
        if os.environ.get('GEOSPARSE_REQUIRE_BROWSER') == '1':
            pytest.fail('no chromium found (apt-get install chromium)')
        pytest.skip('no chromium found: apt-get install chromium to run this test')
    sync_api = pytest.importorskip('playwright.sync_api')
    with sync_api.sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=browser, args=['--no-sandbox'])
        page = chrome.new_page()
        errors: list[str] = []
        page.on('pageerror', lambda e: errors.append(str(e)))
        for name in TUTORIALS:
            url = (site / 'tutorials' / f'{name}.html').as_uri()
            response = page.goto(url, wait_until='load')
            assert response is not None and response.ok, url
            assert 'geosparse' in page.title()
            images = page.evaluate(
                """Array.from(document.querySelectorAll('article img'))
                   .map(i => [i.currentSrc, i.complete, i.naturalWidth, i.naturalHeight])"""
            )
            assert images, f'{name}: no figure shown'
            broken = [
                src for src, done, w, h in images if not (done and w > 0 and h > 0)
            ]
            assert not broken, f'{name}: figures that did not decode: {broken}'
            # Kept in the test's temporary folder only, for a look when it fails.
            page.screenshot(path=str(tmp_path / f'{name}.png'), full_page=False)
        chrome.close()
    assert not errors, errors


def test_equations_render_from_the_docstrings(site):
    page = (site / 'api' / 'losses.html').read_text()
    maths = re.findall(r'<span class="math[^"]*">(.*?)</span>', page, re.S)
    maths += re.findall(r'<div class="math[^"]*">(.*?)</div>', page, re.S)
    assert any(r'\mu_l' in m for m in maths), 'label counting equation missing'
    doubled = [m for m in maths if re.search(r'\\\\[A-Za-z]', m)]
    assert not doubled, f'doubled backslashes reach MathJax: {doubled[:3]}'


def test_cli_reference_is_generated_from_the_parser(site):
    page = (site / 'cli.html').read_text()
    for text in (
        'demo',
        'predict',
        'count',
        'priors',
        '--checkpoint',
        '--reveal',
        '--points',
    ):
        assert text in page, text


def test_capability_pages_give_their_commands_and_tables(site):
    for name in (
        'label_super_resolution',
        'neural_point_processes',
        'counting',
        'instances',
    ):
        page = (site / 'capabilities' / f'{name}.html').read_text()
        assert '<table' in page, name
        assert 'benchmarks/' in page, name
