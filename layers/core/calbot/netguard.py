"""SSRF defence for customer webhook URLs: where we may POST on a user's behalf.

`check_url` accepts only an `https://` URL without a user:password part whose host is, or resolves
(every one of its addresses) to, a public address: never loopback, private (10/8, 172.16/12,
192.168/16, fc00::/7), link-local (169.254/16, fe80::/10), the cloud metadata addresses
(169.254.169.254, fd00:ec2::254), carrier-grade NAT (100.64/10), unspecified, multicast, reserved or
any other special-purpose range (Python's `ipaddress.is_global`, from the IANA special-purpose
registries). An IPv6 address that carries an IPv4 one (IPv4-mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96,
6to4, Teredo) is judged by the IPv4 address too. It returns the addresses it checked: the sender
connects to one of those (never resolving again, which a rebinding DNS answer could turn private).

The local stack's receiver (plain http on the loopback) is allowed only through the explicit setting
`WEBHOOK_ALLOWED_TEST_ORIGINS`: a comma-separated list of exact origins (`http://<host>:<port>`);
empty by default and in template.yaml, so a deployed stack allows none.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as ResolveTimeout
from typing import Any
from urllib.parse import urlsplit

from calbot.config import get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

# Named for the record (is_global already refuses each): what an attacker aims at first.
BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, with the metadata service at 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local, with AWS's IPv6 metadata service at fd00:ec2::254
        "fe80::/10",
        "ff00::/8",
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# A user's host name may point at a slow or dead name server: a lookup that takes longer than this is a
# refusal, never a request (or a delivery) held for the resolver's own retries.
RESOLVE_TIMEOUT_SECONDS = 5.0
_lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="netguard-dns")


class UnsafeUrl(ValueError):
    """The URL is not one we send to; the message says why (it never echoes a resolved address)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def allowed_test_origins() -> frozenset[str]:
    raw = get_settings().webhook_allowed_test_origins
    return frozenset(o.strip().rstrip("/").lower() for o in raw.split(",") if o.strip())


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether an address is one we may connect to for a user."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None and not is_public(inner):
            return False
        if ip.scope_id:
            return False
    if ip.is_multicast or any(ip in net for net in BLOCKED_NETWORKS if net.version == ip.version):
        return False
    return ip.is_global


def _parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _origin(scheme: str, host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}" if port is not None else f"{scheme}://{shown}"


def _resolve(host: str, port: int, resolve: Resolver) -> list[str]:
    try:
        infos = _lookups.submit(resolve, host, port, type=socket.SOCK_STREAM).result(RESOLVE_TIMEOUT_SECONDS)
    except ResolveTimeout:
        raise UnsafeUrl(f"The host {host} did not resolve within {RESOLVE_TIMEOUT_SECONDS:g} s.") from None
    except (OSError, ValueError) as err:  # gaierror is an OSError; a NUL or a bad IDNA label a ValueError
        raise UnsafeUrl(f"The host {host} does not resolve.") from err
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeUrl(f"The host {host} does not resolve.")
    return addresses


def check_url(url: str, *, resolve: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses `url`'s host resolves to, each of them public; UnsafeUrl when the URL is not one
    we send to (not https, user:password in it, no host, or any address not public)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:
        raise UnsafeUrl("The URL is not valid.") from err
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeUrl("The URL must not contain a user name or password.")
    test_origin = bool(host) and _origin(scheme, host, port) in allowed_test_origins()
    if scheme != "https" and not test_origin:
        raise UnsafeUrl("The URL must use https://.")
    if not host:
        raise UnsafeUrl("The URL has no host.")
    if any(c.isspace() for c in url.strip()) or "\\" in parts.netloc:
        raise UnsafeUrl("The URL is not valid.")
    literal = _parse_ip(host)
    addresses = [str(literal)] if literal is not None else _resolve(host, port or 443, resolve)
    if test_origin:  # the local stack's own receiver, named exactly by the setting
        return addresses
    for address in addresses:
        ip = _parse_ip(address)
        if ip is None or not is_public(ip):
            where = "is" if literal is not None else "resolves to"
            raise UnsafeUrl(
                f"The host {host} {where} a loopback, private, link-local or metadata address; "
                "webhooks are sent only to public addresses."
            )
    return addresses
