"""geosparse: dense per-pixel maps with uncertainty from sparse or coarse labels."""

from importlib.metadata import PackageNotFoundError, version

from . import compat  # noqa: F401  # refuses an unsupported TorchGeo at import time

try:
    __version__ = version('geosparse')
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = '0.0.0'

__all__ = ['__version__']
