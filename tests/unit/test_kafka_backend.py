"""Which backend `kafka.client` picks, and what the early librdkafka backend refuses (no broker needed)."""

from __future__ import annotations

import pytest

from driftline.errors import ConfigError
from driftline.settings import KafkaSettings
from driftline.stream.kafka import open_backend
from driftline.stream.kafka.confluent import ConfluentBackend
from driftline.stream.kafka.kafka_python import KafkaPythonBackend


def test_auto_picks_kafka_python_until_the_suite_runs_on_both() -> None:
    assert isinstance(open_backend(KafkaSettings()), KafkaPythonBackend)
    assert isinstance(open_backend(KafkaSettings(client="kafka-python")), KafkaPythonBackend)
    assert isinstance(open_backend(KafkaSettings(client="confluent")), ConfluentBackend)


def test_the_librdkafka_backend_refuses_security_it_does_not_map_yet_naming_the_setting() -> None:
    cfg = KafkaSettings(client="confluent", security_protocol="SASL_SSL",
                        sasl={"username": "driftline", "password": "not-logged"})
    with pytest.raises(ConfigError, match=r"kafka.client: the confluent backend does not map "
                                          r"kafka.security_protocol SASL_SSL yet") as info:
        open_backend(cfg)
    assert "not-logged" not in str(info.value)


def test_an_unknown_client_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="client"):
        KafkaSettings(client="librdkafka")  # type: ignore[arg-type]
