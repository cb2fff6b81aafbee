"""librdkafka configuration built from `KafkaSettings`: connection, TLS and SASL, OAUTHBEARER token refresh,
logging, client-level errors, and ``kafka.client_properties`` checked against librdkafka itself.

Secrets are read here when a client is created (the OAUTHBEARER token whenever librdkafka asks for one) and
go only into the client's configuration, whose debug dump librdkafka itself redacts. librdkafka logs through
the ``librdkafka`` logger (``kafka_log_level``); at DEBUG its ``generic,broker,security,conf,cgrp`` contexts
are switched on.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from driftline.errors import ConfigError
from driftline.secrecy import require_file, resolve
from driftline.settings import KafkaSettings
from driftline.stream.kafka.properties import plain, refuse_owned, unknown

LOGGER = logging.getLogger("librdkafka")
DEBUG_CONTEXTS = "generic,broker,security,conf,cgrp"

# client-level errors a retry cannot fix: raised by the next poll
ACCESS_ERRORS = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
                           KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
                           KafkaError.CLUSTER_AUTHORIZATION_FAILED})

log = logging.getLogger(__name__)


def _jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT (not verified: the broker does that), or {} for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


class OAuthToken:
    """librdkafka's ``oauth_cb``: the token from ``kafka.sasl.oauth_token`` or, read again at every call, from
    ``oauth_token_file``; its expiry from the JWT's ``exp`` claim, else ``oauth_token_lifetime_seconds`` from
    now. librdkafka calls it at start and again at 80% of the previous token's lifetime."""

    def __init__(self, cfg: KafkaSettings) -> None:
        self._sasl = cfg.sasl
        self._principal = cfg.client_id
        self.calls = 0

    def __call__(self, _oauthbearer_config: str | None = None) -> tuple[str, float, str]:
        sasl = self._sasl
        token = resolve(sasl.oauth_token, sasl.oauth_token_file, "kafka.sasl.oauth_token") or ""
        claims = _jwt_claims(token)
        now = time.time()
        exp = claims.get("exp")
        expiry = float(exp) if isinstance(exp, int | float) else now + sasl.oauth_token_lifetime_seconds
        if expiry <= now:
            where = f"in {sasl.oauth_token_file}" if sasl.oauth_token_file else "in kafka.sasl.oauth_token"
            log.warning("kafka: the OAUTHBEARER token %s expired %.0fs ago; the brokers will refuse it", where,
                        now - expiry)
            expiry = now + 10  # ask again soon: a sidecar may be about to replace it
        self.calls += 1
        log.info("kafka: OAUTHBEARER token read (principal %r, valid for %.0fs)", claims.get("sub", self._principal),
                 expiry - now)
        return token, expiry, str(claims.get("sub") or self._principal)


class ClientErrors:
    """librdkafka's ``error_cb``: access errors are kept for the next poll to raise; the rest (brokers down,
    transport errors: librdkafka retries them itself) are logged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._access: KafkaError | None = None

    def __call__(self, err: KafkaError) -> None:
        if err.code() in ACCESS_ERRORS:
            with self._lock:
                self._access = err
            log.error("kafka: %s: %s", err.name(), err.str())
        elif err.fatal():
            with self._lock:
                self._access = self._access or err
            log.error("kafka: fatal client error %s: %s", err.name(), err.str())
        else:
            log.warning("kafka: %s: %s", err.name(), err.str())

    def take(self) -> KafkaError | None:
        with self._lock:
            err, self._access = self._access, None
        return err


def _security(cfg: KafkaSettings) -> dict[str, Any]:
    proto = cfg.security_protocol
    props: dict[str, Any] = {"security.protocol": proto.lower()}
    if "SSL" in proto:
        tls = cfg.ssl
        props["ssl.ca.location"] = require_file(tls.cafile, "kafka.ssl.cafile") if tls.cafile else "probe"
        props["ssl.endpoint.identification.algorithm"] = "https" if tls.check_hostname else "none"
        if tls.crlfile is not None:
            props["ssl.crl.location"] = require_file(tls.crlfile, "kafka.ssl.crlfile")
        if tls.certfile is not None and tls.keyfile is not None:
            props["ssl.certificate.location"] = require_file(tls.certfile, "kafka.ssl.certfile")
            props["ssl.key.location"] = require_file(tls.keyfile, "kafka.ssl.keyfile")
            password = resolve(tls.key_password, tls.key_password_file, "kafka.ssl.key_password")
            if password is not None:
                props["ssl.key.password"] = password
    if proto.startswith("SASL"):
        sasl = cfg.sasl
        props["sasl.mechanisms"] = sasl.mechanism
        if sasl.mechanism == "OAUTHBEARER":
            token = OAuthToken(cfg)
            token()  # an unreadable token file fails here, at start, not at login
            props["oauth_cb"] = token
        else:
            props["sasl.username"] = sasl.username
            props["sasl.password"] = resolve(sasl.password, sasl.password_file, "kafka.sasl.password")
    return props


def properties(cfg: KafkaSettings, role: str, errors: Callable[[KafkaError], None] | None = None) -> dict[str, Any]:
    """The librdkafka configuration shared by every client of ``role`` (consumer, producer, ...), with
    ``kafka.client_properties`` that apply to it. Raises ConfigError."""
    props: dict[str, Any] = {
        "bootstrap.servers": cfg.bootstrap_servers, "client.id": f"{cfg.client_id}-{role}",
        **_security(cfg), "logger": LOGGER,
    }
    if LOGGER.isEnabledFor(logging.DEBUG):
        props["debug"] = DEBUG_CONTEXTS
    if errors is not None:
        props["error_cb"] = errors
    extra = checked_properties(cfg)
    props.update({k: v for k, v in extra.items() if k not in _IGNORED.get(role, ())})
    return props


# properties librdkafka warns about and ignores on a client of the given role (found by `checked_properties`;
# it warns for every producer property on a consumer, and for few consumer properties on a producer)
_IGNORED: dict[str, set[str]] = {"consumer": set(), "producer": set()}
_CHECKED: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def checked_properties(cfg: KafkaSettings) -> dict[str, Any]:
    """``kafka.client_properties`` after librdkafka accepted each name and value (ConfigError naming the
    first it refuses); those of one role only are remembered, so the other role's clients do not get them."""
    refuse_owned(cfg)
    props = plain(cfg.client_properties)
    if not props:
        return {}
    key = tuple(sorted((k, repr(v)) for k, v in props.items()))
    if key in _CHECKED:
        return _CHECKED[key]
    quiet = logging.getLogger("librdkafka.check")  # the throwaway clients' log: read here, shown nowhere
    quiet.propagate = False
    for name, value in props.items():
        capture = _Warnings()
        quiet.addHandler(capture)
        try:
            Producer({"bootstrap.servers": "127.0.0.1:9", "logger": quiet, name: value})
            Consumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "check", "logger": quiet, name: value}).close()
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            text = err.str()
            if "No such configuration property" in text:
                raise unknown(name, [], "librdkafka") from None
            raise ConfigError(f"kafka.client_properties: {name!r}: librdkafka refused the value ({text})") from None
        finally:
            quiet.removeHandler(capture)
        if any("is a consumer property" in line for line in capture.lines):
            _IGNORED["producer"].add(name)
        if any("is a producer property" in line for line in capture.lines):
            _IGNORED["consumer"].add(name)
    _CHECKED[key] = props
    return props
