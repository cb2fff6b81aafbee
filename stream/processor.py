"""Test-then-train over one batch, in one straight line: route -> prepare -> predict and publish ->
observers -> learn (the event's own label, or one the label join completes) -> observers -> end of batch.

Events are handled in stream order: each one is predicted before its own label is learned, and after
every earlier event's label. A record that fails anywhere goes to the dead-letter topic with a reason
code; nothing is dropped silently, and nothing one record raises stops the batch (``internal_error``).
What watches the pipeline (quality, ledger, drift detectors, the adaptation ladder, the label join) is a
list of observers (`stream.observers`), called at the same points; `stream.pipeline` builds the list a
configuration describes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from driftline.adapters.detectors import Detection
from driftline.core import Event, EventRejected, LabelRecord
from driftline.learners.base import Learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.stream.audit import DeadLetters, internal_error
from driftline.stream.codec import encode_prediction
from driftline.stream.label_stage import LabelStage
from driftline.stream.observers import BatchResult, Labeled, Observer, Predicted
from driftline.stream.records import InboundRecord
from driftline.stream.routing import Router
from driftline.stream.sink import OutputSink

log = logging.getLogger(__name__)

PREDICT_FAILED = "predict_failed"
LEARN_FAILED = "learn_failed"

ObserverT = TypeVar("ObserverT", bound=Observer)


class EventProcessor:
    """Owns the per-event pipeline; the run loop owns polling, flushing and committing."""

    def __init__(self, learner: Learner, sink: OutputSink, metrics: ServiceMetrics, *, router: Router,
                 observers: Sequence[Observer], dead: DeadLetters, labels: LabelStage | None = None) -> None:
        self.learner = learner
        self.sink = sink
        self.metrics = metrics
        self.router = router
        self.observers = list(observers)
        self.dead = dead
        self.labels = labels
        # each hook of the observers that have it (the base class's hooks do nothing: not called)
        self._on_predicted: list[Callable[[Predicted], Sequence[Detection]]] = [
            o.on_predicted for o in observers if type(o).on_predicted is not Observer.on_predicted]
        self._on_learned: list[Callable[[Labeled], Sequence[Detection]]] = [
            o.on_learned for o in observers if type(o).on_learned is not Observer.on_learned]
        self._on_detection: list[Callable[[Detection, Event], None]] = [
            o.on_detection for o in observers if type(o).on_detection is not Observer.on_detection]
        self._on_batch_end: list[Callable[[BatchResult], None]] = [
            o.on_batch_end for o in observers if type(o).on_batch_end is not Observer.on_batch_end]
        model = learner.name
        self._predict_times: list[float] = []  # this batch's latencies, observed at its end
        self._learn_times: list[float] = []
        self._predict_hist = metrics.predict_latency.labels(model)
        self._learn_hist = metrics.learn_latency.labels(model)
        self._prepare_hist = metrics.prepare_latency.labels(model)

    def find(self, kind: type[ObserverT]) -> ObserverT | None:
        """The observer of this class, if the pipeline has one."""
        return next((o for o in self.observers if isinstance(o, kind)), None)

    def require(self, kind: type[ObserverT]) -> ObserverT:
        """The observer of this class, which the pipeline must have (Quality, Ledger, DetectionLog always are)."""
        found = self.find(kind)
        if found is None:
            raise LookupError(f"the pipeline has no {kind.__name__}")
        return found

    def process(self, records: Sequence[InboundRecord]) -> BatchResult:
        res = BatchResult(consumed=len(records))
        items, prepare = self.router.route(records)
        if prepare:
            self._prepare(prepare)
        for rec, item in items:
            try:
                labeled = self._join(rec, item) if isinstance(item, LabelRecord) else self._predict(rec, item, res)
                if labeled is not None:
                    self._learn(labeled, res)
            except Exception as exc:  # a bug met by this record alone (an observer, the encoder, ...): not a stop
                internal_error(self.dead, rec, exc, "processing")
        for end in self._on_batch_end:
            end(res)
        res.dead_lettered = self.dead.take_count()
        self._publish_counts(res)
        return res

    def set_aside(self, record: InboundRecord, reason: str, message: str) -> BatchResult:
        """Dead-letter ``record`` without processing it (the quarantine), counted like a batch of one."""
        self.dead.reject(record, reason, message)
        res = BatchResult(consumed=1, dead_lettered=self.dead.take_count())
        self._publish_counts(res)
        return res

    def _join(self, rec: InboundRecord, lab: LabelRecord) -> Labeled | None:
        assert self.labels is not None  # only a label stage routes label records
        return self.labels.on_label(rec, lab)

    def _predict(self, rec: InboundRecord, event: Event, res: BatchResult) -> Labeled | None:
        """Predict ``event`` and publish the prediction; what to learn now (its own label, or one that waited)."""
        learner = self.learner
        t0 = time.perf_counter()
        try:
            pred = learner.predict_one(event)
        except EventRejected as exc:
            self.dead.reject(rec, exc.reason, str(exc))
            return None
        except Exception as exc:  # a model bug must not stop the stream: dead-letter the event
            log.warning("predict failed for event %r at %s: %r", event.id, rec.coordinates, exc)
            self.dead.reject(rec, PREDICT_FAILED, f"{type(exc).__name__}: {exc}")
            return None
        dt = time.perf_counter() - t0
        self._predict_times.append(dt)
        now_ms = int(time.time() * 1000)
        self.sink.prediction(
            event.id,
            encode_prediction(
                event_id=event.id, prediction=pred.value, proba=pred.proba, model=learner.name,
                model_version=learner.version, model_updates=learner.updates, latency_ms=dt * 1000.0,
                source=rec.coordinates, predicted_at_ms=now_ms,
            ),
            rec.timestamp_ms,
            rec.partition,
        )
        res.predicted += 1
        if self._on_predicted or (event.label is None and self.labels is not None):
            predicted = Predicted(event, pred, rec, dt, now_ms)
            for hook in self._on_predicted:
                if detections := hook(predicted):
                    self._detected(detections, event)
            if event.label is None and self.labels is not None:
                return self.labels.on_unlabeled(predicted)
        return Labeled(event, event.label, pred.value, rec) if event.label is not None else None

    def _learn(self, item: Labeled, res: BatchResult) -> None:
        """Learn ``item``; a failure dead-letters the record that brought its label."""
        t1 = time.perf_counter()
        try:
            self.learner.learn_one(item.event, item.label)
        except EventRejected as exc:
            self.dead.reject(item.record, exc.reason, str(exc))
            return
        except Exception as exc:
            log.warning("learn failed for event %r at %s: %r", item.event.id, item.record.coordinates, exc)
            self.dead.reject(item.record, LEARN_FAILED, f"{type(exc).__name__}: {exc}")
            return
        self._learn_times.append(time.perf_counter() - t1)
        res.learned += 1
        for hook in self._on_learned:
            if detections := hook(item):
                self._detected(detections, item.event)

    def _detected(self, detections: Iterable[Detection], event: Event) -> None:
        for d in detections:
            for hook in self._on_detection:
                hook(d, event)

    def _prepare(self, events: list[Event]) -> None:
        """Let the learner embed the whole batch at once (a speed-up: on failure it goes event by event)."""
        t0 = time.perf_counter()
        try:
            self.learner.prepare_batch(events)
        except Exception as exc:
            log.warning("batch preparation of %d events failed (%r); preparing them one at a time", len(events), exc)
            return
        self._prepare_hist.observe(time.perf_counter() - t0)

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything learning has changed: the model and each stateful part of the pipeline, by its key."""
        state: dict[str, Any] = {"learner": self.learner.state_dict(), "dedup": self.router.state_dict()}
        for obs in self.observers:
            if obs.key is not None:
                state[obs.key] = obs.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        if state.get("dedup"):
            self.router.load_state_dict(state["dedup"])
        for obs in self.observers:
            if obs.key is not None and state.get(obs.key):
                obs.load_state_dict(_upgraded(state, obs.key))
        self._publish_gauges()

    # -- metrics --------------------------------------------------------------------------------------
    def _publish_counts(self, res: BatchResult) -> None:
        m = self.metrics
        self._predict_hist.observe_many(self._predict_times)
        self._learn_hist.observe_many(self._learn_times)
        self._predict_times.clear()
        self._learn_times.clear()
        m.events.labels("predicted").inc(res.predicted)
        m.events.labels("learned").inc(res.learned)
        m.events.labels("dead_lettered").inc(res.dead_lettered)
        m.labeled.labels(self.learner.name).inc(res.learned)
        m.batch_size.observe(res.consumed)
        self._publish_gauges()
        # last: a scrape that sees these events consumed also sees everything else about them
        m.events.labels("consumed").inc(res.consumed)

    def _publish_gauges(self) -> None:
        for obs in self.observers:
            obs.publish_gauges()


def _upgraded(state: Mapping[str, Any], key: str) -> Any:
    """An observer's entry, upgraded from older checkpoints (before 0.2 the predicted count was top-level)."""
    entry = state[key]
    if key == "ledger" and "predicted_total" not in entry:
        return {**entry, "predicted_total": state.get("predicted_total", 0)}
    return entry
