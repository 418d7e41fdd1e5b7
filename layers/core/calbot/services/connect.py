"""Connecting a calendar account: POST /calendar/create_outlook_calendar (and create_calendar).

Order, as the contract states: refresh the token, resolve the account, list every calendar, store the
credentials, register change notifications on every calendar, then write the connection. A failure
after the credential check rolls back what was made (subscriptions at the provider, SUB items, the SSM
parameter), so no half-made connection is ever left behind.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote

from calbot import store, vault, webhook_events
from calbot.config import get_settings
from calbot.errors import Conflict, DomainError, Invalid, ProviderFailed, Unavailable
from calbot.log import logger
from calbot.models import (
    CalendarInfo,
    Connection,
    ConnectionCreated,
    CreateConnectionRequest,
    Credentials,
    FailedCalendar,
    Subscription,
    SubscriptionRef,
)
from calbot.providers import get_provider
from calbot.providers.base import (
    AccountProfile,
    CalendarProvider,
    NotificationUrlRefused,
    ProviderAuthError,
    ProviderError,
    ProviderRequestError,
    ProviderSubscription,
    ProviderUnavailable,
    TokenSet,
)
from calbot.services.connections import connection_view
from calbot.timeutil import now


def webhook_url(base_url: str, user_id: str, provider: str, account_id: str) -> str:
    """The per-account notification URL: one account's notifications can never be taken for another's."""
    return (
        f"{base_url.rstrip('/')}/api/v1/admin/schedule/users/{quote(user_id, safe='')}/"
        f"{provider}/{quote(account_id, safe='')}"
    )


def hash_client_state(client_state: str) -> str:
    return hashlib.sha256(client_state.encode()).hexdigest()


def subscription_record(
    made: ProviderSubscription, client_state: str, user_id: str, provider: str, account_id: str
) -> Subscription:
    """What we keep of a subscription the provider just made: its secret only as a hash, and its handle
    as the provider gave it."""
    return Subscription(
        id=made.id,
        user_id=user_id,
        provider=provider,
        account_id=account_id,
        calendar_id=made.calendar_id,
        client_state_hash=hash_client_state(client_state),
        expires_at=made.expires_at,
        created_at=now(),
        handle=made.handle,
    )


def limit_message(limit: int, provider: str) -> str:
    """The guide's sentence, naming the provider whose connection was refused (the limit itself counts
    Google and Outlook together)."""
    return (
        f"Maximum of {limit} {provider} calendar connections per user reached (Google and Outlook "
        "combined). Disconnect one with DELETE /api/v1/calendar/connections/{provider}/{account_id} "
        "before adding another."
    )


def limit_reached(limit: int, provider: str) -> Invalid:
    return Invalid("connection_limit_reached", limit_message(limit, provider), limit=limit, provider=provider)


# Token-endpoint refusals of what the user sent (an unknown app, a malformed request): transient for a
# connected account (never needs_reauth), but at connect time the answer to bad input is a 400.
_REQUEST_REFUSALS = {"unauthorized_client", "invalid_request", "invalid_scope", "unsupported_grant_type"}


def provider_api_error(err: ProviderError, provider: CalendarProvider) -> DomainError:
    """Map a provider failure during connect to the contract's answer."""
    if isinstance(err, ProviderAuthError):
        return Invalid("invalid_credentials", err.message, reason=err.kind)
    if isinstance(err, ProviderUnavailable) and err.error in _REQUEST_REFUSALS:
        return Invalid("invalid_credentials", err.message, reason=err.error)
    if isinstance(err, ProviderUnavailable):
        return ProviderFailed(
            "provider_unavailable",
            f"{provider.display_name} is unavailable or throttling right now; try again shortly.",
            retry_after=int(err.retry_after) if err.retry_after else None,
        )
    return ProviderFailed("provider_unavailable", f"{provider.display_name} refused a request: {err.message}")


@dataclass
class _Made:
    """What a connect attempt created, so a failure can undo exactly that."""

    subscriptions: list[Subscription] = field(default_factory=list)
    sub_items_written: bool = False
    credential_path: str | None = None


def _credentials(req: CreateConnectionRequest, provider: CalendarProvider) -> Credentials:
    """What the vault keeps: the fields the provider declared in the registry, and its scopes."""
    return Credentials(provider=provider.name, scopes=provider.scopes, **req.credentials())


