"""Test-then-train over one batch: decode, predict, publish the prediction, score, learn.

Events are handled in stream order: each one is predicted before its own label is learned, and
after every earlier event's label. A record that fails anywhere goes to the dead-letter topic
with a reason code; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from driftline.adapters.adaptation import Adapter
from driftline.adapters.detectors import DRIFT, IMPROVEMENT, WARNING, Detection, DriftMonitor, monitor_from
from driftline.adapters.input_drift import InputDriftMonitor, input_monitor_from
from driftline.learners.base import EventRejected, Learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.monitoring.prequential import ClassificationTracker, Tracker, make_tracker
from driftline.settings import DriftSettings, Settings
from driftline.stream.codec import DecodeError, decode_event, decode_label, encode_prediction
from driftline.stream.dedup import DedupWindow
from driftline.stream.event import Event, Label, LabelRecord
from driftline.stream.labels import EarlyLabel, LabelJoin, PendingPrediction
from driftline.stream.records import InboundRecord
from driftline.stream.sink import OutputSink

log = logging.getLogger(__name__)

DUPLICATE_ID = "duplicate_id"
DUPLICATE_LABEL = "duplicate_label"
LABEL_UNKNOWN_ID = "label_unknown_id"
LABEL_ALREADY_LEARNED = "label_already_learned"
PREDICT_FAILED = "predict_failed"
LEARN_FAILED = "learn_failed"


@dataclass
class BatchResult:
    consumed: int = 0
    predicted: int = 0
    learned: int = 0
    dead_lettered: int = 0


_MASK64 = (1 << 64) - 1


def id_hash(event_id: str) -> int:
    """64-bit hash of an event id (for the learned-events digest)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass
class LearnLedger:
    """Exactly which events the model state has learned: a count and an order-independent digest
    (the sum of the ids' 64-bit hashes, mod 2**64). Learning an event twice, or missing one, changes
    the digest; it is checkpointed with the model, so a restored state carries its own ledger."""

    learned: int = 0
    digest: int = 0

    def add(self, event_id: str) -> None:
        self.learned += 1
        self.digest = (self.digest + id_hash(event_id)) & _MASK64


