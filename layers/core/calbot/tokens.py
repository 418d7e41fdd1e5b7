"""Access tokens for a connection: cached in the vault until near expiry, refreshed at most once at a time.

Microsoft rotates refresh tokens, so every refresh writes the new one back. A per-account lock makes
sure concurrent invocations never race two refreshes of the same token; the loser re-reads the vault
and uses the winner's access token.
"""

from __future__ import annotations

import time
from datetime import timedelta

from calbot import store, vault
from calbot.models import Connection, Credentials
from calbot.providers import get_provider
from calbot.providers.base import ProviderAuthError, ProviderUnavailable
from calbot.timeutil import now

EARLY_REFRESH = timedelta(minutes=5)


def _fresh(creds: Credentials) -> bool:
    return bool(
        creds.access_token
        and creds.access_token_expires_at
        and creds.access_token_expires_at - EARLY_REFRESH > now()
    )


def access_token(conn: Connection) -> str:
    """A valid access token for the connection. Raises ProviderAuthError when the credentials are dead.

    A good refresh also proves the credentials alive: a connection marked needs_reauth goes back to
    active (a wrong mark, e.g. from a transient failure, never strands an account).
    """
    creds = vault.get(conn.credential_path)
    if creds is None:
        raise ProviderAuthError(
            "The stored credentials for this account are missing.", kind="credentials_missing"
        )
    if _fresh(creds):
        return creds.access_token or ""
    lock_name = f"TOKEN#{conn.user_id}#{conn.provider}#{conn.key}"
    deadline = time.monotonic() + 10
    while True:
        try:
            lock = store.acquire_lock(lock_name, ttl_seconds=30)
            break
        except store.LockBusy:
            if time.monotonic() > deadline:
                raise ProviderUnavailable(
                    "A token refresh for this account is already in progress."
                ) from None
            time.sleep(0.2)
            creds = vault.get(conn.credential_path) or creds
            if _fresh(creds):
                return creds.access_token or ""
    try:
        creds = vault.get(conn.credential_path) or creds  # someone may have refreshed meanwhile
        if _fresh(creds):
            return creds.access_token or ""
        tokens = get_provider(conn.provider).refresh(creds)
        vault.put(
            conn.credential_path,
            creds.model_copy(
                update={
                    # every rotated refresh token is kept: Microsoft's die 90 days after issue
                    "refresh_token": tokens.refresh_token or creds.refresh_token,
                    "access_token": tokens.access_token,
                    "access_token_expires_at": tokens.expires_at,
                }
            ),
        )
        if conn.status == "needs_reauth":
            store.restore_connection(conn.user_id, conn.provider, conn.account_id)
        return tokens.access_token
    finally:
        store.release_lock(lock_name, lock)


def forget_access_token(conn: Connection) -> None:
    """Drop a cached access token the provider refused (401), so the next call refreshes."""
    creds = vault.get(conn.credential_path)
    if creds and creds.access_token:
        vault.put(
            conn.credential_path,
            creds.model_copy(update={"access_token": None, "access_token_expires_at": None}),
        )
