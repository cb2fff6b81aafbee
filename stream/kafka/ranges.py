"""Read a bounded range of a Kafka topic (every partition), outside any consumer group.

The range starts at an offset or a timestamp (per partition, via ``offsets_for_times``) and ends at
an offset, a timestamp, or the partition's end offset when reading starts, so the read always
terminates. Used by `driftline pretrain` (and replay) to learn from recorded traffic, on either backend
(`PartitionReader`).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from driftline.errors import ConfigError
from driftline.settings import KafkaSettings
from driftline.stream.kafka.preflight import check_connection
from driftline.stream.kafka.seam import TopicPartition
from driftline.stream.records import InboundRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicRange:
    topic: str
    start_offset: int | None = None  # per partition; None: the beginning (or start_time)
    end_offset: int | None = None  # exclusive, per partition; None: the end when reading starts (or end_time)
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None

    def describe(self) -> str:
        a = self.start_time.isoformat() if self.start_time else self.start_offset or 0
        b = self.end_time.isoformat() if self.end_time else self.end_offset if self.end_offset is not None else "end"
        return f"kafka:{self.topic}[{a}..{b})"


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (``2026-11-21T10:00:00Z``) or unix milliseconds."""
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not a timestamp: {text!r} (ISO 8601 such as 2026-11-21T10:00:00Z, or unix ms)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


class PartitionReader(Protocol):
    """Reads partitions outside any consumer group (one per backend)."""

    def partitions(self, topic: str) -> list[int]:
        """The topic's partitions; empty while it is unknown."""
        ...

    def bounds(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """(first offset, end offset) per partition."""
        ...

    def offsets_for_time(self, tps: Sequence[TopicPartition], ms: int) -> dict[TopicPartition, int | None]:
        """The first offset at or after ``ms`` per partition (None: no record that late)."""
        ...

    def start(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Read these partitions from these offsets."""
        ...

    def poll(self, timeout_s: float) -> list[InboundRecord]: ...

    def position(self, tp: TopicPartition) -> int: ...

    def close(self) -> None: ...


def drain(reader: PartitionReader, start: Mapping[TopicPartition, int], stop: Mapping[TopicPartition, int], *,
          timeout_s: float, what: str) -> Iterator[InboundRecord]:
    """The records from ``start`` up to ``stop`` (exclusive) of each partition, in offset order per partition;
    TimeoutError when no record comes for ``timeout_s`` before the end."""
    pending = {tp for tp in start if start[tp] < stop[tp]}
    reader.start({tp: start[tp] for tp in pending})
    deadline = time.monotonic() + timeout_s
    while pending:
        batch = reader.poll(1.0)
        if not batch and time.monotonic() > deadline:
            raise TimeoutError(f"no records from {what} for {timeout_s}s before its end")
        if batch:
            deadline = time.monotonic() + timeout_s
        for r in batch:
            tp = TopicPartition(r.topic, r.partition)
            if tp not in pending:
                continue
            if r.offset >= stop[tp]:
                pending.discard(tp)
                continue
            yield r
            if r.offset + 1 >= stop[tp]:
                pending.discard(tp)
        for tp in list(pending):
            if reader.position(tp) >= stop[tp]:
                pending.discard(tp)


def read_partitions(kafka: KafkaSettings, tps: Sequence[TopicPartition], *,
                    timeout_s: float = 30.0) -> list[InboundRecord]:
    """Every record of these partitions, from their first offset to their end when reading starts."""
    reader = partition_reader(kafka)
    try:
        bounds = reader.bounds(tps)
        return list(drain(reader, {tp: b[0] for tp, b in bounds.items()}, {tp: b[1] for tp, b in bounds.items()},
                          timeout_s=timeout_s, what=", ".join(f"{t}-{p}" for t, p in tps)))
    finally:
        reader.close()


def partition_reader(kafka: KafkaSettings) -> PartitionReader:
    if kafka.backend == "confluent":
        from driftline.stream.kafka.confluent import ConfluentPartitionReader

        return ConfluentPartitionReader(kafka)
    from driftline.stream.kafka.kafka_python import KafkaPythonPartitionReader

    return KafkaPythonPartitionReader(kafka)


def read_range(kafka: KafkaSettings, rng: TopicRange, *, timeout_s: float = 30.0) -> Iterator[InboundRecord]:
    """The records of ``rng`` in offset order per partition (partitions interleaved as fetched)."""
    check_connection(kafka)
    reader = partition_reader(kafka)
    try:
        deadline = time.monotonic() + timeout_s
        parts = reader.partitions(rng.topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = reader.partitions(rng.topic)
        if not parts:
            raise ConfigError(f"topic {rng.topic!r} does not exist at {kafka.bootstrap_servers}")
        tps = [TopicPartition(rng.topic, p) for p in sorted(parts)]
        bounds = reader.bounds(tps)
        start = {tp: max(bounds[tp][0], rng.start_offset or 0) for tp in tps}
        stop = {tp: min(bounds[tp][1], rng.end_offset) if rng.end_offset is not None else bounds[tp][1]
                for tp in tps}
        if rng.start_time is not None:
            found = reader.offsets_for_time(tps, _ms(rng.start_time))
            start = {tp: o if (o := found.get(tp)) is not None else bounds[tp][1] for tp in tps}
        if rng.end_time is not None:
            found = reader.offsets_for_time(tps, _ms(rng.end_time))
            stop = {tp: min(stop[tp], o) if (o := found.get(tp)) is not None else stop[tp] for tp in tps}
        log.info("reading %s: %d records", rng.describe(), sum(max(stop[tp] - start[tp], 0) for tp in tps))
        yield from drain(reader, start, stop, timeout_s=timeout_s, what=rng.describe())
    finally:
        reader.close()
