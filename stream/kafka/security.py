"""TLS and SASL options of every kafka-python client, built once from `KafkaSettings`.

One `ssl.SSLContext` is built by us (not from kafka-python's ``ssl_*`` options) so the clients and the
startup check (`preflight`) verify certificates identically; secrets are read here, at client creation,
from the settings or their ``*_file`` (see `driftline.secrecy`), and go nowhere else.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from kafka.net.sasl.oauth import AbstractTokenProvider

from driftline.errors import ConfigError
from driftline.secrecy import require_file, resolve
from driftline.settings import KafkaSettings, KafkaTlsSettings

log = logging.getLogger(__name__)


def ssl_context(tls: KafkaTlsSettings) -> ssl.SSLContext:
    """A client context: the brokers' certificates verified against ``cafile`` (or the system's CAs), the
    host name checked unless turned off, TLS 1.2 at least, the client certificate loaded for mutual TLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = tls.check_hostname
    if tls.cafile is not None:
        try:
            ctx.load_verify_locations(cafile=require_file(tls.cafile, "kafka.ssl.cafile"))
        except ssl.SSLError as exc:
            raise ConfigError(f"kafka.ssl.cafile: {tls.cafile!r} holds no PEM certificate ({exc.reason})") from None
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.crlfile is not None:
        try:
            ctx.load_verify_locations(cafile=require_file(tls.crlfile, "kafka.ssl.crlfile"))
        except ssl.SSLError as exc:
            raise ConfigError(f"kafka.ssl.crlfile: {tls.crlfile!r} is not a PEM CRL ({exc.reason})") from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if tls.certfile is not None and tls.keyfile is not None:
        certfile = require_file(tls.certfile, "kafka.ssl.certfile")
        keyfile = require_file(tls.keyfile, "kafka.ssl.keyfile")
        password = resolve(tls.key_password, tls.key_password_file, "kafka.ssl.key_password")
        try:
            ctx.load_cert_chain(certfile, keyfile, password=password or "")
        except ssl.SSLError as exc:
            hint = ("is the key encrypted? set kafka.ssl.key_password or key_password_file" if password is None
                    else "wrong kafka.ssl.key_password, or the key does not match the certificate")
            raise ConfigError(f"kafka.ssl.certfile/keyfile: cannot load the client certificate and key "
                              f"({exc.reason or exc.strerror or 'bad decrypt'}): {hint}") from None
    return ctx


class TokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """OAUTHBEARER tokens: a fixed token, or a file read again at every authentication."""

    def __init__(self, token: str | None, token_file: str | None) -> None:
        self._token, self._file = token, token_file

    def token(self) -> str:
        if self._file is not None:
            return resolve(None, self._file, "kafka.sasl.oauth_token") or ""
        return self._token or ""


def client_security(cfg: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments for the configured security protocol (raises ConfigError)."""
    proto = cfg.security_protocol
    params: dict[str, Any] = {"security_protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        params["ssl_context"] = ssl_context(cfg.ssl)
    if proto.startswith("SASL"):
        sasl = cfg.sasl
        params["sasl_mechanism"] = sasl.mechanism
        if sasl.mechanism == "OAUTHBEARER":  # an unreadable token file fails here, at start, not at login
            token = resolve(sasl.oauth_token, sasl.oauth_token_file, "kafka.sasl.oauth_token")
            params["sasl_oauth_token_provider"] = TokenProvider(token, sasl.oauth_token_file)
        else:
            params["sasl_plain_username"] = sasl.username
            params["sasl_plain_password"] = resolve(sasl.password, sasl.password_file, "kafka.sasl.password")
    return params


def warn_if_cleartext(cfg: KafkaSettings) -> None:
    if cfg.security_protocol == "SASL_PLAINTEXT" and cfg.sasl.mechanism == "PLAIN":
        log.warning("kafka: SASL PLAIN over SASL_PLAINTEXT sends the password unencrypted; use SASL_SSL")
