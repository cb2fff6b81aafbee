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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.learners.base import EventRejected, Learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.monitoring.prequential import ClassificationTracker, RegressionTracker
from driftline.stream.codec import DecodeError, decode_event, encode_prediction
from driftline.stream.dedup import DedupWindow
from driftline.stream.event import Event
from driftline.stream.records import InboundRecord
from driftline.stream.sink import OutputSink

log = logging.getLogger(__name__)

DUPLICATE_ID = "duplicate_id"
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
    """Owns the per-event pipeline; the run loop owns polling, flushing and committing."""

    def __init__(self, learner: Learner, sink: OutputSink, metrics: ServiceMetrics, *,
                 rolling_window: int, max_payload_bytes: int, dedup_window: int = 0) -> None:
        self.learner = learner
        self.sink = sink
        self.metrics = metrics
        self.max_payload_bytes = max_payload_bytes
        self.tracker: ClassificationTracker | RegressionTracker = (
            ClassificationTracker(rolling_window) if learner.task == "classification"
            else RegressionTracker(rolling_window)
        )
        self.ledger = LearnLedger()
        self.dedup = DedupWindow(dedup_window) if dedup_window > 0 else None
        model = learner.name
        self._predict_hist = metrics.predict_latency.labels(model)
        self._learn_hist = metrics.learn_latency.labels(model)
        self._prepare_hist = metrics.prepare_latency.labels(model)

    def process(self, records: Sequence[InboundRecord]) -> BatchResult:
        res = BatchResult(consumed=len(records))
        learner, sink, perf, dedup, reject = self.learner, self.sink, time.perf_counter, self.dedup, self._reject
        decoded: list[tuple[InboundRecord, Event]] = []
        for rec in records:
            try:
                event = decode_event(rec.value, max_bytes=self.max_payload_bytes)
            except DecodeError as exc:
                reject(rec, res, exc.reason, str(exc))
                continue
            if dedup is not None and dedup.seen(event.id):
                reject(rec, res, DUPLICATE_ID,
                       f"event id {event.id!r} was already seen within the last {dedup.size} events")
                continue
            decoded.append((rec, event))
        if decoded:
            self._prepare([e for _, e in decoded])
        for rec, event in decoded:
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
            sink.prediction(
                event.id,
                encode_prediction(
                    event_id=event.id, prediction=pred.value, proba=pred.proba, model=learner.name,
                    model_version=learner.version, model_updates=learner.updates, latency_ms=dt * 1000.0,
                    source=rec.coordinates, predicted_at_ms=int(time.time() * 1000),
                ),
                rec.timestamp_ms,
                rec.partition,
            )
            res.predicted += 1
            if event.label is None:
                continue
            t1 = perf()
            try:
                learner.learn_one(event, event.label)
            except EventRejected as exc:
                reject(rec, res, exc.reason, str(exc))
                continue
            except Exception as exc:
                log.warning("learn failed for event %r at %s: %r", event.id, rec.coordinates, exc)
                reject(rec, res, LEARN_FAILED, f"{type(exc).__name__}: {exc}")
                continue
            self._learn_hist.observe(perf() - t1)
            self.tracker.update(event.label, pred.value)  # type: ignore[arg-type]
            self.ledger.add(event.id)
            res.learned += 1
        self._publish_counts(res)
        return res

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
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self.tracker.load_state_dict(state["tracker"])
        self.ledger = LearnLedger(int(state["ledger"]["learned"]), int(state["ledger"]["digest"]))
        if self.dedup is not None and state.get("dedup"):
            self.dedup.load_state_dict(state["dedup"])
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
