"""The customer-webhook POST, safe against SSRF: the one way calbot calls a URL a user typed.

At send time the URL is checked again (`netguard.check_url`: https only, every address the name
resolves to public) and the connection goes to one of the addresses that check returned, never to a
second lookup's answer, so a name that is re-pointed at a private address between the check and the
connect (DNS rebinding) is never reached. TLS is still verified for the URL's host name (SNI and the
certificate's name), as if the name had been resolved normally. Redirects are not followed (a 3xx is a
failed attempt), the whole exchange is bounded by `timeout` (10 s; a watchdog closes the socket
however slowly the receiver drips bytes), and at most `max_body` bytes of the answer are read.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 4096
USER_AGENT = "calbot-webhooks/1.0"

Check = Callable[[str], list[str]]


@dataclass(frozen=True)
class PostResult:
    status: int | None  # the receiver's status; None when it never answered
    error: str | None  # our short reason when not delivered (no URL, no body: safe to store and log)
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error is None


def _open(address: tuple[str, int], timeout: float | None) -> socket.socket:
    """The one place a receiver's socket is opened (to an address the check returned)."""
    return socket.create_connection(address, timeout)


def _default_check(url: str) -> list[str]:
    from calbot import netguard

    return netguard.check_url(url)


class _Pinned(http.client.HTTPSConnection):
    """An HTTPS connection whose TCP goes to a fixed address while TLS verifies the host name."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = _open((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


class _PinnedPlain(http.client.HTTPConnection):
    """Plain HTTP to a fixed address: only ever reached for an origin netguard was told to allow (the
    local stack's receiver); a deployed stack allows none."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = _open((self._address, self.port), self.timeout)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float = TIMEOUT_SECONDS,
    max_body: int = MAX_RESPONSE_BYTES,
    check: Check | None = None,
    tls: ssl.SSLContext | None = None,
) -> PostResult:
    """POST `body` to `url` (see the module docstring). Never raises for what the receiver or the
    network does: the result says what happened."""
    started = time.monotonic()

    def result(status: int | None, error: str | None) -> PostResult:
        return PostResult(status, error, time.monotonic() - started)

    try:
        addresses = (check or _default_check)(url)
    except Exception as exc:  # netguard.UnsafeUrl, or the name does not resolve
        return result(None, f"unsafe_url: {exc}"[:200])
    if not addresses:
        return result(None, "unsafe_url: no address")
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    last_error = "connect_failed"
    for address in addresses:
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            return result(None, "timeout")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = _Pinned(host, port, address, remaining, tls or ssl.create_default_context())
        else:
            conn = _PinnedPlain(host, port, address, remaining)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            conn.close()
            return result(None, f"tls_error: {exc.reason or type(exc).__name__}")
        except TimeoutError:
            conn.close()
            return result(None, "timeout")
        except OSError as exc:
            conn.close()
            last_error = f"connect_failed: {exc.strerror or type(exc).__name__}"
            continue
        return _exchange(conn, target, body, headers, started, timeout, max_body, result)
    return result(None, last_error)


def _exchange(
    conn: http.client.HTTPConnection,
    target: str,
    body: bytes,
    headers: dict[str, str],
    started: float,
    timeout: float,
    max_body: int,
    result: Callable[[int | None, str | None], PostResult],
) -> PostResult:
    """Send and read the answer on a connected socket, closed by a watchdog at the deadline."""
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        _shutdown(conn.sock)

    watchdog = threading.Timer(max(0.0, timeout - (time.monotonic() - started)), kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request(
            "POST",
            target,
            body=body,
            headers={
                **headers,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Connection": "close",
            },
        )
        response = conn.getresponse()
        status = response.status
        response.read(max_body)  # and never more: the rest is dropped with the connection
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError):
            return result(None, "timeout")
        return result(None, f"receive_failed: {type(exc).__name__}")
    finally:
        watchdog.cancel()
        conn.close()
    if expired.is_set():
        return result(status, "timeout")
    if 300 <= status < 400:
        return result(status, "redirect_not_followed")
    if not 200 <= status < 300:
        return result(status, f"http_{status}")
    return result(status, None)


def _shutdown(sock: Any) -> None:
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