def connect_account(
    user_id: str, req: CreateConnectionRequest, *, base_url: str
) -> tuple[int, ConnectionCreated]:
    """Connect (201), or replace in place (200). Raises a domain error (calbot.errors) for every refusal."""
    provider = get_provider(req.provider)
    creds = _credentials(req, provider)
    try:
        tokens = provider.refresh(creds)
        profile = provider.profile(tokens.access_token)
    except ProviderError as err:
        raise provider_api_error(err, provider) from None
    # Microsoft rotates refresh tokens: from here on only the new one is good.
    creds = creds.model_copy(
        update={
            "refresh_token": tokens.refresh_token or creds.refresh_token,
            "refresh_token_issued_at": now() if tokens.refresh_token else None,
            # creds.scopes stays what we requested: a response's scope never lists offline_access
            "access_token": tokens.access_token,
            "access_token_expires_at": tokens.expires_at,
        }
    )

    lock_name = f"CONNECT#{user_id}#{provider.name}#{profile.account_id.lower()}"
    try:
        lock = store.acquire_lock(lock_name, ttl_seconds=120)
    except store.LockBusy:
        raise Conflict(
            "connect_in_progress",
            "This account is being connected right now; retry in a moment.",
            account_id=profile.account_id,
        ) from None
    try:
        existing = store.get_connection(user_id, provider.name, profile.account_id)
        if existing is not None:
            if not existing.live:
                raise Conflict(
                    "disconnect_in_progress",
                    f"{existing.account_id} is being disconnected. Finish that with DELETE "
                    "/api/v1/calendar/connections/{provider}/{account_id}, then connect it again.",
                    account_id=existing.account_id,
                )
            if req.replace or existing.status == "needs_reauth":
                conn = _replace(existing, provider, creds, tokens, profile)
                verb = "re-authorized" if existing.status == "needs_reauth" and not req.replace else "updated"
                return 200, _created(
                    conn, f"Connection {conn.account_id} {verb}; events, bots and subscriptions were kept."
                )
            raise Conflict(
                "already_connected",
                f'{existing.account_id} is already connected. Pass "replace": true to update its '
                "credentials in place.",
                account_id=existing.account_id,
            )
        limit = get_settings().connection_limit
        if store.count_connections(user_id) >= limit:
            raise limit_reached(limit, provider.name)
        conn = _create(user_id, provider, creds, tokens, profile, base_url=base_url, limit=limit)
        webhook_events.emit_connection(conn, webhook_events.CONNECTION_CREATED)
        return 201, _created(conn, f"Connected {conn.account_id} with {len(conn.calendars)} calendar(s).")
    finally:
        store.release_lock(lock_name, lock)


def _created(conn: Connection, message: str) -> ConnectionCreated:
    return ConnectionCreated(**connection_view(conn).model_dump(), message=message)


def _create(
    user_id: str,
    provider: CalendarProvider,
    creds: Credentials,
    tokens: TokenSet,
    profile: AccountProfile,
    *,
    base_url: str,
    limit: int,
) -> Connection:
    made = _Made()
    try:
        calendars = provider.list_calendars(tokens.access_token)
        url = webhook_url(base_url, user_id, provider.name, profile.account_id)
        made.credential_path = vault.credential_path(user_id, provider.name, profile.account_id)
        vault.put(made.credential_path, creds)
        failed = _register(provider, tokens.access_token, calendars, url, user_id, profile.account_id, made)
        timestamp = now()
        conn = Connection(
            user_id=user_id,
            provider=provider.name,
            account_id=profile.account_id,
            user_email=profile.email,
            user_name=profile.name,
            status="active",
            primary_calendar_id=_primary(calendars),
            calendars=calendars,
            subscriptions=[SubscriptionRef.of(s) for s in made.subscriptions],
            failed_calendars=failed,
            webhook_url=url,
            credential_path=made.credential_path,
            created_at=timestamp,
            updated_at=timestamp,
        )
        made.sub_items_written = True
        store.put_subscriptions(made.subscriptions)
        store.create_connection(conn, limit=limit)
        return conn
    except BaseException as err:
        _rollback(provider, tokens.access_token, made)
        if isinstance(err, store.ConnectionExists):
            raise Conflict(
                "already_connected",
                f"{profile.account_id} is already connected.",
                account_id=profile.account_id,
            ) from None
        if isinstance(err, store.ConnectionLimitReached):
            raise limit_reached(limit, provider.name) from None
        if isinstance(err, ProviderError):
            raise provider_api_error(err, provider) from None
        raise


def _primary(calendars: list[CalendarInfo]) -> str | None:
    for cal in calendars:
        if cal.is_primary:
            return cal.id
    return calendars[0].id if calendars else None


class _WebhookUnreachable(Unavailable):
    def __init__(self, provider: CalendarProvider) -> None:
        super().__init__(
            "service_unavailable",
            f"{provider.display_name} could not validate our notification URL; the service's "
            "public base URL is misconfigured or unreachable. Nothing was connected.",
        )


