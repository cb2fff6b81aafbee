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

from driftline.errors import PublishError
from driftline.monitoring.metrics import ServiceMetrics
from driftline.stream.kafka.writer import RecordWriter
from driftline.stream.records import InboundRecord

REASON_HEADER = "driftline.reason"


class OutputSink:
    """Sends predictions and dead letters for one batch at a time."""

    def __init__(self, writer: RecordWriter, predictions_topic: str, dead_letter_topic: str,
                 metrics: ServiceMetrics) -> None:
        self.writer = writer
        self.predictions_topic = predictions_topic
        self.dead_letter_topic = dead_letter_topic
        self.metrics = metrics
        self._event_times_ms: list[int] = []
        self._out_partitions = writer.partitions_for(predictions_topic)

    def prediction(self, event_id: str, value: bytes, record_timestamp_ms: int, input_partition: int) -> None:
        partition = input_partition if input_partition < self._out_partitions else None
        self.writer.send(self.predictions_topic, event_id.encode("utf-8"), value, partition)
        self._event_times_ms.append(record_timestamp_ms)

    def publish(self, topic: str, key: str, value: bytes) -> None:
        """Any other output of the batch (e.g. expired predictions); flushed with the batch."""
        self.writer.send(topic, key.encode("utf-8"), value, None)

    def dead_letter(self, record: InboundRecord, reason: str, error: str) -> None:
        """Forward the original bytes with headers naming the reason, the error and the source."""
        headers = [
            (REASON_HEADER, reason.encode()),
            ("driftline.error", error[:4000].encode("utf-8", "replace")),
            ("driftline.source.topic", record.topic.encode()),
            ("driftline.source.partition", str(record.partition).encode()),
            ("driftline.source.offset", str(record.offset).encode()),
            ("driftline.source.timestamp_ms", str(record.timestamp_ms).encode()),
            ("driftline.failed_at_ms", str(int(time.time() * 1000)).encode()),
            *[(k, v) for k, v in record.headers if not k.startswith("driftline.")],
        ]
        self.writer.send(self.dead_letter_topic, record.key, record.value, None, headers)
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
        now_ms = time.time() * 1000
        self.metrics.e2e_latency.observe_many([max(now_ms - ts, 0.0) / 1000.0 for ts in times if ts > 0])
