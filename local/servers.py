"""Run WSGI apps (emulators, webhook sinks) on real local ports in background threads.

Used by the local stack and by tests that need real HTTP (e.g. the Graph subscription validation
handshake, where the emulator calls back into a webhook server).
"""

from __future__ import annotations

import io
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

WSGIApp = Callable[..., Any]


def _request_log_enabled() -> bool:
    return os.environ.get("LOCAL_HTTP_LOG", "") == "1"


class _QuietRequestHandler(WSGIRequestHandler):
    """Drops the per-request access log line (unless LOCAL_HTTP_LOG=1); errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if _request_log_enabled():
            super().log_request(code, size)

    def log_message(self, format: str, *args: Any) -> None:
        if _request_log_enabled():
            super().log_message(format, *args)


class _KeepAliveRequestHandler(_QuietRequestHandler):
    """HTTP/1.1 keep-alive, as AWS, Graph and Google keep botocore's and requests' connections open.

    werkzeug's server closes every connection after its response ("Connection: close"): each call then
    paid a TCP connect, a new server thread and a close, most of a quick moto call's CPU. Its reason is
    that http.server cannot find the next request line after a body the app left unread; so a request
    with a Content-Length body has it read here first, and the app reads that copy. A request whose end
    is not known that way (chunked, `Expect: 100-continue`) keeps werkzeug's close. An idle connection
    closes after `timeout` seconds, and at once when its server shuts down."""

    timeout = 60
    # A response goes out as two writes (headers, then body): with Nagle's algorithm the body waits for
    # the client's delayed ACK of the headers, ~40 ms on every call of a kept connection.
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        with _connections_lock:
            _open_connections(self.server).add(self.connection)

    def log_error(self, format: str, *args: Any) -> None:
        if format.startswith("Request timed out"):
            return  # an idle kept-alive connection closing, not an error
        super().log_error(format, *args)

    def finish(self) -> None:
        with _connections_lock:
            _open_connections(self.server).discard(self.connection)
        super().finish()

    def run_wsgi(self) -> None:
        length = self.headers.get("Content-Length")
        self._keep_alive = (
            "chunked" not in self.headers.get("Transfer-Encoding", "").lower()
            and not self.headers.get("Expect")
            and (length is None or length.strip().isdigit())
            and not getattr(self.server, "closing", False)
        )
        if not self._keep_alive:
            super().run_wsgi()
            return
        body = self.rfile.read(int(length)) if length else b""
        stream, self.rfile = self.rfile, io.BytesIO(body)
        try:
            super().run_wsgi()  # its drain after the response reads the copy, not the next request
        finally:
            self.rfile = stream

    def send_header(self, keyword: str, value: str) -> None:
        closing = keyword.lower() == "connection" and value.lower() == "close"
        if closing and getattr(self, "_keep_alive", False):
            return  # http.server keeps the connection as the request asked (HTTP/1.1: open)
        super().send_header(keyword, value)


_connections_lock = threading.Lock()


def _open_connections(server: Any) -> set[socket.socket]:
    """The server's open connections (kept on it; the caller holds _connections_lock)."""
    if not hasattr(server, "open_connections"):
        server.open_connections = set()
    return server.open_connections


@dataclass
class RunningServer:
    name: str
    host: str
    port: int
    server: BaseWSGIServer = field(repr=False)
    thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        # A wildcard bind is reachable through loopback; IPv6 literals need brackets in URLs.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def shutdown(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=10)
        # Kept-alive connections wait for a next request: end them (a request being served still gets
        # its response, without keep-alive), so server_close's join of their threads does not wait.
        self.server.closing = True  # type: ignore[attr-defined]
        with _connections_lock:
            open_connections = list(_open_connections(self.server))
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already closed by its client
        self.server.server_close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve(app: WSGIApp, host: str = "127.0.0.1", port: int = 0, name: str = "") -> RunningServer:
    """Serve `app` with a threaded werkzeug server in a daemon thread; port 0 picks a free port."""
    server = make_server(host, port, app, threaded=True, request_handler=_KeepAliveRequestHandler)
    label = name or getattr(app, "__class__", type(app)).__name__
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"serve-{label}", daemon=True
    )
    thread.start()
    return RunningServer(name=label, host=host, port=server.port, server=server, thread=thread)
