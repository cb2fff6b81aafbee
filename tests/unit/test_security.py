"""Kafka TLS/SASL settings, secret handling and redaction, protected HTTP endpoints (no broker needed)."""

from __future__ import annotations

import base64
import io
import logging
import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from driftline import secrecy
from driftline.errors import ConfigError, KafkaSecurityError
from driftline.monitoring.http import MetricsServer
from driftline.monitoring.http_security import http_security
from driftline.settings import KafkaSettings, MetricsSettings, load_settings
from driftline.stream.kafka.preflight import check_connection
from driftline.stream.kafka.security import client_security
from tests.pki import Pki, make_pki

SECRET = "s3cret-Value-do-not-leak"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _sasl(**sasl: object) -> dict[str, object]:
    return {"security_protocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512", "username": "app", **sasl}}


# -- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("kafka", "expected"), [
    ({"security_protocol": "SASL_SSL", "sasl": {"password": "x" * 8}}, "kafka.sasl.username is required"),
    (_sasl(), "kafka.sasl: password (or password_file) is required"),
    (_sasl(password="x" * 8, password_file="/p"), "set password or password_file, not both"),
    ({"security_protocol": "PLAINTEXT", "ssl": {"cafile": "/ca.pem"}}, "TLS would not be used"),
    ({"security_protocol": "SSL", "sasl": {"username": "app"}}, "sasl settings are set but security_protocol is SSL"),
    ({"security_protocol": "SSL", "ssl": {"certfile": "/c.pem"}}, "certfile and keyfile go together"),
    ({"security_protocol": "SASL_SSL", "sasl": {"mechanism": "OAUTHBEARER"}}, "oauth_token (or oauth_token_file)"),
    ({"security_protocol": "SASL_SSL", "sasl": {"mechanism": "GSSAPI"}}, "kafka.sasl.mechanism"),
])
def test_invalid_security_settings_name_what_is_wrong(kafka: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(kafka=kafka)
    assert expected in str(err.value)


def test_validation_errors_never_echo_a_secret() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(kafka=_sasl(password=SECRET, password_file="/run/secrets/pw"))
    assert "not both" in str(err.value) and SECRET not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # the raw ValidationError is cut off
    with pytest.raises(ConfigError) as err2:
        load_settings(metrics={"auth": {"kind": "bearer", "token": SECRET, "username": 5}})
    assert SECRET not in str(err2.value)


def test_secrets_come_from_the_environment_and_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("DRIFTLINE_KAFKA__SASL__USERNAME", "app")
    monkeypatch.setenv("DRIFTLINE_KAFKA__SASL__PASSWORD", SECRET)
    s = load_settings()
    assert s.kafka.sasl.password is not None and s.kafka.sasl.password.get_secret_value() == SECRET
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump(mode="json"))):
        assert SECRET not in text
    assert client_security(s.kafka)["sasl_plain_password"] == SECRET
    assert client_security(s.kafka)["ssl_context"].check_hostname  # on by default


def test_secret_files_are_read_and_their_errors_name_the_setting(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(SECRET + "\n")  # as `kubectl create secret --from-file` or an editor leaves it
    cfg = KafkaSettings(**_sasl(password_file=str(pw)))
    assert client_security(cfg)["sasl_plain_password"] == SECRET
    with pytest.raises(ConfigError, match=r"kafka.sasl.password_file: file '.*missing' does not exist"):
        client_security(KafkaSettings(**_sasl(password_file=str(tmp_path / "missing"))))
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match=r"kafka.sasl.password_file: file .* is empty"):
        client_security(KafkaSettings(**_sasl(password_file=str(tmp_path / "empty"))))


