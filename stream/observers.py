"""What watches the pipeline: one small protocol, and the observers the service runs.

The processor calls every observer at the same points, in list order: `on_predicted` after an event
is predicted and its prediction published; `on_learned` after the learner learned a labeled event
(`on_learned_batch` with all of them once the batch's are learned, for work nothing in the batch reads);
`on_detection` when any observer's hook reported a drift detection (to every observer, the one that
reported it included); `on_batch_end` with the batch's counts when its records are done (work that may
dead-letter);
`publish_gauges` after it (and after a restore). Hooks that detect drift return their detections;
the others return nothing. An observer with state has a stable ``key``: its entry in the checkpoint.

Adding a concern to the pipeline is one more observer in `stream.pipeline.build_processor`'s list.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from driftline.adapters.adaptation import Adapter
from driftline.adapters.detectors import IMPROVEMENT, Detection, DriftMonitor
from driftline.adapters.input_drift import InputDriftMonitor
from driftline.core import Event, Label, Prediction
from driftline.learners.base import Learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.monitoring.prequential import ClassificationTracker, Tracker
from driftline.stream.audit import AuditPublisher
from driftline.stream.records import InboundRecord

log = logging.getLogger(__name__)

NO_DETECTIONS: tuple[Detection, ...] = ()


class Predicted(NamedTuple):  # a NamedTuple: immutable and about 4x cheaper to make than a frozen dataclass
    """An event the model predicted (its prediction is published)."""

    event: Event
    prediction: Prediction
    record: InboundRecord
    latency_s: float
    predicted_at_ms: int


class Labeled(NamedTuple):
    """A labeled event to learn: the label, the prediction made before it was known, the record that
    brought the label (the event's own, or the labels topic's), how long the label took (joined
    labels; None when it came on the event) and, with challengers, every model's predicted value by name."""

    event: Event
    label: Label | float
    predicted: Any
    record: InboundRecord
    delay_s: float | None = None
    shadow: Mapping[str, Any] | None = None


@dataclass
class BatchResult:
    consumed: int = 0
    predicted: int = 0
    learned: int = 0
    dead_lettered: int = 0

    def outcomes(self) -> dict[str, int]:
        """The per-outcome event counts (``driftline_events_total``), consumed aside."""
        return {"predicted": self.predicted, "learned": self.learned, "dead_lettered": self.dead_lettered}


class Observer:
    """Base of every pipeline observer: each hook does nothing unless overridden."""

    key: ClassVar[str | None] = None  # checkpoint entry; None: the observer keeps no state

    def on_predicted(self, p: Predicted) -> Sequence[Detection]:
        return NO_DETECTIONS

    def on_learned(self, item: Labeled) -> Sequence[Detection]:
        return NO_DETECTIONS

    def on_learned_batch(self, items: Sequence[Labeled]) -> None:
        """The batch's learned events in order, once they are all learned: for observers whose per-event work
        nothing later in the batch reads (quality, the ledger), at a fraction of `on_learned`'s cost."""
        return None

    def on_detection(self, d: Detection, event: Event) -> None:
        return None

    def on_batch_end(self, result: BatchResult) -> None:
        return None

    def publish_gauges(self) -> None:
        return None

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None:
        return None


class Quality(Observer):
    """Prequential quality: scores each prediction made before its label was learned."""

    key = "tracker"

    def __init__(self, tracker: Tracker, metrics: ServiceMetrics, model: str) -> None:
        self.tracker = tracker
        self.metrics = metrics
        self.model = model

    def on_learned_batch(self, items: Sequence[Labeled]) -> None:
        self.tracker.update_many([(item.label, item.predicted) for item in items])

    def publish_gauges(self) -> None:
        m, t, model = self.metrics, self.tracker, self.model
        if isinstance(t, ClassificationTracker):
            if t.n:
                m.accuracy.labels(model, "rolling").set(t.rolling_accuracy)
                m.accuracy.labels(model, "cumulative").set(t.cumulative_accuracy)
        elif t.n:
            for gauge, roll, cum in ((m.mae, t.rolling_mae, t.cumulative_mae),
                                     (m.rmse, t.rolling_rmse, t.cumulative_rmse)):
                if math.isfinite(roll):
                    gauge.labels(model, "rolling").set(roll)
                    gauge.labels(model, "cumulative").set(cum)

    def state_dict(self) -> Any:
        return self.tracker.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.tracker.load_state_dict(state)


SERVED = "served"


class Served(Quality):
    """With challengers: the prequential quality of what was served (each event scored with the prediction
    published for it, whichever model was champion then), under the model label ``served``."""

    key = "served"

    def __init__(self, tracker: Tracker, metrics: ServiceMetrics) -> None:
        super().__init__(tracker, metrics, SERVED)


_MASK64 = (1 << 64) - 1


