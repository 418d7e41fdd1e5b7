"""Access tokens for a connection: cached until near expiry, refreshed at most once at a time.

A token comes from this container's memory, else from the shared encrypted DynamoDB cache
(calbot.tokencache); the credential store (SSM or the `dynamodb` backend, calbot.vault) is read only when
a refresh is needed. Microsoft rotates refresh tokens, so a refresh that returns a new one writes it back;
a refresh that returns none (Google) writes nothing. A per-account lock makes sure concurrent
invocations never race two refreshes of the same token; the loser reads the shared cache (never the
credential store) and uses the winner's access token.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NoReturn

from tenacity import RetryCallState, retry_if_exception_type, wait_fixed

from calbot import store, tokencache, vault
from calbot.models import Connection, Credentials
from calbot.providers import get_provider
from calbot.providers.base import ProviderAuthError, ProviderUnavailable
from calbot.retry import retrying
from calbot.timeutil import now

EARLY_REFRESH = timedelta(minutes=5)
# A rotated refresh token is written back only when the stored one is at least this old. Rotation does
# not revoke the old token (PROTOCOLS: it lives 90 days from its own issue), so the stored one stays good
# for 90 days minus this from the last write; hourly refreshes then cost one PutParameter a day instead
# of 24 (tests/service/test_credentials.py refreshes hourly for 120 days on the Graph emulator).
PERSIST_ROTATED_AFTER = timedelta(days=1)
# How long an invocation waits for another one's refresh of the same token, and how often it looks.
LOCK_WAIT_SECONDS = 10.0
LOCK_POLL_SECONDS = 0.2
# How long a refresh lock stands unless released (a refresh takes a few seconds at most).
LOCK_TTL_SECONDS = 30


def _fresh(token: tokencache.CachedAccessToken | None) -> bool:
    return bool(
        token is not None
        and token.access_token
        and token.expires_at
        and token.expires_at - EARLY_REFRESH > now()
    )


def _stale(creds: Credentials) -> bool:
    """The stored refresh token is old enough to be replaced by a rotated one (or of unknown age)."""
    issued = creds.refresh_token_issued_at
    return issued is None or now() - issued >= PERSIST_ROTATED_AFTER


def _cached(path: str) -> tokencache.CachedAccessToken | None:
    """This container's token if still fresh, else the shared cache's (which may be fresher)."""
    mine = tokencache.remembered(path)
    return mine if _fresh(mine) else tokencache.shared(path)


def access_token(conn: Connection) -> str:
    """A valid access token for the connection. Raises ProviderAuthError when the credentials are dead.

    A good refresh also proves the credentials alive: a connection marked needs_reauth goes back to
    active (a wrong mark, e.g. from a transient failure, never strands an account).
    """
    path = conn.credential_path
    cached = _cached(path)
    if cached is not None and _fresh(cached):
        return cached.access_token
    lock_name = refresh_lock_name(conn)
    lock, cached = _lock_or_refreshed(path, lock_name)
    if lock is None and cached is not None:
        return cached.access_token
    # A good refresh leaves its lock to expire (LOCK_TTL_SECONDS): whoever waits for it finds the new
    # token in the shared cache before trying it again, and the next refresh is due an hour later. A
    # release would be one more write unit on every refresh (~1.2 million a day at 100,000 users). A
    # failed refresh releases it, so that a waiter may try at once; so does forget_access_token.
    try:
        cached = tokencache.shared(path)  # someone may have refreshed meanwhile
        if cached is not None and _fresh(cached):
            return cached.access_token
        creds = vault.secrets(path)
        if creds is None:
            raise ProviderAuthError(
                "The stored credentials for this account are missing.", kind="credentials_missing"
            )
        tokens = get_provider(conn.provider).refresh(creds)
        if tokens.refresh_token and tokens.refresh_token != creds.refresh_token and _stale(creds):
            # Microsoft's die 90 days after their own issue: a rotated one replaces an aging stored one
            vault.put_secrets(
                path,
                creds.model_copy(
                    update={"refresh_token": tokens.refresh_token, "refresh_token_issued_at": now()}
                ),
            )
        tokencache.put(path, tokens.access_token, tokens.expires_at)
        if conn.status == "needs_reauth":
            store.restore_connection(conn.user_id, conn.provider, conn.account_id)
        return tokens.access_token
    except BaseException:
        if lock is not None:
            store.release_lock(lock_name, lock)
        raise


def refresh_lock_name(conn: Connection) -> str:
    return f"TOKEN#{conn.user_id}#{conn.provider}#{conn.key}"


def _lock_or_refreshed(path: str, lock_name: str) -> tuple[str | None, tokencache.CachedAccessToken | None]:
    """The refresh lock, or no lock and a fresh token once the holder's refresh lands in the cache.

    A busy lock is tried again every LOCK_POLL_SECONDS on the core's clock for LOCK_WAIT_SECONDS (never
    past the deadline), re-reading the shared cache (not the credential store) before each try; then
    ProviderUnavailable.
    """
    waited = False

    def attempt() -> tuple[str | None, tokencache.CachedAccessToken | None]:
        nonlocal waited
        if waited:
            latest = tokencache.shared(path)
            if _fresh(latest):
                return None, latest
        waited = True
        return store.acquire_lock(lock_name, ttl_seconds=LOCK_TTL_SECONDS), None

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
    """Drop a cached access token the provider refused (401), in memory and shared, so the next call
    refreshes, and the lock of the refresh that made it (left to expire), so that call does not wait for
    it. (Should another refresh hold it at that moment, one more may run beside it: both get valid
    tokens.)"""
    tokencache.forget(conn.credential_path)
    store.break_lock(refresh_lock_name(conn))
