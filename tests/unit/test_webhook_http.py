"""The SSRF-safe webhook POST (calbot.webhook_http) against receivers on this machine: a 2xx delivers;
a redirect, a slow receiver, a huge answer, a refused address and a bad certificate each fail the
attempt, fast and without reading more than the cap; the connection goes to the address the check
returned (the URL's name is never looked up again) with TLS verified for that name."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from calbot import webhook_http

RECEIVED: list[dict[str, Any]] = []
HUGE = 20 * 1024 * 1024


class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        RECEIVED.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.path == "/redirect":
            self._answer(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"})
        elif self.path == "/slow":
            time.sleep(3)
            self._answer(200, b"late")
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                time.sleep(0.05)
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(HUGE))
            self.end_headers()
            chunk = b"y" * 65536
            try:
                for _ in range(HUGE // len(chunk)):
                    self.wfile.write(chunk)
            except OSError:
                return
        elif self.path == "/error":
            self._answer(500, b"boom")
        else:
            self._answer(204, b"")

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (the slow receiver's answer)


def _serve(server: http.server.ThreadingHTTPServer) -> Iterator[int]:
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def plain() -> Iterator[int]:
    yield from _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver))


def _cert(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for `name` it signed: (ca file, cert file, key file)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (tmp / "ca.pem", tmp / "leaf.pem", tmp / "leaf.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    ca, cert, key = _cert(tmp_path_factory.mktemp("tls"), "receiver.example")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for port in _serve(server):
        yield port, ca


def loopback(url: str) -> list[str]:
    """Stands in for netguard's check in these tests: every name is 127.0.0.1 (our receivers)."""
    return ["127.0.0.1"]


def _post(url: str, **kwargs: Any) -> webhook_http.PostResult:
    return webhook_http.post(url, b'{"id":"evt_1"}', {"webhook-id": "evt_1"}, check=loopback, **kwargs)


def test_a_2xx_delivers_and_the_connection_goes_to_the_checked_address(plain: int) -> None:
    # receiver.invalid never resolves: the POST reaching our receiver went to the checked address.
    result = _post(f"http://receiver.invalid:{plain}/hook?x=1")
    assert result.ok and result.status == 204 and result.error is None
    got = RECEIVED[-1]
    assert got["path"] == "/hook?x=1" and got["body"] == b'{"id":"evt_1"}'
    assert got["headers"]["webhook-id"] == "evt_1"
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["headers"]["Host"] == f"receiver.invalid:{plain}"


def test_a_redirect_is_not_followed_and_fails(plain: int) -> None:
    before = len(RECEIVED)
    result = _post(f"http://receiver.invalid:{plain}/redirect")
    assert not result.ok and result.status == 302 and result.error == "redirect_not_followed"
    assert len(RECEIVED) == before + 1  # nothing went to the Location


def test_a_non_2xx_fails_with_its_status(plain: int) -> None:
    result = _post(f"http://receiver.invalid:{plain}/error")
    assert not result.ok and result.status == 500 and result.error == "http_500"


def test_a_slow_receiver_times_out(plain: int) -> None:
    started = time.monotonic()
    result = _post(f"http://receiver.invalid:{plain}/slow", timeout=0.5)
    assert not result.ok and result.error == "timeout" and result.status is None
    assert time.monotonic() - started < 2.9  # the receiver answers after 3 s: we did not wait for it


def test_a_dripping_answer_is_cut_at_the_deadline(plain: int) -> None:
    started = time.monotonic()
    result = _post(f"http://receiver.invalid:{plain}/drip", timeout=1.0, max_body=4096)
    assert not result.ok and result.error == "timeout"
    assert time.monotonic() - started < 4.5  # the whole drip takes 5 s


def test_a_huge_answer_is_never_read_beyond_the_cap(plain: int) -> None:
    started = time.monotonic()
    result = _post(f"http://receiver.invalid:{plain}/huge")
    assert result.ok and result.status == 200
    assert time.monotonic() - started < 2  # 20 MB were never read


def test_the_default_timeout_and_cap() -> None:
    assert webhook_http.TIMEOUT_SECONDS == 10.0 and webhook_http.MAX_RESPONSE_BYTES <= 4096


def test_nothing_listening_fails_without_raising() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _post(f"http://receiver.invalid:{port}/")
    assert not result.ok and result.status is None and result.error and "connect_failed" in result.error


def test_tls_is_verified_for_the_url_name_while_connecting_to_the_checked_address(
    tls: tuple[int, Path],
) -> None:
    port, ca = tls
    trusting = ssl.create_default_context(cafile=str(ca))
    result = _post(f"https://receiver.example:{port}/hook", tls=trusting)
    assert result.ok, result
    # The same server under another name: its certificate does not match, the attempt fails.
    wrong = _post(f"https://other.example:{port}/hook", tls=trusting)
    assert not wrong.ok and wrong.error and wrong.error.startswith("tls_error")
    # And a certificate no trusted CA signed fails with the default (system) trust.
    untrusted = _post(f"https://receiver.example:{port}/hook")
    assert not untrusted.ok and untrusted.error and untrusted.error.startswith("tls_error")


def test_an_unsafe_url_is_refused_before_any_connection() -> None:
    def refuse(url: str) -> list[str]:
        raise ValueError("resolves to a private address")

    result = webhook_http.post("https://rebound.example/", b"{}", {}, check=refuse)
    assert not result.ok and result.status is None
    assert result.error == "unsafe_url: resolves to a private address"


def test_the_local_stack_guard_refuses_every_address_but_loopback(plain: int) -> None:
    from local import egress

    egress.keep_webhooks_local()
    try:
        attempted: list[str] = []

        def public(url: str) -> list[str]:
            attempted.append(url)
            return ["93.184.215.14"]

        result = webhook_http.post("https://public.example/hook", b"{}", {}, check=public, timeout=2)
        assert not result.ok and result.error and result.error.startswith("connect_failed")
        assert _post(f"http://receiver.invalid:{plain}/hook").ok  # loopback still goes through
    finally:
        egress.restore()
    assert webhook_http._open is not egress.loopback_only


@pytest.mark.parametrize("address", ["10.1.2.3", "127.0.0.1", "169.254.169.254", "::ffff:192.168.0.9"])
def test_a_name_resolving_to_a_private_address_at_send_time_is_refused(address: str) -> None:
    """The URL passed netguard when it was registered; at send time its name now resolves to a private
    address (DNS rebinding): the real check runs again before any connection and refuses it."""
    import socket

    from calbot import netguard

    def rebound(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    opened: list[Any] = []
    original = webhook_http._open
    webhook_http._open = lambda *a: opened.append(a)  # type: ignore[assignment,misc,return-value]
    try:
        result = webhook_http.post(
            "https://hooks.customer.example/x",
            b"{}",
            {},
            check=lambda url: netguard.check_url(url, resolve=rebound),
        )
    finally:
        webhook_http._open = original
    assert not result.ok and result.status is None
    assert result.error and result.error.startswith("unsafe_url")
    assert opened == []  # no connection was even attempted
