"""strokescan: finds intracranial hemorrhage and stroke on brain CT."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("strokescan")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from strokescan.errors import StrokescanError
from strokescan.io import Scan, load_scan

__all__ = ["Scan", "StrokescanError", "__version__", "load_scan"]
