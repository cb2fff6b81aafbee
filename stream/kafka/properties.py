"""``kafka.client_properties``: raw properties of the chosen client library, checked before any client exists.

A property the service owns is refused with the setting to use instead (offsets are committed by the run
loop after the outputs are flushed; the assignment keeps an event's partition and its label's together;
security comes from ``kafka.ssl``/``kafka.sasl``, ...). What is left is passed through untouched: unknown
names are refused by the backend that knows its client's names (`confluent.checked_properties`,
`clients.python_properties`), naming the property.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import SecretStr

from driftline.errors import ConfigError
from driftline.settings import KafkaSettings

_COMMITS = "the service commits offsets itself, after a batch's outputs are acknowledged"
_ASSIGNMENT = "the service chooses it: range assignment keeps an event's partition and its label's on one member"
_CALLBACKS = "the service installs its own callbacks"
_EXACTLY_ONCE = "the service owns transactions and idempotence (kafka.acks: all turns idempotence on)"

# librdkafka names (and their aliases) -> what to use instead
RDKAFKA_OWNED: dict[str, str] = {
    "bootstrap.servers": "kafka.bootstrap_servers", "metadata.broker.list": "kafka.bootstrap_servers",
    "client.id": "kafka.client_id", "group.id": "kafka.group_id",
    "group.instance.id": "kafka.instance_id", "group.protocol": "kafka.group_protocol",
    "group.remote.assignor": _ASSIGNMENT, "heartbeat.interval.ms": "kafka.heartbeat_interval_ms",
    "enable.auto.commit": _COMMITS, "auto.commit.enable": _COMMITS, "auto.commit.interval.ms": _COMMITS,
    "enable.auto.offset.store": _COMMITS, "offset.store.method": _COMMITS, "enable.partition.eof": _COMMITS,
    "partition.assignment.strategy": _ASSIGNMENT,
    "isolation.level": _EXACTLY_ONCE, "transactional.id": _EXACTLY_ONCE, "enable.idempotence": _EXACTLY_ONCE,
    "enable.gapless.guarantee": _EXACTLY_ONCE,
    "acks": "kafka.acks", "request.required.acks": "kafka.acks",
    "auto.offset.reset": "kafka.auto_offset_reset",
    "session.timeout.ms": "kafka.session_timeout_ms", "max.poll.interval.ms": "kafka.max_poll_interval_ms",
    "fetch.min.bytes": "kafka.fetch_min_bytes", "fetch.wait.max.ms": "kafka.fetch_max_wait_ms",
    "max.partition.fetch.bytes": "kafka.max_partition_fetch_bytes",
    "fetch.message.max.bytes": "kafka.max_partition_fetch_bytes",
    "linger.ms": "kafka.linger_ms", "queue.buffering.max.ms": "kafka.linger_ms", "batch.size": "kafka.batch_size",
    "compression.type": "kafka.compression_type", "compression.codec": "kafka.compression_type",
    "request.timeout.ms": "kafka.request_timeout_ms",
    "security.protocol": "kafka.security_protocol",
    "log_level": "kafka_log_level", "logger": "kafka_log_level",
    "error_cb": _CALLBACKS, "oauth_cb": _CALLBACKS, "on_delivery": _CALLBACKS, "stats_cb": _CALLBACKS,
    "throttle_cb": _CALLBACKS, "on_commit": _CALLBACKS,
}
RDKAFKA_OWNED_PREFIXES: dict[str, str] = {"sasl.": "kafka.sasl", "ssl.": "kafka.ssl", "ssl_": "kafka.ssl",
                                          "enable.ssl.": "kafka.ssl", "https.": "kafka.ssl"}
# TLS tuning that is not identity or trust: allowed through
RDKAFKA_ALLOWED: frozenset[str] = frozenset({"ssl.cipher.suites", "ssl.curves.list", "ssl.sigalgs.list"})

# kafka-python keyword names -> what to use instead
PYTHON_OWNED: dict[str, str] = {
    "bootstrap_servers": "kafka.bootstrap_servers", "client_id": "kafka.client_id", "group_id": "kafka.group_id",
    "group_instance_id": "kafka.instance_id", "enable_auto_commit": _COMMITS, "auto_commit_interval_ms": _COMMITS,
    "default_offset_commit_callback": _COMMITS, "partition_assignment_strategy": _ASSIGNMENT,
    "isolation_level": _EXACTLY_ONCE, "transactional_id": _EXACTLY_ONCE, "enable_idempotence": _EXACTLY_ONCE,
    "acks": "kafka.acks", "auto_offset_reset": "kafka.auto_offset_reset",
    "session_timeout_ms": "kafka.session_timeout_ms", "max_poll_interval_ms": "kafka.max_poll_interval_ms",
    "heartbeat_interval_ms": "kafka.heartbeat_interval_ms", "max_poll_records": "kafka.max_poll_records",
    "fetch_min_bytes": "kafka.fetch_min_bytes",
    "fetch_max_wait_ms": "kafka.fetch_max_wait_ms", "max_partition_fetch_bytes": "kafka.max_partition_fetch_bytes",
    "linger_ms": "kafka.linger_ms", "batch_size": "kafka.batch_size", "compression_type": "kafka.compression_type",
    "request_timeout_ms": "kafka.request_timeout_ms", "security_protocol": "kafka.security_protocol",
    "key_serializer": _CALLBACKS, "value_serializer": _CALLBACKS, "key_deserializer": _CALLBACKS,
    "value_deserializer": _CALLBACKS, "selector": _CALLBACKS, "metric_reporters": _CALLBACKS,
    "consumer_timeout_ms": "kafka.poll_timeout_ms", "kafka_client": _CALLBACKS,
}
PYTHON_OWNED_PREFIXES: dict[str, str] = {"sasl_": "kafka.sasl", "ssl_": "kafka.ssl"}


def plain(properties: Mapping[str, SecretStr | bool | int | float | str]) -> dict[str, Any]:
    """The properties with secret values unwrapped (for the client only: never log the result)."""
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in properties.items()}


def _owned(name: str, owned: Mapping[str, str], prefixes: Mapping[str, str], allowed: Iterable[str]) -> str | None:
    if name in allowed:
        return None
    if name in owned:
        return owned[name]
    return next((use for prefix, use in prefixes.items() if name.startswith(prefix)), None)


def refuse_owned(cfg: KafkaSettings) -> None:
    """ConfigError for the first property of ``kafka.client_properties`` the service owns on ``cfg``'s backend."""
    if cfg.backend == "confluent":
        owned, prefixes, allowed = RDKAFKA_OWNED, RDKAFKA_OWNED_PREFIXES, RDKAFKA_ALLOWED
    else:
        owned, prefixes, allowed = PYTHON_OWNED, PYTHON_OWNED_PREFIXES, frozenset()
    for name in cfg.client_properties:
        use = _owned(python_name(name) if cfg.backend == "kafka-python" else name, owned, prefixes, allowed)
        if use is not None:
            instead = f"use {use}" if use.startswith("kafka") else use
            raise ConfigError(f"kafka.client_properties: {name!r} is not settable here ({instead})")


def python_name(name: str) -> str:
    """kafka-python's keyword for a property written the Java/librdkafka way (``receive.buffer.bytes``)."""
    return name.replace(".", "_")


def unknown(name: str, known: Iterable[str], backend: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"kafka.client_properties: {name!r} is not a property of the {backend} client{hint}")
