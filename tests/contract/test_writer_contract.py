"""Every record writer (kafka-python in-process and in a child process, librdkafka) keeps the same promises."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from driftline.errors import PublishError
from driftline.settings import KafkaSettings
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.kafka.confluent import ConfluentWriter
from driftline.stream.kafka.writer import ProcessWriter, RecordWriter, ThreadWriter, make_writer
from tests.helpers import read_topic

pytestmark = [pytest.mark.integration]


@pytest.fixture(params=["thread", "process", "confluent"])
def writer(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Iterator[RecordWriter]:
    cfg = KafkaSettings(bootstrap_servers=kafka_bootstrap, request_timeout_ms=5000)
    kinds: dict[str, type[RecordWriter]] = {"thread": ThreadWriter, "process": ProcessWriter,
                                            "confluent": ConfluentWriter}
    w = kinds[request.param](cfg)
    yield w
    w.close(timeout=5)


def test_flush_returns_after_every_record_is_acknowledged(writer: RecordWriter, kafka_bootstrap: str,
                                                          topic_prefix: str) -> None:
    topic = f"{topic_prefix}-out"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=2)
    assert writer.partitions_for(topic) == 2
    for i in range(1000):  # more than one hand-over chunk
        writer.send(topic, f"k{i}".encode(), f"v{i}".encode(), i % 2, [("h", b"x")] if i == 0 else None)
    result = writer.flush(30)
    assert result.sent == 1000 and result.failed == {}
    recs = read_topic(kafka_bootstrap, topic)  # readable right after flush: nothing still in flight
    assert sorted(r.value for r in recs) == sorted(f"v{i}".encode() for i in range(1000))
    assert all(r.partition == int(r.value[1:]) % 2 for r in recs)
    assert [r.headers for r in recs if r.value == b"v0"] == [[("h", b"x")]]


def test_refused_records_are_reported_by_flush_not_raised(writer: RecordWriter, kafka_bootstrap: str,
                                                          topic_prefix: str) -> None:
    topic = f"{topic_prefix}-out"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic])
    writer.send(topic, b"ok", b"small")
    writer.send(topic, b"big", b"x" * (2 * 1024 * 1024))  # over max_request_size (1 MiB)
    result = writer.flush(30)
    assert result.sent == 2
    assert list(result.failed) == [topic]
    assert re.search("MessageSizeTooLarge|MSG_SIZE_TOO_LARGE", result.failed[topic][0])  # kafka-python | librdkafka
    writer.send(topic, b"after", b"still works")
    assert writer.flush(30).failed == {}


def test_a_dead_writer_process_is_a_publish_error(kafka_bootstrap: str, topic_prefix: str) -> None:
    w = ProcessWriter(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    w._proc.kill()
    w._proc.join(10)
    w.send(f"{topic_prefix}-out", b"k", b"v")
    with pytest.raises(PublishError, match="producer process"):
        w.flush(5)
    w.close(timeout=1)


def test_make_writer_modes(kafka_bootstrap: str) -> None:
    for mode, cls in (("thread", ThreadWriter), ("process", ProcessWriter)):
        w = make_writer(KafkaSettings(bootstrap_servers=kafka_bootstrap, publisher=mode))  # type: ignore[arg-type]
        try:
            assert isinstance(w, cls)
        finally:
            w.close(timeout=5)
