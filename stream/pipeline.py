"""Builds the pipeline a configuration describes: the router, the observers in their order, and the
processor that calls them (what `run` and `replay` both process with).

The observers' order is the order their hooks run in: the detection log first (a detection is logged
and audited before anything acts on it), then quality, the ledger, the adaptation ladder, the error and
input drift detectors, and the label join last (an event is marked resolved after everything learned it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from driftline.adapters.adaptation import Adapter
from driftline.adapters.config import DriftSettings
from driftline.adapters.detectors import DRIFT, IMPROVEMENT, WARNING, DriftMonitor, monitor_from
from driftline.adapters.input_drift import InputDriftMonitor, input_monitor_from
from driftline.adapters.promotion import PromotionSettings, Race
from driftline.learners.base import Learner
from driftline.learners.capabilities import background_trained
from driftline.monitoring.collectors import ModelStatus
from driftline.monitoring.metrics import ServiceMetrics
from driftline.monitoring.prequential import make_tracker
from driftline.settings import InputLimits, Settings
from driftline.stream.audit import AuditPublisher, DeadLetters
from driftline.stream.codec import DEFAULT_LIMITS
from driftline.stream.contest import Contest
from driftline.stream.dedup import DedupWindow
from driftline.stream.label_stage import LabelStage
from driftline.stream.labels import LabelJoin
from driftline.stream.lanes import Lane
from driftline.stream.observers import (
    Adaptation,
    DetectionLog,
    ErrorDrift,
    InputDrift,
    Ledger,
    Observer,
    Quality,
    Served,
)
from driftline.stream.partition_state import Partitioned
from driftline.stream.processor import EventProcessor
from driftline.stream.routing import Router
from driftline.stream.sink import OutputSink


@dataclass(frozen=True)
class ModelSpec:
    """One model of a pipeline with several: its name (the metric label, the predictions' `model`), its
    learner, and what watches it alone (drift detectors, the adaptation ladder, input drift)."""

    name: str
    learner: Learner
    drift: DriftMonitor | None = None
    adapt: DriftSettings | None = None
    input_drift: InputDriftMonitor | None = None
    seed: int = 42


def build_processor(learner: Learner | Sequence[ModelSpec], sink: OutputSink, metrics: ServiceMetrics, *,
                    rolling_window: int, max_payload_bytes: int, limits: InputLimits = DEFAULT_LIMITS,
                    dedup_window: int = 0, join: LabelJoin | None = None,
                    labels_topic: str | None = None, expired_topic: str | None = None,
                    drift: DriftMonitor | None = None, audit_topic: str | None = None,
                    adapt: DriftSettings | None = None, seed: int = 42, input_drift: InputDriftMonitor | None = None,
                    extra: Sequence[Observer] = (), promotion: PromotionSettings | None = None,
                    champion: str | None = None, shadow_topic: str | None = None) -> EventProcessor:
    """The processor for these parts. ``learner``: one model (watched by ``drift``, ``adapt`` and
    ``input_drift``), or several `ModelSpec` (each with its own), of which ``champion`` serves first and
    ``promotion`` decides the next. With a `LabelJoin` and ``labels_topic``, records of that topic are labels
    for earlier (or later) events; ``extra`` observers run after the standard ones and see the served model."""
    dead = DeadLetters(sink)
    audit = AuditPublisher(sink, audit_topic)
    labels = (LabelStage(join, labels_topic, expired_topic=expired_topic, dead=dead, sink=sink, metrics=metrics)
              if join is not None and labels_topic is not None else None)
    specs = ([ModelSpec(learner.name, learner, drift, adapt, input_drift, seed)] if not isinstance(learner, Sequence)
             else list(learner))
    lanes = [_lane(spec, metrics, audit, rolling_window) for spec in specs]
    contest = None
    if len(specs) > 1:
        names = [spec.name for spec in specs]
        race = Race(names, specs[0].learner.task, promotion or PromotionSettings(), champion or names[0])
        contest = Contest(lanes, race, sink=sink, metrics=metrics, audit=audit, shadow_topic=shadow_topic)
    shared: list[Observer] = [Served(make_tracker(specs[0].learner.task, rolling_window), metrics)] if contest else []
    if labels is not None:
        shared.append(labels)
    shared.extend(extra)
    metrics.model_status.source = functools.partial(model_statuses, lanes)
    router = Router(max_payload_bytes, dead, dedup=DedupWindow(dedup_window) if dedup_window > 0 else None,
                    labels=labels, limits=limits)
    return EventProcessor(lanes, sink, metrics, router=router, shared=shared, dead=dead, labels=labels,
                          contest=contest)


def _lane(spec: ModelSpec, metrics: ServiceMetrics, audit: AuditPublisher, rolling_window: int) -> Lane:
    """A model's lane: its detection log, quality, ledger, ladder and drift detectors, in hook order."""
    learner, adapt = spec.learner, spec.adapt
    adapter = (Adapter(learner, adapt, seed=spec.seed, metrics=metrics, emit=audit.publish, model=spec.name)
               if adapt is not None and adapt.policies else None)
    observers: list[Observer] = [DetectionLog(learner, metrics, audit, spec.name),
                                 Quality(make_tracker(learner.task, rolling_window), metrics, spec.name),
                                 Ledger(metrics, spec.name)]
    if adapter is not None:
        observers.append(Adaptation(adapter))
    if spec.drift is not None:
        observers.append(ErrorDrift(spec.drift))
    if spec.input_drift is not None:
        observers.append(InputDrift(spec.input_drift))
    _zero_series(metrics, spec.name, spec.drift, spec.input_drift, adapter)
    return Lane(spec.name, learner, observers, metrics)


def processor_from_settings(settings: Settings, learner: Learner | Mapping[str, Learner], sink: OutputSink,
                            metrics: ServiceMetrics, *, labels_topic: str | None, expired_topic: str | None = None,
                            audit_topic: str | None = None, extra: Sequence[Observer] = ()) -> EventProcessor:
    """The pipeline a config describes: ``learner`` is the one model's, or with ``models`` each model's learner
    by name (`learners_from_settings`). With a ``labels_topic``, records of that topic are joined to their
    events within ``settings.labels``."""
    s = settings
    join = LabelJoin(int(s.labels.ttl_seconds * 1000), s.labels.max_pending) if labels_topic else None
    if isinstance(learner, Mapping):
        if list(learner) != list(s.models):
            raise ValueError(f"learners {list(learner)} do not match the configured models {list(s.models)}")
        models = [_spec(name, learner[name], entry.drift or s.drift, entry.seed) for name, entry in s.models.items()]
    else:
        if s.models:
            raise ValueError(f"the config has several models ({', '.join(s.models)}): pass each one's learner")
        models = [_spec(learner.name, learner, s.drift, s.model.seed)]
    return build_processor(models, sink, metrics, rolling_window=s.metrics.rolling_window,
                           max_payload_bytes=s.max_payload_bytes, limits=s.limits, dedup_window=s.dedup_window,
                           join=join, labels_topic=labels_topic, expired_topic=expired_topic, audit_topic=audit_topic,
                           extra=extra, promotion=s.promotion, champion=s.serving_model if s.models else None,
                           shadow_topic=s.topics.shadow)


def _spec(name: str, learner: Learner, drift: DriftSettings, seed: int) -> ModelSpec:
    return ModelSpec(name, learner, monitor_from(drift.detectors, task=learner.task, seed=seed), drift,
                     input_monitor_from(drift.input, seed=seed, learner=learner), seed)


def learners_from_settings(settings: Settings) -> Learner | dict[str, Learner]:
    """The learner of the one model, or each model's by name (``models``). Models with the same backbone
    config share one backbone (one forward per batch)."""
    from driftline.learners.factory import build_learner, build_learners

    if not settings.models:
        return build_learner(settings.model)
    # adabn re-estimates a backbone's batch-norm statistics in place: such a model keeps its backbone to itself
    exclusive = {name for name, entry in settings.models.items()
                 if any(p.name == "adabn" for p in (entry.drift or settings.drift).policies)}
    return build_learners({name: entry.model() for name, entry in settings.models.items()}, exclusive=exclusive)


def partitioned(processor: EventProcessor) -> list[Partitioned]:
    """The parts of ``processor`` that keep state per input partition (the dedup window, the label join)."""
    parts: list[Partitioned] = []
    if processor.router.dedup is not None:
        parts.append(processor.router)
    if processor.labels is not None:
        parts.append(processor.labels)
    return parts


def model_status(learner: Learner, name: str | None = None) -> ModelStatus:
    """What the model gauges show at a scrape: for a learner that trains in the background, the newest
    published version (the next batch predicts with it) and its training backlog."""
    name = name or learner.name
    trained = background_trained(learner)
    if trained is None:
        return ModelStatus(name, learner.version, learner.updates, features_dropped=learner.features_dropped)
    return ModelStatus(name, trained.latest_version, learner.updates, trained.backlog(),
                       features_dropped=learner.features_dropped)


def model_statuses(lanes: Sequence[Lane]) -> list[ModelStatus]:
    return [model_status(lane.learner, lane.name) for lane in lanes]


def _zero_series(metrics: ServiceMetrics, model: str, drift: DriftMonitor | None,
                 input_drift: InputDriftMonitor | None, adapter: Adapter | None) -> None:
    """Every (model, detector, level) and (model, detector, action) series exists from the start at 0, so a first
    signal is a change Prometheus can see (dashboard annotations use changes())."""
    detectors = [w.key for w in drift.watches] if drift is not None else []
    for name in detectors:
        for level in (DRIFT, WARNING, IMPROVEMENT):
            metrics.drift_detections.labels(model, name, level)
    if input_drift is not None:
        detectors.append(input_drift.name)
        metrics.drift_detections.labels(model, input_drift.name, DRIFT)
    if adapter is not None:
        for name in detectors:
            for action in adapter.action_names():
                metrics.adaptations.labels(model, name, action)
