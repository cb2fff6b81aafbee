"""Audit and dead-letter outputs of the pipeline, handed to whoever needs to publish them.

`AuditPublisher` writes detection and adaptation records to ``topics.audit`` (when set) with the time
they were published. `DeadLetters` forwards a record that cannot be processed to the dead-letter topic
with its reason, and counts how many the current batch sent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from driftline.stream.records import InboundRecord
from driftline.stream.sink import OutputSink

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"


class AuditPublisher:
    def __init__(self, sink: OutputSink, topic: str | None) -> None:
        self.sink = sink
        self.topic = topic

    def publish(self, record: dict[str, Any]) -> None:
        """Publish an audit record (detection or adaptation) when an audit topic is configured."""
        if self.topic is not None:
            key = record.get("detector") or record.get("action") or "driftline"
            self.sink.publish(self.topic, str(key), orjson.dumps({**record, "at_ms": int(time.time() * 1000)}))


class DeadLetters:
    def __init__(self, sink: OutputSink) -> None:
        self.sink = sink
        self.count = 0  # sent since `take_count`

    def reject(self, record: InboundRecord, reason: str, message: str) -> None:
        """Send ``record`` to the dead-letter topic with its reason, and count it."""
        self.sink.dead_letter(record, reason, message)
        self.count += 1

    def take_count(self) -> int:
        n, self.count = self.count, 0
        return n


def internal_error(dead: DeadLetters, record: InboundRecord, exc: BaseException, stage: str) -> None:
    """Dead-letter ``record`` after an unexpected error at ``stage`` (a bug it alone met), logged with its
    traceback: the record is kept with its reason, and the stream goes on."""
    log.error("%s failed on the record at %s (dead-lettered as %s)", stage, record.coordinates, INTERNAL_ERROR,
              exc_info=exc)
    dead.reject(record, INTERNAL_ERROR, f"{stage}: {type(exc).__name__}: {exc}")
