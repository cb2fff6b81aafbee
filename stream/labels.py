"""Delayed labels: predictions waiting for their label, and labels waiting for their event.

An unlabeled event is predicted at once; its event (features as they were) and the prediction
are kept by id until its label arrives on the labels topic, then the model learns from it and the
prequential metrics score the prediction made before the label was known. A label may also
arrive first: it waits for its event. Both waits are bounded by a time-to-live in *event time*
(the newest Kafka record timestamp seen, so a replay behaves like the live run) and by a
maximum count; what expires is handed back to the caller to count, publish or dead-letter.

Ids already resolved (labeled or expired) are remembered in bounded windows, so a late or repeated
label is rejected at once with its reason instead of waiting.

Everything waiting or remembered belongs to the input partition it came from (an event's, or a label's:
the labels topic is co-partitioned with the input). When a partition moves to another member of the
group its part leaves with it (`export_partition`, `drop_partition`) in a data-only form
(`partition_data`), and the new owner takes it in (`load_partition`).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from driftline.core import Event, LabelRecord
from driftline.learners.checkpoint import CheckpointError
from driftline.stream.dedup import UNATTRIBUTED, DedupWindow
from driftline.stream.records import InboundRecord

TTL = "ttl"
CAPACITY = "capacity"


@dataclass(frozen=True, slots=True)
class PendingPrediction:
    event: Event
    prediction: Any
    timestamp_ms: int  # the event record's Kafka timestamp
    predicted_at_ms: int
    partition: int = UNATTRIBUTED  # the event record's partition
    shadow: Mapping[str, Any] | None = None  # with challengers: every model's predicted value, by name


@dataclass(frozen=True, slots=True)
class EarlyLabel:
    label: LabelRecord
    record: InboundRecord  # kept so an unmatched label can be dead-lettered as it came


@dataclass
class Expired:
    predictions: list[tuple[PendingPrediction, str]]  # (pending, reason: ttl | capacity)
    labels: list[tuple[EarlyLabel, str]]


class LabelJoin:
    def __init__(self, ttl_ms: int, max_pending: int) -> None:
        self.ttl_ms = ttl_ms
        self.max_pending = max_pending
        self.pending: OrderedDict[str, PendingPrediction] = OrderedDict()
        self.early: OrderedDict[str, EarlyLabel] = OrderedDict()
        self.resolved = DedupWindow(max_pending)  # ids whose label was learned
        self.expired_ids = DedupWindow(max_pending)  # ids whose prediction expired unlabeled
        self.watermark_ms = 0

    def observe(self, timestamp_ms: int) -> None:
        if timestamp_ms > self.watermark_ms:
            self.watermark_ms = timestamp_ms

    # -- events ---------------------------------------------------------------------------------
    def add_prediction(self, p: PendingPrediction) -> EarlyLabel | None:
        """Keep ``p`` until its label comes; if the label is already here, return it instead."""
        early = self.early.pop(p.event.id, None)
        if early is not None:
            return early
        self.pending[p.event.id] = p
        self.pending.move_to_end(p.event.id)
        return None

    def mark_resolved(self, event_id: str, partition: int = UNATTRIBUTED) -> None:
        self.resolved.seen(event_id, partition)

    # -- labels ---------------------------------------------------------------------------------
    def take(self, event_id: str) -> PendingPrediction | None:
        return self.pending.pop(event_id, None)

    def peek(self, event_id: str) -> PendingPrediction | None:
        return self.pending.get(event_id)

    def known_outcome(self, event_id: str) -> str | None:
        """Why a label for this id cannot be joined now: ``label_already_learned`` or
        ``label_expired``; None if it may still find its event (then it should wait)."""
        if event_id in self.resolved:
            return "label_already_learned"
        if event_id in self.expired_ids:
            return "label_expired"
        return None

    def add_early(self, early: EarlyLabel) -> EarlyLabel | None:
        """Let a label wait for its event; returns a label displaced by a repeat of the same id."""
        previous = self.early.pop(early.label.id, None)
        self.early[early.label.id] = early
        return previous

    # -- bounds ---------------------------------------------------------------------------------
    def expire(self) -> Expired:
        """Everything older than the TTL (in event time), and the oldest beyond ``max_pending``."""
        out = Expired([], [])
        horizon = self.watermark_ms - self.ttl_ms
        while self.pending:
            event_id, p = next(iter(self.pending.items()))
            over = len(self.pending) > self.max_pending
            if not over and p.timestamp_ms >= horizon:
                break
            del self.pending[event_id]
            self.expired_ids.seen(event_id, p.partition)
            out.predictions.append((p, CAPACITY if over else TTL))
        while self.early:
            event_id, e = next(iter(self.early.items()))
            over = len(self.early) > self.max_pending
            if not over and e.record.timestamp_ms >= horizon:
                break
            del self.early[event_id]
            out.labels.append((e, CAPACITY if over else TTL))
        return out

    # -- partitions -----------------------------------------------------------------------------
    def partitions(self) -> set[int]:
        """The partitions something here belongs to."""
        found = {p.partition for p in self.pending.values()} | {e.record.partition for e in self.early.values()}
        found |= self.resolved.partitions() | self.expired_ids.partitions()
        found.discard(UNATTRIBUTED)
        return found

    def export_partition(self, partition: int) -> dict[str, Any]:
        """What belongs to ``partition``, as data only (JSON: no objects), oldest first."""
        return {
            "pending": [{"event": p.event.model_dump(mode="json", exclude_none=True), "prediction": p.prediction,
                         "timestamp_ms": p.timestamp_ms, "predicted_at_ms": p.predicted_at_ms,
                         **({"shadow": dict(p.shadow)} if p.shadow is not None else {})}
                        for p in self.pending.values() if p.partition == partition],
            "early": [{"label": e.label.model_dump(mode="json", exclude_none=True), "record": record_data(e.record)}
                      for e in self.early.values() if e.record.partition == partition],
            "resolved": self.resolved.export_partition(partition),
            "expired": self.expired_ids.export_partition(partition),
            "watermark_ms": self.watermark_ms,
        }

    def drop_partition(self, partition: int) -> None:
        self.pending = OrderedDict((k, p) for k, p in self.pending.items() if p.partition != partition)
        self.early = OrderedDict((k, e) for k, e in self.early.items() if e.record.partition != partition)
        self.resolved.drop_partition(partition)
        self.expired_ids.drop_partition(partition)

    def load_partition(self, partition: int, data: Mapping[str, Any]) -> None:
        """Take in what `export_partition` gave (validated again: it was read back from Kafka)."""
        for p in data["pending"]:
            event = Event.model_validate(p["event"])
            shadow = p.get("shadow")
            self.pending[event.id] = PendingPrediction(event, p["prediction"], int(p["timestamp_ms"]),
                                                       int(p["predicted_at_ms"]), partition,
                                                       dict(shadow) if isinstance(shadow, dict) else None)
        for e in data["early"]:
            label = LabelRecord.model_validate(e["label"])
            self.early[label.id] = EarlyLabel(label, record_from_data(e["record"]))
        self.resolved.load_partition(partition, list(data["resolved"]))
        self.expired_ids.load_partition(partition, list(data["expired"]))
        self.observe(int(data["watermark_ms"]))

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"format": 3, "pending": list(self.pending.values()), "early": list(self.early.values()),
                "resolved": self.resolved.state_dict(), "expired_ids": self.expired_ids.state_dict(),
                "watermark_ms": self.watermark_ms}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pending = state["pending"]
        fmt = state.get("format", 1)
        if fmt > 3:  # written by a newer driftline (a rolling upgrade rolled back)
            raise CheckpointError(f"the label join's state is format {fmt}; this driftline reads formats 1-3: "
                                  "run the version that wrote it, or start this one without that checkpoint")
        if fmt < 2:  # before 0.3: entries did not know their partition
            pending = [PendingPrediction(p.event, p.prediction, p.timestamp_ms, p.predicted_at_ms) for p in pending]
        elif fmt < 3:  # before challengers: no shadow predictions (unpickled entries lack the field)
            pending = [PendingPrediction(p.event, p.prediction, p.timestamp_ms, p.predicted_at_ms, p.partition)
                       for p in pending]
        self.pending = OrderedDict((p.event.id, p) for p in pending)
        self.early = OrderedDict((e.label.id, e) for e in state["early"])
        self.resolved.load_state_dict(state["resolved"])
        self.expired_ids.load_state_dict(state["expired_ids"])
        self.watermark_ms = int(state["watermark_ms"])


def record_data(r: InboundRecord) -> dict[str, Any]:
    """A consumed record as JSON data (bytes in base64)."""
    return {"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp_ms,
            "key": _b64(r.key), "value": _b64(r.value), "headers": [[k, _b64(v)] for k, v in r.headers]}


def record_from_data(d: Mapping[str, Any]) -> InboundRecord:
    return InboundRecord(str(d["topic"]), int(d["partition"]), int(d["offset"]), int(d["timestamp_ms"]),
                         _unb64(d["key"]), _unb64(d["value"]),
                         tuple((str(k), _unb64(v) or b"") for k, v in d["headers"]))


def _b64(b: bytes | None) -> str | None:
    return base64.b64encode(b).decode("ascii") if b is not None else None


def _unb64(s: str | None) -> bytes | None:
    return base64.b64decode(s, validate=True) if s is not None else None
