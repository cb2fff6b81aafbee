"""Process-lifetime helpers shared by every child process driftline starts (the local broker, the
publisher child)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys


def die_with_parent() -> None:
    """In a child process: SIGTERM it when its parent dies (Linux; elsewhere a no-op), so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
