"""TLS and authentication of the HTTP endpoints, built from `MetricsSettings`.

With ``metrics.tls.certfile`` the endpoints speak HTTPS only. With ``metrics.auth.kind`` basic or bearer,
every path needs credentials except /healthz and /readyz (kubelet and load-balancer probes send none),
unless ``protect_health`` is set. Credentials are compared in constant time; secrets are read once at
start from the settings or their ``*_file``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from dataclasses import dataclass

from driftline.errors import ConfigError
from driftline.monitoring.config import HttpAuthSettings, HttpTlsSettings, MetricsSettings
from driftline.secrecy import require_file, resolve

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})


def server_context(tls: HttpTlsSettings) -> ssl.SSLContext | None:
    """A server-side TLS context (TLS 1.2+), or None for plain HTTP."""
    if tls.certfile is None:
        return None
    require_file(tls.certfile, "metrics.tls.certfile")
    if tls.keyfile is not None:
        require_file(tls.keyfile, "metrics.tls.keyfile")
    password = resolve(tls.key_password, tls.key_password_file, "metrics.tls.key_password")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.certfile, tls.keyfile, password=password or "")
    except ssl.SSLError as exc:
        raise ConfigError(f"metrics.tls: cannot load the certificate and key ({exc.reason or 'bad decrypt'}); "
                          "check certfile, keyfile and key_password") from None
    return ctx


@dataclass(frozen=True)
class Authenticator:
    """Checks an ``Authorization`` header against the configured credentials."""

    scheme: str  # "Basic" or "Bearer"
    _expected: bytes
    protect_health: bool

    def required(self, path: str) -> bool:
        return self.protect_health or path not in HEALTH_PATHS

    def check(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != self.scheme.lower():
            return False
        given = value.strip().encode()
        if self.scheme == "Basic":
            try:
                given = base64.b64decode(given, validate=True)
            except (binascii.Error, ValueError):
                return False
        return hmac.compare_digest(given, self._expected)

    @property
    def challenge(self) -> str:
        return f'{self.scheme} realm="driftline"'


def authenticator(auth: HttpAuthSettings) -> Authenticator | None:
    if auth.kind == "basic":
        password = resolve(auth.password, auth.password_file, "metrics.auth.password") or ""
        return Authenticator("Basic", f"{auth.username}:{password}".encode(), auth.protect_health)
    if auth.kind == "bearer":
        token = resolve(auth.token, auth.token_file, "metrics.auth.token") or ""
        return Authenticator("Bearer", token.encode(), auth.protect_health)
    return None


def http_security(metrics: MetricsSettings) -> tuple[ssl.SSLContext | None, Authenticator | None]:
    return server_context(metrics.tls), authenticator(metrics.auth)
