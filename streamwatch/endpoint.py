"""Endpoint: the HTTP server of ``/metrics``, ``/healthz`` and ``/readyz``.

``/metrics`` is prometheus_client's own handler (OpenMetrics negotiation, gzip, ``name[]``
filtering). Around it, what an exporter exposed beside a cluster needs:

- TLS and basic auth from Prometheus' exporter web configuration file (the
  exporter-toolkit format of node_exporter's ``--web.config.file``: ``tls_server_config``,
  ``basic_auth_users`` with bcrypt hashes); ``/healthz`` and ``/readyz`` stay open for
  probes, as the kubelet sends no credentials;
- a connection idle for ``exporter.idle_timeout_seconds`` is closed, and at most
  ``exporter.max_connections`` are served at once (the rest are closed at accept), so idle
  clients cannot pile up threads. The TLS handshake runs in the connection's own thread,
  under the same timeout.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import ssl
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import Any

import bcrypt
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from streamwatch.config import WebConfig
from streamwatch.exporter import Health

OPEN_PATHS = ("/healthz", "/readyz")
log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # full: refuse rather than queue
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out, hung up or failed the TLS handshake: not our failure
        log.debug("connection from %s ended in an error", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Passwords:
    """bcrypt checks of basic-auth credentials, with successes cached (a bcrypt check
    costs tens of milliseconds; Prometheus scrapes every few seconds)."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self.users = users
        self._good: set[bytes] = set()

    def allows(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        token = hashlib.sha256(f"{user}:{password}".encode() + hashed).digest()
        if token in self._good:
            return True
        if bcrypt.checkpw(password.encode(), hashed):
            self._good.add(token)
            return True
        return False


def _tls_context(web: WebConfig) -> ssl.SSLContext | None:
    tls = web.tls_server_config
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file is not None:
        context.load_verify_locations(tls.client_ca_file)
    if tls.client_auth_type == "RequireAndVerifyClientCert":
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def serve(
    registry: CollectorRegistry,
    address: str,
    port: int,
    health: Health | None = None,
    web: WebConfig | None = None,
    idle_timeout: float = 10.0,
    max_connections: int = 32,
) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; ``port=0`` picks a free port. Raises OSError
    when the address cannot be bound."""
    ready: Callable[[], tuple[bool, str]] = health.ready if health else (lambda: (True, "ok"))
    web = web or WebConfig()
    users = {u: h.get_secret_value().encode() for u, h in web.basic_auth_users.items()}
    passwords = _Passwords(users) if users else None

    class Handler(MetricsHandler):
        timeout = idle_timeout  # socket timeout of every read, the TLS handshake included

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()  # here, in this connection's thread

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            path = self.path.split("?", 1)[0]
            locked = passwords is not None and path not in OPEN_PATHS
            if locked and not passwords.allows(self.headers.get("Authorization")):  # type: ignore[union-attr]
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="streamwatch"')
                self._body(b"unauthorized\n")
                return
            if path == "/metrics":
                super().do_GET()
            elif path == "/healthz":
                self.send_response(200)
                self._body(b"ok\n")
            elif path == "/readyz":
                ok, why = ready()
                self.send_response(200 if ok else 503)
                self._body(why.encode() + b"\n")
            else:
                self.send_response(404)
                self._body(b"try /metrics, /healthz or /readyz\n")

        def _body(self, body: bytes) -> None:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    Handler.registry = registry
    server = _Server((address, port), Handler, max_connections)
    context = _tls_context(web)
    if context is not None:
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, name="endpoint", daemon=True).start()
    return server
