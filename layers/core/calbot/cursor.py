"""Opaque, tamper-evident page cursors: base64url JSON + an HMAC bound to the user and the query.

The signing key is a random secret kept as an SSM SecureString, created on first use (race-safe) and
read through calbot.params, so a rotated key is used within params.PARAMETER_MAX_AGE_SECONDS.
A cursor from another user, another query, or an edited one is rejected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from typing import Any

from botocore.exceptions import ClientError

from calbot import aws, params
from calbot.config import get_settings
from calbot.errors import Invalid

# Tests may pin a key here; production leaves it None and reads SSM.
_key: bytes | None = None
_lock = threading.Lock()
# Names this container made sure exist (create-once, never overwritten), with the client that did it:
# a new client (aws.reset_clients, another endpoint) checks again.
_created: dict[str, Any] = {}


def _signing_key() -> bytes:
    if _key is not None:
        return _key
    name = f"{get_settings().ssm_prefix}/internal/cursor-signing-key"
    client = aws.ssm()
    with _lock:
        if _created.get(name) is not client:
            try:
                client.put_parameter(
                    Name=name, Value=secrets.token_hex(32), Type="SecureString", Overwrite=False
                )
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") != "ParameterAlreadyExists":
                    raise
            _created[name] = client
    return bytes.fromhex(params.get_secure(name))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(user_id: str, scope: str, payload: str) -> str:
    return _b64(
        hmac.new(_signing_key(), f"{user_id}\n{scope}\n{payload}".encode(), hashlib.sha256).digest()[:18]
    )


def encode(user_id: str, scope: str, data: dict[str, Any]) -> str:
    payload = _b64(json.dumps(data, separators=(",", ":")).encode())
    return f"{payload}.{_mac(user_id, scope, payload)}"


def decode(user_id: str, scope: str, token: str) -> dict[str, Any]:
    """The cursor's data, or 400 invalid_cursor for anything forged, edited or from another query."""
    payload, _, mac = token.partition(".")
    # Our cursors are pure ASCII; anything else is forged, and compare_digest raises TypeError on
    # non-ASCII str (and a lone surrogate cannot even be encoded for the MAC), which would be a 500.
    valid = token.isascii() and payload and mac
    if not valid or not hmac.compare_digest(mac, _mac(user_id, scope, payload)):
        raise Invalid(
            "invalid_cursor", "The cursor is not valid for this request; start from the first page."
        )
    try:
        data = json.loads(_unb64(payload))
    except ValueError:
        raise Invalid("invalid_cursor", "The cursor is not valid for this request.") from None
    if not isinstance(data, dict):
        raise Invalid("invalid_cursor", "The cursor is not valid for this request.")
    return data


def scope_of(listing: str, params: dict[str, Any]) -> str:
    """A digest of the listing and the query a cursor belongs to (cursor and paging-only fields
    excluded). `listing` names the endpoint that issues the cursor ("events" for GET /calendar/events
    and its read-only twin /calendar/get_events, which page the same rows; "scheduled_bots"): a cursor
    is refused by any other listing, even one whose query digest would match."""
    stable = {
        k: v for k, v in sorted(params.items()) if k not in {"cursor", "sync", "limit"} and v is not None
    }
    return hashlib.sha256(f"{listing}\n{json.dumps(stable, default=str)}".encode()).hexdigest()[:16]
