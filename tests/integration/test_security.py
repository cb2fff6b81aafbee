"""The service against a broker with TLS and SASL listeners: end to end over each, fast failures, no leaks.

The broker is this module's own (the session broker stays plain): PLAINTEXT for the harness, SSL with
required client certificates, SASL_SSL and SASL_PLAINTEXT with SCRAM-SHA-256/512, PLAIN and OAUTHBEARER.
Certificates come from a throwaway CA made with openssl; SCRAM credentials from Kafka's own storage tool.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.settings import KafkaSettings
from driftline.stream.broker import LocalKafkaBroker, free_port
from driftline.stream.kafka.publisher import publish
from driftline.stream.sources import from_generator
from tests.broker_security import BrokerSecurity
from tests.helpers import read_topic, wait_for

# every test here runs on both Kafka client libraries
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("kafka_client")]

EVENTS = 300


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaBroker]:
    security = BrokerSecurity.generate(tmp_path_factory.mktemp("pki"))
    with LocalKafkaBroker(security=security) as broker:
        yield broker


def _security(broker: LocalKafkaBroker) -> BrokerSecurity:
    assert broker.security is not None
    return broker.security


def _unsigned_jwt(subject: str, lifetime_s: int = 3600) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + lifetime_s})}."


def _kafka_section(broker: LocalKafkaBroker, variant: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(the kafka config section, environment variables) of a connection variant."""
    pki = _security(broker).pki
    password = _security(broker).users["driftline"]
    if variant == "SSL":  # mutual TLS; the key passphrase from a file, as a mounted secret gives it
        (tmp_path / "key-password").write_text(pki.client_key_password + "\n")
        return {"bootstrap_servers": broker.listener("SSL"), "security_protocol": "SSL",
                "ssl": {"cafile": str(pki.ca_cert), "certfile": str(pki.client_cert), "keyfile": str(pki.client_key),
                        "key_password_file": str(tmp_path / "key-password")}}, {}
    protocol, mechanism = variant.split(":")
    section: dict[str, Any] = {"bootstrap_servers": broker.listener(protocol), "security_protocol": protocol,
                               "sasl": {"mechanism": mechanism}}
    if protocol == "SASL_SSL":
        section["ssl"] = {"cafile": str(pki.ca_cert)}
    if mechanism == "OAUTHBEARER":
        (tmp_path / "token").write_text(_unsigned_jwt("driftline"))
        section["sasl"]["oauth_token_file"] = str(tmp_path / "token")
        return section, {}
    section["sasl"]["username"] = "driftline"
    return section, {"DRIFTLINE_KAFKA__SASL__PASSWORD": password}  # the password from the environment


