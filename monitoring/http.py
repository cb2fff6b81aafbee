"""HTTP endpoints: /metrics (Prometheus text format), /healthz (liveness), /readyz (readiness), and with a
`LiveSampler` the live page at / and its data at /live.json.

Optionally HTTPS and basic/bearer authentication (see `http_security`); the probes stay open unless
configured otherwise.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from driftline.monitoring.http_security import Authenticator
from driftline.monitoring.live import PAGE, LiveSampler

log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # failed TLS handshakes, clients hanging up mid-response: not worth a traceback on stderr
        log.debug("http: request from %s failed", client_address, exc_info=True)


class MetricsServer:
    """Serves the registry and health probes on a background thread.

    ``healthy`` and ``ready`` are callables returning (ok, detail); port 0 picks a free port.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        *,
        tls: ssl.SSLContext | None = None,
        auth: Authenticator | None = None,
        live: LiveSampler | None = None,
        promote: Callable[[str], tuple[int, str]] | None = None,
    ) -> None:
        """``promote``: with authentication only, ``POST /promote`` with ``{"model": NAME}`` calls it (the status
        and message it returns are the answer)."""
        promote = promote if auth is not None else None  # never an unauthenticated control endpoint
        self.registry = registry
        self.tls = tls
        outer = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # seconds a client may take to send its request (slow clients hold a thread)

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(self.timeout)
                    self.request.do_handshake()  # in this request's thread, not the accepting one
                super().setup()

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if auth is not None and auth.required(path) and not auth.check(self.headers.get("Authorization")):
                    self._send(401, b"unauthorized\n", "text/plain", {"WWW-Authenticate": auth.challenge})
                elif path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif live is not None and path in ("/", "/index.html"):
                    self._send(200, PAGE.encode(), "text/html; charset=utf-8")
                elif live is not None and path == "/live.json":
                    self._send(200, live.json(), "application/json")
                elif path in ("/healthz", "/readyz"):
                    ok, detail = (healthy if path == "/healthz" else ready)()
                    self._send(200 if ok else 503, (detail + "\n").encode(), "text/plain; charset=utf-8")
                else:
                    self._send(404, b"not found: try /, /metrics, /healthz or /readyz\n", "text/plain")

            def do_POST(self) -> None:
                if promote is None or auth is None or self.path.split("?", 1)[0] != "/promote":
                    self._send(404, b"not found\n", "text/plain")
                elif not auth.check(self.headers.get("Authorization")):  # always, whatever the probes' exemption
                    self._send(401, b"unauthorized\n", "text/plain", {"WWW-Authenticate": auth.challenge})
                else:
                    code, message = promote_request(self.headers.get("Content-Length"), self.rfile, promote)
                    self._send(code, (message + "\n").encode(), "text/plain; charset=utf-8")

            def _send(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would flood the log

        self._server = _Server((host, port), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever, name="driftline-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


MAX_CONTROL_BODY = 4096


def promote_request(length: str | None, body: Any, promote: Callable[[str], tuple[int, str]]) -> tuple[int, str]:
    """Read ``{"model": NAME}`` (at most 4 KiB) and hand NAME to ``promote``; 400 naming what was wrong."""
    try:
        n = int(length or "0")
    except ValueError:
        return 400, "Content-Length is not a number"
    if not 0 < n <= MAX_CONTROL_BODY:
        return 400, f'send a JSON body {{"model": NAME}} of at most {MAX_CONTROL_BODY} bytes'
    try:
        data = json.loads(body.read(n))
    except ValueError as exc:
        return 400, f"the body is not JSON: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("model"), str) or set(data) != {"model"}:
        return 400, f'expected {{"model": NAME}}, got {str(data)[:200]}'
    return promote(data["model"])
