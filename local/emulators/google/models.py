"""Google emulator state models: the protocol's constants, the records a backend keeps (apps,
accounts, calendars, events, tokens, channels, sync and page states), fault rules, and the token and
id generators that make them look like Google's."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from local.emulators.core.backend import AuthCode
from local.emulators.core.faults import FaultRule

JSON_TYPE = "application/json; charset=UTF-8"


SCOPE_PREFIX = "https://www.googleapis.com/auth/"


SCOPE_CALENDAR_READONLY = SCOPE_PREFIX + "calendar.readonly"


SCOPE_EVENTS_READONLY = SCOPE_PREFIX + "calendar.events.readonly"


SCOPE_EMAIL = SCOPE_PREFIX + "userinfo.email"


SCOPE_PROFILE = SCOPE_PREFIX + "userinfo.profile"


# The `iss` of Google's ID tokens (https://accounts.google.com/.well-known/openid-configuration).
ISSUER = "https://accounts.google.com"


DEFAULT_SCOPES = f"openid {SCOPE_EMAIL} {SCOPE_PROFILE} {SCOPE_CALENDAR_READONLY}"


# Short names Google accepts and reports under their long form.
_SCOPE_ALIASES = {"email": SCOPE_EMAIL, "profile": SCOPE_PROFILE}


# Scopes that may read the calendar list / events (calendar.events* cannot list calendars).
_CALENDAR_LIST_SCOPES = {
    SCOPE_PREFIX + "calendar",
    SCOPE_CALENDAR_READONLY,
    SCOPE_PREFIX + "calendar.calendarlist",
    SCOPE_PREFIX + "calendar.calendarlist.readonly",
}


_EVENT_SCOPES = _CALENDAR_LIST_SCOPES | {
    SCOPE_PREFIX + "calendar.events",
    SCOPE_EVENTS_READONLY,
    SCOPE_PREFIX + "calendar.events.owned",
    SCOPE_PREFIX + "calendar.events.owned.readonly",
}


ACCESS_TOKEN_SECONDS = 3599


AUTH_CODE_LIFETIME = timedelta(minutes=10)


TESTING_APP_REFRESH_LIFETIME = timedelta(days=7)  # refresh tokens of apps in "testing" publishing status


CHANNEL_DEFAULT_TTL_SECONDS = 604800  # 7 days


CHANNEL_MAX_TTL_SECONDS = 30 * 86400  # Google caps events.watch channels at about a month


LIST_DEFAULT_MAX = 250


LIST_HARD_MAX = 2500


CALENDAR_LIST_DEFAULT_MAX = 100


CALENDAR_LIST_HARD_MAX = 250


_MAX_PAGE_STATES = 5000


_EVENT_ID_ALPHABET = "abcdefghijklmnopqrstuv0123456789"  # base32hex, what Google event ids use


_CHANNEL_ID_RE = re.compile(r"^[A-Za-z0-9\-_+/=]{1,64}$")


@dataclass
class GoogleApp:
    client_id: str
    client_secret: str
    redirect_uris: list[str]  # empty: any http(s) redirect_uri is accepted
    testing: bool = False  # "testing" publishing status: refresh tokens die after 7 days
    secret_expired: bool = False
    deleted: bool = False


@dataclass
class GoogleEvent:
    """A stored event: single, recurring master, or an instance exception (moved / edited / cancelled).

    Timed events hold aware datetimes in `zone`; all-day events hold naive midnights (end exclusive).
    Exceptions are keyed by the instance id they replace and keep `original_start`.
    """

    id: str
    calendar_id: str
    summary: str
    description: str
    location: str | None
    status: str  # confirmed | tentative | cancelled
    zone: str  # IANA
    all_day: bool
    start: datetime
    end: datetime
    created: datetime
    updated: datetime
    ical_uid: str
    organizer_email: str
    organizer_name: str
    recurrence: list[str] | None = None
    recurring_event_id: str | None = None
    original_start: datetime | None = None
    hangout_link: str | None = None
    conference: dict[str, Any] | None = None
    attendees: list[dict[str, Any]] = field(default_factory=list)
    sequence: int = 0
    seq: int = 0  # the calendar's change sequence at this item's last change
    etag: str = ""


@dataclass
class GoogleCalendar:
    id: str
    summary: str
    primary: bool
    access_role: str  # owner | writer | reader | freeBusyReader
    time_zone: str
    background_color: str
    color_id: str
    list_seq: int  # account calendar-list sequence when added
    events: dict[str, GoogleEvent] = field(default_factory=dict)
    change_seq: int = 0
    deleted: bool = False


@dataclass
class GoogleAccount:
    id: str  # the OpenID `sub`: 21 digits
    email: str
    name: str
    given_name: str
    family_name: str
    time_zone: str
    picture: str
    apps: list[str] = field(default_factory=list)  # client ids the account is registered with
    consents: dict[str, list[str]] = field(default_factory=dict)  # client id -> granted scopes
    calendars: dict[str, GoogleCalendar] = field(default_factory=dict)
    list_seq: int = 0

    def matches(self, ref: str) -> bool:
        return ref == self.id or ref.lower() == self.email.lower()


@dataclass
class _RefreshToken:
    token: str
    client_id: str
    account_id: str
    scopes: list[str]
    issued_at: datetime
    revoked: bool = False


@dataclass(kw_only=True)
class _AuthCode(AuthCode):
    give_refresh_token: bool


@dataclass
class _Channel:
    id: str
    resource_id: str
    resource_uri: str
    token: str | None
    address: str
    expiration: datetime
    account_id: str
    client_id: str
    calendar_id: str
    created_at: datetime
    stopped: bool = False
    message_number: int = 0


@dataclass
class _SyncState:
    kind: str  # events | calendarList
    account_id: str
    calendar_id: str | None
    seq: int
    time_min: datetime | None
    issued_at: datetime


@dataclass
class _PageState:
    signature: tuple[Any, ...]
    items: list[dict[str, Any]]
    offset: int
    end_token: str  # nextSyncToken handed out on the last page


@dataclass
class _Query:
    single_events: bool
    time_min: datetime | None
    time_max: datetime | None
    show_deleted: bool
    order_by: str | None
    updated_min: datetime | None


def _new_access_token() -> str:
    # Real ones are ~220-260 characters today (Google documents room for up to 2,048 bytes).
    return "ya29.a0" + secrets.token_urlsafe(180)


def _new_refresh_token() -> str:
    return "1//0" + secrets.token_urlsafe(75)


def _new_auth_code() -> str:
    return "4/0" + secrets.token_urlsafe(54)


def _new_event_id() -> str:
    return "".join(secrets.choice(_EVENT_ID_ALPHABET) for _ in range(26))


def _new_sub() -> str:
    return str(10**20 + secrets.randbelow(9 * 10**20))


def _normalize_scopes(scopes: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(_SCOPE_ALIASES.get(s, s) for s in scopes if s))


@dataclass(kw_only=True)
class GoogleFault(FaultRule):
    """API paths answer the Google error JSON with `reason` (default by status: 403/429
    rateLimitExceeded, 500/503 backendError, ...); the token endpoint answers `{"error": <error>,
    "error_description": <message>}`."""

    outcome_fields = ("reason", "error")

    reason: str | None = None  # Calendar / userinfo paths: the errors[0].reason
