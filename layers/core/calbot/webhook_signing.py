"""Standard Webhooks signatures (https://www.standardwebhooks.com): what a customer's receiver verifies.

A delivery carries three headers: `webhook-id` (the event id, the same on every retry, so receivers
dedupe by it), `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`: `v1,` and the
base64 HMAC-SHA256 of `"<id>.<timestamp>.<body>"`, keyed by the bytes the base64 part of the
`whsec_…` secret decodes to. While two secrets sign (the 24 h after a rotation) both signatures are
sent, space-separated, so a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret (the prefix is optional, as the libraries accept)."""
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(raw, validate=True)


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of this delivery."""
    signed = f"{webhook_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed by every secret given."""
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signature(s, webhook_id, timestamp, body) for s in secrets),
    }
