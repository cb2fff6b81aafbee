"""Test-then-train over one batch, in one straight line: route -> prepare -> predict and publish ->
observers -> learn (the event's own label, or one the label join completes) -> observers -> end of batch.

Events are handled in stream order: each one is predicted before its own label is learned, and after every
earlier event's label. A record that fails anywhere goes to the dead-letter topic with a reason code; nothing
one record raises stops the batch (``internal_error``). Each model is a lane (`stream.lanes`) with its own
observers (quality, ledger, drift detectors, the ladder); several models race (`stream.contest`); the label join
and extras are shared. `stream.pipeline` builds it all from a configuration.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from driftline.adapters.promotion import Promotion
from driftline.core import Event, EventRejected, LabelRecord
from driftline.learners.base import Learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.stream.audit import DeadLetters, internal_error
from driftline.stream.codec import encode_prediction
from driftline.stream.contest import Contest
from driftline.stream.label_stage import LabelStage
from driftline.stream.lanes import Lane, LearnedBatch, ObserverT, lane_named, load_lanes, save_lanes
from driftline.stream.observers import BatchResult, Labeled, Observer, Predicted
from driftline.stream.records import InboundRecord
from driftline.stream.routing import Router
from driftline.stream.sink import OutputSink

log = logging.getLogger(__name__)

PREDICT_FAILED = "predict_failed"
LEARN_FAILED = "learn_failed"


class EventProcessor:
    """Owns the per-event pipeline; the run loop owns polling, flushing and committing. ``lanes`` are the models
    (one, or with a `Contest` a champion and its challengers); ``shared`` observers see what was served."""

    def __init__(self, lanes: Sequence[Lane], sink: OutputSink, metrics: ServiceMetrics, *, router: Router,
                 shared: Sequence[Observer], dead: DeadLetters, labels: LabelStage | None = None,
                 contest: Contest | None = None) -> None:
        if (contest is None) != (len(lanes) == 1):
            raise ValueError("one model needs no contest; several need one to choose the champion")
        self.lanes = list(lanes)
        self.sink = sink
        self.metrics = metrics
        self.router = router
        self.shared = list(shared)
        self.dead = dead
        self.labels = labels
        self.contest = contest
        self._on_predicted = [o.on_predicted for o in shared if type(o).on_predicted is not Observer.on_predicted]
        self._on_learned = [o.on_learned for o in shared if type(o).on_learned is not Observer.on_learned]
        self._on_batch_end = [o.on_batch_end for o in shared if type(o).on_batch_end is not Observer.on_batch_end]
        self._learned = LearnedBatch(shared)
        self._one = self.lanes[0] if contest is None else None  # the champion for good, with one model

    @property
    def champion(self) -> Lane:
        """The lane whose predictions are served."""
        return self.contest.champion if self.contest is not None else self.lanes[0]

    @property
    def learner(self) -> Learner:
        """The serving model."""
        return self.champion.learner

    @property
    def observers(self) -> list[Observer]:
        """The serving lane's observers, then the shared ones (in hook order)."""
        return [*self.champion.observers, *self.shared]

    def find(self, kind: type[ObserverT]) -> ObserverT | None:
        """The observer of this class (the serving model's, or a shared one), if the pipeline has one."""
        return next((o for o in self.observers if isinstance(o, kind)), None)

    def require(self, kind: type[ObserverT]) -> ObserverT:
        """The observer of this class, which the pipeline must have (Quality, Ledger, DetectionLog always are)."""
        found = self.find(kind)
        if found is None:
            raise LookupError(f"the pipeline has no {kind.__name__}")
        return found

    def lane(self, name: str) -> Lane:  # KeyError naming the models
        return lane_named(self.lanes, name)

    def process(self, records: Sequence[InboundRecord]) -> BatchResult:
        res = BatchResult(consumed=len(records))
        items, prepare = self.router.route(records)
        for lane in self.lanes if prepare else ():
            lane.prepare(prepare)
        for rec, item in items:
            try:
                labeled = self._join(rec, item) if isinstance(item, LabelRecord) else self._predict(rec, item, res)
                if labeled is not None:
                    self._learn(labeled, res)
            except Exception as exc:  # a bug met by this record alone (an observer, the encoder, ...): not a stop
                internal_error(self.dead, rec, exc, "processing")
        for learned in (*(lane.learned for lane in self.lanes), self._learned):
            learned.end()
        for end in [*(e for lane in self.lanes for e in lane.on_batch_end), *self._on_batch_end]:
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

    def promote(self, name: str, *, by: str = "manual") -> Promotion:
        """Make the model ``name`` the champion now, audited and counted (KeyError: no such model)."""
        if self.contest is None:
            raise ValueError("promotion needs several models (models: ...); this pipeline serves one")
        return self.contest.promote(name, by=by)

    def _join(self, rec: InboundRecord, lab: LabelRecord) -> Labeled | None:
        assert self.labels is not None  # only a label stage routes label records
        return self.labels.on_label(rec, lab)

    def _predict(self, rec: InboundRecord, event: Event, res: BatchResult) -> Labeled | None:
        """Predict and publish (then challengers predict); what to learn now (its own label, or one that waited)."""
        champion = self._one or self.champion
        learner = champion.learner
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
        champion.predict_times.append(dt)
        now_ms = int(time.time() * 1000)
        source = {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset}
        self.sink.prediction(event.id, encode_prediction(
            event_id=event.id, prediction=pred.value, proba=pred.proba, model=champion.name, source=source,
            model_version=learner.version, model_updates=learner.updates, latency_ms=dt * 1000.0,
            predicted_at_ms=now_ms), rec.timestamp_ms, rec.partition)
        res.predicted += 1
        if self._one is not None and event.label is not None and not champion.on_predicted and not self._on_predicted:
            return Labeled(event, event.label, pred.value, rec)  # nothing else needs the prediction (most events)
        predicted = Predicted(event, pred, rec, dt, now_ms)
        shadow = self.contest.predict(predicted) if self.contest is not None else None
        for hooks in (champion.on_predicted, self._on_predicted):
            for hook in hooks:
                if detections := hook(predicted):
                    champion.detected(detections, event)
        if event.label is None:
            return self.labels.on_unlabeled(predicted, shadow) if self.labels is not None else None
        return Labeled(event, event.label, pred.value, rec, None, shadow)

    def _learn(self, item: Labeled, res: BatchResult) -> None:
        """Learn ``item``, then the challengers do (the serving model failing dead-letters the label's record)."""
        champion = self._one or self.champion
        t1 = time.perf_counter()
        try:
            champion.learner.learn_one(item.event, item.label)
        except EventRejected as exc:
            self.dead.reject(item.record, exc.reason, str(exc))
            return
        except Exception as exc:
            log.warning("learn failed for event %r at %s: %r", item.event.id, item.record.coordinates, exc)
            self.dead.reject(item.record, LEARN_FAILED, f"{type(exc).__name__}: {exc}")
            return
        champion.learn_times.append(time.perf_counter() - t1)
        res.learned += 1
        mine = self.contest.learn(item) if self.contest is not None else item
        champion.learned.items.append(mine)
        self._learned.items.append(item)
        for hook in champion.on_learned:
            if detections := hook(mine):
                champion.detected(detections, item.event)
        for hook in self._on_learned:  # shared observers score what was served
            if detections := hook(item):
                champion.detected(detections, item.event)

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything learning has changed, by key: one model's state and its observers' at the top level, or
        each model's under ``lanes`` by name and the race under ``race``; the dedup window, shared observers."""
        state = save_lanes(self.lanes, self.contest.state_dict() if self.contest is not None else None)
        state["dedup"] = self.router.state_dict()
        state.update({obs.key: obs.state_dict() for obs in self.shared if obs.key is not None})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        race = load_lanes(self.lanes, state)
        if self.contest is not None and race is not None:
            self.contest.load_state_dict(race)
        if state.get("dedup"):
            self.router.load_state_dict(state["dedup"])
        for obs in (o for o in self.shared if o.key is not None and state.get(o.key)):
            obs.load_state_dict(state[obs.key])  # type: ignore[index]
        self.publish_gauges()

    # -- metrics --------------------------------------------------------------------------------------
    def _publish_counts(self, res: BatchResult) -> None:
        m = self.metrics
        for lane in self.lanes:
            m.labeled.labels(lane.name).inc(len(lane.learn_times))  # what this model learned in the batch
            lane.observe_latencies()
        for outcome, n in res.outcomes().items():
            m.events.labels(outcome).inc(n)
        m.batch_size.observe(res.consumed)
        self.publish_gauges()
        # last: a scrape that sees these events consumed also sees everything else about them
        m.events.labels("consumed").inc(res.consumed)

    def publish_gauges(self) -> None:  # after each batch, restore and partition move
        for obs in [*(o for lane in self.lanes for o in lane.observers), *self.shared]:
            obs.publish_gauges()
