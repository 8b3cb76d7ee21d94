"""What the docs' figure scripts share: their command line and how they save.

Each script takes the shared data folder (``DATA_DIR``, default
``$GEOSPARSE_DATA_DIR`` or ``../shared/data``), ``--out`` and ``--steps``.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def parse(
    doc: str, name: str, steps: int, extra: dict[str, Any] | None = None
) -> tuple[argparse.Namespace, Path]:
    """The script's arguments (``--out`` defaults to ``docs/_static/<name>.png``) and data folder.

    ``extra`` adds integer options with their defaults (``{'--points': 200}``).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument('data', nargs='?', type=Path)
    parser.add_argument('--out', type=Path, default=ROOT / f'docs/_static/{name}.png')
    parser.add_argument('--steps', type=int, default=steps)
    for option, default in (extra or {}).items():
        parser.add_argument(option, type=int, default=default)
    args = parser.parse_args()
    data = args.data or Path(
        os.environ.get('GEOSPARSE_DATA_DIR', ROOT.parent / 'shared/data')
    )
    warnings.filterwarnings('ignore')
    return args, data


def require(*paths: Path) -> None:
    """Exit with a one-line message if a shared data file is missing."""
    for path in paths:
        if not path.is_file():
            sys.exit(f'{path}: not found; give the shared data folder as the first argument')


def save(fig: Any, axes: Any, out: Path, message: str) -> None:
    """Hide the image axes, write ``fig`` to ``out`` and print ``out: message``."""
    for a in axes:
        a.set_axis_off()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f'{out}: {message}')
