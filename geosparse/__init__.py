"""geosparse: dense per-pixel maps with uncertainty from sparse or coarse labels."""

from importlib.metadata import PackageNotFoundError, version

from . import compat  # noqa: F401  # refuses an unsupported TorchGeo at import time
from .errors import install_cli_hook

install_cli_hook()  # `torchgeo fit`: geosparse's input errors in one line

try:
    __version__ = version('geosparse')
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = '0.0.0'

__all__ = ['__version__']
