"""A Prometheus histogram for one writer thread: ``observe`` is a bisect and two adds, no lock.

prometheus_client's Histogram takes a lock and scans its buckets on every observation (~4 us);
the run loop observes three latencies per event, so that alone capped throughput. Here the loop
thread is the only writer; a scrape copies the counts, and may see ``_sum`` and the buckets one
observation apart, which monitoring tolerates.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class HistogramChild:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        """Observe each of ``values`` (a batch's latencies: one vectorised pass instead of one call each)."""
        n = len(values)
        if n < 16:
            for v in values:
                self.observe(v)
            return
        arr = np.asarray(values, dtype=np.float64)
        found = np.bincount(np.searchsorted(self._bounds, arr, side="left"), minlength=len(self._bounds))
        counts = self.counts
        for i in np.flatnonzero(found).tolist():
            counts[i] += int(found[i])
        self.sum += float(arr.sum())


class FastHistogram(Collector):
    """Single-writer histogram with optional labels, registered on the registry passed in."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Iterable[float], registry: CollectorRegistry) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._bounds = tuple(bounds)
        self._le = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        self._lock = threading.Lock()
        if not self.labelnames:
            self._children[()] = HistogramChild(self._bounds)
        registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, HistogramChild(self._bounds))
        return child

    def observe(self, value: float) -> None:
        self._children[()].observe(value)

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        self._children[()].observe_many(values)

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> list[HistogramMetricFamily]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            counts, total = list(child.counts), child.sum
            cumulative, running = [], 0
            for le, c in zip(self._le, counts, strict=True):
                running += c
                cumulative.append((le, running))
            fam.add_metric(list(values), cumulative, total)
        return [fam]
