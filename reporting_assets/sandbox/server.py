"""HTTP plumbing: a threaded, keep-alive HTTP/1.1 server around `SandboxApp`."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from reporting_assets.sandbox import responses
from reporting_assets.sandbox.app import SandboxApp
from reporting_assets.sandbox.config import SandboxConfig, default_config
from reporting_assets.sandbox.policies import Clock

MAX_BODY_BYTES = 1 << 20
IDLE_TIMEOUT_S = 120.0  # a keep-alive connection idle this long is closed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "ESF"
    sys_version = ""
    disable_nagle_algorithm = True  # no 40 ms Nagle/delayed-ACK stalls on small answers
    wbufsize = 1 << 16  # headers and body leave in one send, flushed after each request
    timeout = IDLE_TIMEOUT_S
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(400, "Bad request body")
            return
        try:
            response = self.server.app.handle(self.command, self.path, body, dict(self.headers.items()))
        except Exception:  # a sandbox bug: say so loudly, but keep the connection protocol intact
            traceback.print_exc()
            response = responses.internal_error()
        if response.drop_connection:
            self.close_connection = True  # no status line at all: the client sees the connection drop
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # client gave up (e.g. timed out on a slow answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], app: SandboxApp, verbose: bool) -> None:
        self.app = app
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, a reverse DNS lookup that can stall for seconds.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they exit."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # clients hanging up are routine, not errors worth a traceback
        super().handle_error(request, client_address)


class SandboxServer:
    """The Search Console stand-in on a background thread.

    >>> with SandboxServer(default_config()) as sandbox:
    ...     base_url = sandbox.url  # "http://127.0.0.1:<port>/"
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock = time.monotonic,
        verbose: bool = False,
    ) -> None:
        self._app = SandboxApp(config if config is not None else default_config(), clock)
        self._host = host
        self._requested_port = port
        self._verbose = verbose
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> str:
        """Bind and serve in a daemon thread; returns the base URL. OSError if the port is taken."""
        if self._httpd is not None or self._stopped:
            raise RuntimeError("a SandboxServer can only be started once")
        self._httpd = _HTTPServer((self._host, self._requested_port), self._app, self._verbose)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # how fast stop() is noticed
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close every connection; idempotent."""
        if self._httpd is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        self._app.stop_event.set()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the sandbox is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/"

    @property
    def config(self) -> SandboxConfig:
        return self._app.config

    def issued_tokens(self) -> list[str]:
        """Access tokens handed out by POST /token (tests check they never leak)."""
        return self._app.issued_tokens()

    def update_config(self, changes: Mapping[str, Any] | None = None, **settings: Any) -> SandboxConfig:
        """Replace top-level settings at runtime, e.g. `update_config(faults=[FaultSpec("http_500", times=1)])`.

        Values may be dataclasses or their JSON dict form; ValueError if invalid.
        """
        return self._app.update_config({**(changes or {}), **settings})

    def stats(self) -> dict[str, Any]:
        """Same dict as `GET /_sandbox/stats`."""
        return self._app.stats()

    def calls(self) -> dict[str, Any]:
        """Same dict as `GET /_sandbox/calls`: `now`, the `open` calls (received, not yet answered) and the
        `answered` ones (each with its site, dates, startRow, rowLimit, receive and answer times, status)."""
        return self._app.calls()

    def reset_stats(self) -> None:
        """Counters and the timeline of answered calls start again from nothing."""
        self._app.reset_stats()
