"""The first pass over a consumed batch: every record becomes an `Event` or a `LabelRecord`, or goes
to the dead-letter topic with the reason decoding gave (or ``duplicate_id`` for an event id seen
within the dedup window). It also lists the events the learner prepares at once: this batch's events
and the waiting events that this batch's labels complete."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from driftline.core import Event, LabelRecord
from driftline.settings import InputLimits
from driftline.stream.audit import DeadLetters, internal_error
from driftline.stream.codec import DEFAULT_LIMITS, DecodeError, decode_event, decode_label
from driftline.stream.dedup import DedupWindow
from driftline.stream.label_stage import LabelStage
from driftline.stream.records import InboundRecord

DUPLICATE_ID = "duplicate_id"

Routed = list[tuple[InboundRecord, Event | LabelRecord]]


class Router:
    key: ClassVar[str] = "dedup"  # the dedup window is checkpointed, and moves with its partitions

    def __init__(self, max_payload_bytes: int, dead: DeadLetters, *, dedup: DedupWindow | None = None,
                 labels: LabelStage | None = None, limits: InputLimits = DEFAULT_LIMITS) -> None:
        self.max_bytes = max_payload_bytes
        self.limits = limits
        self.dead = dead
        self.dedup = dedup
        self.labels = labels

    def route(self, records: Sequence[InboundRecord]) -> tuple[Routed, list[Event]]:
        """The decoded items in stream order, and the events to prepare."""
        items: Routed = []
        prepare: list[Event] = []
        for rec in records:
            try:
                self._route(rec, items, prepare)
            except DecodeError as exc:
                self.dead.reject(rec, exc.reason, str(exc))
            except Exception as exc:  # a bug met by this record alone: it must not stop the stream
                internal_error(self.dead, rec, exc, "routing")
        return items, prepare

    def _route(self, rec: InboundRecord, items: Routed, prepare: list[Event]) -> None:
        labels = self.labels
        if labels is not None and labels.observe(rec):
            lab = decode_label(rec.value, max_bytes=self.max_bytes, limits=self.limits)
            items.append((rec, lab))
            waiting = labels.waiting_event(lab)
            if waiting is not None:
                prepare.append(waiting)  # embedded with the batch, learned when its label is reached
            return
        event = decode_event(rec.value, max_bytes=self.max_bytes, limits=self.limits)
        dedup = self.dedup
        if dedup is not None and dedup.seen(event.id, rec.partition):
            self.dead.reject(rec, DUPLICATE_ID,
                             f"event id {event.id!r} was already seen within the last {dedup.size} events")
            return
        items.append((rec, event))
        prepare.append(event)

    # -- partition state (`stream.partition_state.Partitioned`): the dedup window -----------------------
    def partitions(self) -> set[int]:
        return self.dedup.partitions() if self.dedup is not None else set()

    def export_partition(self, partition: int) -> Any:
        return self.dedup.export_partition(partition) if self.dedup is not None else []

    def drop_partition(self, partition: int) -> None:
        if self.dedup is not None:
            self.dedup.drop_partition(partition)

    def load_partition(self, partition: int, data: Any) -> None:
        if self.dedup is not None:
            self.dedup.load_partition(partition, [str(i) for i in data])

    def state_dict(self) -> Any:
        return self.dedup.state_dict() if self.dedup is not None else None

    def load_state_dict(self, state: Any) -> None:
        if self.dedup is not None:
            self.dedup.load_state_dict(state)