def _config(tmp_path: Path, prefix: str, kafka: dict[str, Any], **sections: Any) -> Path:
    cfg = {"kafka": {**kafka, "group_id": f"{prefix}-g", "client_id": prefix},
           "topics": {"input": f"{prefix}-in", "predictions": f"{prefix}-pred", "dead_letter": f"{prefix}-dlq"},
           "metrics": {"port": free_port()}, "model": {"name": "GaussianNB"}, **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _publish(kafka: dict[str, Any], env: dict[str, str], topic: str) -> int:
    settings = KafkaSettings(**{**kafka, **({"sasl": {**kafka["sasl"], "password": env[k]}}
                                           if (k := "DRIFTLINE_KAFKA__SASL__PASSWORD") in env else {})})
    events = itertools.islice(from_generator("SEA", seed=5, id_prefix="s-"), EVENTS)
    return publish(events, topic, settings, progress=False)


def _run(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "driftline.cli", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


@pytest.mark.parametrize("variant", ["SSL", "SASL_SSL:SCRAM-SHA-512", "SASL_SSL:SCRAM-SHA-256", "SASL_SSL:PLAIN",
                                     "SASL_SSL:OAUTHBEARER", "SASL_PLAINTEXT:SCRAM-SHA-256"])
def test_service_runs_end_to_end_over_a_secured_listener(secure_broker: LocalKafkaBroker, variant: str,
                                                         topic_prefix: str, tmp_path: Path) -> None:
    kafka, env = _kafka_section(secure_broker, variant, tmp_path)
    config = _config(tmp_path, topic_prefix, kafka)
    assert _publish(kafka, env, f"{topic_prefix}-in") == EVENTS  # the producer over the same listener
    log = tmp_path / "service.log"
    proc = _run(config, env, log)
    try:
        plain = secure_broker.bootstrap_servers  # the test reads back over the harness's own listener

        def done() -> bool:
            assert proc.poll() is None, log.read_text()
            return len(read_topic(plain, f"{topic_prefix}-pred", timeout=10)) >= EVENTS
        try:
            wait_for(done, 120, f"{EVENTS} predictions over {variant}", interval=1.0)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; the service's log:\n{log.read_text()[-6000:]}") from None
    finally:
        rc = _stop(proc)
    assert rc == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert f"accepted a {kafka['security_protocol']} connection" in text
    preds = [json.loads(r.value) for r in read_topic(secure_broker.bootstrap_servers, f"{topic_prefix}-pred")]
    assert sorted(p["id"] for p in preds) == sorted(f"s-{i}" for i in range(EVENTS))
    assert read_topic(secure_broker.bootstrap_servers, f"{topic_prefix}-dlq") == []


def _fails_fast(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # a service that retried forever would run into this timeout instead of exiting
    return subprocess.run([sys.executable, "-m", "driftline.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **env})


def test_wrong_password_fails_fast_naming_the_setting(secure_broker: LocalKafkaBroker, topic_prefix: str,
                                                      tmp_path: Path) -> None:
    kafka, _ = _kafka_section(secure_broker, "SASL_SSL:SCRAM-SHA-512", tmp_path)
    wrong = "not-the-Password-42"
    out = _fails_fast(_config(tmp_path, topic_prefix, kafka), {"DRIFTLINE_KAFKA__SASL__PASSWORD": wrong})
    assert out.returncode == 2, out.stderr[-3000:]
    assert "driftline: error: kafka: " in out.stderr and "rejected user 'driftline' (SCRAM-SHA-512)" in out.stderr
    assert "check kafka.sasl.username and kafka.sasl.password" in out.stderr
    assert wrong not in out.stdout + out.stderr


def test_untrusted_certificate_fails_fast(secure_broker: LocalKafkaBroker, topic_prefix: str,
                                          tmp_path: Path) -> None:
    kafka, env = _kafka_section(secure_broker, "SASL_SSL:SCRAM-SHA-512", tmp_path)
    kafka["ssl"] = {"cafile": str(_security(secure_broker).pki.rogue_ca_cert)}
    out = _fails_fast(_config(tmp_path, topic_prefix, kafka), env)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "is not trusted" in out.stderr and "point kafka.ssl.cafile at the CA" in out.stderr


def test_missing_client_certificate_and_missing_ca_file(secure_broker: LocalKafkaBroker, topic_prefix: str,
                                                        tmp_path: Path) -> None:
    kafka, env = _kafka_section(secure_broker, "SSL", tmp_path)
    no_cert = {**kafka, "ssl": {"cafile": kafka["ssl"]["cafile"]}}
    out = _fails_fast(_config(tmp_path, topic_prefix, no_cert), env)
    assert out.returncode == 2 and "rejected the client certificate" in out.stderr, out.stderr[-3000:]
    no_ca = {**kafka, "ssl": {**kafka["ssl"], "cafile": str(tmp_path / "absent-ca.pem")}}
    out = _fails_fast(_config(tmp_path, topic_prefix, no_ca), env)
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"kafka.ssl.cafile: file '{tmp_path / 'absent-ca.pem'}' does not exist" in out.stderr


def _fetch(url: str, ctx: ssl.SSLContext, auth: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, str(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, str(e.headers), e.read().decode()


def test_no_secret_appears_in_logs_help_config_or_http(secure_broker: LocalKafkaBroker, topic_prefix: str,
                                                       tmp_path: Path, kafka_client: str) -> None:
    """A DEBUG run with every kind of secret set: none of their values shows up anywhere it can be read."""
    pki = _security(secure_broker).pki
    kafka, env = _kafka_section(secure_broker, "SASL_SSL:SCRAM-SHA-512", tmp_path)
    # a client certificate too (the SASL_SSL listener does not ask for it, but its key passphrase is loaded)
    kafka["ssl"].update(certfile=str(pki.client_cert), keyfile=str(pki.client_key),
                        key_password=pki.client_key_password)
    http_password = "http-Basic-Pass-7319"
    (tmp_path / "http-password").write_text(http_password)
    config = _config(tmp_path, topic_prefix, kafka, log_level="DEBUG", kafka_log_level="DEBUG")
    cfg = yaml.safe_load(config.read_text())
    cfg["metrics"].update(tls={"certfile": str(pki.server_keystore)},
                          auth={"kind": "basic", "username": "prometheus",
                                "password_file": str(tmp_path / "http-password")})
    config.write_text(yaml.safe_dump(cfg))
    secrets = [env["DRIFTLINE_KAFKA__SASL__PASSWORD"], pki.client_key_password, http_password]
    seen: list[str] = []

    assert _publish(kafka, env, f"{topic_prefix}-in") == EVENTS
    log = tmp_path / "service.log"
    proc = _run(config, env, log)
    port = int(cfg["metrics"]["port"])
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    basic = "Basic " + base64.b64encode(f"prometheus:{http_password}".encode()).decode()
    try:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return _fetch(f"https://127.0.0.1:{port}/readyz", ctx)[0] == 200
            except OSError:
                return False
        wait_for(ready, 90, "readiness over HTTPS")
        wait_for(lambda: len(read_topic(secure_broker.bootstrap_servers, f"{topic_prefix}-pred", timeout=10))
                 >= EVENTS, 90, "predictions", interval=1.0)
        for path, auth, expected in (("/metrics", basic, 200), ("/metrics", None, 401), ("/healthz", None, 200),
                                     ("/readyz", None, 200), ("/nope", basic, 404), ("/nope", None, 401)):
            code, headers, body = _fetch(f"https://127.0.0.1:{port}{path}", ctx, auth)
            assert code == expected, (path, code)
            seen += [headers, body]
        assert "driftline_events_total" in seen[1]
    finally:
        assert _stop(proc) == 0
    text = log.read_text()
    # the log really was verbose: both clients log their whole configuration at DEBUG, password included
    assert "accepted a SASL_SSL connection" in text
    if kafka_client == "kafka-python":
        assert "DEBUG kafka." in text and "'sasl_plain_password': '**********'" in text
    else:  # librdkafka redacts its own dump; our redaction would have masked it as well
        assert "DEBUG librdkafka: CONF" in text and "sasl.password = [redacted]" in text
        assert "ssl.key.password = [redacted]" in text
    seen.append(text)
    for argv in (["--help"], ["run", "--help"], ["produce", "--help"], ["config", "show", "--help"],
                 ["config", "show", "--config", str(config)], ["config", "show", "--config", str(config),
                                                               "--format", "json"],
                 ["config", "check", "--config", str(config), "--connect"]):
        out = subprocess.run([sys.executable, "-m", "driftline.cli", *argv], capture_output=True, text=True,
                             timeout=120, env={**os.environ, **env})
        assert out.returncode == 0, (argv, out.stderr[-2000:])
        seen += [out.stdout, out.stderr]
    shown = yaml.safe_load(seen[-6])  # config show: masked values, the rest as configured
    assert shown["kafka"]["sasl"]["password"] == "**********"
    assert shown["kafka"]["ssl"]["key_password"] == "**********"
    assert shown["metrics"]["auth"]["password_file"] == str(tmp_path / "http-password")
    assert "accepted a SASL_SSL connection" in seen[-2]
    everything = "\n".join(seen)
    for secret in secrets:
        assert secret not in everything
    # and the records the service wrote (predictions carry no configuration, but check: "anywhere")
    for topic in ("pred", "dlq"):
        for rec in read_topic(secure_broker.bootstrap_servers, f"{topic_prefix}-{topic}"):
            payload = (rec.value or b"") + b"".join(v for _, v in rec.headers or [])
            assert not any(s.encode() in payload for s in secrets)


def test_credentials_revoked_while_running_stop_the_service_with_exit_2(secure_broker: LocalKafkaBroker,
                                                                        topic_prefix: str, tmp_path: Path,
                                                                        kafka_client: str) -> None:
    """A password changed on the cluster while the service runs: at the next reconnect (here: a broker
    restart) the brokers refuse it; the service checkpoints and exits 2 with the reason, never retrying on."""
    from kafka import KafkaAdminClient
    from kafka.admin._users import UserScramCredentialUpsertion

    user, password = "rotating", "first-Password-1234"
    admin = KafkaAdminClient(bootstrap_servers=secure_broker.bootstrap_servers)
    try:
        admin.alter_user_scram_credentials([UserScramCredentialUpsertion(user, "SCRAM-SHA-512", password)])
    finally:
        admin.close()
    kafka, _ = _kafka_section(secure_broker, "SASL_SSL:SCRAM-SHA-512", tmp_path)
    kafka["sasl"]["username"] = user
    (tmp_path / "password").write_text(password)
    kafka["sasl"]["password_file"] = str(tmp_path / "password")
    config = _config(tmp_path, topic_prefix, kafka, checkpoint={"directory": str(tmp_path / "ckpt")})
    assert _publish({**kafka, "sasl": {"mechanism": "SCRAM-SHA-512", "username": user, "password": password}},
                    {}, f"{topic_prefix}-in") == EVENTS
    log = tmp_path / "service.log"
    proc = _run(config, {}, log)
    try:
        wait_for(lambda: len(read_topic(secure_broker.bootstrap_servers, f"{topic_prefix}-pred", timeout=10))
                 >= EVENTS, 120, "predictions", interval=1.0)
        admin = KafkaAdminClient(bootstrap_servers=secure_broker.bootstrap_servers)
        try:
            admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(user, "SCRAM-SHA-512", "rotated-Password-5678")])
        finally:
            admin.close()
        secure_broker.restart()  # every connection drops; the service must log in again
        rc = proc.wait(120)  # retrying forever would run into this timeout
    finally:
        _stop(proc)
    text = log.read_text()
    assert rc == 2, text[-3000:]
    kind = {"kafka-python": "SaslAuthenticationFailedError", "confluent": "_AUTHENTICATION"}[kafka_client]
    assert f"the brokers refused this service while it ran ({kind}" in text
    assert password not in text and "Traceback" not in text
    assert any((tmp_path / "ckpt").iterdir())  # the state was kept before stopping


def test_a_rotated_oauthbearer_token_is_picked_up_before_the_old_one_expires(
        secure_broker: LocalKafkaBroker, topic_prefix: str, tmp_path: Path, kafka_client: str) -> None:
    """The token file holds a token good for 40 s; a sidecar replaces it while the service runs. After the first
    token has expired, the broker restarts: every connection must authenticate again, and the broker refuses
    an expired token, so the service goes on only if it read the new one (librdkafka asks for a token again at
    80% of its lifetime; kafka-python reads the file at every authentication)."""
    kafka, env = _kafka_section(secure_broker, "SASL_SSL:OAUTHBEARER", tmp_path)
    token_file = tmp_path / "token"
    first_expires = time.time() + 40
    token_file.write_text(_unsigned_jwt("driftline", lifetime_s=40))
    config = _config(tmp_path, topic_prefix, kafka, log_level="INFO")
    assert _publish(kafka, env, f"{topic_prefix}-in") == EVENTS
    log = tmp_path / "service.log"
    proc = _run(config, env, log)
    plain = secure_broker.bootstrap_servers

    def predicted(n: int) -> Callable[[], bool]:
        def check() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            return len(read_topic(plain, f"{topic_prefix}-pred", timeout=10)) >= n
        return check
    try:
        wait_for(predicted(EVENTS), 90, "predictions with the first token", interval=1.0)
        token_file.write_text(_unsigned_jwt("driftline", lifetime_s=3600))  # the sidecar's rotation
        time.sleep(max(first_expires + 2 - time.time(), 0))
        if kafka_client == "confluent":  # librdkafka asked again, before the first token expired
            assert log.read_text().count("OAUTHBEARER token read") >= 2, log.read_text()[-3000:]
        secure_broker.restart()
        assert _publish(kafka, env, f"{topic_prefix}-in") == EVENTS
        wait_for(predicted(2 * EVENTS), 120, "predictions after the broker restart", interval=1.0)
    finally:
        rc = _stop(proc)
    assert rc == 0, log.read_text()[-3000:]
