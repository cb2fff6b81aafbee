"""Which backend `kafka.client` picks, and what the early librdkafka backend refuses (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.errors import ConfigError
from driftline.settings import KafkaSettings
from driftline.stream.kafka import open_backend
from driftline.stream.kafka.confluent import ConfluentBackend
from driftline.stream.kafka.kafka_python import KafkaPythonBackend


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
