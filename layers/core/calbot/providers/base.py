"""The interface every calendar provider implements, and the errors they raise.

Services above this line never know which provider they talk to. Errors are split by what the caller
must do: `ProviderAuthError` (credentials are dead: mark the connection needs_reauth),
`ProviderUnavailable` (throttled, 5xx, timeout: try again later, never needs_reauth), and
`ProviderRequestError` (the provider refused this one request, e.g. 403/404 on a calendar).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from calbot.models import CalendarInfo, Credentials, Handle


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


class NotificationUrlRefused(ProviderRequestError):
    """The provider could not validate our notification URL when asked to watch a calendar (Graph's
    handshake failed): the service's public base URL is wrong or unreachable, not the account."""


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
    organizer_name: str | None = None
    response_status: str = "none"  # organizer | accepted | tentative | declined | none
    is_organizer: bool = False
    attendees_count: int = 0
    attendee_domains: list[str] = field(default_factory=list)
    location: str | None = None
    meeting_url: str | None = None
    meeting_platform: str | None = None
    is_cancelled: bool = False
    series_platform_id: str | None = None
    original_start: datetime | None = None
    recurrence_rule: str | None = None
    recurrence: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def capped(self) -> NormalizedEvent:
        """This event with its stored text fields bounded (see TEXT_FIELD_LIMIT)."""
        url = self.meeting_url if self.meeting_url and len(self.meeting_url) <= URL_LIMIT else None
        return replace(
            self,
            title=_cut(self.title, TEXT_FIELD_LIMIT),
            location=_cut(self.location, TEXT_FIELD_LIMIT),
            organizer_email=_cut(self.organizer_email, TEXT_FIELD_LIMIT),
            organizer_name=_cut(self.organizer_name, TEXT_FIELD_LIMIT),
            ical_uid=_cut(self.ical_uid, TEXT_FIELD_LIMIT),
            timezone=_cut(self.timezone, TEXT_FIELD_LIMIT),
            meeting_url=url,
            meeting_platform=self.meeting_platform if url else None,
        )


# What one stored event may hold, whatever the provider sent: a DynamoDB item must stay under 400 KB,
# and every KB costs a write unit on each change. A 1 MB invitation or a 5,000-person meeting is stored
# trimmed, with counts, and syncs like any other event.
TEXT_FIELD_LIMIT = 1_024  # title, location, organizer, iCalUID, zone as stored fields
URL_LIMIT = 2_048  # a longer "meeting link" is not one a bot can join
RAW_BODY_LIMIT = 1_000  # the HTML body / description kept in raw (the link is already extracted)
RAW_STRING_LIMIT = 2_000  # any other string in raw
RAW_LIST_LIMIT = 25  # attendees (and any other list) kept in raw; the full count is kept beside it
RAW_MAX_BYTES = 16_384  # past this (as JSON), raw keeps only its small top-level fields


DOMAIN_LIMIT = 50  # attendee domains kept per event (what the external/internal rule reads)
DOMAIN_BYTES = 255  # a DNS name is at most 253 characters


@dataclass(frozen=True)
class Attendance:
    """What the auto-schedule rules read of a meeting's people: never the attendee list itself."""

    organizer_email: str | None = None
    organizer_name: str | None = None
    response_status: str = "none"  # organizer | accepted | tentative | declined | none
    is_organizer: bool = False
    attendees_count: int = 0  # the people invited besides the organizer (rooms not counted)
    attendee_domains: list[str] = field(default_factory=list)


def email_domain(address: Any) -> str | None:
    """The lower-case domain of an address, None when it has none."""
    if not isinstance(address, str) or "@" not in address:
        return None
    domain = address.rsplit("@", 1)[1].strip().strip(".").lower()
    return domain if domain and len(domain) <= DOMAIN_BYTES else None


def domains_of(addresses: list[Any]) -> list[str]:
    """The distinct domains of `addresses`, in order of first appearance, at most DOMAIN_LIMIT."""
    out: list[str] = []
    for address in addresses:
        domain = email_domain(address)
        if domain and domain not in out:
            out.append(domain)
            if len(out) >= DOMAIN_LIMIT:
                break
    return out


def _cut(value: Any, limit: int) -> Any:
    return value[:limit] if isinstance(value, str) and len(value) > limit else value


def _cap_value(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value, RAW_STRING_LIMIT)
    if isinstance(value, dict):
        return {k: _cap_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap_value(v) for v in value[:RAW_LIST_LIMIT]]
    return value


def cap_raw(payload: dict[str, Any], *, body: str) -> dict[str, Any]:
    """A provider payload as we store it: its body (`body`: "body" for Graph, "description" for
    Google) and every string cut, lists (attendees) cut with their full count kept, and the whole
    bounded by RAW_MAX_BYTES. Nothing here is needed to sync: the meeting link and times are read from
    the full payload before this."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key == body and isinstance(value, dict) and isinstance(value.get("content"), str):
            if len(value["content"]) > RAW_BODY_LIMIT:
                value = {**value, "content": value["content"][:RAW_BODY_LIMIT], "truncated": True}
        elif key == body and isinstance(value, str) and len(value) > RAW_BODY_LIMIT:
            value = value[:RAW_BODY_LIMIT]
            out[f"{key}_truncated"] = True
        if isinstance(value, list) and len(value) > RAW_LIST_LIMIT:
            out[f"{key}_count"] = len(value)  # e.g. attendees_count: the meeting's real size
        out[key] = _cap_value(value)
    if len(json.dumps(out, default=str)) > RAW_MAX_BYTES:
        out = {k: v for k, v in out.items() if not isinstance(v, dict | list) or len(json.dumps(v)) < 512}
        out["raw_truncated"] = True
        if len(json.dumps(out, default=str)) > RAW_MAX_BYTES:  # a great many small fields: keep the ids
            out = {k: out[k] for k in ("id", "iCalUId", "iCalUID", "type", "status") if k in out}
            out["raw_truncated"] = True
    return out


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
    # The provider's own data about it, stored with the subscription and handed back to the provider
    # (e.g. the resource id a Google channel is stopped by). Nothing else reads it.
    handle: Handle = field(default_factory=dict)


class CalendarProvider(ABC):
    name: str  # as registered (calbot.providers.registry)
    display_name: str
    scopes: str

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
    def get_subscription(self, access_token: str, known: ProviderSubscription) -> ProviderSubscription | None:
        """The subscription as the provider has it now, or None when it is gone. `known` is what we
        stored (a provider that cannot read a subscription back answers from it)."""

    @abstractmethod
    def renew_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        """Extend to the maximum lifetime; None when the provider says it is gone."""

    @abstractmethod
    def delete_subscription(self, access_token: str, subscription_id: str, *, handle: Handle) -> bool:
        """Stop it at the provider (`handle`: what it returned when it was made, {} when unknown); False
        when it was already gone."""
