"""Our identifiers: stable, opaque, and unique across users, providers and accounts."""

from __future__ import annotations

import base64
import hashlib

from calbot.models import account_key


def _digest(*parts: str) -> str:
    raw = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return base64.b32encode(raw).decode().rstrip("=").lower()[:26]


def event_id(user_id: str, provider: str, account_id: str, platform_id: str) -> str:
    """Same provider event seen again -> same id; the same provider id in another account -> another id."""
    return "evt_" + _digest(user_id, provider, account_key(account_id), platform_id)
