"""Read a bounded range of a Kafka topic (every partition), outside any consumer group.

The range starts at an offset or a timestamp (per partition, via ``offsets_for_times``) and ends at
an offset, a timestamp, or the partition's end offset when reading starts, so the read always
terminates. Used by `driftline pretrain` (and replay) to learn from recorded traffic.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from kafka import TopicPartition

from driftline.errors import ConfigError
from driftline.settings import KafkaSettings
from driftline.stream.kafka.clients import make_consumer
from driftline.stream.kafka.preflight import check_connection
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


def read_range(kafka: KafkaSettings, rng: TopicRange, *, timeout_s: float = 30.0) -> Iterator[InboundRecord]:
    """The records of ``rng`` in offset order per partition (partitions interleaved as fetched)."""
    check_connection(kafka)
    consumer = make_consumer(kafka, client_id=f"{kafka.client_id}-range", group_id=None)
    try:
        deadline = time.monotonic() + timeout_s
        parts = consumer.partitions_for_topic(rng.topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(rng.topic)
        if not parts:
            raise ConfigError(f"topic {rng.topic!r} does not exist at {kafka.bootstrap_servers}")
        tps = [TopicPartition(rng.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        begin, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        start = {tp: max(begin[tp], rng.start_offset or 0) for tp in tps}
        stop = {tp: min(end[tp], rng.end_offset) if rng.end_offset is not None else end[tp] for tp in tps}
        if rng.start_time is not None:
            found = consumer.offsets_for_times({tp: _ms(rng.start_time) for tp in tps})
            start = {tp: found[tp].offset if found.get(tp) else end[tp] for tp in tps}
        if rng.end_time is not None:
            found = consumer.offsets_for_times({tp: _ms(rng.end_time) for tp in tps})
            stop = {tp: min(stop[tp], found[tp].offset) if found.get(tp) else stop[tp] for tp in tps}
        for tp in tps:
            consumer.seek(tp, start[tp])
        pending = {tp for tp in tps if start[tp] < stop[tp]}
        log.info("reading %s: %d records", rng.describe(), sum(max(stop[tp] - start[tp], 0) for tp in tps))
        while pending:
            batch = consumer.poll(timeout_ms=1000)
            if not batch and time.monotonic() > deadline:
                raise TimeoutError(f"no records from {rng.describe()} for {timeout_s}s before its end")
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset >= stop[tp]:
                        pending.discard(tp)
                        break
                    yield InboundRecord.from_kafka(r)
                if tp in pending and consumer.position(tp) >= stop[tp]:
                    pending.discard(tp)
                deadline = time.monotonic() + timeout_s
            for tp in list(pending):
                if consumer.position(tp) >= stop[tp]:
                    pending.discard(tp)
    finally:
        consumer.close()
