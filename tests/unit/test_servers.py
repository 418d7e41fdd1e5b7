"""The local stack's HTTP servers keep connections alive as AWS, Graph and Google do, without mistaking an
unread body for the next request, and still shut down at once with idle connections open."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local.servers import RunningServer, serve


class _App:
    """Answers with the client's port; `/ignore` leaves the request body unread, `/slow` waits."""

    def __init__(self) -> None:
        self.ports: list[str] = []
        self.paths: list[str] = []
        self.nodelay: list[int] = []
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.ports.append(str(environ.get("REMOTE_PORT")))
        path = environ["PATH_INFO"]
        self.paths.append(path)
        self.nodelay.append(environ["werkzeug.socket"].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        if path == "/slow":
            self.release.wait(10)
        body = (
            b""
            if path in ("/ignore", "/slow")
            else environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        )
        out = b"%s:%d" % (path.encode(), len(body))
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
        return [out]


@pytest.fixture
def app() -> _App:
    return _App()


@pytest.fixture
def server(app: _App) -> Iterator[RunningServer]:
    running = serve(app, name="keepalive-test")
    yield running
    running.shutdown()


def test_one_session_reuses_one_connection(server: RunningServer, app: _App) -> None:
    with requests.Session() as session:
        answers = [session.post(f"{server.url}/echo", data=b"x" * n, timeout=5) for n in (1, 2, 3)]
    assert [a.text for a in answers] == ["/echo:1", "/echo:2", "/echo:3"]
    assert all(a.headers.get("Connection", "").lower() != "close" for a in answers)
    assert len(set(app.ports)) == 1  # werkzeug's own handler closes each: three client ports
    # Without TCP_NODELAY a kept connection's response body waits ~40 ms for the delayed ACK of its
    # headers: every call of a test would take that long.
    assert all(app.nodelay)


def test_a_body_the_app_left_unread_is_not_read_as_the_next_request(server: RunningServer, app: _App) -> None:
    with requests.Session() as session:
        first = session.post(f"{server.url}/ignore", data=b"GET /evil HTTP/1.1\r\n\r\n" * 50, timeout=5)
        second = session.post(f"{server.url}/echo", data=b"abc", timeout=5)
    assert (first.text, second.text) == ("/ignore:0", "/echo:3")
    assert app.paths == ["/ignore", "/echo"]
    assert len(set(app.ports)) == 1


def _raw_exchange(server: RunningServer, request: bytes) -> bytes:
    """Send one raw request and read until the server closes (a timeout: it kept the connection)."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_a_chunked_request_is_answered_and_its_connection_closed(server: RunningServer) -> None:
    answer = _raw_exchange(
        server,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer


def test_an_http_1_0_client_has_its_connection_closed(server: RunningServer) -> None:
    answer = _raw_exchange(server, b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"/echo:0")


def test_shutdown_ends_idle_kept_connections_and_finishes_a_request_in_flight(app: _App) -> None:
    running = serve(app, name="keepalive-shutdown")
    idle = requests.Session()
    assert idle.get(f"{running.url}/echo", timeout=5).ok  # left open: its server thread waits on it
    answers: list[requests.Response] = []
    in_flight = threading.Thread(
        target=lambda: answers.append(requests.get(running.url + "/slow", timeout=10))
    )
    in_flight.start()
    for _ in range(1000):  # until the slow request is being served (at most ~10 s)
        if "/slow" in app.paths:
            break
        time.sleep(0.01)
    stopping = threading.Thread(target=running.shutdown)
    stopping.start()
    time.sleep(0.2)
    app.release.set()
    # A hang check, not a speed figure: without ending the idle connection, server_close's join of
    # its thread waits for the handler's 60 s idle timeout.
    stopping.join(timeout=20)
    in_flight.join(timeout=20)
    idle.close()
    assert not stopping.is_alive()
    assert [a.text for a in answers] == ["/slow:0"]
