"""The delayed-label join as a pipeline stage: labels from the labels topic meet their predicted events.

An unlabeled event waits (with its prediction) in the `LabelJoin` until its label arrives; a label that
comes first waits for its event. What cannot be joined goes to the dead-letter topic with its reason:
a label for an event already learned or expired, a label replaced by a later one for the same id, a
label whose event never came (ttl or capacity). Predictions that expire unlabeled are counted and, with
``expired_topic``, published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from driftline.adapters.detectors import Detection
from driftline.core import Event, LabelRecord
from driftline.monitoring.metrics import ServiceMetrics
from driftline.stream.audit import DeadLetters
from driftline.stream.labels import EarlyLabel, LabelJoin, PendingPrediction
from driftline.stream.observers import NO_DETECTIONS, BatchResult, Labeled, Observer, Predicted
from driftline.stream.records import InboundRecord
from driftline.stream.sink import OutputSink

DUPLICATE_LABEL = "duplicate_label"
LABEL_UNKNOWN_ID = "label_unknown_id"
LABEL_ALREADY_LEARNED = "label_already_learned"


class LabelStage(Observer):
    key = "join"

    def __init__(self, join: LabelJoin, topic: str, *, expired_topic: str | None, dead: DeadLetters,
                 sink: OutputSink, metrics: ServiceMetrics) -> None:
        self.join = join
        self.topic = topic
        self.expired_topic = expired_topic
        self.dead = dead
        self.sink = sink
        self.metrics = metrics
        self.expired = 0  # predictions that expired unlabeled since start (not checkpointed)
        self.redelivered = 0  # unlabeled events seen again after their label was learned (not checkpointed)

    # -- routing (the processor's first pass) ----------------------------------------------------
    def observe(self, rec: InboundRecord) -> bool:
        """Advance event time with ``rec``; whether it is a label record."""
        self.join.observe(rec.timestamp_ms)
        return rec.topic == self.topic

    def waiting_event(self, lab: LabelRecord) -> Event | None:
        """The event this label will complete, when it waits here (prepared with the batch)."""
        waiting = self.join.peek(lab.id)
        return waiting.event if waiting is not None else None

    # -- joining ---------------------------------------------------------------------------------
    def on_label(self, rec: InboundRecord, lab: LabelRecord) -> Labeled | None:
        """A label record: the event to learn now, or None (it waits, or is dead-lettered)."""
        join = self.join
        waiting = join.take(lab.id)
        if waiting is not None:
            return Labeled(waiting.event, lab.label, waiting.prediction, rec,
                           max(rec.timestamp_ms - waiting.timestamp_ms, 0) / 1000.0, waiting.shadow)
        outcome = join.known_outcome(lab.id)
        if outcome is not None:
            detail = ("its event was already learned with a label" if outcome == LABEL_ALREADY_LEARNED else
                      f"its prediction expired unlabeled (labels.ttl_seconds={join.ttl_ms / 1000:g}, "
                      f"max_pending={join.max_pending})")
            self.dead.reject(rec, outcome, f"label for event id {lab.id!r} cannot be used: {detail}")
            return None
        displaced = join.add_early(EarlyLabel(lab, rec))  # its event may still come
        if displaced is not None:
            self.dead.reject(displaced.record, DUPLICATE_LABEL,
                             f"a later label for event id {lab.id!r} replaced this one before the event arrived")
        return None

    def on_unlabeled(self, p: Predicted, shadow: Mapping[str, Any] | None = None) -> Labeled | None:
        """A predicted event without a label: learn it now if its label came first, else it waits (with every
        model's prediction, ``shadow``, when there are challengers)."""
        if self.join.known_outcome(p.event.id) == LABEL_ALREADY_LEARNED:
            # a redelivered event (at-least-once: a member died after saving state newer than its committed
            # offsets) whose label was learned already: predicted again, but nothing will label it again
            self.redelivered += 1
            return None
        early = self.join.add_prediction(PendingPrediction(p.event, p.prediction.value, p.record.timestamp_ms,
                                                           p.predicted_at_ms, p.record.partition, shadow))
        if early is None:
            return None
        return Labeled(p.event, early.label.label, p.prediction.value, early.record, 0.0, shadow)  # its label waited

    # -- observer --------------------------------------------------------------------------------
    def on_learned(self, item: Labeled) -> Sequence[Detection]:
        if item.delay_s is not None:
            self.metrics.label_delay.observe(item.delay_s)
        event_id = item.event.id
        self.join.mark_resolved(event_id, item.record.partition)
        waiting = self.join.early.pop(event_id, None)
        if waiting is not None:  # the event brought its own label; the one that waited is not needed
            self.dead.reject(waiting.record, LABEL_ALREADY_LEARNED,
                             f"event {event_id!r} arrived with its own label, which was learned")
        return NO_DETECTIONS

    def on_batch_end(self, result: BatchResult) -> None:
        join = self.join
        expired = join.expire()
        for p, reason in expired.predictions:
            self.expired += 1
            self.metrics.labels_expired.labels(reason).inc()
            if self.expired_topic is not None:
                self.sink.publish(self.expired_topic, p.event.id, orjson.dumps({
                    "id": p.event.id, "reason": reason, "prediction": p.prediction,
                    "event_timestamp_ms": p.timestamp_ms, "predicted_at_ms": p.predicted_at_ms,
                    "event": p.event.model_dump(mode="json", exclude_none=True),
                }))
        for e, reason in expired.labels:
            self.dead.reject(e.record, LABEL_UNKNOWN_ID,
                             f"no event with id {e.label.id!r} arrived within labels.ttl_seconds="
                             f"{join.ttl_ms / 1000:g}" if reason == "ttl" else
                             f"more than labels.max_pending={join.max_pending} labels were waiting for their event")

    def publish_gauges(self) -> None:
        self.metrics.pending_labels.labels("predictions").set(len(self.join.pending))
        self.metrics.pending_labels.labels("labels").set(len(self.join.early))

    # -- partition state (`stream.partition_state.Partitioned`) --------------------------------------
    def partitions(self) -> set[int]:
        return self.join.partitions()

    def export_partition(self, partition: int) -> Any:
        return self.join.export_partition(partition)

    def drop_partition(self, partition: int) -> None:
        self.join.drop_partition(partition)

    def load_partition(self, partition: int, data: Any) -> None:
        self.join.load_partition(partition, data)

    def state_dict(self) -> Any:
        return self.join.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.join.load_state_dict(state)