def _register(
    provider: CalendarProvider,
    token: str,
    calendars: list[CalendarInfo],
    url: str,
    user_id: str,
    account_id: str,
    made: _Made,
) -> list[FailedCalendar]:
    """One subscription per calendar, each with its own fresh secret (never one per event).

    A refusal on a secondary calendar (some shared calendars cannot be watched) is recorded in
    failed_calendars; a failure on the primary calendar, a failed validation handshake, or an
    unavailable provider aborts the whole connect.
    """
    failed: list[FailedCalendar] = []
    primary = _primary(calendars)
    for cal in calendars:
        client_state = secrets.token_urlsafe(48)  # 64 chars; Graph allows 128
        try:
            sub = provider.create_subscription(
                token, calendar_id=cal.id, notification_url=url, client_state=client_state
            )
        except NotificationUrlRefused:
            raise _WebhookUnreachable(provider) from None
        except ProviderRequestError as err:
            if cal.id == primary:
                raise
            logger.warning("subscription refused for a secondary calendar", extra={"status": err.status})
            failed.append(
                FailedCalendar(calendar_id=cal.id, error="subscription_failed", message=err.message)
            )
            continue
        made.subscriptions.append(subscription_record(sub, client_state, user_id, provider.name, account_id))
    return failed


def _rollback(provider: CalendarProvider, token: str, made: _Made) -> None:
    """Undo a failed connect. Each step is best effort and independent of the others."""
    for sub in made.subscriptions:
        try:
            provider.delete_subscription(token, sub.id, handle=sub.handle)
        except Exception as err:  # the subscription expires on its own; the webhook drops unknown ids
            logger.warning("rollback: could not delete a subscription", extra={"error": type(err).__name__})
    if made.sub_items_written:
        try:
            store.delete_subscriptions(s.id for s in made.subscriptions)
        except Exception:
            logger.exception("rollback: could not delete subscription items")
    if made.credential_path:
        try:
            vault.delete(made.credential_path)
        except Exception:
            logger.exception("rollback: could not delete the credential parameter")


def _replace(
    existing: Connection,
    provider: CalendarProvider,
    creds: Credentials,
    tokens: TokenSet,
    profile: AccountProfile,
) -> Connection:
    """Update credentials and scopes in place; keep events, bots and live subscriptions.

    Subscriptions are re-registered only where missing (expired, deleted at the provider, or a calendar
    that is new since the last connect); subscriptions of calendars that no longer exist are dropped.
    """
    made = _Made()
    try:
        calendars = provider.list_calendars(tokens.access_token)
        calendar_ids = {c.id for c in calendars}
        live: list[SubscriptionRef] = []
        stale: list[SubscriptionRef] = []
        for ref in existing.subscriptions:
            current: ProviderSubscription | None = None
            if ref.expires_at > now() and ref.calendar_id in calendar_ids:
                known = ProviderSubscription(ref.id, ref.calendar_id, ref.expires_at, dict(ref.handle))
                current = provider.get_subscription(tokens.access_token, known)
            if current is None:
                stale.append(ref)
            else:
                live.append(ref.model_copy(update={"expires_at": current.expires_at}))
        watched = {ref.calendar_id for ref in live}
        missing = [c for c in calendars if c.id not in watched]
        failed = _register(
            provider,
            tokens.access_token,
            missing,
            existing.webhook_url,
            existing.user_id,
            existing.account_id,
            made,
        )
        made.sub_items_written = True
        store.put_subscriptions(made.subscriptions)
        vault.put(existing.credential_path, creds)
        conn = existing.model_copy(
            update={
                "user_email": profile.email or existing.user_email,
                "user_name": profile.name or existing.user_name,
                "status": "active",
                "status_reason": None,
                "primary_calendar_id": _primary(calendars),
                "calendars": calendars,
                "subscriptions": live + [SubscriptionRef.of(s) for s in made.subscriptions],
                "failed_calendars": failed,
                "updated_at": now(),
            }
        )
        store.save_connection(conn)
    except BaseException as err:
        made.credential_path = None  # the existing parameter stays; only new subscriptions are undone
        _rollback(provider, tokens.access_token, made)
        if isinstance(err, ProviderError):
            raise provider_api_error(err, provider) from None
        if isinstance(err, KeyError):
            raise Conflict(
                "connection_changed",
                "The connection was removed while it was being updated; connect it again.",
            ) from None
        raise
    for ref in stale:  # best effort: they are gone or expiring anyway
        try:
            provider.delete_subscription(tokens.access_token, ref.id, handle=ref.handle)
        except ProviderError:
            pass
    store.delete_subscriptions(ref.id for ref in stale)
    return conn
