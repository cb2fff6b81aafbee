"""Which backend `kafka.client` picks, and what the early librdkafka backend refuses (no broker needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from driftline.errors import ConfigError
from driftline.settings import KafkaSettings
from driftline.stream.broker import free_port
from driftline.stream.kafka import open_backend
from driftline.stream.kafka.confluent import ConfluentBackend, ConfluentConsumer, _error, group_properties
from driftline.stream.kafka.kafka_python import KafkaPythonBackend
from driftline.stream.kafka.seam import FencedInstanceError


def test_auto_picks_librdkafka() -> None:
    assert isinstance(open_backend(KafkaSettings()), ConfluentBackend)
    assert isinstance(open_backend(KafkaSettings(client="kafka-python")), KafkaPythonBackend)
    assert isinstance(open_backend(KafkaSettings(client="confluent")), ConfluentBackend)


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_an_unreadable_secret_file_fails_at_start_naming_the_setting(client: str, tmp_path: Path) -> None:
    cfg = KafkaSettings(client=client, security_protocol="SASL_SSL",  # type: ignore[arg-type]
                        sasl={"username": "driftline", "password_file": str(tmp_path / "absent")})
    with pytest.raises(ConfigError, match=r"kafka.sasl.password_file: file '.*absent' does not exist"):
        open_backend(cfg).consumer()


def test_an_unknown_client_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="client"):
        KafkaSettings(client="librdkafka")  # type: ignore[arg-type]


# -- the group protocol (KIP-848 or classic) -------------------------------------------------------------------
CONSUMER_API = {68: (0, 1), 18: (0, 4)}  # ConsumerGroupHeartbeat among a Kafka 4 broker's APIs
CLASSIC_API = {18: (0, 3), 11: (0, 9)}  # a Kafka 3 broker: no ConsumerGroupHeartbeat


@pytest.mark.parametrize(("settings", "apis", "expected"), [
    ({}, CONSUMER_API, "consumer"),
    ({}, CLASSIC_API, "classic"),
    ({"instance_id": "pod-0"}, CONSUMER_API, "classic"),  # a restarted static member takes its partitions back
    ({"exactly_once": True}, CONSUMER_API, "classic"),  # a rebalance would fail a transaction's offsets
    ({"group_protocol": "classic"}, CONSUMER_API, "classic"),
    ({"group_protocol": "consumer"}, CLASSIC_API, "consumer"),  # chosen: the broker's refusal says why
    ({"group_protocol": "consumer", "instance_id": "pod-0"}, CONSUMER_API, "consumer"),
])
def test_auto_takes_the_consumer_protocol_where_the_broker_offers_it_for_dynamic_members(
        settings: dict[str, Any], apis: dict[int, tuple[int, int]], expected: str) -> None:
    backend = ConfluentBackend(KafkaSettings(**settings))  # type: ignore[arg-type]
    backend.broker_apis, backend.checked = apis, True  # what the run loop's preflight found
    assert backend.group_protocol() == expected


def test_auto_stays_classic_when_no_broker_answered() -> None:
    backend = ConfluentBackend(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    assert backend.group_protocol() == "classic"


def test_each_protocol_gets_its_own_group_properties_and_both_keep_co_partitioned_topics_together() -> None:
    cfg = KafkaSettings(session_timeout_ms=9000, heartbeat_interval_ms=1500)
    assert group_properties(cfg, "classic") == {
        "group.protocol": "classic", "partition.assignment.strategy": "range", "session.timeout.ms": 9000,
        "heartbeat.interval.ms": 1500}
    # librdkafka refuses the classic timeouts on the consumer protocol: they are the group's, on the broker
    assert group_properties(cfg, "consumer") == {"group.protocol": "consumer", "group.remote.assignor": "range"}
    for protocol in ("classic", "consumer"):  # librdkafka accepts both sets
        ConfluentConsumer(cfg, protocol).close()  # type: ignore[arg-type]


def test_only_the_timeouts_a_configuration_sets_are_written_to_the_group() -> None:
    assert KafkaSettings().group_timeouts == {}
    assert "heartbeat.interval.ms" not in group_properties(KafkaSettings(), "classic")  # the client's default
    assert KafkaSettings(session_timeout_ms=8000).group_timeouts == {"consumer.session.timeout.ms": 8000}
    assert KafkaSettings(session_timeout_ms=8000, heartbeat_interval_ms=1000).group_timeouts == {
        "consumer.session.timeout.ms": 8000, "consumer.heartbeat.interval.ms": 1000}


def test_the_consumer_protocol_needs_librdkafka_and_a_heartbeat_below_the_session() -> None:
    with pytest.raises(ValueError, match=r"group_protocol consumer .* needs kafka.client confluent"):
        KafkaSettings(client="kafka-python", group_protocol="consumer")
    KafkaSettings(client="kafka-python", group_protocol="auto")  # auto: classic there
    with pytest.raises(ValueError, match=r"group_protocol consumer with exactly_once: .*ILLEGAL_GENERATION"):
        KafkaSettings(group_protocol="consumer", exactly_once=True)
    with pytest.raises(ValueError, match=r"heartbeat_interval_ms \(6000\) must be below session_timeout_ms \(6000\)"):
        KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=6000)


def test_a_member_refused_its_instance_id_says_why_and_how_to_avoid_it() -> None:
    err = _error("poll", KafkaError(KafkaError.UNRELEASED_INSTANCE_ID, "the instance ID is still used"))
    assert isinstance(err, FencedInstanceError)
    assert "kafka.group_protocol classic" in str(err) and "session expires" in str(err)


# -- librdkafka messages as records ----------------------------------------------------------------------------
def test_messages_become_records_and_each_partition_its_next_position() -> None:
    from confluent_kafka import Message

    from driftline.stream.kafka.confluent import _records
    from driftline.stream.kafka.seam import TopicPartition

    def msg(topic: str, partition: int, offset: int, **kw: Any) -> Message:
        return Message(topic=topic, partition=partition, offset=offset, value=b"v%d" % offset, key=None,
                       timestamp=(1, 1000 + offset), **kw)

    eof = Message(topic="in", partition=0, offset=9, error=KafkaError(KafkaError._PARTITION_EOF))
    msgs = [msg("in", 0, 5), msg("in", 0, 6), msg("in", 1, 2), eof, msg("labels", 0, 7),
            msg("in", 0, 7, headers=[("h", None), ("g", b"x")]), msg("in", 1, 3)]
    positions = {TopicPartition("in", 0): 1, TopicPartition("other", 0): 4}
    out = _records(msgs, positions)
    assert [(r.topic, r.partition, r.offset, r.timestamp_ms, r.value) for r in out] == [
        ("in", 0, 5, 1005, b"v5"), ("in", 0, 6, 1006, b"v6"), ("in", 1, 2, 1002, b"v2"), ("labels", 0, 7, 1007, b"v7"),
        ("in", 0, 7, 1007, b"v7"), ("in", 1, 3, 1003, b"v3")]
    assert out[4].headers == (("h", b""), ("g", b"x")) and out[0].headers == ()
    assert positions == {TopicPartition("in", 0): 8, TopicPartition("in", 1): 4, TopicPartition("labels", 0): 8,
                         TopicPartition("other", 0): 4}
    with pytest.raises(Exception, match="Message timed out"):  # an error message is raised, not a record
        _records([msg("in", 0, 1), Message(topic="in", partition=0, error=KafkaError(KafkaError._MSG_TIMED_OUT))], {})
