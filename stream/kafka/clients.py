"""kafka-python client factories built from `KafkaSettings`, topic creation, and a readiness probe."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import NoError, TopicAlreadyExistsError

from driftline.settings import KafkaSettings
from driftline.stream.kafka.properties import plain, python_name, refuse_owned, unknown
from driftline.stream.kafka.security import client_security

log = logging.getLogger(__name__)


def _acks(cfg: KafkaSettings) -> int | str:
    return "all" if cfg.acks == "all" else int(cfg.acks)


def python_properties(cfg: KafkaSettings, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``kafka.client_properties`` as kafka-python keywords (dots become underscores), those of the client whose
    ``DEFAULT_CONFIG`` is ``defaults`` (all when None). ConfigError for an owned or unknown name. Empty on the
    confluent backend: its properties are librdkafka's, and the admin client driftline keeps on kafka-python
    for topics and the preflight does without them."""
    if cfg.backend != "kafka-python":
        return {}
    refuse_owned(cfg)
    known = {**KafkaConsumer.DEFAULT_CONFIG, **KafkaProducer.DEFAULT_CONFIG, **KafkaAdminClient.DEFAULT_CONFIG}
    props = {python_name(k): v for k, v in plain(cfg.client_properties).items()}
    for name in props:
        if name not in known:
            raise unknown(name, known, "kafka-python")
    return {k: v for k, v in props.items() if defaults is None or k in defaults}


def make_producer(cfg: KafkaSettings, *, client_suffix: str = "producer", **overrides: Any) -> KafkaProducer:
    """Producer tuned for throughput: batches per partition, short linger, acks per config."""
    params: dict[str, Any] = dict(
        bootstrap_servers=cfg.bootstrap_servers.split(","),
        client_id=f"{cfg.client_id}-{client_suffix}",
        acks=_acks(cfg),
        linger_ms=cfg.linger_ms,
        batch_size=cfg.batch_size,
        compression_type=cfg.compression_type,
        request_timeout_ms=cfg.request_timeout_ms,
        max_in_flight_requests_per_connection=5,
        retries=2_147_483_647,
    )
    if params["acks"] != "all":
        params["enable_idempotence"] = False
    params.update(client_security(cfg))
    params.update(python_properties(cfg, KafkaProducer.DEFAULT_CONFIG))
    params.update(overrides)
    return KafkaProducer(**params)


def make_consumer(cfg: KafkaSettings, **overrides: Any) -> KafkaConsumer:
    """Consumer of the service's group; offsets are committed by the run loop, never automatically."""
    params: dict[str, Any] = dict(
        bootstrap_servers=cfg.bootstrap_servers.split(","),
        client_id=f"{cfg.client_id}-consumer",
        group_id=cfg.group_id,
        enable_auto_commit=False,
        auto_offset_reset=cfg.auto_offset_reset,
        max_poll_records=cfg.max_poll_records,
        fetch_min_bytes=cfg.fetch_min_bytes,
        fetch_max_wait_ms=cfg.fetch_max_wait_ms,
        max_partition_fetch_bytes=cfg.max_partition_fetch_bytes,
        session_timeout_ms=cfg.session_timeout_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        request_timeout_ms=max(cfg.request_timeout_ms, cfg.session_timeout_ms + 5000),
    )
    if cfg.heartbeat_interval_ms is not None:
        params["heartbeat_interval_ms"] = cfg.heartbeat_interval_ms
    params.update(client_security(cfg))
    params.update(python_properties(cfg, KafkaConsumer.DEFAULT_CONFIG))
    params.update(overrides)
    return KafkaConsumer(**params)


def make_admin(cfg: KafkaSettings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=cfg.bootstrap_servers.split(","),
        client_id=f"{cfg.client_id}-admin",
        request_timeout_ms=cfg.request_timeout_ms,
        **client_security(cfg),
        **python_properties(cfg, KafkaAdminClient.DEFAULT_CONFIG),
    )


def ensure_topics(cfg: KafkaSettings, topics: Iterable[str], partitions: int = 1, replication: int = 1,
                  configs: Mapping[str, str] | None = None) -> None:
    """Create the topics that do not exist yet, with these topic ``configs`` (existing ones are left as they are)."""
    admin = make_admin(cfg)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(t, partitions, replication, topic_configs=dict(configs or {}))
                                     for t in missing])
                log.info("created topics %s (%d partitions)", missing, partitions)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def leave_group(cfg: KafkaSettings, instance_id: str) -> None:
    """LeaveGroup (v3+, KIP-345) for the static member ``instance_id`` of ``cfg.group_id``: the coordinator
    rebalances the group at once instead of waiting for the member's session to expire."""
    from kafka.admin import MemberToRemove

    admin = make_admin(cfg)
    try:
        result = admin.remove_group_members(cfg.group_id, [MemberToRemove(group_instance_id=instance_id)])
    finally:
        admin.close()
    failed = {m.group_instance_id: e.__name__ for m, e in result.items() if e is not NoError}
    if failed:
        raise RuntimeError(f"leaving group {cfg.group_id!r} failed: {failed}")


def topic_partitions(cfg: KafkaSettings, topic: str, wait_s: float = 30.0) -> int:
    """Number of partitions of an existing topic (waiting up to ``wait_s`` for a topic just created to show
    its partitions in the metadata)."""
    deadline = time.monotonic() + wait_s
    while True:
        admin = make_admin(cfg)
        try:
            desc = admin.describe_topics([topic])
        finally:
            admin.close()
        for d in desc:
            if d.get("name", d.get("topic")) == topic and d.get("partitions"):
                return len(d["partitions"])
        if time.monotonic() > deadline:
            raise ValueError(f"topic {topic!r} has no partitions (does it exist?)")
        time.sleep(0.2)


def answers_metadata(bootstrap_servers: str) -> bool:
    """Whether a PLAINTEXT broker at ``bootstrap_servers`` answers a metadata request (a readiness probe)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000,
                                 client_id="driftline-harness")
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        admin.close()