def id_hash(event_id: str) -> int:
    """64-bit hash of an event id (for the learned-events digest)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest(), "little")


class Ledger(Observer):
    """Exactly which events the model state has learned: a count and an order-independent digest (the
    sum of the ids' 64-bit hashes, mod 2**64), and how many events were predicted (label coverage).
    Learning an event twice, or missing one, changes the digest; it is checkpointed with the model."""

    key = "ledger"

    def __init__(self, metrics: ServiceMetrics, model: str) -> None:
        self.metrics = metrics
        self.model = model
        self.learned = 0
        self.digest = 0
        self.predicted = 0

    def add(self, event_id: str) -> None:
        self.learned += 1
        self.digest = (self.digest + id_hash(event_id)) & _MASK64

    def on_learned_batch(self, items: Sequence[Labeled]) -> None:
        blake2b, from_bytes = hashlib.blake2b, int.from_bytes  # id_hash, inline: this runs for every event
        total = sum(from_bytes(blake2b(item.event.id.encode("utf-8"), digest_size=8).digest(), "little")
                    for item in items)
        self.learned += len(items)
        self.digest = (self.digest + total) & _MASK64

    def on_batch_end(self, result: BatchResult) -> None:
        self.predicted += result.predicted

    def publish_gauges(self) -> None:
        if self.predicted:
            self.metrics.label_coverage.labels(self.model).set(self.learned / self.predicted)

    def state_dict(self) -> Any:
        return {"learned": self.learned, "digest": self.digest, "predicted_total": self.predicted}

    def load_state_dict(self, state: Any) -> None:
        self.learned, self.digest = int(state["learned"]), int(state["digest"])
        self.predicted = int(state.get("predicted_total", 0))


class DetectionLog(Observer):
    """Every drift detection: logged, counted, published as an audit record; the latest kept for reports."""

    def __init__(self, learner: Learner, metrics: ServiceMetrics, audit: AuditPublisher,
                 model: str | None = None) -> None:
        self.learner = learner
        self.model = model or learner.name  # the configured name (challengers) or the learner's
        self.metrics = metrics
        self.audit = audit
        self.latest: deque[Detection] = deque(maxlen=10_000)

    def on_detection(self, d: Detection, event: Event) -> None:
        learner = self.learner
        self.latest.append(d)
        self.metrics.drift_detections.labels(self.model, d.detector, d.level).inc()
        if d.source == "input":
            log.warning("input drift signalled by %s after %d events (%s; event %r; model %s v%d)", d.detector,
                        d.labeled, d.statistic, event.id, self.model, learner.version)
        else:
            log.log(logging.INFO if d.level == IMPROVEMENT else logging.WARNING,
                    "%s signalled by %s after %d labeled events (error rate since its last signal %.4f, latest "
                    "%s; event %r; model %s v%d)", d.level, d.detector, d.labeled, d.error_mean,
                    "?" if d.recent_error is None else f"{d.recent_error:.4f}", event.id, self.model,
                    learner.version)
        statistic = dict(d.statistic) if d.statistic is not None else {
            "error_mean": d.error_mean, "recent_error": d.recent_error, "since_change": d.since_change}
        self.audit.publish({"type": "detection", "detector": d.detector, "level": d.level, "source": d.source,
                            "labeled": d.labeled, "statistic": statistic, "event_id": event.id,
                            "model": self.model, "model_version": learner.version,
                            "model_updates": learner.updates})


class ErrorDrift(Observer):
    """Drift detectors on the prequential error stream."""

    key = "drift"

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor

    def on_learned(self, item: Labeled) -> Sequence[Detection]:
        return self.monitor.update(item.label, item.predicted)

    def state_dict(self) -> Any:
        return self.monitor.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.monitor.load_state_dict(state)


class InputDrift(Observer):
    """Label-free drift detection on the predicted inputs."""

    key = "input_drift"

    def __init__(self, monitor: InputDriftMonitor) -> None:
        self.monitor = monitor

    def on_predicted(self, p: Predicted) -> Sequence[Detection]:
        return self.monitor.update(p.event)

    def state_dict(self) -> Any:
        return self.monitor.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.monitor.load_state_dict(state)


class Adaptation(Observer):
    """The adaptation ladder: recent inputs and labeled events, and detections to act on."""

    key = "adapter"

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def on_predicted(self, p: Predicted) -> Sequence[Detection]:
        self.adapter.observe_input(p.event)
        return NO_DETECTIONS

    def on_learned(self, item: Labeled) -> Sequence[Detection]:
        self.adapter.observe_labeled(item.event, item.label, item.predicted)
        return NO_DETECTIONS

    def on_detection(self, d: Detection, event: Event) -> None:
        self.adapter.on_detection(d)

    def state_dict(self) -> Any:
        return self.adapter.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.adapter.load_state_dict(state)
