"""Startup check of the Kafka connection's security: fail fast where retrying cannot help.

kafka-python retries a failed TLS handshake or SASL authentication until its request timeout and then
reports only "Unable to bootstrap". Before any client is created, `check_connection` opens one connection
to a bootstrap server exactly as the clients will (same `ssl.SSLContext`, same SASL mechanism) and turns
each failure into a `KafkaSecurityError` that says which setting to check: an untrusted broker
certificate (``kafka.ssl.cafile``), a host-name mismatch (``kafka.ssl.check_hostname``), a rejected client
certificate (``kafka.ssl.certfile``), rejected credentials (``kafka.sasl.username``/``password``), a
mechanism the broker does not enable, or a protocol mismatch. No secret is ever part of a message.
A broker that cannot be reached at all is not an error here: the clients keep retrying, as they should.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from typing import Any

from kafka.errors import for_code
from kafka.net.sasl import get_sasl_mechanism
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse
from kafka.protocol.sasl import (
    SaslAuthenticateRequest,
    SaslAuthenticateResponse,
    SaslHandshakeRequest,
    SaslHandshakeResponse,
)

from driftline.errors import KafkaSecurityError
from driftline.settings import KafkaSettings
from driftline.stream.kafka.security import client_security, warn_if_cleartext

log = logging.getLogger(__name__)

_CLOSED = "closed the connection"


class _Closed(Exception):
    """The peer closed the connection (or sent something that is not a Kafka response)."""


def _split(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)


class _Wire:
    """Blocking request/response on one socket with Kafka's framing."""

    def __init__(self, sock: socket.socket, client_id: str) -> None:
        self.sock, self.client_id, self._cid = sock, client_id, 0
        self.versions: dict[int, tuple[int, int]] = {}

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _Closed(_CLOSED)
            buf += chunk
        return buf

    def call(self, request_cls: Any, response_cls: Any, version: int, **fields: Any) -> Any:
        self._cid += 1
        request = request_cls[version](**fields)
        request.with_header(correlation_id=self._cid, client_id=self.client_id)
        self.sock.sendall(request.encode(header=True, framed=True))
        size = struct.unpack(">i", self._recv(4))[0]
        if not 0 < size < 64 * 1024 * 1024:
            raise _Closed(f"sent a frame of {size} bytes, not a Kafka response")
        return response_cls.decode(self._recv(size), version=version, header=True)

    def version(self, request_cls: Any) -> int:
        """The highest version both sides speak (the client's own range when the broker's is unknown)."""
        lo, hi = request_cls.min_version, request_cls.max_version
        broker = self.versions.get(request_cls.API_KEY)
        if broker is not None:
            lo, hi = max(lo, broker[0]), min(hi, broker[1])
        return int(hi if hi >= lo else lo)

    def api_versions(self) -> None:
        response = self.call(ApiVersionsRequest, ApiVersionsResponse, 0)
        self.versions = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}


def _tls_failure(exc: ssl.SSLError, server: str, cfg: KafkaSettings) -> KafkaSecurityError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc.reason)
        if "hostname" in reason.lower() or "ip address mismatch" in reason.lower():
            return KafkaSecurityError(
                f"kafka: the certificate of {server} does not name that host ({reason}); connect with a host name "
                "the certificate lists (kafka.bootstrap_servers), or set kafka.ssl.check_hostname false only "
                "if you accept the risk")
        where = (f"kafka.ssl.cafile ({cfg.ssl.cafile!r})" if cfg.ssl.cafile
                 else "the system CA store (kafka.ssl.cafile unset)")
        return KafkaSecurityError(
            f"kafka: the certificate of {server} is not trusted ({reason}): it does not chain to a CA in {where}; "
            "point kafka.ssl.cafile at the CA that signed the broker's certificate")
    reason = str(exc.reason or exc)
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        which = ("no client certificate was sent: set kafka.ssl.certfile and kafka.ssl.keyfile"
                 if cfg.ssl.certfile is None else
                 f"kafka.ssl.certfile ({cfg.ssl.certfile!r}) is not signed by a CA the broker trusts")
        return KafkaSecurityError(f"kafka: {server} rejected the client certificate ({reason}): {which}")
    if any(m in reason for m in ("WRONG_VERSION_NUMBER", "RECORD_LAYER", "PACKET_LENGTH", "UNEXPECTED_EOF")):
        return KafkaSecurityError(
            f"kafka: {server} does not speak TLS ({reason}); is kafka.security_protocol "
            f"({cfg.security_protocol}) right for this listener?")
    return KafkaSecurityError(f"kafka: TLS with {server} failed ({reason})")


