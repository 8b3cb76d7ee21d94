"""Sphinx configuration of the geosparse documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (warnings are errors).
The tutorials in ``docs/tutorials`` are notebooks executed at build time by myst-nb,
on tiny settings (``GEOSPARSE_NB_TINY=1``) unless ``GEOSPARSE_NB_TINY=0`` is set;
``GEOSPARSE_DOCS_EXECUTE=off`` skips their execution (for quick docstring work).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import geosparse  # noqa: E402

project = 'geosparse'
author = 'the geosparse developers'
copyright = '2026, the geosparse developers'
version = release = geosparse.__version__

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
    'sphinxarg.ext',
    'sphinx_copybutton',
    'myst_nb',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'myst-nb', '.ipynb': 'myst-nb'}
exclude_patterns = ['_build', 'jupyter_execute', '**.ipynb_checkpoints']
myst_enable_extensions = ['dollarmath', 'amsmath']
myst_heading_anchors = 3

# API reference: docstrings are Google style, as in TorchGeo.
# As TorchGeo: special members (``__init__`` with its Args) are listed, and type hints
# go into the descriptions of the documented parameters only.
autodoc_default_options = {
    'members': True,
    'special-members': True,
    'show-inheritance': True,
    # dataclass-generated and inherited boilerplate
    'exclude-members': (
        '__weakref__, __repr__, __hash__, __eq__, __setattr__, __delattr__, '
        '__subclasshook__'
    ),
}
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
autodoc_typehints_description_target = 'documented'
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Tutorials: executed at build time, in a temporary folder, failing the build on error.
os.environ.setdefault('GEOSPARSE_NB_TINY', '1')
# Figures reach the pages through the notebook's inline backend, whatever the caller set.
os.environ['MPLBACKEND'] = 'module://matplotlib_inline.backend_inline'
nb_execution_mode = os.environ.get('GEOSPARSE_DOCS_EXECUTE', 'force')
nb_execution_in_temp = True
nb_execution_raise_on_error = True
nb_execution_timeout = 900
nb_merge_streams = True

html_theme = 'furo'
html_title = f'geosparse {release}'
html_static_path = ['_static']
html_theme_options = {'source_repository': '', 'navigation_with_keys': True}
