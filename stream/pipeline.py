"""Builds the pipeline a configuration describes: the router, the observers in their order, and the
processor that calls them (what `run` and `replay` both process with).

The observers' order is the order their hooks run in: the detection log first (a detection is logged
and audited before anything acts on it), then quality, the ledger, the adaptation ladder, the error and
input drift detectors, and the label join last (an event is marked resolved after everything learned it).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from driftline.adapters.adaptation import Adapter
from driftline.adapters.config import DriftSettings
from driftline.adapters.detectors import DRIFT, IMPROVEMENT, WARNING, DriftMonitor, monitor_from
from driftline.adapters.input_drift import InputDriftMonitor, input_monitor_from
from driftline.learners.base import Learner
from driftline.learners.capabilities import background_trained
from driftline.monitoring.collectors import ModelStatus
from driftline.monitoring.metrics import ServiceMetrics
from driftline.monitoring.prequential import make_tracker
from driftline.settings import InputLimits, Settings
from driftline.stream.audit import AuditPublisher, DeadLetters
from driftline.stream.codec import DEFAULT_LIMITS
from driftline.stream.dedup import DedupWindow
from driftline.stream.label_stage import LabelStage
from driftline.stream.labels import LabelJoin
from driftline.stream.observers import Adaptation, DetectionLog, ErrorDrift, InputDrift, Ledger, Observer, Quality
from driftline.stream.partition_state import Partitioned
from driftline.stream.processor import EventProcessor
from driftline.stream.routing import Router
from driftline.stream.sink import OutputSink


def build_processor(learner: Learner, sink: OutputSink, metrics: ServiceMetrics, *, rolling_window: int,
                    max_payload_bytes: int, limits: InputLimits = DEFAULT_LIMITS, dedup_window: int = 0,
                    join: LabelJoin | None = None,
                    labels_topic: str | None = None, expired_topic: str | None = None,
                    drift: DriftMonitor | None = None, audit_topic: str | None = None,
                    adapt: DriftSettings | None = None, seed: int = 42, input_drift: InputDriftMonitor | None = None,
                    extra: Sequence[Observer] = ()) -> EventProcessor:
    """The processor for these parts. With a `LabelJoin` and ``labels_topic``, records of that topic are
    labels for earlier (or later) events; ``extra`` observers run after the standard ones."""
    dead = DeadLetters(sink)
    audit = AuditPublisher(sink, audit_topic)
    labels = (LabelStage(join, labels_topic, expired_topic=expired_topic, dead=dead, sink=sink, metrics=metrics)
              if join is not None and labels_topic is not None else None)
    adapter = (Adapter(learner, adapt, seed=seed, metrics=metrics, emit=audit.publish)
               if adapt is not None and adapt.policies else None)
    observers: list[Observer] = [DetectionLog(learner, metrics, audit),
                                 Quality(make_tracker(learner.task, rolling_window), metrics, learner.name),
                                 Ledger(metrics, learner.name)]
    if adapter is not None:
        observers.append(Adaptation(adapter))
    if drift is not None:
        observers.append(ErrorDrift(drift))
    if input_drift is not None:
        observers.append(InputDrift(input_drift))
    if labels is not None:
        observers.append(labels)
    observers.extend(extra)
    _zero_series(metrics, drift, input_drift, adapter)
    metrics.model_status.source = functools.partial(model_status, learner)
    router = Router(max_payload_bytes, dead, dedup=DedupWindow(dedup_window) if dedup_window > 0 else None,
                    labels=labels, limits=limits)
    return EventProcessor(learner, sink, metrics, router=router, observers=observers, dead=dead, labels=labels)


def processor_from_settings(settings: Settings, learner: Learner, sink: OutputSink, metrics: ServiceMetrics, *,
                            labels_topic: str | None, expired_topic: str | None = None,
                            audit_topic: str | None = None, extra: Sequence[Observer] = ()) -> EventProcessor:
    """The pipeline a config describes. With a ``labels_topic``, records of that topic are joined to their
    events within ``settings.labels``."""
    s = settings
    join = LabelJoin(int(s.labels.ttl_seconds * 1000), s.labels.max_pending) if labels_topic else None
    return build_processor(learner, sink, metrics, rolling_window=s.metrics.rolling_window,
                           max_payload_bytes=s.max_payload_bytes, limits=s.limits, dedup_window=s.dedup_window,
                           join=join,
                           labels_topic=labels_topic, expired_topic=expired_topic,
                           drift=monitor_from(s.drift.detectors, task=learner.task, seed=s.model.seed),
                           audit_topic=audit_topic, adapt=s.drift, seed=s.model.seed,
                           input_drift=input_monitor_from(s.drift.input, seed=s.model.seed, learner=learner),
                           extra=extra)


def partitioned(processor: EventProcessor) -> list[Partitioned]:
    """The parts of ``processor`` that keep state per input partition (the dedup window, the label join)."""
    parts: list[Partitioned] = []
    if processor.router.dedup is not None:
        parts.append(processor.router)
    if processor.labels is not None:
        parts.append(processor.labels)
    return parts


def model_status(learner: Learner) -> ModelStatus:
    """What the model gauges show at a scrape: for a learner that trains in the background, the newest
    published version (the next batch predicts with it) and its training backlog."""
    trained = background_trained(learner)
    if trained is None:
        return ModelStatus(learner.name, learner.version, learner.updates, features_dropped=learner.features_dropped)
    return ModelStatus(learner.name, trained.latest_version, learner.updates, trained.backlog(),
                       features_dropped=learner.features_dropped)


def _zero_series(metrics: ServiceMetrics, drift: DriftMonitor | None, input_drift: InputDriftMonitor | None,
                 adapter: Adapter | None) -> None:
    """Every (detector, level) and (detector, action) series exists from the start at 0, so a first signal is
    a change Prometheus can see (dashboard annotations use changes())."""
    detectors = [w.key for w in drift.watches] if drift is not None else []
    for name in detectors:
        for level in (DRIFT, WARNING, IMPROVEMENT):
            metrics.drift_detections.labels(name, level)
    if input_drift is not None:
        detectors.append(input_drift.name)
        metrics.drift_detections.labels(input_drift.name, DRIFT)
    if adapter is not None:
        for name in detectors:
            for action in adapter.action_names():
                metrics.adaptations.labels(name, action)
