"""Access tokens for a connection: cached in the vault until near expiry, refreshed at most once at a time.

Microsoft rotates refresh tokens, so every refresh writes the new one back. A per-account lock makes
sure concurrent invocations never race two refreshes of the same token; the loser re-reads the vault
and uses the winner's access token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NoReturn

from tenacity import RetryCallState, retry_if_exception_type, wait_fixed

from calbot import store, vault
from calbot.models import Connection, Credentials
from calbot.providers import get_provider
from calbot.providers.base import ProviderAuthError, ProviderUnavailable
from calbot.retry import retrying
from calbot.timeutil import now

EARLY_REFRESH = timedelta(minutes=5)
# How long an invocation waits for another one's refresh of the same token, and how often it looks.
LOCK_WAIT_SECONDS = 10.0
LOCK_POLL_SECONDS = 0.2


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
    lock, creds = _lock_or_refreshed(conn, creds, lock_name)
    if lock is None:
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


def _lock_or_refreshed(
    conn: Connection, creds: Credentials, lock_name: str
) -> tuple[str | None, Credentials]:
    """The refresh lock, or no lock and fresh credentials once the holder's refresh lands in the vault.

    A busy lock is tried again every LOCK_POLL_SECONDS on the core's clock for LOCK_WAIT_SECONDS (never
    past the deadline), re-reading the vault before each try; then ProviderUnavailable.
    """
    latest, waited = creds, False

    def attempt() -> tuple[str | None, Credentials]:
        nonlocal latest, waited
        if waited:
            latest = vault.get(conn.credential_path) or latest
            if _fresh(latest):
                return None, latest
        waited = True
        return store.acquire_lock(lock_name, ttl_seconds=30), latest

    def busy(_: RetryCallState) -> NoReturn:
        raise ProviderUnavailable("A token refresh for this account is already in progress.")

    attempts = retrying(
        retry=retry_if_exception_type(store.LockBusy),
        attempts=round(LOCK_WAIT_SECONDS / LOCK_POLL_SECONDS) + 1,
        wait=wait_fixed(LOCK_POLL_SECONDS),
        retry_error_callback=busy,
    )
    return attempts(attempt)


def forget_access_token(conn: Connection) -> None:
    """Drop a cached access token the provider refused (401), so the next call refreshes."""
    creds = vault.get(conn.credential_path)
    if creds and creds.access_token:
        vault.put(
            conn.credential_path,
            creds.model_copy(update={"access_token": None, "access_token_expires_at": None}),
        )
