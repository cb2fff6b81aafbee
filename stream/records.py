"""A consumed Kafka record as a typed value, independent of the client library."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class InboundRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)

    @classmethod
    def from_kafka(cls, rec: Any) -> InboundRecord:
        """From a kafka-python ConsumerRecord."""
        return cls(
            topic=rec.topic,
            partition=rec.partition,
            offset=rec.offset,
            timestamp_ms=int(rec.timestamp) if rec.timestamp is not None else -1,
            key=rec.key,
            value=rec.value,
            headers=tuple((k, v if v is not None else b"") for k, v in (rec.headers or ())),
        )

    @property
    def coordinates(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}
