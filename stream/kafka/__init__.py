"""Where Kafka lives: every Kafka client call of driftline (consumer, producer, admin, topic ranges,
security, preflight) is in this package, behind the interfaces of `seam` (neutral partitions, records and
errors). No module outside it imports a Kafka client library, so the run loop is testable against a fake.
"""

from __future__ import annotations

from driftline.settings import KafkaSettings
from driftline.stream.kafka.kafka_python import KafkaPythonBackend
from driftline.stream.kafka.seam import KafkaBackend


def open_backend(cfg: KafkaSettings) -> KafkaBackend:
    """The client library the service talks to Kafka with (``kafka.client``)."""
    if cfg.client == "confluent":
        from driftline.stream.kafka.confluent import ConfluentBackend

        return ConfluentBackend(cfg)
    return KafkaPythonBackend(cfg)


__all__ = ["open_backend"]
