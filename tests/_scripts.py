"""Run a benchmark or console script as its own process, without paying its imports every time.

A benchmark run in a fresh interpreter spends about 10 s importing torch, Lightning,
TorchGeo and geosparse before it does anything, which is most of a test's few-step run.
:func:`run_script` forks each run from a server process that has imported them once (one
per pytest worker; :mod:`multiprocessing`'s ``forkserver``, which never runs torch code
itself, so that the fork is safe). The script still runs as ``__main__`` in a process of
its own, with its own arguments, global state and exit status: what it changes (threads,
warning filters, seeds) ends with it, as with ``python script.py``. What a module does
once at import is not repeated per run: geosparse's one-line error hook for ``torchgeo``
(installed at import only in a process named ``torchgeo``) is not in these runs, so the
tests of those messages start a real process (``tests/test_bad_input.py``).
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ['run_python', 'run_script']

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = [
    'torch',
    'torchvision',
    'lightning.pytorch',
    'torchmetrics',
    'torchgeo.datasets',
    'torchgeo.samplers',
    'torchgeo.trainers',
    'segmentation_models_pytorch',
    'geopandas',
    'rasterio',
    'scipy.optimize',
    'geosparse.datasets',
    'geosparse.datamodules',
    'geosparse.trainers',
    'geosparse.inference',
]
_context = None


def _server() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context('forkserver')
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _main(
    script: str,
    args: list[str],
    cwd: str | None,
    env: dict[str, str],
    out: str,
    err: str,
) -> None:
    """In the forked process: send stdout/stderr to files, run ``script`` as ``__main__``."""
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    if cwd is not None:
        os.chdir(cwd)
    os.environ.update(env)
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).parent))  # its sibling modules (_npp)
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit:
        raise
    except BaseException:
        # As the interpreter does (multiprocessing would print the traceback itself):
        # the script's own excepthook, e.g. `torchgeo fit`'s one-line input errors.
        sys.excepthook(*sys.exc_info())
        sys.exit(1)


def run_script(
    name: str, *args: object, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<name>`` with ``args``; its exit status, stdout and stderr."""
    return run_python(ROOT / 'benchmarks' / name, *args, check=check, timeout=timeout)


def run_python(
    script: str | Path,
    *args: object,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a Python ``script`` (or console script) with ``args`` in ``cwd``.

    ``env`` adds to (or overrides) the environment. Like
    ``subprocess.run([python, script, *args], capture_output=True, text=True)``:
    an uncaught exception goes to ``sys.excepthook`` and gives status 1, ``SystemExit``
    its code (a message goes to stderr with status 1).
    """
    script = str(script)
    argv = [str(a) for a in args]
    files = []
    for suffix in ('.out', '.err'):
        handle, path = tempfile.mkstemp(prefix='geosparse-script-', suffix=suffix)
        os.close(handle)
        files.append(Path(path))
    out, err = files
    process = _server().Process(
        target=_main,
        args=(
            script,
            argv,
            None if cwd is None else str(cwd),
            dict(env or {}),
            str(out),
            str(err),
        ),
    )
    try:
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([script, *argv], timeout)
        res = subprocess.CompletedProcess(
            [sys.executable, script, *argv],
            process.exitcode if process.exitcode is not None else -1,
            out.read_text(),
            err.read_text(),
        )
    finally:
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res
