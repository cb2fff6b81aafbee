"""driftline: a long-running Kafka consumer that keeps a pretrained model learning.

Every event is predicted first (the prediction is published), then learned from once its
label is known (test-then-train). See README.md for the service and its configuration.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("driftline")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