class EventProcessor:
    """Owns the per-event pipeline; the run loop owns polling, flushing and committing.

    With a `LabelJoin` (``labels_topic`` set), records of that topic are labels for earlier (or
    later) events: unlabeled events wait in the join with their prediction, and learn when their
    label comes; what expires is counted, optionally published to ``expired_topic``, and labels
    that never meet their event are dead-lettered.
    """

    def __init__(self, learner: Learner, sink: OutputSink, metrics: ServiceMetrics, *,
                 rolling_window: int, max_payload_bytes: int, dedup_window: int = 0,
                 join: LabelJoin | None = None, labels_topic: str | None = None,
                 expired_topic: str | None = None, drift: DriftMonitor | None = None,
                 audit_topic: str | None = None, adapt: DriftSettings | None = None, seed: int = 42,
                 input_drift: InputDriftMonitor | None = None) -> None:
        self.learner = learner
        self.sink = sink
        self.metrics = metrics
        self.max_payload_bytes = max_payload_bytes
        self.tracker: Tracker = make_tracker(learner.task, rolling_window)
        self.ledger = LearnLedger()
        self.dedup = DedupWindow(dedup_window) if dedup_window > 0 else None
        self.join = join
        self.labels_topic = labels_topic if join is not None else None
        self.expired_topic = expired_topic
        self.predicted_total = 0  # for label coverage (checkpointed)
        self.drift = drift
        self.audit_topic = audit_topic
        self.detections: deque[Detection] = deque(maxlen=10_000)  # the latest, for reports
        self.input_drift = input_drift
        self.adapter = (Adapter(learner, adapt, seed=seed, metrics=metrics, emit=self._audit)
                        if adapt is not None and adapt.policies else None)
        # every (detector, level) and (detector, action) series exists from the start at 0, so a first
        # signal is a change Prometheus can see (dashboard annotations use changes())
        detectors = [w.key for w in drift.watches] if drift is not None else []
        for name in detectors:
            for level in (DRIFT, WARNING, IMPROVEMENT):
                metrics.drift_detections.labels(name, level)
        if input_drift is not None:
            detectors.append(input_drift.name)
            metrics.drift_detections.labels(input_drift.name, DRIFT)
        if self.adapter is not None:
            for name in detectors:
                for action in self.adapter.action_names():
                    metrics.adaptations.labels(name, action)
        model = learner.name
        self._predict_hist = metrics.predict_latency.labels(model)
        self._learn_hist = metrics.learn_latency.labels(model)
        self._prepare_hist = metrics.prepare_latency.labels(model)

    @classmethod
    def from_settings(cls, settings: Settings, learner: Learner, sink: OutputSink, metrics: ServiceMetrics, *,
                      labels_topic: str | None, expired_topic: str | None = None,
                      audit_topic: str | None = None) -> EventProcessor:
        """The pipeline a config describes (what `run` and `replay` both process with). With a
        ``labels_topic``, records of that topic are joined to their events within ``settings.labels``."""
        s = settings
        join = LabelJoin(int(s.labels.ttl_seconds * 1000), s.labels.max_pending) if labels_topic else None
        return cls(learner, sink, metrics, rolling_window=s.metrics.rolling_window,
                   max_payload_bytes=s.max_payload_bytes, dedup_window=s.dedup_window, join=join,
                   labels_topic=labels_topic, expired_topic=expired_topic,
                   drift=monitor_from(s.drift.detectors, task=learner.task, seed=s.model.seed),
                   audit_topic=audit_topic, adapt=s.drift, seed=s.model.seed,
                   input_drift=input_monitor_from(s.drift.input, seed=s.model.seed, learner=learner))

    def process(self, records: Sequence[InboundRecord]) -> BatchResult:
        res = BatchResult(consumed=len(records))
        learner, sink, perf, dedup, reject = self.learner, self.sink, time.perf_counter, self.dedup, self._reject
        join, labels_topic, max_bytes = self.join, self.labels_topic, self.max_payload_bytes
        adapter, input_drift = self.adapter, self.input_drift
        items: list[tuple[InboundRecord, Event | LabelRecord]] = []
        prepare: list[Event] = []
        for rec in records:
            if join is not None:
                join.observe(rec.timestamp_ms)
                if rec.topic == labels_topic:
                    try:
                        lab = decode_label(rec.value, max_bytes=max_bytes)
                    except DecodeError as exc:
                        reject(rec, res, exc.reason, str(exc))
                        continue
                    items.append((rec, lab))
                    waiting = join.peek(lab.id)
                    if waiting is not None:
                        prepare.append(waiting.event)  # embedded with the batch, learned when its label is reached
                    continue
            try:
                event = decode_event(rec.value, max_bytes=max_bytes)
            except DecodeError as exc:
                reject(rec, res, exc.reason, str(exc))
                continue
            if dedup is not None and dedup.seen(event.id):
                reject(rec, res, DUPLICATE_ID,
                       f"event id {event.id!r} was already seen within the last {dedup.size} events")
                continue
            items.append((rec, event))
            prepare.append(event)
        if prepare:
            self._prepare(prepare)
        for rec, item in items:
            if type(item) is LabelRecord:
                self._join_label(rec, item, res)
                continue
            event = item  # type: ignore[assignment]
            t0 = perf()
            try:
                pred = learner.predict_one(event)
            except EventRejected as exc:
                reject(rec, res, exc.reason, str(exc))
                continue
            except Exception as exc:  # a model bug must not stop the stream: dead-letter the event
                log.warning("predict failed for event %r at %s: %r", event.id, rec.coordinates, exc)
                reject(rec, res, PREDICT_FAILED, f"{type(exc).__name__}: {exc}")
                continue
            dt = perf() - t0
            self._predict_hist.observe(dt)
            now_ms = int(time.time() * 1000)
            sink.prediction(
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
            if adapter is not None:
                adapter.observe_input(event)
            if input_drift is not None:
                for d in input_drift.update(event):
                    self._detected(d, event)
            if event.label is not None:
                self._learn(event, event.label, pred.value, rec, res)
            elif join is not None:
                early = join.add_prediction(PendingPrediction(event, pred.value, rec.timestamp_ms, now_ms))
                if early is not None and self._learn(event, early.label.label, pred.value, early.record, res):
                    self.metrics.label_delay.observe(0.0)  # its label came first and waited
        if join is not None:
            self._expire(res)
        self.predicted_total += res.predicted
        self._publish_counts(res)
        return res

    def _learn(self, event: Event, label: Label | float, predicted: Any, rec: InboundRecord,
               res: BatchResult) -> bool:
        """Learn ``event`` with ``label`` and score ``predicted``; a failure dead-letters ``rec``."""
        t1 = time.perf_counter()
        try:
            self.learner.learn_one(event, label)
        except EventRejected as exc:
            self._reject(rec, res, exc.reason, str(exc))
            return False
        except Exception as exc:
            log.warning("learn failed for event %r at %s: %r", event.id, rec.coordinates, exc)
            self._reject(rec, res, LEARN_FAILED, f"{type(exc).__name__}: {exc}")
            return False
        self._learn_hist.observe(time.perf_counter() - t1)
        self.tracker.update(label, predicted)  # type: ignore[arg-type]
        self.ledger.add(event.id)
        res.learned += 1
        if self.adapter is not None:
            self.adapter.observe_labeled(event, label, predicted)
        if self.drift is not None:
            for d in self.drift.update(label, predicted):
                self._detected(d, event)
        if self.join is not None:
            self.join.mark_resolved(event.id)
            waiting = self.join.early.pop(event.id, None)
            if waiting is not None:  # the event brought its own label; the one that waited is not needed
                self._reject(waiting.record, res, LABEL_ALREADY_LEARNED,
                             f"event {event.id!r} arrived with its own label, which was learned")
        return True

    def _detected(self, d: Detection, event: Event) -> None:
        """A drift detector fired: log it, count it, publish the audit record, let the ladder act."""
        self.detections.append(d)
        self.metrics.drift_detections.labels(d.detector, d.level).inc()
        if d.source == "input":
            log.warning("input drift signalled by %s after %d events (%s; event %r; model %s v%d)", d.detector,
                        d.labeled, d.statistic, event.id, self.learner.name, self.learner.version)
        else:
            log.log(logging.INFO if d.level == IMPROVEMENT else logging.WARNING,
                    "%s signalled by %s after %d labeled events (error rate since its last signal %.4f, latest "
                    "%s; event %r; model %s v%d)", d.level, d.detector, d.labeled, d.error_mean,
                    "?" if d.recent_error is None else f"{d.recent_error:.4f}", event.id, self.learner.name,
                    self.learner.version)
        statistic = dict(d.statistic) if d.statistic is not None else {
            "error_mean": d.error_mean, "recent_error": d.recent_error, "since_change": d.since_change}
        self._audit({"type": "detection", "detector": d.detector, "level": d.level, "source": d.source,
                     "labeled": d.labeled, "statistic": statistic, "event_id": event.id, "model": self.learner.name,
                     "model_version": self.learner.version, "model_updates": self.learner.updates})
        if self.adapter is not None:
            self.adapter.on_detection(d)

    def _audit(self, record: dict[str, Any]) -> None:
        """Publish an audit record (detection or adaptation) when topics.audit is set."""
        if self.audit_topic is not None:
            key = record.get("detector") or record.get("action") or "driftline"
            self.sink.publish(self.audit_topic, str(key), orjson.dumps({**record, "at_ms": int(time.time() * 1000)}))

    def _join_label(self, rec: InboundRecord, lab: LabelRecord, res: BatchResult) -> None:
        join = self.join
        assert join is not None
        waiting = join.take(lab.id)
        if waiting is not None:
            if self._learn(waiting.event, lab.label, waiting.prediction, rec, res):
                self.metrics.label_delay.observe(max(rec.timestamp_ms - waiting.timestamp_ms, 0) / 1000.0)
            return
        outcome = join.known_outcome(lab.id)
        if outcome is not None:
            detail = ("its event was already learned with a label" if outcome == LABEL_ALREADY_LEARNED else
                      f"its prediction expired unlabeled (labels.ttl_seconds={join.ttl_ms / 1000:g}, "
                      f"max_pending={join.max_pending})")
            self._reject(rec, res, outcome, f"label for event id {lab.id!r} cannot be used: {detail}")
            return
        displaced = join.add_early(EarlyLabel(lab, rec))  # its event may still come
        if displaced is not None:
            self._reject(displaced.record, res, DUPLICATE_LABEL,
                         f"a later label for event id {lab.id!r} replaced this one before the event arrived")

    def _expire(self, res: BatchResult) -> None:
        join = self.join
        assert join is not None
        expired = join.expire()
        for p, reason in expired.predictions:
            self.metrics.labels_expired.labels(reason).inc()
            if self.expired_topic is not None:
                self.sink.publish(self.expired_topic, p.event.id, orjson.dumps({
                    "id": p.event.id, "reason": reason, "prediction": p.prediction,
                    "event_timestamp_ms": p.timestamp_ms, "predicted_at_ms": p.predicted_at_ms,
                    "event": p.event.model_dump(mode="json", exclude_none=True),
                }))
        for e, reason in expired.labels:
            self._reject(e.record, res, LABEL_UNKNOWN_ID,
                         f"no event with id {e.label.id!r} arrived within labels.ttl_seconds="
                         f"{join.ttl_ms / 1000:g}" if reason == "ttl" else
                         f"more than labels.max_pending={join.max_pending} labels were waiting for their event")

    def _prepare(self, events: list[Event]) -> None:
        """Let the learner embed the whole batch at once (a speed-up: on failure it goes event by event)."""
        t0 = time.perf_counter()
        try:
            self.learner.prepare_batch(events)
        except Exception as exc:
            log.warning("batch preparation of %d events failed (%r); preparing them one at a time", len(events), exc)
            return
        self._prepare_hist.observe(time.perf_counter() - t0)

    def _reject(self, rec: InboundRecord, res: BatchResult, reason: str, message: str) -> None:
        """Send the record to the dead-letter topic with its reason, and count it."""
        self.sink.dead_letter(rec, reason, message)
        res.dead_lettered += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything learning has changed: the model, the prequential trackers, the ledger."""
        return {
            "learner": self.learner.state_dict(),
            "tracker": self.tracker.state_dict(),
            "ledger": {"learned": self.ledger.learned, "digest": self.ledger.digest},
            "dedup": self.dedup.state_dict() if self.dedup is not None else None,
            "join": self.join.state_dict() if self.join is not None else None,
            "predicted_total": self.predicted_total,
            "drift": self.drift.state_dict() if self.drift is not None else None,
            "adapter": self.adapter.state_dict() if self.adapter is not None else None,
            "input_drift": self.input_drift.state_dict() if self.input_drift is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.tracker.load_state_dict(state["tracker"])
        self.ledger = LearnLedger(int(state["ledger"]["learned"]), int(state["ledger"]["digest"]))
        if self.dedup is not None and state.get("dedup"):
            self.dedup.load_state_dict(state["dedup"])
        if self.join is not None and state.get("join"):
            self.join.load_state_dict(state["join"])
        self.predicted_total = int(state.get("predicted_total", 0))
        if self.drift is not None and state.get("drift"):
            self.drift.load_state_dict(state["drift"])
        if self.input_drift is not None and state.get("input_drift"):
            self.input_drift.load_state_dict(state["input_drift"])
        if self.adapter is not None and state.get("adapter"):
            self.adapter.load_state_dict(state["adapter"])
        self._refresh_gauges()

    def _publish_counts(self, res: BatchResult) -> None:
        m, model = self.metrics, self.learner.name
        m.events.labels("predicted").inc(res.predicted)
        m.events.labels("learned").inc(res.learned)
        m.events.labels("dead_lettered").inc(res.dead_lettered)
        m.labeled.labels(model).inc(res.learned)
        m.batch_size.observe(res.consumed)
        self._refresh_gauges()
        # last: a scrape that sees these events consumed also sees everything else about them
        m.events.labels("consumed").inc(res.consumed)

    def _refresh_gauges(self) -> None:
        m, model = self.metrics, self.learner.name
        m.model_version.labels(model).set(self.learner.version)
        m.model_updates.labels(model).set(self.learner.updates)
        if self.predicted_total:
            m.label_coverage.labels(model).set(self.ledger.learned / self.predicted_total)
        if self.join is not None:
            m.pending_labels.labels("predictions").set(len(self.join.pending))
            m.pending_labels.labels("labels").set(len(self.join.early))
        t = self.tracker
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
