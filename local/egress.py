"""Nothing the local stack sends to a customer's webhook leaves this machine.

A webhook registered on the local stack may name a public https URL (registration only checks that it
is public, as deployed: the tests and samples register some), and its events are then delivered like
any other. The stack replaces calbot.webhook_http's one socket opener with this guard: an address that
is not loopback is refused as a closed port would be (the attempt fails and is retried, as for a
receiver that is down), so only the stack's own receiver sink is ever reached.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_installed: dict[str, Any] = {}


def loopback_only(address: tuple[str, int], timeout: float | None) -> socket.socket:
    host = address[0]
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local:
        raise ConnectionRefusedError(
            111, "Connection refused (the local stack sends nothing off this machine)"
        )
    return socket.create_connection(address, timeout)


def keep_webhooks_local() -> None:
    """Install the guard in calbot.webhook_http (idempotent)."""
    from calbot import webhook_http

    if "original" not in _installed:
        _installed["original"] = webhook_http._open
    webhook_http._open = loopback_only


def restore() -> None:
    from calbot import webhook_http

    if "original" in _installed:
        webhook_http._open = _installed.pop("original")
