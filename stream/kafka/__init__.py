"""Where Kafka lives: every Kafka client call of driftline (consumer, producer, admin, topic ranges,
security, preflight) is in this package, behind the interfaces of `seam` (neutral partitions, records and
errors). No module outside it imports a Kafka client library, so the run loop is testable against a fake.
"""

from __future__ import annotations

from driftline.settings import KafkaSettings
from driftline.stream.kafka.seam import KafkaBackend


def open_backend(cfg: KafkaSettings) -> KafkaBackend:
    """The client library the service talks to Kafka with (``kafka.client``; auto: confluent). Secret files,
    certificates and ``kafka.client_properties`` are checked here (ConfigError)."""
    if cfg.backend == "confluent":
        from driftline.stream.kafka.confluent import ConfluentBackend

        return ConfluentBackend(cfg)
    from driftline.stream.kafka.kafka_python import KafkaPythonBackend

    return KafkaPythonBackend(cfg)


def check_settings(cfg: KafkaSettings) -> None:
    """What `open_backend` checks, without creating a client that connects (``driftline config check``)."""
    from driftline.stream.kafka.clients import python_properties
    from driftline.stream.kafka.security import client_security

    client_security(cfg)  # the preflight's TLS context: CA, certificate, key and secret files are readable
    if cfg.backend == "confluent":
        from driftline.stream.kafka.rdkafka import properties

        properties(cfg, "check")
    else:
        python_properties(cfg)


__all__ = ["check_settings", "open_backend"]
