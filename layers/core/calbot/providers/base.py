"""The interface every calendar provider implements, and the errors they raise.

Services above this line never know which provider they talk to. Errors are split by what the caller
must do: `ProviderAuthError` (credentials are dead: mark the connection needs_reauth),
`ProviderUnavailable` (throttled, 5xx, timeout: try again later, never needs_reauth), and
`ProviderRequestError` (the provider refused this one request, e.g. 403/404 on a calendar).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from calbot.models import CalendarInfo, Credentials, ProviderName


class ProviderError(Exception):
    """Base class. `message` is safe to show to the user and to log: it never contains a token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProviderAuthError(ProviderError):
    def __init__(self, message: str, *, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # invalid_grant | invalid_client | credentials_missing | unauthorized
        self.code = code  # e.g. AADSTS70008

    @property
    def revoked(self) -> bool:
        """Proof the credentials are dead, the only reason to mark a connection needs_reauth.

        A 401 from the API (`unauthorized`), even right after a successful refresh, is not: the token
        endpoint just vouched for the grant, so it is retried later like any transient failure.
        """
        return self.kind != "unauthorized"


class ProviderUnavailable(ProviderError):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.error = error  # the token endpoint's `error`, when it answered one (never invalid_grant/client)


class ProviderRequestError(ProviderError):
    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class SyncTokenExpired(ProviderError):
    """The stored delta link / sync token is no longer valid: drop it and do a full sync."""


@dataclass
class NormalizedEvent:
    """One event or occurrence, provider-neutral, times in UTC."""

    platform_id: str
    calendar_id: str
    start: datetime
    end: datetime
    event_type: str = "single"  # single | occurrence | exception
    title: str | None = None
    ical_uid: str | None = None
    is_all_day: bool = False
    timezone: str | None = None
    organizer_email: str | None = None
    location: str | None = None
    meeting_url: str | None = None
    meeting_platform: str | None = None
    is_cancelled: bool = False
    series_platform_id: str | None = None
    original_start: datetime | None = None
    recurrence_rule: str | None = None
    recurrence: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class CalendarChanges:
    """What one calendar sync returned: changed events, removed provider ids, and the cursor to store."""

    upserts: list[NormalizedEvent]
    removed: list[str]
    cursor: str
    full: bool
    pages: int = 0
    detail_fetches: int = 0  # masters / exceptions fetched (once each per sync)


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None  # None when the provider did not rotate it
    expires_at: datetime
    scope: str

    def __repr__(self) -> str:
        return f"TokenSet(expires_at={self.expires_at!r}, scope={self.scope!r})"


@dataclass(frozen=True)
class AccountProfile:
    account_id: str  # primary email as the provider reports it
    email: str | None
    name: str | None
    provider_user_id: str


@dataclass(frozen=True)
class ProviderSubscription:
    id: str
    calendar_id: str
    expires_at: datetime
    resource_id: str | None = None  # Google channels need it to stop


class CalendarProvider(ABC):
    name: ProviderName
    display_name: str
    scopes: str
    # Graph answers GET /subscriptions/{id}; Google has no way to read a channel back.
    can_query_subscriptions: bool = True

    @abstractmethod
    def refresh(self, creds: Credentials) -> TokenSet:
        """Exchange the refresh token for an access token (the returned refresh token may be new)."""

    @abstractmethod
    def profile(self, access_token: str) -> AccountProfile: ...

    @abstractmethod
    def sync_calendar(
        self, access_token: str, calendar_id: str, *, cursor: str | None, window: tuple[datetime, datetime]
    ) -> CalendarChanges:
        """Full sync of the window (cursor None) or the changes since `cursor`.

        Raises SyncTokenExpired when the cursor is no longer valid (the caller resyncs fully).
        """

    @abstractmethod
    def list_calendars(self, access_token: str) -> list[CalendarInfo]: ...

    @abstractmethod
    def create_subscription(
        self, access_token: str, *, calendar_id: str, notification_url: str, client_state: str
    ) -> ProviderSubscription: ...

    @abstractmethod
    def get_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        """The subscription if it still exists at the provider, else None."""

    @abstractmethod
    def renew_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        """Extend to the maximum lifetime; None when the provider says it is gone."""

    @abstractmethod
    def delete_subscription(
        self, access_token: str, subscription_id: str, *, resource_id: str | None = None
    ) -> bool:
        """Stop it at the provider; False when it was already gone."""
