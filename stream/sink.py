"""Outputs of a batch: prediction records and dead letters, sent asynchronously and checked on flush.

`flush()` waits for Kafka to acknowledge every record of the batch and raises `PublishError`
if any was not delivered, so the run loop never commits offsets past a lost output.

Predictions are co-partitioned with the input: the prediction of an event read from input
partition p is written to partition p of the predictions topic (keyed by event id), so per-partition
order carries over and a downstream join needs no repartitioning. If the predictions topic has
fewer partitions than p, the key's hash picks the partition instead.
"""

from __future__ import annotations

import time

import numpy as np

from driftline.errors import PublishError
from driftline.monitoring.metrics import ServiceMetrics
from driftline.stream.kafka.writer import RecordWriter
from driftline.stream.records import InboundRecord

REASON_HEADER = "driftline.reason"
DEAD_LETTER_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes default; the broker's is 1,048,588
_RECORD_OVERHEAD = 512  # record batch and record framing, generously


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) + 10 for k, v in headers)


class OutputSink:
    """Sends predictions and dead letters for one batch at a time."""

    def __init__(self, writer: RecordWriter, predictions_topic: str, dead_letter_topic: str,
                 metrics: ServiceMetrics, *, dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES) -> None:
        self.writer = writer
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.predictions_topic = predictions_topic
        self.dead_letter_topic = dead_letter_topic
        self.metrics = metrics
        self._event_times_ms: list[int] = []
        self._out_partitions = writer.partitions_for(predictions_topic)
        # True while records whose outputs were committed already are learned again (exactly_once catch-up)
        self.muted = False

    def prediction(self, event_id: str, value: bytes, record_timestamp_ms: int, input_partition: int) -> None:
        if self.muted:
            return
        partition = input_partition if input_partition < self._out_partitions else None
        self.writer.send(self.predictions_topic, event_id.encode("utf-8"), value, partition)
        self._event_times_ms.append(record_timestamp_ms)

    def publish(self, topic: str, key: str, value: bytes) -> None:
        """Any other output of the batch (e.g. expired predictions); flushed with the batch."""
        if self.muted:
            return
        self.writer.send(topic, key.encode("utf-8"), value, None)

    def dead_letter(self, record: InboundRecord, reason: str, error: str) -> None:
        """Forward the original bytes with headers naming the reason, the error and the source. A dead letter
        the topic would refuse (over ``dead_letter_max_bytes`` with its headers) is still written: the
        record's own headers are left out first, then the value is cut, and headers say so."""
        if self.muted:
            return
        headers = [
            (REASON_HEADER, reason.encode()),
            ("driftline.error", error[:4000].encode("utf-8", "replace")),
            ("driftline.source.topic", record.topic.encode()),
            ("driftline.source.partition", str(record.partition).encode()),
            ("driftline.source.offset", str(record.offset).encode()),
            ("driftline.source.timestamp_ms", str(record.timestamp_ms).encode()),
            ("driftline.failed_at_ms", str(int(time.time() * 1000)).encode()),
        ]
        theirs = [(k, v) for k, v in record.headers if not k.startswith("driftline.")]
        key, value = record.key, record.value
        budget = self.dead_letter_max_bytes - _RECORD_OVERHEAD
        if _size(key, value, headers + theirs) > budget:
            headers.append(("driftline.truncated", b"true"))
            headers.append(("driftline.original_bytes", str(len(value or b"")).encode()))
            if theirs:
                headers.append(("driftline.headers_dropped", str(len(theirs)).encode()))
                theirs = []
            if key is not None and len(key) > 1024:
                key = key[:1024]
            room = budget - _size(key, None, headers)
            value = (value or b"")[:max(room, 0)]
        self.writer.send(self.dead_letter_topic, key, value, None, headers + theirs)
        self.metrics.dead_letters.labels(reason).inc()

    def flush(self, timeout: float | None = None) -> None:
        """Block until every output of the batch is acknowledged; raise PublishError otherwise."""
        times, self._event_times_ms = self._event_times_ms, []
        result = self.writer.flush(timeout)
        if result.failed:
            for topic, errs in result.failed.items():
                self.metrics.publish_errors.labels(topic).inc(len(errs))
            detail = "; ".join(f"{t}: {len(e)} failed, first: {e[0]}" for t, e in result.failed.items())
            raise PublishError(f"outputs were not delivered, offsets not committed: {detail}")
        if times:
            stamps = np.asarray(times, dtype=np.float64)
            stamps = stamps[stamps > 0]
            self.metrics.e2e_latency.observe_many(np.maximum(time.time() * 1000 - stamps, 0.0) / 1000.0)
