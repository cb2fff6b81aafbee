"""Every Kafka backend's consumer keeps the seam's promises, on a real broker: records in order with their
keys and headers, explicit commits that a new member of the group resumes from, seeks asked for while
partitions are assigned, pause/resume, lag."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from driftline.settings import KafkaSettings
from driftline.stream.kafka import open_backend
from driftline.stream.kafka.seam import Consumer, TopicPartition
from driftline.stream.records import InboundRecord

pytestmark = [pytest.mark.integration]


@pytest.fixture(params=["kafka-python", "confluent"])
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _cfg(bootstrap: str, client: str, group: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, client=client, group_id=group,  # type: ignore[arg-type]
                         session_timeout_ms=6000, request_timeout_ms=10000, max_poll_records=50)


def _fill(bootstrap: str, client: str, topic: str, n: int, start: int = 0) -> None:
    backend = open_backend(_cfg(bootstrap, client, "unused"))
    backend.ensure_topics([topic])
    w = backend.writer()
    for i in range(start, start + n):
        w.send(topic, f"k{i}".encode(), f"v{i}".encode(), 0, [("h", str(i).encode())])
    assert w.flush(30).failed == {}
    w.close()


def _poll_until(consumer: Consumer, done: Callable[[list[InboundRecord]], bool], timeout: float = 30.0
                ) -> list[InboundRecord]:
    got: list[InboundRecord] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        assert time.monotonic() < deadline, f"only {len(got)} records within {timeout}s"
        got += consumer.poll(200)
    return got


@pytest.fixture
def topic(topic_prefix: str) -> str:
    return f"{topic_prefix}-in"


@pytest.fixture
def consumers() -> Iterator[list[Consumer]]:
    opened: list[Consumer] = []
    yield opened
    for c in opened:
        c.close()


@pytest.mark.parametrize("wait", [True, False], ids=["commit-waits", "commit-sent"])
def test_records_in_order_and_a_new_member_resumes_after_the_commit(client: str, kafka_bootstrap: str, topic: str,
                                                                    consumers: list[Consumer], wait: bool) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    _fill(kafka_bootstrap, client, topic, 30)
    assigned: list[TopicPartition] = []
    c = open_backend(_cfg(kafka_bootstrap, client, group)).consumer()
    consumers.append(c)
    c.subscribe([topic], on_assign=assigned.extend, on_revoke=lambda tps: None)
    got = _poll_until(c, lambda g: len(g) >= 30)
    assert assigned == [TopicPartition(topic, 0)] and c.assignment() == {TopicPartition(topic, 0)}
    assert [r.offset for r in got] == list(range(30))
    assert (got[7].key, got[7].value, got[7].headers) == (b"k7", b"v7", (("h", b"7"),))
    assert all(r.timestamp_ms > 0 for r in got)
    c.commit(wait=wait)
    if not wait:  # the run loop polls again before it leaves the group
        assert c.poll(300) == []
    c.close()
    consumers.remove(c)
    _fill(kafka_bootstrap, client, topic, 5, start=30)
    again = open_backend(_cfg(kafka_bootstrap, client, group)).consumer()
    consumers.append(again)
    again.subscribe([topic], on_assign=lambda tps: None, on_revoke=lambda tps: None)
    assert [r.offset for r in _poll_until(again, lambda g: len(g) >= 5)] == [30, 31, 32, 33, 34]


def test_a_seek_asked_for_while_partitions_are_assigned_applies(client: str, kafka_bootstrap: str, topic: str,
                                                                 consumers: list[Consumer]) -> None:
    _fill(kafka_bootstrap, client, topic, 20)
    c = open_backend(_cfg(kafka_bootstrap, client, f"g-{uuid.uuid4().hex[:8]}")).consumer()
    consumers.append(c)
    c.subscribe([topic], on_assign=lambda tps: [c.seek(tp, 12) for tp in tps], on_revoke=lambda tps: None)
    got = _poll_until(c, lambda g: len(g) >= 8)
    assert [r.offset for r in got] == list(range(12, 20))


def test_paused_partitions_return_nothing_until_resumed_and_lag_is_reported(
        client: str, kafka_bootstrap: str, topic: str, consumers: list[Consumer]) -> None:
    _fill(kafka_bootstrap, client, topic, 200)
    c = open_backend(_cfg(kafka_bootstrap, client, f"g-{uuid.uuid4().hex[:8]}")).consumer()
    consumers.append(c)
    c.subscribe([topic], on_assign=lambda tps: None, on_revoke=lambda tps: None)
    got = _poll_until(c, lambda g: len(g) > 0)
    c.pause(c.assignment())
    assert c.paused() == {TopicPartition(topic, 0)}
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert c.poll(100) == [], "a paused partition returned records"
    lag_deadline = time.monotonic() + 15
    while c.lag().get(TopicPartition(topic, 0)) != 200 - got[-1].offset - 1:
        assert time.monotonic() < lag_deadline, c.lag()
        time.sleep(0.2)
    c.resume(c.paused())
    assert c.paused() == set()
    got += _poll_until(c, lambda g: len(g) >= 200 - len(got))
    assert sorted({r.offset for r in got}) == list(range(200))
