"""Settings -> client configuration, per backend: security mapped to librdkafka's names, OAUTHBEARER tokens
read again with their expiry, and ``kafka.client_properties`` checked (owned names refused with the setting to
use, unknown names refused, secret values masked)."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from driftline import secrecy
from driftline.errors import ConfigError
from driftline.settings import KafkaSettings, Settings
from driftline.stream.kafka import check_settings
from driftline.stream.kafka.clients import make_consumer, python_properties
from driftline.stream.kafka.rdkafka import OAuthToken, properties
from tests.pki import make_pki


def _jwt(claims: dict[str, Any]) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


def test_auto_is_the_librdkafka_backend() -> None:
    assert KafkaSettings().backend == "confluent"
    assert KafkaSettings(client="kafka-python").backend == "kafka-python"


@pytest.mark.parametrize(("client", "name", "use"), [
    ("confluent", "enable.auto.commit", "the service commits offsets itself"),
    ("confluent", "partition.assignment.strategy", "range assignment keeps an event's partition"),
    ("confluent", "sasl.password", "use kafka.sasl"),
    ("confluent", "ssl.ca.location", "use kafka.ssl"),
    ("confluent", "linger.ms", "use kafka.linger_ms"),
    ("confluent", "queue.buffering.max.ms", "use kafka.linger_ms"),
    ("confluent", "transactional.id", "the service owns transactions"),
    ("confluent", "group.protocol", "kafka.group_protocol"),
    ("kafka-python", "enable_auto_commit", "the service commits offsets itself"),
    ("kafka-python", "enable.auto.commit", "the service commits offsets itself"),  # dotted names too
    ("kafka-python", "sasl_plain_password", "use kafka.sasl"),
    ("kafka-python", "isolation_level", "the service owns transactions"),
])
def test_properties_the_service_owns_are_refused_with_the_setting_to_use(client: str, name: str, use: str) -> None:
    cfg = KafkaSettings(client=client, client_properties={name: "x"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=rf"kafka.client_properties: '{name}' is not settable here \(.*{use}"):
        check_settings(cfg)


def test_unknown_properties_and_bad_values_are_refused_naming_them() -> None:
    with pytest.raises(ConfigError, match=r"'socket.keepalive.enabel' is not a property of the librdkafka client"):
        check_settings(KafkaSettings(client_properties={"socket.keepalive.enabel": True}))
    with pytest.raises(ConfigError, match=r"'socket.timeout.ms': librdkafka refused the value"):
        check_settings(KafkaSettings(client_properties={"socket.timeout.ms": "soon"}))
    with pytest.raises(ConfigError, match=r"'recieve_buffer_bytes' is not a property of the kafka-python client; "
                                          r"did you mean receive_buffer_bytes"):
        check_settings(KafkaSettings(client="kafka-python", client_properties={"recieve_buffer_bytes": 1}))


def test_allowed_properties_reach_only_the_clients_they_belong_to() -> None:
    cfg = KafkaSettings(client_properties={"socket.keepalive.enable": True, "queue.buffering.max.messages": 5000,
                                           "fetch.max.bytes": 1_000_000, "ssl.cipher.suites": "HIGH"})
    consumer, producer = properties(cfg, "consumer"), properties(cfg, "producer")
    assert consumer["socket.keepalive.enable"] is True and producer["socket.keepalive.enable"] is True
    assert "queue.buffering.max.messages" not in consumer and producer["queue.buffering.max.messages"] == 5000
    # librdkafka ignores a consumer property on a producer silently (it warns for very few): passed on
    assert consumer["fetch.max.bytes"] == 1_000_000 and consumer["ssl.cipher.suites"] == "HIGH"
    py = KafkaSettings(client="kafka-python", client_properties={"receive.buffer.bytes": 65536,
                                                                 "max_request_size": 3_000_000})
    assert python_properties(py) == {"receive_buffer_bytes": 65536, "max_request_size": 3_000_000}
    consumer_kw = python_properties(py, make_consumer.__globals__["KafkaConsumer"].DEFAULT_CONFIG)
    assert consumer_kw == {"receive_buffer_bytes": 65536}  # a producer-only name does not reach the consumer


def test_secret_looking_property_values_are_masked_and_redacted() -> None:
    value = "very-Secret-Value-991"
    s = Settings(kafka={"client_properties": {"sasl.oauthbearer.client.secret": value, "socket.timeout.ms": 5000}})
    dumped = s.model_dump(mode="json")["kafka"]["client_properties"]
    assert dumped == {"sasl.oauthbearer.client.secret": "**********", "socket.timeout.ms": 5000}
    assert value not in repr(s)
    assert ("kafka.client_properties.sasl.oauthbearer.client.secret", value) in list(secrecy.secret_values(s))


def test_tls_and_sasl_are_mapped_to_librdkafka_names(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    (tmp_path / "pw").write_text("key-Pass-123\n")
    cfg = KafkaSettings(security_protocol="SASL_SSL",
                        ssl={"cafile": str(pki.ca_cert), "certfile": str(pki.client_cert),
                             "keyfile": str(pki.client_key), "key_password_file": str(tmp_path / "pw"),
                             "check_hostname": False},
                        sasl={"mechanism": "SCRAM-SHA-256", "username": "u", "password": "user-Pass-456"})
    p = properties(cfg, "consumer")
    assert (p["security.protocol"], p["sasl.mechanisms"], p["sasl.username"], p["sasl.password"]) == (
        "sasl_ssl", "SCRAM-SHA-256", "u", "user-Pass-456")
    assert (p["ssl.ca.location"], p["ssl.certificate.location"], p["ssl.key.location"]) == (
        str(pki.ca_cert), str(pki.client_cert), str(pki.client_key))
    assert p["ssl.key.password"] == "key-Pass-123" and p["ssl.endpoint.identification.algorithm"] == "none"
    assert properties(KafkaSettings(security_protocol="SSL"), "producer")["ssl.ca.location"] == "probe"
    with pytest.raises(ConfigError, match=r"kafka.ssl.cafile: file '/nope.pem' does not exist"):
        properties(KafkaSettings(security_protocol="SSL", ssl={"cafile": "/nope.pem"}), "consumer")


def test_the_oauthbearer_token_is_read_again_with_its_own_expiry(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    token_file = tmp_path / "token"
    exp = int(time.time()) + 600
    first = _jwt({"sub": "svc-a", "exp": exp})
    token_file.write_text(first + "\n")
    cfg = KafkaSettings(security_protocol="SASL_PLAINTEXT",
                        sasl={"mechanism": "OAUTHBEARER", "oauth_token_file": str(token_file),
                              "oauth_token_lifetime_seconds": 120})
    cb = properties(cfg, "consumer")["oauth_cb"]
    assert isinstance(cb, OAuthToken)
    assert cb("") == (first, float(exp), "svc-a")
    opaque = "opaque-Token-0123456789"
    token_file.write_text(opaque)  # a sidecar rotated it; not a JWT: the lifetime setting applies
    token, expiry, principal = cb("")
    assert token == opaque and principal == cfg.client_id and 110 < expiry - time.time() <= 120
    expired = _jwt({"sub": "svc-a", "exp": int(time.time()) - 30})
    token_file.write_text(expired)
    token, expiry, _ = cb("")
    assert token == expired and expiry - time.time() <= 10  # asked for again soon
    assert re.search(r"token in .*token expired (29|30|31)s ago; the brokers will refuse it", caplog.text)
    token_file.unlink()
    with pytest.raises(ConfigError, match=r"kafka\.sasl\.oauth_token_file"):
        cb("")
