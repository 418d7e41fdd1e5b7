"""Run WSGI apps (emulators, webhook sinks) on real local ports in background threads.

Used by the local stack and by tests that need real HTTP (e.g. the Graph subscription validation
handshake, where the emulator calls back into a webhook server).
"""

from __future__ import annotations

import os
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
        self.server.server_close()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def serve(app: WSGIApp, host: str = "127.0.0.1", port: int = 0, name: str = "") -> RunningServer:
    """Serve `app` with a threaded werkzeug server in a daemon thread; port 0 picks a free port."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietRequestHandler)
    label = name or getattr(app, "__class__", type(app)).__name__
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"serve-{label}", daemon=True
    )
    thread.start()
    return RunningServer(name=label, host=host, port=server.port, server=server, thread=thread)