def _authenticate(wire: _Wire, server: str, host: str, cfg: KafkaSettings, security: dict[str, Any]) -> None:
    mechanism_name = cfg.sasl.mechanism
    handshake = wire.call(SaslHandshakeRequest, SaslHandshakeResponse, wire.version(SaslHandshakeRequest),
                          mechanism=mechanism_name)
    if handshake.error_code:
        if not handshake.mechanisms:
            raise KafkaSecurityError(f"kafka: {server} has no SASL on this listener; is kafka.security_protocol "
                                     f"({cfg.security_protocol}) right for it?")
        raise KafkaSecurityError(f"kafka.sasl.mechanism: {server} does not enable {mechanism_name} "
                                 f"(it enables: {', '.join(handshake.mechanisms)})")
    mechanism = get_sasl_mechanism(mechanism_name)(host=host, **security)
    version = wire.version(SaslAuthenticateRequest)
    who = f"user {cfg.sasl.username!r}" if mechanism_name != "OAUTHBEARER" else "the OAUTHBEARER token"
    while not mechanism.is_done():
        response = wire.call(SaslAuthenticateRequest, SaslAuthenticateResponse, version,
                             auth_bytes=mechanism.auth_bytes())
        if response.error_code:
            detail = response.error_message or for_code(response.error_code).__name__
            setting = ("kafka.sasl.oauth_token / oauth_token_file" if mechanism_name == "OAUTHBEARER"
                       else "kafka.sasl.username and kafka.sasl.password / password_file")
            raise KafkaSecurityError(f"kafka: {server} rejected {who} ({mechanism_name}): {detail}; check {setting}")
        mechanism.receive(response.auth_bytes)
    if not mechanism.is_authenticated():
        raise KafkaSecurityError(f"kafka: {mechanism_name} authentication of {who} with {server} did not complete")


def _probe(sock: socket.socket, server: str, host: str, cfg: KafkaSettings,
           security: dict[str, Any]) -> dict[int, tuple[int, int]]:
    proto = cfg.security_protocol
    conn = sock
    if "ssl_context" in security:
        try:
            conn = security["ssl_context"].wrap_socket(sock, server_hostname=host)
        except ssl.SSLError as exc:
            raise _tls_failure(exc, server, cfg) from None
    wire = _Wire(conn, f"{cfg.client_id}-preflight")
    try:
        wire.api_versions()
        if proto.startswith("SASL"):
            _authenticate(wire, server, host, cfg, security)
        # an unauthenticated request: a SASL listener closes the connection here
        wire.call(MetadataRequest, MetadataResponse, wire.version(MetadataRequest), topics=[])
        return wire.versions
    except ssl.SSLError as exc:
        raise _tls_failure(exc, server, cfg) from None
    except (_Closed, ConnectionResetError, BrokenPipeError) as exc:
        hint = {
            "PLAINTEXT": "does the listener require TLS or SASL (security_protocol SSL, SASL_SSL, SASL_PLAINTEXT)?",
            "SSL": "does the listener require SASL (security_protocol SASL_SSL)?",
        }.get(proto, "is kafka.security_protocol right for this listener?")
        raise KafkaSecurityError(f"kafka: {server} {exc or _CLOSED} during the {proto} handshake: {hint}") from None
    finally:
        conn.close()


def check_connection(cfg: KafkaSettings, timeout_s: float = 10.0) -> bool:
    """Connect to the first reachable bootstrap server with the configured security.

    Returns True when one accepted the connection, False when none was reachable (logged; the clients
    retry). Raises `KafkaSecurityError` when a broker refused the TLS or SASL, and ConfigError for a
    missing or unreadable CA, certificate, key or secret file.
    """
    return broker_apis(cfg, timeout_s) is not None


def broker_apis(cfg: KafkaSettings, timeout_s: float = 10.0) -> dict[int, tuple[int, int]] | None:
    """`check_connection`, returning the API versions (key -> (min, max)) of the first broker that accepted the
    connection, or None when none was reachable."""
    security = client_security(cfg)
    warn_if_cleartext(cfg)
    unreachable = []
    for server in (s.strip() for s in cfg.bootstrap_servers.split(",") if s.strip()):
        host, port = _split(server)
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            unreachable.append(f"{server}: {exc.strerror or exc}")
            continue
        try:
            versions = _probe(sock, server, host, cfg, security)
        except TimeoutError:
            unreachable.append(f"{server}: no answer within {timeout_s:.0f}s")
            continue
        log.info("kafka: %s accepted a %s connection", server, cfg.security_protocol)
        return versions
    log.warning("kafka: no bootstrap server answered yet (%s); the clients keep retrying", "; ".join(unreachable))
    return None
