"""A consumed Kafka record as a typed value, independent of the client library."""

from __future__ import annotations

from typing import Any, NamedTuple


class InboundRecord(NamedTuple):
    """One consumed record (a NamedTuple: built for every event, and a frozen dataclass costs ~1 us to build)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

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