def test_tls_files_are_checked_with_the_setting_named(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"kafka.ssl.cafile: file '/nowhere/ca.pem' does not exist"):
        client_security(KafkaSettings(security_protocol="SSL", ssl={"cafile": "/nowhere/ca.pem"}))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"kafka.ssl.cafile: .* holds no PEM certificate"):
        client_security(KafkaSettings(security_protocol="SSL", ssl={"cafile": str(junk)}))
    mtls = {"cafile": str(pki.ca_cert), "certfile": str(pki.client_cert), "keyfile": str(pki.client_key)}
    with pytest.raises(ConfigError, match=r"is the key encrypted"):
        client_security(KafkaSettings(security_protocol="SSL", ssl=mtls))
    with pytest.raises(ConfigError, match=r"wrong kafka.ssl.key_password") as err:
        client_security(KafkaSettings(security_protocol="SSL", ssl={**mtls, "key_password": SECRET}))
    assert SECRET not in str(err.value)
    ctx = client_security(KafkaSettings(security_protocol="SSL",
                                        ssl={**mtls, "key_password": pki.client_key_password}))["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


# -- redaction ----------------------------------------------------------------------------------
def test_log_records_are_redacted_in_messages_args_and_tracebacks() -> None:
    secrecy.REDACTOR.add(SECRET)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("driftline.test.redaction")
    logger.addHandler(handler)
    secrecy.install_log_redaction(logger)
    try:
        logger.warning("connecting with %s", SECRET)
        logger.warning(f"inline {SECRET}")
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert SECRET not in out
    assert out.count(secrecy.MASK) >= 3 and "RuntimeError: boom" in out


def test_secret_values_walks_every_secret_setting(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("tok-from-file-123")
    s = load_settings(kafka=_sasl(password=SECRET), metrics={"auth": {"kind": "bearer", "token_file": str(f)}})
    assert dict(secrecy.secret_values(s)) == {"kafka.sasl.password": SECRET,
                                              "metrics.auth.token_file": "tok-from-file-123"}


# -- HTTP endpoints ---------------------------------------------------------------------------------
@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[MetricsServer]:
    tls, auth = http_security(MetricsSettings(**request.param))
    srv = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, healthy=lambda: (True, "ok"),
                        ready=lambda: (True, "ok"), tls=tls, auth=auth)
    srv.start()
    yield srv
    srv.stop()


def _get(url: str, header: str | None = None, ctx: ssl.SSLContext | None = None) -> tuple[int, str, str | None]:
    req = urllib.request.Request(url, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.status, r.read().decode(), None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("WWW-Authenticate")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("served", [{"auth": {"kind": "basic", "username": "prom", "password": SECRET}}],
                         indirect=True)
def test_basic_auth_protects_metrics_not_probes(served: MetricsServer) -> None:
    url = served.url
    code, body, challenge = _get(f"{url}/metrics")
    assert (code, challenge) == (401, 'Basic realm="driftline"') and SECRET not in body
    assert _get(f"{url}/metrics", _basic("prom", "wrong"))[0] == 401
    assert _get(f"{url}/metrics", _basic("other", SECRET))[0] == 401
    assert _get(f"{url}/metrics", "Basic !!!notbase64")[0] == 401
    assert _get(f"{url}/metrics", f"Bearer {SECRET}")[0] == 401
    assert _get(f"{url}/metrics", _basic("prom", SECRET))[0] == 200
    assert _get(f"{url}/healthz")[:2] == (200, "ok\n") and _get(f"{url}/readyz")[0] == 200
    assert _get(f"{url}/other")[0] == 401  # unknown paths are not revealed to anonymous clients


@pytest.mark.parametrize("served", [{"auth": {"kind": "bearer", "token": SECRET, "protect_health": True}}],
                         indirect=True)
def test_bearer_auth_with_protected_probes(served: MetricsServer) -> None:
    url = served.url
    assert _get(f"{url}/metrics")[2] == 'Bearer realm="driftline"'
    assert _get(f"{url}/healthz")[0] == 401
    assert _get(f"{url}/metrics", f"Bearer {SECRET}")[0] == 200
    assert _get(f"{url}/healthz", f"bearer {SECRET}")[0] == 200


def test_https_endpoint_serves_tls_only(pki: Pki) -> None:
    tls, auth = http_security(MetricsSettings(tls={"certfile": str(pki.server_keystore)}))
    srv = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, healthy=lambda: (True, "ok"),
                        ready=lambda: (True, "ok"), tls=tls, auth=auth).start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        assert _get(f"{srv.url}/metrics", ctx=ctx)[0] == 200
        with pytest.raises(urllib.error.URLError):  # a client that does not trust the CA
            _get(f"{srv.url}/healthz", ctx=ssl.create_default_context(cafile=str(pki.rogue_ca_cert)))
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP gets nothing
            _get(srv.url.replace("https", "http") + "/healthz")
        assert _get(f"{srv.url}/healthz", ctx=ctx)[:2] == (200, "ok\n")  # the server survived both
    finally:
        srv.stop()


def test_http_tls_errors_name_the_setting(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"metrics.tls.certfile: file '/none.pem' does not exist"):
        http_security(MetricsSettings(tls={"certfile": "/none.pem"}))
    with pytest.raises(ConfigError, match=r"metrics.tls: cannot load"):
        http_security(MetricsSettings(tls={"certfile": str(pki.ca_cert)}))  # a certificate without its key


# -- preflight against a TLS server that is not the broker's -----------------------------------------
def _tls_server(keystore: Path) -> tuple[socket.socket, threading.Thread]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(keystore))
    sock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, thread


def test_preflight_reports_a_host_name_mismatch(pki: Pki) -> None:
    sock, thread = _tls_server(pki.other_host_keystore)  # a certificate for elsewhere.invalid
    try:
        cfg = KafkaSettings(bootstrap_servers=f"127.0.0.1:{sock.getsockname()[1]}", security_protocol="SSL",
                            ssl={"cafile": str(pki.ca_cert)})
        with pytest.raises(KafkaSecurityError, match=r"does not name that host.*kafka.ssl.check_hostname"):
            check_connection(cfg, timeout_s=5)
    finally:
        sock.close()
        thread.join(5)


def test_preflight_does_not_fail_on_an_unreachable_broker(caplog: pytest.LogCaptureFixture) -> None:
    from driftline.stream.broker import free_port

    cfg = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with caplog.at_level(logging.WARNING):
        assert check_connection(cfg, timeout_s=2) is False
    assert "the clients keep retrying" in caplog.text


def test_oauth_token_file_is_checked_at_start_and_read_again_at_every_login(tmp_path: Path) -> None:
    token = tmp_path / "token"
    cfg = KafkaSettings(security_protocol="SASL_SSL", sasl={"mechanism": "OAUTHBEARER", "oauth_token_file": str(token)})
    with pytest.raises(ConfigError, match=r"kafka.sasl.oauth_token_file: file '.*token' does not exist"):
        client_security(cfg)
    token.write_text("first.jwt.token\n")
    provider = client_security(cfg)["sasl_oauth_token_provider"]
    assert provider.token() == "first.jwt.token"
    token.write_text("refreshed.jwt.token\n")  # a sidecar rotated it
    assert provider.token() == "refreshed.jwt.token"
    fixed = KafkaSettings(security_protocol="SASL_SSL", sasl={"mechanism": "OAUTHBEARER", "oauth_token": SECRET})
    assert client_security(fixed)["sasl_oauth_token_provider"].token() == SECRET
