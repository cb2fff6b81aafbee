"""Metrics read at scrape time (pull-style), each with one source of truth.

- `ModelCollector`: ``driftline_model_version`` / ``driftline_model_updates`` (and, for a learner that
  trains in the background, ``driftline_training_backlog_windows``), read from the model in use.
- `GpuCollector`: memory (and utilisation, where NVML answers) of the CUDA devices this process uses.

Nothing pushes these values: a scrape reads what is true at that moment, between batches too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    version: int  # the model generation predictions use now (the newest published one for background training)
    updates: int  # labels that model has learned
    backlog: int | None = None  # windows waiting for training (learners that train in the background)
    features_dropped: int = 0  # feature occurrences left out by the model's bound on feature names


class ModelCollector(Collector):
    """Reads the model's status from ``source`` (set once the pipeline exists) at every scrape."""

    def __init__(self) -> None:
        self.source: Callable[[], Sequence[ModelStatus]] | None = None  # one status per model

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.source() if self.source is not None else ())

    @staticmethod
    def _families(statuses: Sequence[ModelStatus] = ()) -> Iterator[Metric]:
        version = GaugeMetricFamily("driftline_model_version", "Model generation in use.", labels=["model"])
        updates = GaugeMetricFamily("driftline_model_updates", "Labels the model in use has learned.",
                                    labels=["model"])
        backlog = GaugeMetricFamily("driftline_training_backlog_windows",
                                    "Windows of labeled events waiting for (or in) training.", labels=["model"])
        dropped = CounterMetricFamily("driftline_features_dropped",
                                      "Feature occurrences left out of events because the model keeps at most "
                                      "model.max_features names.", labels=["model"])
        for status in statuses:
            version.add_metric([status.name], status.version)
            updates.add_metric([status.name], status.updates)
            dropped.add_metric([status.name], status.features_dropped)
            if status.backlog is not None:
                backlog.add_metric([status.name], status.backlog)
        yield from (version, updates, backlog, dropped)


class GpuCollector(Collector):
    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        memory, utilization = self._families()
        torch = sys.modules.get("torch")  # only a model that imported torch can be on a GPU
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            for i in range(torch.cuda.device_count()):
                device = f"cuda:{i}"
                memory.add_metric([device], torch.cuda.memory_allocated(i))
                with contextlib.suppress(Exception):  # no NVML (pynvml) here: memory only
                    utilization.add_metric([device], torch.cuda.utilization(i) / 100.0)
        yield from (memory, utilization)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("driftline_gpu_memory_bytes", "GPU memory allocated by the model (torch).",
                                  labels=["device"]),
                GaugeMetricFamily("driftline_gpu_utilization_ratio", "GPU utilisation (NVML), 0-1.",
                                  labels=["device"]))
