"""API keys: generated once, shown once, stored only as a SHA-256 hash, resolved by the authorizer."""

from __future__ import annotations

import re

from calbot import store
from calbot.models import ApiKeyRecord
from calbot.timeutil import now

KEY_PREFIX = "cbk_"
_HEADER = re.compile(r"^\s*(?:Token|Bearer)\s+(\S+)\s*$", re.IGNORECASE)


def new_api_key() -> str:
    import secrets  # only key issuance needs it; keeps the authorizer's cold import lean

    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_id_of(key: str) -> str:
    """A non-secret handle for a key (for listing and revocation): a prefix of its hash."""
    return "key_" + store.hash_api_key(key)[:16]


def issue_api_key(user_id: str, key: str | None = None) -> tuple[str, ApiKeyRecord]:
    key = key or new_api_key()
    record = ApiKeyRecord(
        key_id=key_id_of(key), key_hash=store.hash_api_key(key), user_id=user_id, created_at=now()
    )
    store.put_api_key(record)
    return key, record


def parse_authorization(header: str | None) -> str | None:
    if not header:
        return None
    match = _HEADER.match(header)
    return match.group(1) if match else None


def resolve_key(key: str | None) -> ApiKeyRecord | None:
    """The live key record behind a presented key (None for unknown, revoked or absurd keys)."""
    if not key or len(key) > 512:
        return None
    record = store.get_api_key(store.hash_api_key(key))
    if record is None or record.revoked_at is not None:
        return None
    return record


def user_for_key(key: str | None) -> str | None:
    record = resolve_key(key)
    return record.user_id if record else None


def revoke(*, key: str | None = None, key_id: str | None = None, user_id: str | None = None) -> bool:
    """Revoke by the key itself, or by its key_id (then user_id says whose key it is)."""
    if key:
        return store.delete_api_key(store.hash_api_key(key))
    if key_id and user_id:
        for record in store.list_api_keys(user_id):
            if record.key_id == key_id:
                return store.delete_api_key(record.key_hash)
    return False
