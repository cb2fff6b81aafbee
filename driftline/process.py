"""Process-lifetime helpers shared by every child process driftline starts (the local broker, the
publisher child)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import signal
import sys


def die_with_parent() -> None:
    """In a child process: SIGTERM it when its parent dies (Linux; elsewhere a no-op), so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def settle_heap(threshold: int) -> None:
    """Before a long-running loop: collect once, freeze what survives (the start-up heap: the model, the state
    restored; never scanned again) and let ``threshold`` allocations pass between young collections (the older
    generations' ratios stay Python's). 0 leaves the collector as Python sets it.

    Measured on the service's event path (SEA, River LogisticRegression, librdkafka): Python's 700 runs the
    collector every ~50 events; freeze + 10,000 gave 5-10% more events/s. Cyclic garbage among frozen objects
    (a model replaced later) is never collected: a bounded, one-time cost."""
    if threshold == 0:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(threshold, older, oldest)
