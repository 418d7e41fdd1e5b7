"""Emulator of Google OAuth 2.0 (token + authorize + userinfo) and the Google Calendar API v3.

One WSGI app serves every path, so the local stack points `GOOGLE_OAUTH_BASE_URL=<url>` (token
endpoint `<url>/token`, consent page `<url>/o/oauth2/v2/auth`), `GOOGLE_USERINFO_URL=<url>/v1/userinfo`
and `GOOGLE_CALENDAR_BASE_URL=<url>/calendar/v3` at the same server. It follows
/work/shared/PROTOCOLS.md, including the unpleasant parts: refresh tokens never rotate (the token
answer has no `refresh_token`), a code exchange only returns one for `access_type=offline` on a first
consent (or with `prompt=consent`), apps in "testing" status get refresh tokens that die after 7 days,
token errors are the bare `{"error", "error_description"}` of oauth2.googleapis.com (401 for
`invalid_client`), Calendar errors are `{"error": {"errors": [{domain, reason, message, ...}], "code",
"message"}}`, calendar scopes are enforced (403 insufficientPermissions), ids carry `@`, `_` and
base32hex, and event times come back as RFC 3339 with the event's own offset.

Events: single events, recurring masters with RFC 5545 `recurrence` lines (RRULE / EXDATE / RDATE,
expanded with dateutil in the event's own zone, so 09:00 Berlin stays 09:00 across DST) and instance
exceptions (moved, edited or cancelled instances, keyed by their instance id
`<masterId>_<YYYYMMDDTHHMMSSZ>` or `<masterId>_<YYYYMMDD>` for all-day series). Deleting or cancelling
anything leaves a `status: "cancelled"` tombstone, as Google does.

Sync: the list's last page carries `nextSyncToken`; a later call with `syncToken` answers only what
changed since (cancelled items as bare `{kind, etag, id, status}` plus `recurringEventId` /
`originalStartTime` for instances), hands back the same token when nothing changed, rejects
timeMin/timeMax/orderBy/updatedMin/showDeleted=false (400 syncTokenWithRequestRestrictions) and
answers 410 fullSyncRequired (location syncToken) once the token is forgotten (`expire_sync_tokens`,
or older than `sync_token_max_age_seconds`). Expansion bounds, the choice this emulator makes:
without `timeMax`, recurring series expand up to now + `expansion_horizon_days` (default 365) of
emulator time; on an incremental call with `singleEvents=true`, a changed (or deleted) series lists
its instances from the first sync's `timeMin` (else the series start) up to the same horizon, so a
client must not expect cancelled instances beyond it (Google also bounds this, to months).

Push: `POST .../events/watch` creates a web_hook channel (default ttl 604800 s, silently capped at
`channel_max_ttl_seconds`, default 30 days) and sends a `sync` message at once; every later change to
that calendar sends `exists` (changes within `notification_coalesce_seconds` share one message), a
deleted calendar sends `not_exists`. Messages are body-less POSTs with the X-Goog-* headers, sent
from background threads (never under the lock), retried with backoff on 5xx / no answer like Google,
logged for tests (`notifications()`), and held / released / awaited with pause / resume / flush.

Faults, the request log, the clock (`advance_clock`: expires access tokens, auth codes, channels) and
the control API under `/_control` mirror the Graph emulator (local/emulators/graph.py).
Never import the production package (`calbot`) from here, and never the other way round.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import itertools
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests as _http
from dateutil import rrule as _rr
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from local.emulators.common import EmulatorControls, signing_key
from local.emulators.core.delivery import LOOPBACK_HOSTS
from local.emulators.core.delivery import is_loopback_url as _is_loopback_url
from local.emulators.core.errors import EmulatorError
from local.emulators.core.errors import check_fields as _check_fields
from local.emulators.core.errors import number as _number
from local.emulators.core.helpers import UNSET
from local.emulators.core.helpers import b64url as _b64url
from local.emulators.core.helpers import control_time as _control_time
from local.emulators.core.helpers import localize as _localize
from local.emulators.core.helpers import with_query as _with_query
from local.emulators.core.service import redirect as _redirect

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

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
_INSTANCE_STAMP_RE = re.compile(r"^(\d{8})(?:T(\d{6})Z)?$")
_UNTIL_RE = re.compile(r"UNTIL=(\d{8})(T\d{6}Z?)?", re.IGNORECASE)
_SECRET_QUERY_KEYS = ("token", "code", "secret", "verifier")
_MSG_401 = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_MSG_410 = "Sync token is no longer valid, a full sync is required."
# (domain, reason, message) of the errors a fault produces when it names only a status.
_DEFAULT_FAULT_ERROR: dict[int, tuple[str, str, str]] = {
    400: ("global", "badRequest", "Bad Request"),
    401: ("global", "authError", "Invalid Credentials"),
    403: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    404: ("global", "notFound", "Not Found"),
    409: ("global", "duplicate", "The requested identifier already exists."),
    410: ("calendar", "fullSyncRequired", _MSG_410),
    429: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("global", "backendError", "Backend Error"),
    503: ("global", "backendError", "Backend Error"),
}
_REASON_MESSAGES = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Calendar usage limits exceeded."),
    "backendError": ("global", "Backend Error"),
    "authError": ("global", "Invalid Credentials"),
    "fullSyncRequired": ("calendar", _MSG_410),
    "forbidden": ("global", "Forbidden"),
}

# Change-notification delivery knobs (GoogleEmulator keyword arguments, POST /_control/notifications/config).
NOTIFICATION_DEFAULTS: dict[str, Any] = {
    "notification_delay_seconds": 0.0,  # real seconds waited before a message is first sent
    "notification_coalesce_seconds": 0.1,  # changes to one channel within this window share one message
    "notification_timeout_seconds": 3.0,  # no answer within this = failed attempt
    "notification_retry_backoff": (1.0, 2.0, 4.0),  # waits between attempts (5xx / no answer only)
}


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class _OAuthError(Exception):
    """An oauth2.googleapis.com error: `{"error": ..., "error_description": ...}`."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status, self.error, self.description = status, error, description


class _ApiError(Exception):
    """A Google API error: `{"error": {"errors": [{domain, reason, message, ...}], "code", "message"}}`."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str = "parameter",
        status_text: str | None = None,
        top_message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message, self.domain = status, reason, message, domain
        self.location, self.location_type, self.status_text = location, location_type, status_text
        self.top_message = top_message or message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location is not None:
            item.update(locationType=self.location_type, location=self.location)
        error: dict[str, Any] = {"errors": [item], "code": self.status, "message": self.top_message}
        if self.status_text:
            error["status"] = self.status_text
        return {"error": error}


def _unauthenticated() -> _ApiError:
    return _ApiError(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
        status_text="UNAUTHENTICATED",
        top_message=_MSG_401,
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
    )


def _insufficient_scopes() -> _ApiError:
    return _ApiError(
        403,
        "insufficientPermissions",
        "Insufficient Permission",
        status_text="PERMISSION_DENIED",
        top_message="Request had insufficient authentication scopes.",
    )


def _not_found() -> _ApiError:
    return _ApiError(404, "notFound", "Not Found")


def _invalid_param(name: str, message: str | None = None) -> _ApiError:
    return _ApiError(400, "invalid", message or "Invalid Value", location=name)


# --------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------


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


@dataclass
class _AccessToken:
    token: str
    client_id: str
    account_id: str
    scopes: list[str]
    expires_at: datetime


@dataclass
class _AuthCode:
    code: str
    client_id: str
    account_id: str
    redirect_uri: str
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str
    give_refresh_token: bool
    expires_at: datetime
    redeemed: bool = False


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


_FAULT_KEYS = {
    "path",
    "method",
    "account",
    "status",
    "reason",
    "error",
    "message",
    "retry_after",
    "times",
    "delay",
}


@dataclass
class GoogleFault:
    id: str
    path: str
    pattern: re.Pattern[str]
    method: str | None
    account: str | None
    status: int | None
    reason: str | None  # Calendar / userinfo paths: the errors[0].reason
    error: str | None  # token endpoint: the OAuth "error"
    message: str | None
    retry_after: int | None
    times: int  # -1: until cleared
    delay: float
    hits: int = 0

    @property
    def active(self) -> bool:
        return self.times < 0 or self.hits < self.times

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "method": self.method,
            "account": self.account,
            "status": self.status,
            "reason": self.reason,
            "error": self.error,
            "message": self.message,
            "retry_after": self.retry_after,
            "times": self.times,
            "delay": self.delay,
            "hits": self.hits,
            "remaining": -1 if self.times < 0 else max(0, self.times - self.hits),
        }


@dataclass
class _Delivery:
    id: str
    generation: int
    channel_id: str
    state: str  # sync | exists | not_exists
    backoff: tuple[float, ...]
    attempt: int = 0
    message_number: int = 0
    delayed: bool = False


@dataclass
class _Ctx:
    account_id: str | None = None
    client_id: str | None = None
    fault_id: str | None = None


@dataclass
class _Query:
    single_events: bool
    time_min: datetime | None
    time_max: datetime | None
    show_deleted: bool
    order_by: str | None
    updated_min: datetime | None


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


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


def _rfc3339_ms(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _etag(updated: datetime, seq: int) -> str:
    return f'"{_ms(updated)}{seq % 1000:03d}"'


def _zone_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise EmulatorError("time_zone must be an IANA zone name, e.g. 'Europe/Berlin'")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise EmulatorError(f"unknown time zone {name!r}: use an IANA name, e.g. 'Europe/Berlin'") from None
    return name


def _normalize_scopes(scopes: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(_SCOPE_ALIASES.get(s, s) for s in scopes if s))


def _instance_stamp(original: datetime, all_day: bool) -> str:
    if all_day:
        return original.strftime("%Y%m%d")
    return original.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _parse_instance_id(event_id: str) -> tuple[str, str] | None:
    master, sep, stamp = event_id.rpartition("_")
    if not sep or not master or not _INSTANCE_STAMP_RE.match(stamp):
        return None
    return master, stamp


def _stamp_datetime(stamp: str, tz: ZoneInfo, all_day: bool) -> datetime | None:
    match = _INSTANCE_STAMP_RE.match(stamp)
    if match is None or all_day != (match.group(2) is None):
        return None
    if all_day:
        return datetime.strptime(match.group(1), "%Y%m%d")
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).astimezone(tz)


def _time_json(value: datetime, zone: str, all_day: bool) -> dict[str, str]:
    if all_day:
        return {"date": value.date().isoformat()}
    text = value.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")
    return {"dateTime": text.replace("+00:00", "Z"), "timeZone": zone}


def _parse_rfc3339(raw: str, name: str) -> datetime:
    """A timeMin/timeMax/updatedMin value: RFC 3339 with a mandatory offset, else 400."""
    text = raw.strip()
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _ApiError(400, "badRequest", "Bad Request") from None
    if "T" not in text.upper() or value.tzinfo is None:
        raise _ApiError(400, "badRequest", "Bad Request")
    return value.astimezone(UTC)


def _parse_bool(raw: str | None, name: str, default: bool) -> bool:
    if raw is None:
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise _invalid_param(name, f"Invalid boolean value: '{raw}'.")


def _redact_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [
        (k, "<redacted>" if any(word in k.lower() for word in _SECRET_QUERY_KEYS) else v) for k, v in pairs
    ]
    return urlencode(shown)


def _meet_link(code: str | None = None) -> str:
    if code is None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        parts = ["".join(secrets.choice(letters) for _ in range(n)) for n in (3, 4, 3)]
        code = "-".join(parts)
    return f"https://meet.google.com/{code}"


def _conference_for(link: str) -> dict[str, Any]:
    code = link.rstrip("/").rsplit("/", 1)[-1]
    return {
        "entryPoints": [
            {"entryPointType": "video", "uri": link, "label": link.split("://", 1)[-1]},
        ],
        "conferenceSolution": {
            "key": {"type": "hangoutsMeet"},
            "name": "Google Meet",
            "iconUri": "https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/web-512dp/logo_meet_2020q4_color_2x_web_512dp.png",
        },
        "conferenceId": code,
    }


def _notification_knobs(changes: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(changes) - set(NOTIFICATION_DEFAULTS))
    if unknown:
        raise EmulatorError(
            f"unknown notification setting(s): {', '.join(unknown)}; "
            f"known: {', '.join(NOTIFICATION_DEFAULTS)}"
        )
    config = dict(base)
    for name, raw in changes.items():
        if name == "notification_retry_backoff":
            if not isinstance(raw, list | tuple) or len(raw) > 20:
                raise EmulatorError(f"{name} must be a list of at most 20 waits in seconds, got {raw!r}")
            config[name] = tuple(_number(wait, name, minimum=0) for wait in raw)
        else:
            config[name] = _number(raw, name, minimum=0, strict=name == "notification_timeout_seconds")
    return config


# Recurrence ---------------------------------------------------------------------------------------


def _split_line(line: str) -> tuple[str, dict[str, str], str]:
    head, sep, value = line.partition(":")
    if not sep:
        raise EmulatorError(f"recurrence line without ':': {line!r}")
    name, *params = head.split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.upper()] = val
    return name.upper(), parsed, value


def _date_values(params: dict[str, str], value: str, tz: ZoneInfo, master: GoogleEvent) -> list[datetime]:
    """EXDATE / RDATE values as datetimes comparable with the series' instances."""
    zone = ZoneInfo(params["TZID"]) if "TZID" in params else tz
    out = []
    for raw in value.split(","):
        raw = raw.strip()
        if params.get("VALUE", "").upper() == "DATE" or len(raw) == 8:
            day = datetime.strptime(raw, "%Y%m%d")
            if master.all_day:
                out.append(day)
            else:
                out.append(_localize(datetime.combine(day.date(), master.start.time()), tz))
        elif raw.endswith("Z"):
            moment = datetime.strptime(raw, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            out.append(moment.replace(tzinfo=None) if master.all_day else moment)
        else:
            naive = datetime.strptime(raw, "%Y%m%dT%H%M%S")
            out.append(naive if master.all_day else _localize(naive, zone))
    return out


def _rrule_value(value: str, tz: ZoneInfo, all_day: bool) -> str:
    """UNTIL in the form dateutil accepts for this series (UTC for timed, a date for all-day)."""

    def fix(match: re.Match[str]) -> str:
        day, rest = match.group(1), match.group(2) or ""
        if all_day:
            return f"UNTIL={day}"
        if rest.upper().endswith("Z"):
            return f"UNTIL={day}{rest.upper()}"
        local = datetime.strptime(day + (rest[1:] if rest else "235959"), "%Y%m%d%H%M%S")
        return "UNTIL=" + _localize(local, tz).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    return _UNTIL_RE.sub(fix, value)


def _rule_set(master: GoogleEvent) -> _rr.rruleset:
    assert master.recurrence is not None
    tz = ZoneInfo(master.zone)
    rset = _rr.rruleset()
    rset.rdate(master.start)  # DTSTART is always the first instance (RFC 5545)
    for line in master.recurrence:
        name, params, value = _split_line(line)
        if name == "RRULE":
            rset.rrule(_rr.rrulestr(_rrule_value(value, tz, master.all_day), dtstart=master.start))
        elif name == "EXRULE":
            rset.exrule(_rr.rrulestr(_rrule_value(value, tz, master.all_day), dtstart=master.start))
        elif name == "EXDATE":
            for moment in _date_values(params, value, tz, master):
                rset.exdate(moment)
        elif name == "RDATE":
            for moment in _date_values(params, value, tz, master):
                rset.rdate(moment)
        else:
            raise EmulatorError(f"unsupported recurrence line {line!r}: RRULE, EXRULE, EXDATE or RDATE")
    return rset


def _check_recurrence(lines: object, master: GoogleEvent) -> list[str]:
    if not isinstance(lines, list) or not all(isinstance(x, str) and x for x in lines) or not lines:
        raise EmulatorError('recurrence must be a list of lines, e.g. ["RRULE:FREQ=WEEKLY;BYDAY=MO"]')
    probe = GoogleEvent(**{**master.__dict__, "recurrence": list(lines)})
    try:
        rset = _rule_set(probe)
        list(itertools.islice(rset, 3))
    except EmulatorError:
        raise
    except (ValueError, TypeError, KeyError, ZoneInfoNotFoundError) as exc:
        raise EmulatorError(f"bad recurrence {lines!r}: {exc}") from None
    return list(lines)


# --------------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------------


class GoogleEmulator(EmulatorControls):
    """Google OAuth 2.0 + Calendar API v3 emulator; a WSGI app (`wsgi_app`, or the instance)."""

    def __init__(
        self,
        *,
        expansion_horizon_days: int = 365,
        channel_max_ttl_seconds: int = CHANNEL_MAX_TTL_SECONDS,
        sync_token_max_age_seconds: float | None = None,
        notification_delay_seconds: float = 0.0,
        notification_coalesce_seconds: float = 0.1,
        notification_timeout_seconds: float = 3.0,
        notification_retry_backoff: Sequence[float] = (1.0, 2.0, 4.0),
    ) -> None:
        self.expansion_horizon = timedelta(days=expansion_horizon_days)
        self.channel_max_ttl = channel_max_ttl_seconds
        self.sync_token_max_age = (
            timedelta(seconds=sync_token_max_age_seconds) if sync_token_max_age_seconds is not None else None
        )
        self._lock = threading.RLock()
        self._deliveries_changed = threading.Condition(self._lock)
        self._notification_defaults = _notification_knobs(
            {
                "notification_delay_seconds": notification_delay_seconds,
                "notification_coalesce_seconds": notification_coalesce_seconds,
                "notification_timeout_seconds": notification_timeout_seconds,
                "notification_retry_backoff": notification_retry_backoff,
            },
            NOTIFICATION_DEFAULTS,
        )
        self._generation = 0
        self._service_map = Map(self._service_rules(), strict_slashes=False, merge_slashes=False)
        self._control_map = Map(self._control_rules(), strict_slashes=False, merge_slashes=False)
        self.reset()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.wsgi_app(environ, start_response)

    # ----------------------------------------------------------------------------------------------
    # Python control API (the /_control routes call these)
    # ----------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (apps, accounts, tokens, channels, faults, logs, clock offset)."""
        with self._lock:
            self._apps: dict[str, GoogleApp] = {}
            self._accounts: dict[str, GoogleAccount] = {}
            self._refresh_tokens: dict[str, _RefreshToken] = {}
            self._access_tokens: dict[str, _AccessToken] = {}
            self._auth_codes: dict[str, _AuthCode] = {}
            self._channels: dict[str, _Channel] = {}
            self._sync_tokens: dict[str, _SyncState] = {}
            self._pages: dict[str, _PageState] = {}
            self._faults: list[GoogleFault] = []
            self._log: list[dict[str, Any]] = []
            self._log_seq = 0
            self._clock_offset = timedelta(0)
            self._generation += 1
            self._notification_config = dict(self._notification_defaults)
            self._notification_log: list[dict[str, Any]] = []
            self._notification_seq = 0
            self._in_flight = 0
            self._open_windows: set[str] = set()  # channel ids with a coalescing window open
            self._delivery_paused = False
            self._queued: list[_Delivery] = []
            self._deliveries_changed.notify_all()

    def advance_clock(self, seconds: float) -> datetime:
        """Move the clock forward: access tokens, codes, channels and testing refresh tokens age."""
        with self._lock:
            self._clock_offset += timedelta(seconds=seconds)
            return self.now()

    # Apps ----------------------------------------------------------------------------------------

    def add_app(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        redirect_uris: list[str] | None = None,
        testing: bool = False,
    ) -> dict[str, Any]:
        """Register (or re-register, reviving) an OAuth client. `redirect_uris` empty = any accepted."""
        with self._lock:
            app = GoogleApp(
                client_id
                or f"{secrets.randbelow(10**12):012d}-{secrets.token_hex(16)}.apps.googleusercontent.com",
                client_secret or "GOCSPX-" + secrets.token_urlsafe(21),
                list(redirect_uris or []),
                testing=bool(testing),
            )
            self._apps[app.client_id] = app
            return {"client_id": app.client_id, "client_secret": app.client_secret}

    def apps(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "client_id": a.client_id,
                    "redirect_uris": list(a.redirect_uris),
                    "testing": a.testing,
                    "secret_expired": a.secret_expired,
                    "deleted": a.deleted,
                }
                for a in self._apps.values()
            ]

    def expire_app_secret(self, client_id: str) -> None:
        """The client's secret stops working: the token endpoint answers 401 invalid_client."""
        with self._lock:
            self._app(client_id).secret_expired = True

    def delete_app(self, client_id: str) -> None:
        """Delete the OAuth client: 401 invalid_client "The OAuth client was not found."."""
        with self._lock:
            self._app(client_id).deleted = True

    # Accounts and tokens -------------------------------------------------------------------------

    def add_account(
        self,
        email: str,
        *,
        name: str | None = None,
        time_zone: str = "UTC",
        client_id: str | None = None,
        scopes: str | None = None,
        consent: bool = True,
        sub: str | None = None,
        calendars: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Create a Google account with its primary calendar (id = the email).

        With `client_id` the account is registered with that app (the authorize page picks it) and,
        unless `consent=False`, has consented and gets a refresh token (in the answer). `calendars`:
        extra calendars (add_calendar arguments).
        """
        with self._lock:
            if not isinstance(email, str) or "@" not in email:
                raise EmulatorError("email must be an address")
            if self._find_account(email) is not None:
                raise EmulatorError(f"account {email!r} already exists", 409)
            zone = _zone_name(time_zone)
            full = name or email.split("@")[0].replace(".", " ").title()
            given, _, family = full.partition(" ")
            acc = GoogleAccount(
                id=sub or _new_sub(),
                email=email,
                name=full,
                given_name=given,
                family_name=family or "",
                time_zone=zone,
                picture=f"https://lh3.googleusercontent.com/a/{hashlib.sha256(email.encode()).hexdigest()[:24]}=s96-c",
            )
            if acc.id in self._accounts:
                raise EmulatorError(f"account sub {acc.id!r} already exists", 409)
            if client_id is not None:
                self._app(client_id)
            self._accounts[acc.id] = acc
            created = [self.add_calendar(acc.id, summary=email, calendar_id=email, primary=True)]
            created += [self.add_calendar(acc.id, **spec) for spec in calendars or []]
            result: dict[str, Any] = {"id": acc.id, "email": acc.email, "calendars": created}
            if client_id is not None:
                acc.apps.append(client_id)
                if consent:
                    result["refresh_token"] = self.issue_refresh_token(acc.id, client_id, scopes)
            return result

    def accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "id": a.id,
                    "email": a.email,
                    "name": a.name,
                    "time_zone": a.time_zone,
                    "apps": list(a.apps),
                    "consents": {c: " ".join(s) for c, s in a.consents.items()},
                    "calendars": [
                        {"id": c.id, "summary": c.summary, "primary": c.primary, "access_role": c.access_role}
                        for c in a.calendars.values()
                        if not c.deleted
                    ],
                }
                for a in self._accounts.values()
            ]

    def issue_refresh_token(self, account: str, client_id: str, scopes: str | None = None) -> str:
        """Consent `client_id` for the account (adding `scopes`) and return a new refresh token."""
        with self._lock:
            acc = self._account(account)
            self._app(client_id)
            if client_id not in acc.apps:
                acc.apps.append(client_id)
            granted = self._consent(acc, client_id, (scopes or DEFAULT_SCOPES).split())
            return self._new_refresh(acc.id, client_id, granted).token

    def revoke(self, account: str, client_id: str | None = None) -> int:
        """Revoke the account's refresh tokens (of one app if given) and that consent: invalid_grant."""
        with self._lock:
            acc = self._account(account)
            count = 0
            for rt in self._refresh_tokens.values():
                if rt.account_id == acc.id and not rt.revoked and client_id in (None, rt.client_id):
                    rt.revoked = True
                    count += 1
            for client in [client_id] if client_id else list(acc.consents):
                acc.consents.pop(client, None)
            return count

    def expire_access_tokens(self, account: str | None = None) -> int:
        """Expire all access tokens (of one account if given); the API then answers 401 authError."""
        with self._lock:
            account_id = self._account(account).id if account else None
            past = self.now() - timedelta(seconds=1)
            expired = 0
            for at in self._access_tokens.values():
                if account_id in (None, at.account_id) and at.expires_at > past:
                    at.expires_at = past
                    expired += 1
            return expired

    def issued_tokens(self) -> dict[str, list[str]]:
        """Every refresh / access token ever issued and every channel token (leak tests grep for them)."""
        with self._lock:
            return {
                "refresh_tokens": list(self._refresh_tokens),
                "access_tokens": list(self._access_tokens),
                "channel_tokens": [c.token for c in self._channels.values() if c.token],
            }

    # Calendars -----------------------------------------------------------------------------------

    def add_calendar(
        self,
        account: str,
        *,
        summary: str,
        calendar_id: str | None = None,
        primary: bool = False,
        access_role: str = "owner",
        time_zone: str | None = None,
        background_color: str = "#9fe1e7",
    ) -> dict[str, Any]:
        """Add a calendar to the account's list (`access_role` reader for a subscribed one)."""
        with self._lock:
            acc = self._account(account)
            if access_role not in ("owner", "writer", "reader", "freeBusyReader"):
                raise EmulatorError("access_role must be owner, writer, reader or freeBusyReader")
            if primary and any(c.primary for c in acc.calendars.values()):
                raise EmulatorError("the account already has a primary calendar")
            cal_id = calendar_id or f"c_{secrets.token_hex(26)}@group.calendar.google.com"
            if cal_id in acc.calendars and not acc.calendars[cal_id].deleted:
                raise EmulatorError(f"calendar {cal_id!r} already exists", 409)
            acc.list_seq += 1
            cal = GoogleCalendar(
                id=cal_id,
                summary=summary,
                primary=primary,
                access_role=access_role,
                time_zone=_zone_name(time_zone or acc.time_zone),
                background_color=background_color,
                color_id=str(1 + len(acc.calendars) % 24),
                list_seq=acc.list_seq,
            )
            acc.calendars[cal.id] = cal
            return {"id": cal.id, "summary": cal.summary, "primary": cal.primary}

    def delete_calendar(self, account: str, calendar_id: str) -> None:
        """Remove a (secondary) calendar: its channels get a `not_exists` message, then stop."""
        with self._lock:
            acc = self._account(account)
            cal = acc.calendars.get(calendar_id)
            if cal is None or cal.deleted:
                raise EmulatorError(f"no calendar {calendar_id!r}", 404)
            if cal.primary:
                raise EmulatorError("the primary calendar cannot be deleted")
            cal.deleted = True
            acc.list_seq += 1
            cal.list_seq = acc.list_seq
            starters = self._queue_state(acc.id, cal.id, "not_exists")
        for start in starters:
            start()

    # Events --------------------------------------------------------------------------------------

    def add_event(
        self,
        account: str,
        calendar_id: str,
        *,
        start: str | datetime | date,
        end: str | datetime | date,
        summary: str = "",
        description: str = "",
        location: str | None = None,
        time_zone: str | None = None,
        all_day: bool = False,
        recurrence: list[str] | None = None,
        status: str = "confirmed",
        meet: bool | str = False,
        conference_data: dict[str, Any] | None = None,
        attendees: list[str | dict[str, Any]] | None = None,
        organizer: str | dict[str, str] | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a single event, or a recurring master when `recurrence` lines are given.

        `start`/`end`: ISO 8601 with an offset (converted into `time_zone`) or naive (read in it);
        all-day events take dates (end exclusive). `time_zone` defaults to the calendar's.
        `meet=True` adds a Google Meet (hangoutLink + conferenceData), a string is its link.
        """
        with self._lock:
            acc = self._account(account)
            cal = self._calendar(acc, calendar_id)
            if event_id is not None:
                if not re.fullmatch(r"[a-v0-9]{5,1024}", event_id):
                    raise EmulatorError("event id must be 5-1024 characters of a-v and 0-9 (base32hex)")
                if self._find_stored(event_id) is not None:
                    raise EmulatorError(f"event id {event_id!r} already exists", 409)
            if status not in ("confirmed", "tentative"):
                raise EmulatorError("status must be confirmed or tentative (cancel_event cancels)")
            zone = _zone_name(time_zone or cal.time_zone)
            begin, finish = self._times(start, end, zone, bool(all_day))
            org_email, org_name = self._organizer(acc, cal, organizer)
            now = self.now()
            ev = GoogleEvent(
                id=event_id or _new_event_id(),
                calendar_id=cal.id,
                summary=str(summary or ""),
                description=str(description or ""),
                location=location or None,
                status=status,
                zone=zone,
                all_day=bool(all_day),
                start=begin,
                end=finish,
                created=now,
                updated=now,
                ical_uid="",
                organizer_email=org_email,
                organizer_name=org_name,
                attendees=self._attendees(acc, attendees),
            )
            ev.ical_uid = f"{ev.id}@google.com"
            self._set_conference(ev, meet, conference_data)
            if recurrence is not None:
                ev.recurrence = _check_recurrence(recurrence, ev)
            self._bump(cal, ev)
            cal.events[ev.id] = ev
            view = self._control_view(ev)
            starters = self._queue_state(acc.id, cal.id, "exists")
        for start_ in starters:
            start_()
        return view

    def update_event(
        self,
        event_id: str,
        *,
        summary: Any = UNSET,
        description: Any = UNSET,
        location: Any = UNSET,
        start: Any = UNSET,
        end: Any = UNSET,
        time_zone: Any = UNSET,
        recurrence: Any = UNSET,
        status: Any = UNSET,
        meet: Any = UNSET,
        conference_data: Any = UNSET,
        attendees: Any = UNSET,
    ) -> dict[str, Any]:
        """Change an event; only the arguments given change (None clears location / meeting).

        A master edit changes the series (instances that vanish because of a new time or recurrence
        are reported cancelled to sync clients). An instance id creates or updates an exception: new
        start/end move that instance. `start` alone keeps the duration.
        """
        with self._lock:
            acc, cal, ev = self._editable(event_id)
            if ev.recurring_event_id and recurrence is not UNSET:
                raise EmulatorError("an instance cannot get a recurrence of its own")
            if status is not UNSET and status not in ("confirmed", "tentative"):
                raise EmulatorError("status must be confirmed or tentative (cancel_event cancels)")
            before = dict(ev.__dict__)
            old_ids = self._series_ids(cal, ev) if ev.recurrence else set()
            try:
                timing = self._apply(
                    ev,
                    acc,
                    summary,
                    description,
                    location,
                    start,
                    end,
                    time_zone,
                    recurrence,
                    status,
                    meet,
                    conference_data,
                    attendees,
                )
            except (EmulatorError, TypeError, ValueError):
                ev.__dict__.update(before)  # all or nothing
                raise
            if timing:
                ev.sequence += 1
            self._bump(cal, ev)
            cal.events[ev.id] = ev  # a new exception is stored once its patch is accepted
            if old_ids and timing:  # also when the series became a single event
                self._retire_instances(cal, ev, old_ids - self._series_ids(cal, ev))
            view = self._control_view(ev)
            starters = self._queue_state(acc.id, cal.id, "exists")
        for start_ in starters:
            start_()
        return view

    def cancel_event(self, event_id: str) -> dict[str, Any]:
        """Cancel (= delete, for Google) a single event, a whole series, or one instance by its id.

        The item stays as a `status: "cancelled"` tombstone; cancelling twice changes nothing.
        """
        with self._lock:
            acc, cal, ev = self._editable(event_id, allow_cancelled=True)
            if ev.status == "cancelled" and ev.id in cal.events:
                return self._control_view(ev)
            ev.status = "cancelled"
            self._bump(cal, ev)
            cal.events[ev.id] = ev
            view = self._control_view(ev)
            starters = self._queue_state(acc.id, cal.id, "exists")
        for start_ in starters:
            start_()
        return view

    delete_event = cancel_event

    def event(self, event_id: str) -> dict[str, Any]:
        """Control view of a stored event or of an instance (by its instance id)."""
        with self._lock:
            _, _, ev = self._editable(event_id, allow_cancelled=True)
            return self._control_view(ev)

    def events(self, account: str) -> list[dict[str, Any]]:
        """Control views of every stored item of the account (masters, exceptions, tombstones)."""
        with self._lock:
            acc = self._account(account)
            return [
                self._control_view(ev)
                for cal in acc.calendars.values()
                if not cal.deleted
                for ev in cal.events.values()
            ]

    def instances(self, event_id: str, start: str | datetime, end: str | datetime) -> list[dict[str, Any]]:
        """The series' live instances (exceptions applied) overlapping [start, end) (naive = UTC)."""
        with self._lock:
            acc, cal, master = self._editable(event_id, allow_cancelled=True)
            if not master.recurrence:
                raise EmulatorError(f"{event_id!r} is not a recurring master")
            utc = ZoneInfo("UTC")
            query = _Query(
                True,
                _control_time(start, utc, "start"),
                _control_time(end, utc, "end"),
                False,
                "startTime",
                None,
            )
            items = self._full_items(acc, cal, query, only_series=master.id)
            return [
                {
                    "id": item["id"],
                    "summary": item.get("summary"),
                    "start": item["start"],
                    "end": item["end"],
                    "original_start": item["originalStartTime"],
                }
                for item in items
            ]

    def expire_sync_tokens(self, account: str) -> int:
        """Forget the account's sync and page tokens: their next use answers 410 fullSyncRequired."""
        with self._lock:
            acc = self._account(account)
            doomed = [t for t, s in self._sync_tokens.items() if s.account_id == acc.id]
            for token in doomed:
                del self._sync_tokens[token]
            for token in [t for t, p in self._pages.items() if p.signature[0] == acc.id]:
                del self._pages[token]
            return len(doomed)

    # Channels, faults, log -----------------------------------------------------------------------

    def channels(self, active_only: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            now = self.now()
            return [
                self._channel_view(c, now)
                for c in self._channels.values()
                if not active_only or (not c.stopped and c.expiration > now)
            ]

    def expire_channel(self, channel_id: str) -> dict[str, Any]:
        """Expire a channel now: it delivers nothing more and channels/stop answers 404."""
        with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise EmulatorError(f"no channel {channel_id!r}", 404)
            channel.expiration = min(channel.expiration, self.now())
            return self._channel_view(channel, self.now())

    def add_fault(
        self,
        *,
        path: str,
        method: str | None = None,
        account: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        error: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> dict[str, Any]:
        """Add a fault rule (first matching active rule wins); returns it with its `id`.

        `path` is a regex searched in the request path. API paths answer the Google error JSON with
        `reason` (default by status: 403/429 rateLimitExceeded, 500/503 backendError, ...); the
        token endpoint answers `{"error": <error>, "error_description": <message>}`. `times` -1 =
        until cleared. A rule with only `delay` slows the request and lets it through.
        """
        try:
            pattern = re.compile(path)
        except re.error as exc:
            raise EmulatorError(f"bad path regex: {exc}") from None
        if status is None and reason is None and error is None and not delay:
            raise EmulatorError("a fault needs status, reason, error or delay")
        if status is not None and not 100 <= int(status) <= 599:
            raise EmulatorError("status must be an HTTP status code")
        if times == 0 or times < -1:
            raise EmulatorError("times must be positive, or -1 for 'until cleared'")
        if delay < 0:
            raise EmulatorError("delay must be >= 0")
        rule = GoogleFault(
            id=uuid.uuid4().hex[:12],
            path=path,
            pattern=pattern,
            method=method.upper() if method else None,
            account=account,
            status=int(status) if status is not None else None,
            reason=reason,
            error=error,
            message=message,
            retry_after=int(retry_after) if retry_after is not None else None,
            times=int(times),
            delay=float(delay),
        )
        with self._lock:
            self._faults.append(rule)
        return rule.to_dict()

    # Notifications -------------------------------------------------------------------------------

    def notification_config(self) -> dict[str, Any]:
        with self._lock:
            return self._config_view()

    def configure_notifications(self, **knobs: Any) -> dict[str, Any]:
        """Change delivery knobs at runtime (all checked before any is applied); returns them all."""
        with self._lock:
            self._notification_config = _notification_knobs(knobs, self._notification_config)
            return self._config_view()

    def notifications(self, channel_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first: url, headers sent, state, message number, status."""
        with self._lock:
            return [
                dict(entry, headers=dict(entry["headers"]))
                for entry in self._notification_log
                if channel_id in (None, entry["channel_id"]) and state in (None, entry["resource_state"])
            ]

    def notification_status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "paused": self._delivery_paused,
                "in_flight": self._in_flight,
                "queued": len(self._queued),
            }

    def flush_notifications(self, timeout: float = 10.0) -> bool:
        """Wait until every delivery in flight (windows, delays, retries) has finished; False on timeout.

        Deliveries held by `pause_notifications` are not waited for.
        """
        with self._deliveries_changed:
            return self._deliveries_changed.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def pause_notifications(self) -> dict[str, Any]:
        with self._lock:
            self._delivery_paused = True
            return self.notification_status()

    def resume_notifications(self) -> dict[str, Any]:
        with self._lock:
            self._delivery_paused = False
            held, self._queued = self._queued, []
            self._in_flight += len(held)
            status = self.notification_status()
        for delivery in held:
            self._launch(delivery)
        return {**status, "released": len(held)}

    # ----------------------------------------------------------------------------------------------
    # Notification delivery: background threads, never sending under the lock
    # ----------------------------------------------------------------------------------------------

    def _config_view(self) -> dict[str, Any]:
        config = dict(self._notification_config)
        config["notification_retry_backoff"] = list(config["notification_retry_backoff"])
        return config

    def _channel_live(self, channel: _Channel) -> bool:
        return not channel.stopped and channel.expiration > self.now()

    def _queue_state(self, account_id: str, calendar_id: str, state: str) -> list[Callable[[], None]]:
        """Queue `state` for every live channel on the calendar (lock held); returns thread starters.

        `exists` messages for one channel coalesce within the configured window.
        """
        starters: list[Callable[[], None]] = []
        window = self._notification_config["notification_coalesce_seconds"]
        for channel in self._channels.values():
            if (channel.account_id, channel.calendar_id) != (account_id, calendar_id):
                continue
            if not self._channel_live(channel):
                continue
            if state == "exists" and window > 0:
                if channel.id in self._open_windows:
                    continue  # an `exists` for this channel is already on its way
                self._open_windows.add(channel.id)
                self._in_flight += 1
                generation = self._generation

                def start_timer(channel_id: str = channel.id, generation: int = generation) -> None:
                    threading.Thread(
                        target=self._close_window,
                        args=(channel_id, window, generation),
                        name="google-coalesce",
                        daemon=True,
                    ).start()

                starters.append(start_timer)
            else:
                delivery = self._new_delivery(channel, state)
                starters.append(functools.partial(self._launch, delivery))
            if state == "not_exists":
                channel.stopped = True  # the resource is gone: nothing after this message
        return starters

    def _new_delivery(self, channel: _Channel, state: str) -> _Delivery:
        self._in_flight += 1
        return _Delivery(
            id=uuid.uuid4().hex[:12],
            generation=self._generation,
            channel_id=channel.id,
            state=state,
            backoff=tuple(self._notification_config["notification_retry_backoff"]),
        )

    def _close_window(self, channel_id: str, window: float, generation: int) -> None:
        time.sleep(window)
        with self._lock:
            if generation != self._generation:
                return
            self._open_windows.discard(channel_id)
            channel = self._channels.get(channel_id)
            delivery = self._new_delivery(channel, "exists") if channel is not None else None
            self._in_flight -= 1
            self._deliveries_changed.notify_all()
        if delivery is not None:
            self._launch(delivery)

    def _launch(self, delivery: _Delivery) -> None:
        threading.Thread(target=self._deliver, args=(delivery,), name="google-notify", daemon=True).start()

    def _deliver(self, d: _Delivery) -> None:
        try:
            if not d.delayed:
                d.delayed = True
                with self._lock:
                    delay = self._notification_config["notification_delay_seconds"]
                if delay:
                    time.sleep(delay)
            while True:
                with self._lock:
                    if d.generation != self._generation:
                        return
                    if self._delivery_paused:
                        self._queued.append(d)
                        return
                    channel = self._channels.get(d.channel_id)
                    if channel is None or channel.expiration <= self.now():
                        return  # expired channels deliver nothing
                    if channel.stopped and d.state != "not_exists":
                        return
                    if d.message_number == 0:
                        channel.message_number += 1
                        d.message_number = channel.message_number
                    d.attempt += 1
                    headers = {
                        "X-Goog-Channel-ID": channel.id,
                        "X-Goog-Channel-Expiration": format_datetime(channel.expiration, usegmt=True),
                        "X-Goog-Resource-ID": channel.resource_id,
                        "X-Goog-Resource-URI": channel.resource_uri,
                        "X-Goog-Resource-State": d.state,
                        "X-Goog-Message-Number": str(d.message_number),
                    }
                    if channel.token:
                        headers["X-Goog-Channel-Token"] = channel.token
                    timeout = self._notification_config["notification_timeout_seconds"]
                    url, at = channel.address, self.now()
                status, error = self._post_notification(url, headers, timeout)
                with self._lock:
                    if d.generation != self._generation:
                        return
                    # Google retries only server errors and missing answers, with exponential backoff.
                    retryable = status is None or status in (500, 502, 503, 504)
                    will_retry = error is not None and retryable and d.attempt <= len(d.backoff)
                    self._notification_seq += 1
                    self._notification_log.append(
                        {
                            "seq": self._notification_seq,
                            "delivery_id": d.id,
                            "time": _iso(at),
                            "channel_id": d.channel_id,
                            "url": url,
                            "headers": headers,
                            "resource_state": d.state,
                            "message_number": d.message_number,
                            "attempt": d.attempt,
                            "ok": error is None,
                            "status": status,
                            "error": error,
                            "will_retry": will_retry,
                        }
                    )
                if not will_retry:
                    return
                time.sleep(d.backoff[d.attempt - 1])
        finally:
            with self._lock:
                if d.generation == self._generation:
                    self._in_flight -= 1
                    self._deliveries_changed.notify_all()

    @staticmethod
    def _post_notification(
        url: str, headers: dict[str, str], timeout: float
    ) -> tuple[int | None, str | None]:
        session = _http.Session()
        session.trust_env = not _is_loopback_url(url)  # loopback never goes through an HTTP(S)_PROXY
        try:
            answer = session.post(url, data=b"", headers=headers, timeout=timeout, allow_redirects=False)
        except _http.Timeout:
            return None, f"timeout: no answer within {timeout:g} s"
        except _http.RequestException as exc:
            return None, f"connection failed: {type(exc).__name__}"
        finally:
            session.close()
        if not 200 <= answer.status_code < 300:
            return answer.status_code, f"HTTP {answer.status_code}"
        return answer.status_code, None

    # ----------------------------------------------------------------------------------------------
    # State helpers (call with the lock held)
    # ----------------------------------------------------------------------------------------------

    def _app(self, client_id: str) -> GoogleApp:
        app = self._apps.get(client_id)
        if app is None:
            raise EmulatorError(f"no app {client_id!r}", 404)
        return app

    def _find_account(self, ref: str) -> GoogleAccount | None:
        if ref in self._accounts:
            return self._accounts[ref]
        return next((a for a in self._accounts.values() if a.matches(ref)), None)

    def _account(self, ref: str) -> GoogleAccount:
        acc = self._find_account(ref)
        if acc is None:
            raise EmulatorError(f"no account {ref!r}", 404)
        return acc

    @staticmethod
    def _calendar(acc: GoogleAccount, calendar_id: str) -> GoogleCalendar:
        if calendar_id == "primary":
            calendar_id = acc.email
        cal = acc.calendars.get(calendar_id)
        if cal is None or cal.deleted:
            raise EmulatorError(f"no calendar {calendar_id!r} in account {acc.email!r}", 404)
        return cal

    def _consent(self, acc: GoogleAccount, client_id: str, requested: Iterable[str]) -> list[str]:
        granted = acc.consents.setdefault(client_id, [])
        for scope in _normalize_scopes(requested):
            if scope not in granted:
                granted.append(scope)
        return list(granted)

    def _new_refresh(self, account_id: str, client_id: str, scopes: list[str]) -> _RefreshToken:
        rt = _RefreshToken(_new_refresh_token(), client_id, account_id, list(scopes), self.now())
        self._refresh_tokens[rt.token] = rt
        return rt

    def _find_stored(self, event_id: str) -> tuple[GoogleAccount, GoogleCalendar, GoogleEvent] | None:
        for acc in self._accounts.values():
            for cal in acc.calendars.values():
                ev = cal.events.get(event_id)
                if ev is not None and not cal.deleted:
                    return acc, cal, ev
        return None

    def _editable(
        self, event_id: str, *, allow_cancelled: bool = False
    ) -> tuple[GoogleAccount, GoogleCalendar, GoogleEvent]:
        """A stored item, or a new (unstored) exception for an instance id; 404 / 409 otherwise."""
        found = self._find_stored(event_id)
        if found is None:
            parsed = _parse_instance_id(event_id)
            master_found = self._find_stored(parsed[0]) if parsed else None
            if parsed is None or master_found is None or not master_found[2].recurrence:
                raise EmulatorError(f"no event {event_id!r}", 404)
            acc, cal, master = master_found
            exception = self._virtual_instance(master, parsed[1])
            if exception is None:
                raise EmulatorError(f"no event {event_id!r}", 404)
            found = acc, cal, exception
        acc, cal, ev = found
        if not allow_cancelled and ev.status == "cancelled":
            raise EmulatorError(f"event {event_id!r} is cancelled", 409)
        return acc, cal, ev

    def _virtual_instance(self, master: GoogleEvent, stamp: str) -> GoogleEvent | None:
        """The unedited instance of `master` whose id ends in `stamp`, as an exception-to-be."""
        original = _stamp_datetime(stamp, ZoneInfo(master.zone), master.all_day)
        if original is None:
            return None
        hits = _rule_set(master).between(
            original - timedelta(seconds=1), original + timedelta(seconds=1), inc=True
        )
        if not any(hit == original for hit in hits):
            return None
        duration = master.end - master.start
        return GoogleEvent(
            **{
                **master.__dict__,
                "id": f"{master.id}_{stamp}",
                "recurrence": None,
                "recurring_event_id": master.id,
                "original_start": original,
                "start": original,
                "end": original + duration,
                "attendees": [dict(a) for a in master.attendees],
            }
        )

    @staticmethod
    def _one_time(raw: Any, zone: str, all_day: bool, name: str) -> datetime:
        tz = ZoneInfo(zone)
        if all_day:
            if isinstance(raw, datetime) and raw.tzinfo is None:
                return datetime.combine(raw.date(), datetime.min.time())  # already a floating midnight
            return datetime.combine(_control_time(raw, tz, name).date(), datetime.min.time())
        return _control_time(raw, tz, name)

    def _times(self, start: Any, end: Any, zone: str, all_day: bool) -> tuple[datetime, datetime]:
        begin, finish = (
            self._one_time(start, zone, all_day, "start"),
            self._one_time(end, zone, all_day, "end"),
        )
        if finish <= begin:
            raise EmulatorError("end must be after start")
        return begin, finish

    @staticmethod
    def _organizer(
        acc: GoogleAccount, cal: GoogleCalendar, organizer: str | dict[str, str] | None
    ) -> tuple[str, str]:
        if organizer is None:
            return (acc.email, acc.name) if cal.primary else (cal.id, cal.summary)
        if isinstance(organizer, str) and "@" in organizer:
            return organizer, ""
        if isinstance(organizer, dict) and isinstance(organizer.get("email"), str):
            return organizer["email"], str(organizer.get("name") or "")
        raise EmulatorError('organizer must be an address or {"email": ..., "name": ...}')

    @staticmethod
    def _attendees(acc: GoogleAccount, raw: list[str | dict[str, Any]] | None) -> list[dict[str, Any]]:
        out = []
        for item in raw or []:
            if isinstance(item, str):
                item = {"email": item}
            if not isinstance(item, dict) or not isinstance(item.get("email"), str):
                raise EmulatorError('attendees must be addresses or {"email": ..., ...} objects')
            entry: dict[str, Any] = {"email": item["email"]}
            if item.get("name") or item.get("displayName"):
                entry["displayName"] = item.get("name") or item.get("displayName")
            entry["responseStatus"] = item.get("responseStatus", "needsAction")
            if item["email"].lower() == acc.email.lower():
                entry["self"] = True
            out.append(entry)
        return out

    @staticmethod
    def _set_conference(ev: GoogleEvent, meet: Any, conference_data: Any) -> None:
        """`conference_data` (a conferenceData object) wins; `meet` True / a link adds a Google Meet;
        an explicit None / False clears the conference; UNSET leaves it."""
        if isinstance(conference_data, dict):
            ev.conference = json.loads(json.dumps(conference_data))
            video: dict[str, Any] = next(
                (e for e in ev.conference.get("entryPoints", []) if e.get("entryPointType") == "video"), {}
            )
            is_meet = (ev.conference.get("conferenceSolution") or {}).get("key", {}).get(
                "type"
            ) == "hangoutsMeet"
            ev.hangout_link = video.get("uri") if is_meet else None
        elif conference_data not in (UNSET, None):
            raise EmulatorError("conference_data must be a Google conferenceData object")
        elif meet is True or isinstance(meet, str):
            link = meet if isinstance(meet, str) else _meet_link()
            if not link.startswith("https://meet.google.com/"):
                raise EmulatorError("meet must be true or a https://meet.google.com/... link")
            ev.hangout_link, ev.conference = link, _conference_for(link)
        elif meet in (None, False) or conference_data is None:
            ev.hangout_link, ev.conference = None, None

    def _apply(
        self,
        ev: GoogleEvent,
        acc: GoogleAccount,
        summary: Any,
        description: Any,
        location: Any,
        start: Any,
        end: Any,
        time_zone: Any,
        recurrence: Any,
        status: Any,
        meet: Any,
        conference_data: Any,
        attendees: Any,
    ) -> bool:
        """Apply update_event's arguments; True when the timing (or recurrence) changed."""
        old = (ev.start, ev.end, ev.zone, ev.recurrence)
        if summary is not UNSET:
            ev.summary = str(summary or "")
        if description is not UNSET:
            ev.description = str(description or "")
        if location is not UNSET:
            ev.location = location or None
        if status is not UNSET:
            ev.status = status
        if attendees is not UNSET:
            ev.attendees = self._attendees(acc, attendees)
        if meet is not UNSET or conference_data is not UNSET:
            self._set_conference(ev, meet, conference_data)
        if time_zone is not UNSET:
            ev.zone = _zone_name(time_zone)
            if not ev.all_day:
                tz = ZoneInfo(ev.zone)
                ev.start = _localize(ev.start.replace(tzinfo=None), tz)
                ev.end = _localize(ev.end.replace(tzinfo=None), tz)
        if start is not UNSET or end is not UNSET:
            duration = ev.end - ev.start
            raw_start = start if start is not UNSET else ev.start
            if start is not UNSET and end is UNSET:
                ev.start = self._one_time(raw_start, ev.zone, ev.all_day, "start")
                ev.end = ev.start + duration
            else:
                ev.start, ev.end = self._times(raw_start, end, ev.zone, ev.all_day)
        if recurrence is not UNSET:
            ev.recurrence = None if recurrence is None else _check_recurrence(recurrence, ev)
        elif ev.recurrence:
            _check_recurrence(ev.recurrence, ev)  # a new start must still expand
        return (ev.start, ev.end, ev.zone, ev.recurrence) != old

    def _bump(self, cal: GoogleCalendar, ev: GoogleEvent) -> None:
        cal.change_seq += 1
        ev.seq = cal.change_seq
        ev.updated = self.now()
        ev.etag = _etag(ev.updated, ev.seq)

    def _horizon(
        self, master: GoogleEvent, low: datetime | None, high: datetime | None
    ) -> tuple[datetime, datetime]:
        """The expansion window [low, high) of a series as aware UTC (defaults: series start, horizon)."""
        start = master.start if not master.all_day else _localize(master.start, ZoneInfo(master.zone))
        return (low or start.astimezone(UTC), high or self.now() + self.expansion_horizon)

    def _expand(self, master: GoogleEvent, low: datetime, high: datetime) -> list[datetime]:
        """Original starts of the series' instances overlapping [low, high)."""
        duration = master.end - master.start
        if master.all_day:  # floating dates: compare wall times in the series' zone
            tz = ZoneInfo(master.zone)
            low, high = low.astimezone(tz).replace(tzinfo=None), high.astimezone(tz).replace(tzinfo=None)
        hits = _rule_set(master).between(low - duration, high, inc=True)
        return [hit for hit in hits if hit < high and hit + duration > low]

    def _series_ids(self, cal: GoogleCalendar, master: GoogleEvent) -> set[str]:
        if not master.recurrence:
            return set()
        low, high = self._horizon(master, None, None)
        return {f"{master.id}_{_instance_stamp(o, master.all_day)}" for o in self._expand(master, low, high)}

    def _retire_instances(self, cal: GoogleCalendar, master: GoogleEvent, gone: set[str]) -> None:
        """Instances a master edit removed become cancelled tombstones, so sync clients drop them."""
        tz = ZoneInfo(master.zone)
        for iid in sorted(gone):
            if iid in cal.events:
                continue  # an exception (moved / cancelled instance) outlives a change of its series
            stamp = iid.rpartition("_")[2]
            original = _stamp_datetime(stamp, tz, master.all_day)
            if original is None:
                continue
            tomb = GoogleEvent(
                **{
                    **master.__dict__,
                    "id": iid,
                    "recurrence": None,
                    "recurring_event_id": master.id,
                    "original_start": original,
                    "start": original,
                    "end": original + (master.end - master.start),
                    "status": "cancelled",
                }
            )
            self._bump(cal, tomb)
            cal.events[iid] = tomb

    def _control_view(self, ev: GoogleEvent) -> dict[str, Any]:
        return {
            "id": ev.id,
            "calendar_id": ev.calendar_id,
            "summary": ev.summary,
            "description": ev.description,
            "location": ev.location,
            "status": ev.status,
            "time_zone": ev.zone,
            "all_day": ev.all_day,
            "start": ev.start.date().isoformat() if ev.all_day else ev.start.isoformat(),
            "end": ev.end.date().isoformat() if ev.all_day else ev.end.isoformat(),
            "recurrence": list(ev.recurrence) if ev.recurrence else None,
            "recurring_event_id": ev.recurring_event_id,
            "original_start": (
                None
                if ev.original_start is None
                else ev.original_start.date().isoformat()
                if ev.all_day
                else ev.original_start.isoformat()
            ),
            "hangout_link": ev.hangout_link,
            "ical_uid": ev.ical_uid,
            "sequence": ev.sequence,
            "etag": ev.etag,
            "updated": _iso(ev.updated),
        }

    def _channel_view(self, channel: _Channel, now: datetime) -> dict[str, Any]:
        return {
            "id": channel.id,
            "resource_id": channel.resource_id,
            "resource_uri": channel.resource_uri,
            "token": channel.token,
            "address": channel.address,
            "account_id": channel.account_id,
            "client_id": channel.client_id,
            "calendar_id": channel.calendar_id,
            "expiration": _iso(channel.expiration),
            "expired": channel.expiration <= now,
            "stopped": channel.stopped,
            "messages_sent": channel.message_number,
        }

    # ----------------------------------------------------------------------------------------------
    # Event JSON and listings (lock held)
    # ----------------------------------------------------------------------------------------------

    def _html_link(self, event_id: str, cal: GoogleCalendar) -> str:
        eid = base64.urlsafe_b64encode(f"{event_id} {cal.id}".encode()).decode().rstrip("=")
        return f"https://www.google.com/calendar/event?eid={eid}"

    def _person(self, acc: GoogleAccount, email: str, name: str) -> dict[str, Any]:
        person: dict[str, Any] = {"email": email}
        if name:
            person["displayName"] = name
        if email.lower() == acc.email.lower():
            person["self"] = True
        return person

    def _event_json(
        self,
        acc: GoogleAccount,
        cal: GoogleCalendar,
        src: GoogleEvent,
        *,
        event_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        original_start: datetime | None = None,
        recurring_event_id: str | None = None,
    ) -> dict[str, Any]:
        """Full event JSON of `src` (stored) or of an unedited instance of master `src`."""
        event_id = event_id or src.id
        recurring_event_id = recurring_event_id or src.recurring_event_id
        original_start = original_start or src.original_start
        body: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": src.etag,
            "id": event_id,
            "status": src.status,
            "htmlLink": self._html_link(event_id, cal),
            "created": _rfc3339_ms(src.created),
            "updated": _rfc3339_ms(src.updated),
            "summary": src.summary,
        }
        if src.description:
            body["description"] = src.description
        if src.location:
            body["location"] = src.location
        body["creator"] = self._person(acc, src.organizer_email, src.organizer_name)
        body["organizer"] = self._person(acc, src.organizer_email, src.organizer_name)
        body["start"] = _time_json(start or src.start, src.zone, src.all_day)
        body["end"] = _time_json(end or src.end, src.zone, src.all_day)
        if src.recurrence and recurring_event_id is None:
            body["recurrence"] = list(src.recurrence)
        if recurring_event_id is not None and original_start is not None:
            body["recurringEventId"] = recurring_event_id
            body["originalStartTime"] = _time_json(original_start, src.zone, src.all_day)
        body["transparency"] = "transparent" if src.all_day else "opaque"
        body["iCalUID"] = src.ical_uid
        body["sequence"] = src.sequence
        if src.attendees:
            body["attendees"] = [dict(a) for a in src.attendees]
        if src.hangout_link:
            body["hangoutLink"] = src.hangout_link
        if src.conference:
            body["conferenceData"] = json.loads(json.dumps(src.conference))
        body["reminders"] = {"useDefault": True}
        body["eventType"] = "default"
        return body

    @staticmethod
    def _bare(
        ev_id: str, etag: str, recurring_event_id: str | None = None, original: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "calendar#event", "etag": etag, "id": ev_id, "status": "cancelled"}
        if recurring_event_id is not None and original is not None:
            body["recurringEventId"] = recurring_event_id
            body["originalStartTime"] = original
        return body

    def _bare_of(self, ev: GoogleEvent) -> dict[str, Any]:
        original = (
            _time_json(ev.original_start, ev.zone, ev.all_day) if ev.original_start is not None else None
        )
        return self._bare(ev.id, ev.etag, ev.recurring_event_id, original)

    def _instance_items(
        self,
        acc: GoogleAccount,
        cal: GoogleCalendar,
        master: GoogleEvent,
        low: datetime,
        high: datetime,
        *,
        cancelled: bool = False,
    ) -> list[dict[str, Any]]:
        """Unedited instances of `master` in the window (exception slots skipped); bare if `cancelled`."""
        duration = master.end - master.start
        out = []
        for original in self._expand(master, low, high):
            iid = f"{master.id}_{_instance_stamp(original, master.all_day)}"
            if iid in cal.events:
                continue
            if cancelled:
                out.append(
                    self._bare(iid, master.etag, master.id, _time_json(original, master.zone, master.all_day))
                )
            else:
                out.append(
                    self._event_json(
                        acc,
                        cal,
                        master,
                        event_id=iid,
                        start=original,
                        end=original + duration,
                        original_start=original,
                        recurring_event_id=master.id,
                    )
                )
        return out

    def _overlaps(self, ev: GoogleEvent, low: datetime | None, high: datetime | None) -> bool:
        start, end = ev.start, ev.end
        if ev.all_day:
            tz = ZoneInfo(ev.zone)
            start, end = _localize(start, tz), _localize(end, tz)
        return (low is None or end > low) and (high is None or start < high)

    def _full_items(
        self, acc: GoogleAccount, cal: GoogleCalendar, q: _Query, only_series: str | None = None
    ) -> list[dict[str, Any]]:
        """A full (non-incremental) listing, ordered as asked."""
        rows: list[tuple[GoogleEvent, dict[str, Any]]] = []
        for ev in list(cal.events.values()):
            if only_series is not None and only_series not in (ev.id, ev.recurring_event_id):
                continue
            if q.updated_min is not None and ev.updated < q.updated_min:
                continue
            show_deleted = q.show_deleted or q.updated_min is not None
            master = cal.events.get(ev.recurring_event_id) if ev.recurring_event_id else None
            cancelled = ev.status == "cancelled" or (master is not None and master.status == "cancelled")
            if cancelled:
                if show_deleted and only_series is None:
                    rows.append((ev, self._bare_of(ev)))
                continue
            if ev.recurrence:
                low, high = self._horizon(ev, q.time_min, q.time_max)
                if q.single_events:
                    rows += [(ev, item) for item in self._instance_items(acc, cal, ev, low, high)]
                elif self._expand(ev, low, high):
                    rows.append((ev, self._event_json(acc, cal, ev)))
            elif self._overlaps(ev, q.time_min, q.time_max):
                rows.append((ev, self._event_json(acc, cal, ev)))
        if q.order_by == "startTime":
            rows.sort(key=lambda row: (self._start_key(row[1], cal), row[1]["id"]))
        elif q.order_by == "updated":
            rows.sort(key=lambda row: (row[0].updated, row[1]["id"]))
        return [item for _, item in rows]

    @staticmethod
    def _start_key(item: dict[str, Any], cal: GoogleCalendar) -> datetime:
        start = item.get("start") or item.get("originalStartTime") or {}
        if "dateTime" in start:
            return datetime.fromisoformat(start["dateTime"].replace("Z", "+00:00")).astimezone(UTC)
        if "date" in start:
            return _localize(datetime.fromisoformat(start["date"]), ZoneInfo(cal.time_zone)).astimezone(UTC)
        return datetime.max.replace(tzinfo=UTC)

    def _changed_items(
        self, acc: GoogleAccount, cal: GoogleCalendar, state: _SyncState, single_events: bool
    ) -> list[dict[str, Any]]:
        """What changed since `state`: current state of changed items, cancelled ones bare."""
        out: dict[str, dict[str, Any]] = {}
        for ev in [e for e in cal.events.values() if e.seq > state.seq]:
            master = cal.events.get(ev.recurring_event_id) if ev.recurring_event_id else None
            if ev.recurrence and single_events:
                low, high = self._horizon(ev, state.time_min, None)
                gone = ev.status == "cancelled"
                for item in self._instance_items(acc, cal, ev, low, high, cancelled=gone):
                    out[item["id"]] = item
                for exc in [e for e in cal.events.values() if e.recurring_event_id == ev.id]:
                    gone_exc = gone or exc.status == "cancelled"
                    out[exc.id] = self._bare_of(exc) if gone_exc else self._event_json(acc, cal, exc)
                if gone:
                    out[ev.id] = self._bare_of(ev)
            elif ev.status == "cancelled" or (master is not None and master.status == "cancelled"):
                out[ev.id] = self._bare_of(ev)
            else:
                out[ev.id] = self._event_json(acc, cal, ev)
        return list(out.values())

    # ----------------------------------------------------------------------------------------------
    # WSGI entry and service dispatch
    # ----------------------------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if request.path == "/_control" or request.path.startswith("/_control/"):
            response = self._dispatch_control(request)
        else:
            response = self._dispatch_service(request)
        return response(environ, start_response)

    @staticmethod
    def _service_rules() -> list[Rule]:
        cal = "/calendar/v3"
        return [
            Rule("/token", endpoint="token"),
            Rule("/o/oauth2/v2/auth", endpoint="authorize", methods=["GET", "POST"]),
            Rule("/v1/userinfo", endpoint="userinfo", methods=["GET"]),
            Rule("/oauth2/v3/userinfo", endpoint="userinfo", methods=["GET"]),
            Rule("/oauth2/v3/certs", endpoint="certs", methods=["GET"]),
            Rule(f"{cal}/users/me/calendarList", endpoint="calendar_list", methods=["GET"]),
            Rule(
                f"{cal}/users/me/calendarList/<calendar_id>", endpoint="calendar_list_entry", methods=["GET"]
            ),
            Rule(f"{cal}/calendars/<calendar_id>/events", endpoint="events", methods=["GET"]),
            Rule(f"{cal}/calendars/<calendar_id>/events/watch", endpoint="watch", methods=["POST"]),
            Rule(f"{cal}/calendars/<calendar_id>/events/<event_id>", endpoint="event", methods=["GET"]),
            Rule(f"{cal}/channels/stop", endpoint="channel_stop", methods=["POST"]),
        ]

    def _dispatch_service(self, request: Request) -> Response:
        ctx = _Ctx()
        oauth = request.path.rstrip("/") == "/token"
        with self._lock:
            self._resolve_caller(request, ctx)
            rule = self._take_fault(request, ctx)
        try:
            response: Response | None = None
            if rule is not None:
                if rule.delay:
                    time.sleep(rule.delay)  # outside the lock: other requests keep flowing
                if rule.status is not None or rule.reason is not None or rule.error is not None:
                    response = self._fault_response(rule, oauth)
            if response is None:
                response = self._route(request, ctx)
        except _OAuthError as exc:
            response = self._oauth_error(exc)
        except _ApiError as exc:
            response = self._api_error(exc)
        except Exception:  # a bug in the emulator: answer like Google would, keep the trace in the log
            log.exception("google emulator failed on %s %s", request.method, request.path)
            response = self._api_error(_ApiError(500, "backendError", "Backend Error"))
        self._append_log(request, ctx, response.status_code)
        return response

    def _route(self, request: Request, ctx: _Ctx) -> Response:
        adapter = self._service_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            raise _ApiError(405, "httpMethodNotAllowed", "HTTP method not allowed") from None
        except NotFound:
            raise _ApiError(404, "notFound", "Not Found") from None
        except HTTPException as exc:
            raise _ApiError(exc.code or 400, "badRequest", exc.description or "Bad Request") from None
        handler: Callable[..., Response] = getattr(self, f"_h_{endpoint}")
        return handler(request, ctx, **args)

    def _resolve_caller(self, request: Request, ctx: _Ctx) -> None:
        """Which account/app a request is about (for fault matching and the log), valid or not."""
        if request.path.rstrip("/") == "/token" and request.method == "POST":
            rt = self._refresh_tokens.get(request.form.get("refresh_token", ""))
            code = self._auth_codes.get(request.form.get("code", ""))
            ctx.client_id = request.form.get("client_id") or None
            if rt is not None:
                ctx.account_id = rt.account_id
            elif code is not None:
                ctx.account_id = code.account_id
        elif request.path.startswith("/o/oauth2/"):
            hint = request.values.get("login_hint")
            found = self._find_account(hint) if hint else None
            ctx.client_id = request.values.get("client_id") or None
            ctx.account_id = found.id if found else None
        else:
            at = self._access_tokens.get(self._bearer_token(request) or "")
            if at is not None:
                ctx.account_id, ctx.client_id = at.account_id, at.client_id

    def _append_log(self, request: Request, ctx: _Ctx, status: int) -> None:
        with self._lock:
            self._log_seq += 1
            self._log.append(
                {
                    "seq": self._log_seq,
                    "timestamp": _iso(self.now()),
                    "method": request.method,
                    "path": request.path,
                    "query": _redact_query(request.query_string.decode("latin-1")),
                    "account": ctx.account_id,
                    "client_id": ctx.client_id,
                    "status": status,
                    "fault": ctx.fault_id,
                }
            )

    def _take_fault(self, request: Request, ctx: _Ctx) -> GoogleFault | None:
        account = self._accounts.get(ctx.account_id or "")
        for rule in self._faults:
            if not rule.active or not rule.pattern.search(request.path):
                continue
            if rule.method and rule.method != request.method:
                continue
            if rule.account and (account is None or not account.matches(rule.account)):
                continue
            rule.hits += 1
            ctx.fault_id = rule.id
            return rule
        return None

    def _fault_response(self, rule: GoogleFault, oauth: bool) -> Response:
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        if oauth:
            error = rule.error or ("invalid_grant" if (rule.status or 400) < 500 else "internal_failure")
            status = rule.status or (401 if error == "invalid_client" else 400)
            description = rule.message or {
                "invalid_grant": "Token has been expired or revoked.",
                "invalid_client": "Unauthorized",
            }.get(error, "Emulated failure.")
            response = self._oauth_error(_OAuthError(status, error, description))
        else:
            if rule.reason is not None:
                domain, message = _REASON_MESSAGES.get(rule.reason, ("global", rule.reason))
                forbidden = ("rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "forbidden")
                status = rule.status or (403 if rule.reason in forbidden else 400)
                reason = rule.reason
            else:
                status = rule.status or 400
                domain, reason, message = _DEFAULT_FAULT_ERROR.get(
                    status, ("global", "backendError", "Backend Error")
                )
            if status == 401:
                exc = _unauthenticated()
            else:
                exc = _ApiError(
                    status,
                    reason,
                    rule.message or message,
                    domain=domain,
                    location="syncToken" if reason == "fullSyncRequired" else None,
                )
            response = self._api_error(exc)
        response.headers.update(headers)
        return response

    # Response builders -----------------------------------------------------------------------------

    @staticmethod
    def _json(body: dict[str, Any] | None, status: int = 200) -> Response:
        if body is None:
            return Response(status=status)
        response = Response(json.dumps(body), status=status, content_type=JSON_TYPE)
        response.headers["Cache-Control"] = "private, max-age=0, must-revalidate, no-transform"
        return response

    def _api_error(self, exc: _ApiError) -> Response:
        response = Response(json.dumps(exc.body()), status=exc.status, content_type=JSON_TYPE)
        response.headers.update(exc.headers)
        return response

    @staticmethod
    def _oauth_error(exc: _OAuthError) -> Response:
        body = {"error": exc.error, "error_description": exc.description}
        response = Response(json.dumps(body), status=exc.status, content_type=JSON_TYPE)
        response.headers["Cache-Control"] = "no-cache, no-store, max-age=0, must-revalidate"
        return response

    # ----------------------------------------------------------------------------------------------
    # OAuth: token endpoint
    # ----------------------------------------------------------------------------------------------

    def _client_credentials(self, request: Request) -> tuple[str, str]:
        auth = request.authorization
        if auth is not None and auth.type == "basic" and auth.username:
            return auth.username, auth.password or ""
        return request.form.get("client_id", ""), request.form.get("client_secret", "")

    def _h_token(self, request: Request, ctx: _Ctx) -> Response:
        if request.method != "POST":
            raise _ApiError(405, "httpMethodNotAllowed", "HTTP method not allowed")
        form = request.form
        client_id, client_secret = self._client_credentials(request)
        with self._lock:
            if not client_id:
                raise _OAuthError(400, "invalid_request", "Could not determine client ID from request.")
            app = self._apps.get(client_id)
            if app is None or app.deleted:
                raise _OAuthError(401, "invalid_client", "The OAuth client was not found.")
            if (
                not client_secret
                or app.secret_expired
                or not secrets.compare_digest(client_secret, app.client_secret)
            ):
                raise _OAuthError(401, "invalid_client", "Unauthorized")
            grant_type = form.get("grant_type", "")
            if grant_type == "refresh_token":
                body = self._grant_refresh_token(form, app, ctx)
            elif grant_type == "authorization_code":
                body = self._grant_authorization_code(form, app, ctx)
            else:
                raise _OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        response = self._json(body)
        response.headers["Cache-Control"] = "no-cache, no-store, max-age=0, must-revalidate"
        response.headers["Pragma"] = "no-cache"
        return response

    def _grant_refresh_token(self, form: Any, app: GoogleApp, ctx: _Ctx) -> dict[str, Any]:
        if not form.get("refresh_token"):
            raise _OAuthError(400, "invalid_request", "Missing required parameter: refresh_token")
        rt = self._refresh_tokens.get(form["refresh_token"])
        if rt is None:
            raise _OAuthError(400, "invalid_grant", "Bad Request")
        if rt.client_id != app.client_id:
            raise _OAuthError(401, "unauthorized_client", "Unauthorized")
        expired = app.testing and self.now() - rt.issued_at >= TESTING_APP_REFRESH_LIFETIME
        if rt.revoked or expired or rt.account_id not in self._accounts:
            raise _OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
        return self._issue(self._accounts[rt.account_id], app.client_id, rt.scopes, None, ctx)

    def _grant_authorization_code(self, form: Any, app: GoogleApp, ctx: _Ctx) -> dict[str, Any]:
        for param in ("code", "redirect_uri"):
            if not form.get(param):
                raise _OAuthError(400, "invalid_request", f"Missing required parameter: {param}")
        code = self._auth_codes.get(form["code"])
        if code is None:
            raise _OAuthError(400, "invalid_grant", "Malformed auth code.")
        if code.redeemed or code.expires_at <= self.now() or code.client_id != app.client_id:
            raise _OAuthError(400, "invalid_grant", "Bad Request")
        if code.redirect_uri != form["redirect_uri"]:
            raise _OAuthError(400, "redirect_uri_mismatch", "Bad Request")
        if code.code_challenge is not None:
            verifier = form.get("code_verifier") or ""
            if not verifier:
                raise _OAuthError(400, "invalid_grant", "Missing code verifier.")
            if code.code_challenge_method == "S256":
                computed = _b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
            else:
                computed = verifier
            if not secrets.compare_digest(computed, code.code_challenge):
                raise _OAuthError(400, "invalid_grant", "Invalid code verifier.")
        code.redeemed = True
        account = self._accounts[code.account_id]
        refresh = (
            self._new_refresh(account.id, app.client_id, code.scopes) if code.give_refresh_token else None
        )
        return self._issue(account, app.client_id, code.scopes, refresh, ctx)

    def _issue(
        self,
        account: GoogleAccount,
        client_id: str,
        scopes: list[str],
        refresh: _RefreshToken | None,
        ctx: _Ctx,
    ) -> dict[str, Any]:
        ctx.account_id = account.id
        at = _AccessToken(
            _new_access_token(),
            client_id,
            account.id,
            list(scopes),
            self.now() + timedelta(seconds=ACCESS_TOKEN_SECONDS),
        )
        self._access_tokens[at.token] = at
        body: dict[str, Any] = {
            "access_token": at.token,
            "expires_in": ACCESS_TOKEN_SECONDS,
            # Google reports granted scopes in its own order and long form, not as an echo.
            "scope": " ".join(sorted(scopes)),
            "token_type": "Bearer",
        }
        if refresh is not None:
            body["refresh_token"] = refresh.token
        if "openid" in scopes:
            body["id_token"] = self._id_token(account, client_id, scopes, at.token)
        return body

    def _id_token(self, account: GoogleAccount, client_id: str, scopes: list[str], access_token: str) -> str:
        """Google's ID token: RS256, signed with the key /oauth2/v3/certs serves; `iss` is Google's
        own issuer, as client libraries check it; email / profile claims follow the granted scopes."""
        now = int(self.now().timestamp())
        half = hashlib.sha256(access_token.encode()).digest()[:16]
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "azp": client_id,
            "aud": client_id,
            "sub": account.id,
            "at_hash": _b64url(half),
            "iat": now,
            "exp": now + ACCESS_TOKEN_SECONDS,
        }
        if SCOPE_EMAIL in scopes:
            claims.update(email=account.email, email_verified=True)
        if SCOPE_PROFILE in scopes:
            claims.update(name=account.name, given_name=account.given_name, picture=account.picture)
            if account.family_name:
                claims["family_name"] = account.family_name
        return signing_key().sign(claims)

    def _h_certs(self, request: Request, ctx: _Ctx) -> Response:
        return self._json({"keys": [signing_key().jwk]})

    # ----------------------------------------------------------------------------------------------
    # OAuth: authorize (consent page + code issuance with PKCE)
    # ----------------------------------------------------------------------------------------------

    def _h_authorize(self, request: Request, ctx: _Ctx) -> Response:
        params = request.args if request.method == "GET" else request.form
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        state = params.get("state")
        with self._lock:
            # What Google cannot safely redirect is shown as an error page ("Error 400: ...").
            app = self._apps.get(client_id)
            if not client_id or app is None or app.deleted:
                return self._error_page(401, "invalid_client", "The OAuth client was not found.")
            if not redirect_uri or urlsplit(redirect_uri).scheme not in ("http", "https"):
                return self._error_page(400, "invalid_request", "Missing required parameter: redirect_uri")
            if app.redirect_uris and redirect_uri not in app.redirect_uris:
                return self._error_page(
                    400,
                    "redirect_uri_mismatch",
                    "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 "
                    "policy. "
                    f"redirect_uri={redirect_uri}",
                )
            if params.get("response_type") != "code":
                return self._error_page(400, "unsupported_response_type", "Invalid response_type.")
            scopes = _normalize_scopes(params.get("scope", "").split())
            if not scopes:
                return self._error_page(400, "invalid_request", "Missing required parameter: scope")
            challenge = params.get("code_challenge") or None
            method = params.get("code_challenge_method") or "plain"
            if challenge and method not in ("S256", "plain"):
                return self._error_page(400, "invalid_request", "Invalid code_challenge_method.")
            hint = params.get("login_hint")
            if hint:
                account = self._find_account(hint)
                if account is None:
                    return self._error_page(
                        400, "invalid_request", f"Couldn't find your Google Account: {hint}"
                    )
            else:
                account = next((a for a in self._accounts.values() if client_id in a.apps), None)
                if account is None:
                    return self._error_page(400, "invalid_request", "No account is registered for this app.")
            ctx.account_id = account.id

            def redirect(query: list[tuple[str, str]]) -> Response:
                return _redirect(_with_query(redirect_uri, query + ([("state", state)] if state else [])))

            if request.method == "GET":
                return self._consent_page(request, account, scopes)
            if params.get("consent") != "accept":
                return redirect([("error", "access_denied")])
            first_consent = client_id not in account.consents
            granted = self._consent(account, client_id, scopes)
            if client_id not in account.apps:
                account.apps.append(client_id)
            offline = params.get("access_type") == "offline"
            prompts = params.get("prompt", "").split()
            code = _AuthCode(
                code=_new_auth_code(),
                client_id=client_id,
                account_id=account.id,
                redirect_uri=redirect_uri,
                scopes=granted if params.get("include_granted_scopes") == "true" else scopes,
                code_challenge=challenge,
                code_challenge_method=method,
                # Google hands out a refresh token only for offline access, and on a repeat consent
                # only when the consent screen was forced with prompt=consent.
                give_refresh_token=offline and (first_consent or "consent" in prompts),
                expires_at=self.now() + AUTH_CODE_LIFETIME,
            )
            self._auth_codes[code.code] = code
        return redirect([("code", code.code), ("scope", " ".join(code.scopes))])

    def _consent_page(self, request: Request, account: GoogleAccount, scopes: list[str]) -> Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in request.args.items(multi=True)
            if k != "login_hint"
        )
        hidden += f'<input type="hidden" name="login_hint" value="{html.escape(account.email)}">'
        items = "".join(f"<li>{html.escape(s)}</li>" for s in scopes)
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Sign in - Google Accounts</title></head>"
            "<body><h1>Choose what the app can access</h1>"
            f"<p>Signed in as <b>{html.escape(account.email)}</b></p>"
            f"<p>App <code>{html.escape(request.args.get('client_id', ''))}</code> wants to:</p>"
            f"<ul>{items}</ul><form method='post' action='{html.escape(request.path)}'>{hidden}"
            "<button type='submit' name='consent' value='accept'>Allow</button> "
            "<button type='submit' name='consent' value='deny'>Cancel</button></form></body></html>"
        )
        return Response(page, content_type="text/html; charset=utf-8")

    @staticmethod
    def _error_page(status: int, error: str, message: str) -> Response:
        text = f"Error {status}: {html.escape(error)}"
        page = (
            "<!doctype html><html><body><h1>Access blocked: authorization error</h1>"
            f"<p id='error'>{text}</p><p id='error-description'>{html.escape(message)}</p></body></html>"
        )
        return Response(page, status=status, content_type="text/html; charset=utf-8")

    # ----------------------------------------------------------------------------------------------
    # API auth and userinfo
    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def _bearer_token(request: Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def _authenticate(self, request: Request, ctx: _Ctx) -> tuple[_AccessToken, GoogleAccount]:
        at = self._access_tokens.get(self._bearer_token(request) or "")
        account = self._accounts.get(at.account_id) if at else None
        if at is None or account is None or at.expires_at <= self.now():
            raise _unauthenticated()
        app = self._apps.get(at.client_id)
        if app is None or app.deleted:
            raise _unauthenticated()
        ctx.account_id, ctx.client_id = account.id, at.client_id
        return at, account

    def _h_userinfo(self, request: Request, ctx: _Ctx) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            body: dict[str, Any] = {"sub": acc.id}
            if SCOPE_PROFILE in at.scopes:
                body.update(name=acc.name, given_name=acc.given_name, picture=acc.picture)
                if acc.family_name:
                    body["family_name"] = acc.family_name
            if SCOPE_EMAIL in at.scopes:
                body.update(email=acc.email, email_verified=True)
            if len(body) == 1 and "openid" not in at.scopes:
                raise _unauthenticated()
            return self._json(body)

    # ----------------------------------------------------------------------------------------------
    # Calendar API
    # ----------------------------------------------------------------------------------------------

    def _api_calendar(self, acc: GoogleAccount, calendar_id: str) -> GoogleCalendar:
        if calendar_id == "primary":
            calendar_id = acc.email
        cal = acc.calendars.get(calendar_id)
        if cal is None or cal.deleted:
            raise _not_found()
        return cal

    @staticmethod
    def _max_results(request: Request, default: int, hard_max: int) -> int:
        raw = request.args.get("maxResults")
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) < 1:
            raise _invalid_param(
                "maxResults", f"Invalid value '{raw}'. Values must be within the range: [1, ...]"
            )
        return min(int(raw), hard_max)  # Google silently caps the page size

    @staticmethod
    def _max_attendees(request: Request) -> int | None:
        raw = request.args.get("maxAttendees")
        if raw is None:
            return None
        if not raw.isdigit() or int(raw) < 1:
            raise _invalid_param(
                "maxAttendees", f"Invalid value '{raw}'. Values must be within the range: [1, ...]"
            )
        return int(raw)

    @staticmethod
    def _cap_attendees(item: dict[str, Any], limit: int | None) -> dict[str, Any]:
        """maxAttendees: over the limit only the participant (the calendar's own row) is returned,
        with attendeesOmitted: true."""
        attendees = item.get("attendees")
        if limit is None or not isinstance(attendees, list) or len(attendees) <= limit:
            return item
        return {**item, "attendees": [a for a in attendees if a.get("self")], "attendeesOmitted": True}

    def _mint_sync_token(self, state: _SyncState) -> str:
        token = base64.urlsafe_b64encode(b"\x08" + secrets.token_bytes(18)).decode()
        self._sync_tokens[token] = state
        return token

    def _sync_state(self, token: str, kind: str, acc: GoogleAccount, calendar_id: str | None) -> _SyncState:
        state = self._sync_tokens.get(token)
        too_old = (
            state is not None
            and self.sync_token_max_age is not None
            and self.now() - state.issued_at > self.sync_token_max_age
        )
        if (
            state is None
            or too_old
            or state.kind != kind
            or (state.account_id, state.calendar_id) != (acc.id, calendar_id)
        ):
            raise _ApiError(410, "fullSyncRequired", _MSG_410, domain="calendar", location="syncToken")
        return state

    def _page(
        self,
        request: Request,
        signature: tuple[Any, ...],
        build: Callable[[], tuple[list[dict[str, Any]], str]],
        size: int,
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Serve one page of a frozen result list; `build` makes (items, nextSyncToken) on a first page."""
        page_token = request.args.get("pageToken")
        if page_token is not None:
            state = self._pages.get(page_token)
            if state is None or state.signature != signature:
                raise _invalid_param("pageToken", "Invalid page token value.")
            items, offset, end_token = state.items, state.offset, state.end_token
        else:
            items, end_token = build()
            offset = 0
        page = items[offset : offset + size]
        if offset + size < len(items):
            token = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
            self._pages[token] = _PageState(signature, items, offset + size, end_token)
            while len(self._pages) > _MAX_PAGE_STATES:
                del self._pages[next(iter(self._pages))]
            return page, {"nextPageToken": token}
        return page, {"nextSyncToken": end_token}

    def _h_calendar_list(self, request: Request, ctx: _Ctx) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _CALENDAR_LIST_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            size = self._max_results(request, CALENDAR_LIST_DEFAULT_MAX, CALENDAR_LIST_HARD_MAX)
            sync_token = request.args.get("syncToken")
            show_deleted = _parse_bool(request.args.get("showDeleted"), "showDeleted", False)
            since = self._sync_state(sync_token, "calendarList", acc, None).seq if sync_token else None

            def build() -> tuple[list[dict[str, Any]], str]:
                entries = []
                for cal in acc.calendars.values():
                    if since is not None and cal.list_seq <= since:
                        continue
                    if cal.deleted:
                        if since is not None or show_deleted:
                            entries.append(
                                {
                                    "kind": "calendar#calendarListEntry",
                                    "etag": _etag(self.now(), cal.list_seq),
                                    "id": cal.id,
                                    "deleted": True,
                                }
                            )
                        continue
                    entries.append(self._calendar_entry(cal))
                if since is not None and not entries and sync_token:
                    return entries, sync_token
                state = _SyncState("calendarList", acc.id, None, acc.list_seq, None, self.now())
                return entries, self._mint_sync_token(state)

            signature = (acc.id, "calendarList", sync_token, show_deleted)
            items, links = self._page(request, signature, build, size)
            body = {
                "kind": "calendar#calendarList",
                "etag": _etag(self.now(), acc.list_seq),
                **links,
                "items": items,
            }
            return self._json(body)

    def _calendar_entry(self, cal: GoogleCalendar) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "kind": "calendar#calendarListEntry",
            "etag": f'"{cal.list_seq}{_ms(datetime(2026, 1, 1, tzinfo=UTC))}"',
            "id": cal.id,
            "summary": cal.summary,
            "timeZone": cal.time_zone,
            "colorId": cal.color_id,
            "backgroundColor": cal.background_color,
            "foregroundColor": "#000000",
            "selected": True,
            "accessRole": cal.access_role,
            "defaultReminders": [{"method": "popup", "minutes": 10}] if cal.access_role == "owner" else [],
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }
        if cal.primary:
            entry["primary"] = True
        return entry

    def _h_calendar_list_entry(self, request: Request, ctx: _Ctx, calendar_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _CALENDAR_LIST_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            return self._json(self._calendar_entry(self._api_calendar(acc, calendar_id)))

    def _events_query(self, request: Request) -> tuple[_Query, str | None]:
        args = request.args
        single = _parse_bool(args.get("singleEvents"), "singleEvents", False)
        show_deleted_raw = args.get("showDeleted")
        show_deleted = _parse_bool(show_deleted_raw, "showDeleted", False)
        order_by = args.get("orderBy")
        if order_by is not None and order_by not in ("startTime", "updated"):
            raise _invalid_param("orderBy", f"Invalid value for orderBy: {order_by}")
        sync_token = args.get("syncToken")
        if sync_token is not None:
            restricted = [
                n for n in ("timeMin", "timeMax", "orderBy", "updatedMin", "q", "iCalUID") if n in args
            ]
            if restricted or show_deleted_raw is not None and not show_deleted:
                raise _ApiError(
                    400,
                    "syncTokenWithRequestRestrictions",
                    "Sync token cannot be used with other request restrictions.",
                    location=(restricted or ["showDeleted"])[0],
                )
        if order_by == "startTime" and not single:
            raise _ApiError(
                400, "badRequest", "The requested ordering is not available for the particular query."
            )
        time_min = _parse_rfc3339(args["timeMin"], "timeMin") if "timeMin" in args else None
        time_max = _parse_rfc3339(args["timeMax"], "timeMax") if "timeMax" in args else None
        if time_min is not None and time_max is not None and time_max <= time_min:
            raise _ApiError(
                400,
                "timeRangeEmpty",
                "The specified time range is empty.",
                domain="calendar",
                location="timeMax",
            )
        updated_min = _parse_rfc3339(args["updatedMin"], "updatedMin") if "updatedMin" in args else None
        return _Query(single, time_min, time_max, show_deleted, order_by, updated_min), sync_token

    def _h_events(self, request: Request, ctx: _Ctx, calendar_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _EVENT_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            cal = self._api_calendar(acc, calendar_id)
            size = self._max_results(request, LIST_DEFAULT_MAX, LIST_HARD_MAX)
            max_attendees = self._max_attendees(request)
            query, sync_token = self._events_query(request)
            state = self._sync_state(sync_token, "events", acc, cal.id) if sync_token else None

            def build() -> tuple[list[dict[str, Any]], str]:
                if state is None:
                    items = self._full_items(acc, cal, query)
                    time_min = query.time_min
                else:
                    items = self._changed_items(acc, cal, state, query.single_events)
                    if not items and sync_token:
                        return items, sync_token  # nothing changed: the same token again
                    time_min = state.time_min
                fresh = _SyncState("events", acc.id, cal.id, cal.change_seq, time_min, self.now())
                return items, self._mint_sync_token(fresh)

            signature = (
                acc.id,
                cal.id,
                sync_token,
                request.args.get("singleEvents"),
                request.args.get("timeMin"),
                request.args.get("timeMax"),
                request.args.get("orderBy"),
                request.args.get("showDeleted"),
            )
            items, links = self._page(request, signature, build, size)
            updated = max((ev.updated for ev in cal.events.values()), default=self.now())
            body = {
                "kind": "calendar#events",
                "etag": _etag(updated, cal.change_seq),
                "summary": cal.summary,
                "description": "",
                "updated": _rfc3339_ms(updated),
                "timeZone": cal.time_zone,
                "accessRole": cal.access_role,
                "defaultReminders": [{"method": "popup", "minutes": 10}]
                if cal.access_role == "owner"
                else [],
                **links,
                "items": [self._cap_attendees(i, max_attendees) for i in items],
            }
            return self._json(body)

    def _h_event(self, request: Request, ctx: _Ctx, calendar_id: str, event_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _EVENT_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            cal = self._api_calendar(acc, calendar_id)
            ev = cal.events.get(event_id)
            if ev is None:
                parsed = _parse_instance_id(event_id)
                master = cal.events.get(parsed[0]) if parsed else None
                if parsed is None or master is None or not master.recurrence:
                    raise _not_found()
                ev = self._virtual_instance(master, parsed[1])
                if ev is None:
                    raise _not_found()
            body = self._event_json(acc, cal, ev)
            master = cal.events.get(ev.recurring_event_id) if ev.recurring_event_id else None
            if master is not None and master.status == "cancelled":
                body["status"] = "cancelled"
            return self._json(self._cap_attendees(body, self._max_attendees(request)))

    # Watch / stop ---------------------------------------------------------------------------------

    @staticmethod
    def _json_body(request: Request) -> dict[str, Any]:
        body = request.get_json(silent=True) if request.mimetype == "application/json" else None
        if not isinstance(body, dict):
            raise _ApiError(400, "parseError", "Parse Error")
        return body

    def _project_number(self, client_id: str) -> str:
        digits = client_id.split("-", 1)[0]
        return (
            digits if digits.isdigit() else str(int(hashlib.sha256(client_id.encode()).hexdigest()[:10], 16))
        )

    def _h_watch(self, request: Request, ctx: _Ctx, calendar_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _EVENT_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            cal = self._api_calendar(acc, calendar_id)
            body = self._json_body(request)
            channel_id = body.get("id")
            if not channel_id:
                raise _ApiError(400, "required", "Required", location="id")
            if not isinstance(channel_id, str) or not _CHANNEL_ID_RE.match(channel_id):
                raise _invalid_param("id", f"Invalid channel id: {channel_id}")
            if str(body.get("type", "")).lower() not in ("web_hook", "webhook"):
                raise _invalid_param("type", f"Channel type {body.get('type')!r} is not supported.")
            address = body.get("address")
            if not isinstance(address, str) or not address:
                raise _ApiError(400, "required", "Required", location="address")
            parts = urlsplit(address)
            # https only, like Google; plain http is tolerated for loopback so the local stack can run.
            if not parts.hostname or not (
                parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
            ):
                raise _ApiError(400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}")
            token = body.get("token")
            if token is not None and (not isinstance(token, str) or len(token) > 256):
                raise _invalid_param("token", "Channel token must be a string of at most 256 characters.")
            existing = self._channels.get(channel_id)
            if existing is not None and existing.client_id == at.client_id and self._channel_live(existing):
                raise _ApiError(400, "channelIdNotUnique", f"Channel id {channel_id} not unique")
            now = self.now()
            expiration = now + timedelta(seconds=self._ttl(body, now))
            digest = hashlib.sha256(f"{acc.id}/{cal.id}".encode()).digest()
            base = request.host_url.rstrip("/")
            resource_uri = f"{base}/calendar/v3/calendars/{quote(cal.id, safe='@')}/events?alt=json"
            channel = _Channel(
                id=channel_id,
                resource_id=base64.urlsafe_b64encode(digest).decode()[:27],
                resource_uri=resource_uri,
                token=token,
                address=address,
                expiration=expiration,
                account_id=acc.id,
                client_id=at.client_id,
                calendar_id=cal.id,
                created_at=now,
            )
            self._channels[channel.id] = channel
            delivery = self._new_delivery(channel, "sync")
            answer: dict[str, Any] = {
                "kind": "api#channel",
                "id": channel.id,
                "resourceId": channel.resource_id,
                "resourceUri": channel.resource_uri,
            }
            if token is not None:
                answer["token"] = token
            answer["expiration"] = str(_ms(expiration))
        self._launch(delivery)
        return self._json(answer)

    def _ttl(self, body: dict[str, Any], now: datetime) -> float:
        """Requested lifetime in seconds (params.ttl or expiration ms), silently capped like Google."""
        seconds: float = CHANNEL_DEFAULT_TTL_SECONDS
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise _invalid_param("params")
        if params.get("ttl") is not None:
            try:
                seconds = float(params["ttl"])
            except (TypeError, ValueError):
                raise _invalid_param("params.ttl") from None
        elif body.get("expiration") is not None:
            try:
                seconds = (int(body["expiration"]) - _ms(now)) / 1000
            except (TypeError, ValueError):
                raise _invalid_param("expiration") from None
        if seconds <= 0:
            raise _invalid_param("expiration", "Channel expiration must be in the future.")
        return min(seconds, self.channel_max_ttl)

    def _h_channel_stop(self, request: Request, ctx: _Ctx) -> Response:
        with self._lock:
            at, _ = self._authenticate(request, ctx)
            body = self._json_body(request)
            channel_id, resource_id = body.get("id"), body.get("resourceId")
            channel = self._channels.get(channel_id) if isinstance(channel_id, str) else None
            if (
                channel is None
                or channel.client_id != at.client_id
                or channel.resource_id != resource_id
                or not self._channel_live(channel)
            ):
                message = (
                    f"Channel '{channel_id}' not found for project '{self._project_number(at.client_id)}'"
                )
                raise _ApiError(404, "notFound", message)
            channel.stopped = True
            return self._json(None, 204)

    # ----------------------------------------------------------------------------------------------
    # Control API (/_control, JSON, no auth: local only)
    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def _control_rules() -> list[Rule]:
        return [
            Rule("/_control/reset", endpoint="reset", methods=["POST"]),
            Rule("/_control/clock", endpoint="clock", methods=["GET", "POST"]),
            Rule("/_control/apps", endpoint="apps", methods=["GET", "POST"]),
            Rule("/_control/apps/<client_id>", endpoint="app", methods=["DELETE"]),
            Rule("/_control/apps/<client_id>/expire-secret", endpoint="app_expire", methods=["POST"]),
            Rule("/_control/accounts", endpoint="accounts", methods=["GET", "POST"]),
            Rule("/_control/accounts/<account>/refresh-token", endpoint="account_token", methods=["POST"]),
            Rule("/_control/accounts/<account>/revoke", endpoint="account_revoke", methods=["POST"]),
            Rule("/_control/accounts/<account>/calendars", endpoint="account_calendars", methods=["POST"]),
            Rule(
                "/_control/accounts/<account>/calendars/<calendar_id>",
                endpoint="account_calendar",
                methods=["DELETE"],
            ),
            Rule(
                "/_control/accounts/<account>/calendars/<calendar_id>/events",
                endpoint="calendar_events",
                methods=["POST"],
            ),
            Rule("/_control/accounts/<account>/events", endpoint="account_events", methods=["GET"]),
            Rule("/_control/accounts/<account>/sync-tokens/expire", endpoint="sync_expire", methods=["POST"]),
            Rule("/_control/access-tokens/expire", endpoint="expire_access", methods=["POST"]),
            Rule("/_control/issued-tokens", endpoint="issued_tokens", methods=["GET"]),
            Rule("/_control/events/<event_id>", endpoint="event", methods=["GET", "PATCH", "DELETE"]),
            Rule("/_control/events/<event_id>/cancel", endpoint="event_cancel", methods=["POST"]),
            Rule("/_control/events/<event_id>/instances", endpoint="event_instances", methods=["GET"]),
            Rule("/_control/channels", endpoint="channels", methods=["GET"]),
            Rule("/_control/channels/<channel_id>/expire", endpoint="channel_expire", methods=["POST"]),
            Rule("/_control/notifications", endpoint="notifications", methods=["GET", "DELETE"]),
            Rule("/_control/notifications/config", endpoint="notifications_config", methods=["GET", "POST"]),
            Rule("/_control/notifications/flush", endpoint="notifications_flush", methods=["POST"]),
            Rule("/_control/notifications/pause", endpoint="notifications_pause", methods=["POST"]),
            Rule("/_control/notifications/resume", endpoint="notifications_resume", methods=["POST"]),
            Rule("/_control/notifications/status", endpoint="notifications_status", methods=["GET"]),
            Rule("/_control/faults", endpoint="faults", methods=["GET", "POST", "DELETE"]),
            Rule("/_control/faults/<fault_id>", endpoint="fault", methods=["DELETE"]),
            Rule("/_control/requests", endpoint="requests", methods=["GET", "DELETE"]),
        ]

    def _dispatch_control(self, request: Request) -> Response:
        adapter = self._control_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
            handler: Callable[..., tuple[int, Any]] = getattr(self, f"_c_{endpoint}")
            status, body = handler(request, **args)
        except EmulatorError as exc:
            status, body = exc.status, {"error": str(exc)}
        except HTTPException as exc:
            status, body = exc.code or 400, {"error": exc.description}
        except (TypeError, ValueError) as exc:  # wrong argument types in a JSON body
            status, body = 400, {"error": str(exc)}
        if body is None:
            return Response(status=status)
        return Response(json.dumps(body), status=status, content_type="application/json")

    @staticmethod
    def _control_body(request: Request) -> dict[str, Any]:
        if not request.get_data():
            return {}
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise EmulatorError("body must be a JSON object")
        return body

    def _c_reset(self, request: Request) -> tuple[int, Any]:
        self.reset()
        return 204, None

    def _c_clock(self, request: Request) -> tuple[int, Any]:
        if request.method == "POST":
            body = self._control_body(request)
            _check_fields(body, {"advance_seconds"}, ["advance_seconds"])
            self.advance_clock(_number(body["advance_seconds"], "advance_seconds", minimum=0))
        return 200, {"now": _iso(self.now())}

    def _c_apps(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.apps()}
        body = self._control_body(request)
        _check_fields(body, {"client_id", "client_secret", "redirect_uris", "testing"})
        return 201, self.add_app(
            body.get("client_id"),
            body.get("client_secret"),
            redirect_uris=body.get("redirect_uris"),
            testing=bool(body.get("testing")),
        )

    def _c_app(self, request: Request, client_id: str) -> tuple[int, Any]:
        self.delete_app(client_id)
        return 204, None

    def _c_app_expire(self, request: Request, client_id: str) -> tuple[int, Any]:
        self.expire_app_secret(client_id)
        return 200, {"client_id": client_id, "secret_expired": True}

    def _c_accounts(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.accounts()}
        body = self._control_body(request)
        allowed = {"email", "name", "time_zone", "client_id", "scopes", "consent", "sub", "calendars"}
        _check_fields(body, allowed, ["email"])
        calendars = body.get("calendars")
        if calendars is not None:
            if not isinstance(calendars, list) or not all(isinstance(c, dict) for c in calendars):
                raise EmulatorError("calendars must be a list of objects")
            for spec in calendars:
                _check_fields(spec, _CALENDAR_FIELDS, ["summary"])
        fields = dict(body)
        email = fields.pop("email")
        return 201, self.add_account(email, **fields)

    def _c_account_token(self, request: Request, account: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, {"client_id", "scopes"}, ["client_id"])
        return 201, {
            "refresh_token": self.issue_refresh_token(account, body["client_id"], body.get("scopes"))
        }

    def _c_account_revoke(self, request: Request, account: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, {"client_id"})
        return 200, {"revoked": self.revoke(account, body.get("client_id"))}

    def _c_account_calendars(self, request: Request, account: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, _CALENDAR_FIELDS, ["summary"])
        return 201, self.add_calendar(account, **body)

    def _c_account_calendar(self, request: Request, account: str, calendar_id: str) -> tuple[int, Any]:
        self.delete_calendar(account, calendar_id)
        return 204, None

    def _c_calendar_events(self, request: Request, account: str, calendar_id: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, _EVENT_FIELDS, ["start", "end"])
        fields = dict(body)
        event_id = fields.pop("id", None)
        return 201, self.add_event(account, calendar_id, event_id=event_id, **fields)

    def _c_account_events(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"value": self.events(account)}

    def _c_sync_expire(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"expired": self.expire_sync_tokens(account)}

    def _c_expire_access(self, request: Request) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, {"account"})
        return 200, {"expired": self.expire_access_tokens(body.get("account"))}

    def _c_issued_tokens(self, request: Request) -> tuple[int, Any]:
        return 200, self.issued_tokens()

    def _c_event(self, request: Request, event_id: str) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, self.event(event_id)
        if request.method == "DELETE":
            return 200, self.delete_event(event_id)
        body = self._control_body(request)
        _check_fields(body, _EVENT_PATCH_FIELDS)
        return 200, self.update_event(event_id, **body)

    def _c_event_cancel(self, request: Request, event_id: str) -> tuple[int, Any]:
        return 200, self.cancel_event(event_id)

    def _c_event_instances(self, request: Request, event_id: str) -> tuple[int, Any]:
        start, end = request.args.get("start"), request.args.get("end")
        if not start or not end:
            raise EmulatorError("query parameters 'start' and 'end' are required")
        return 200, {"value": self.instances(event_id, start, end)}

    def _c_channels(self, request: Request) -> tuple[int, Any]:
        return 200, {"value": self.channels(active_only=request.args.get("active", "") in ("1", "true"))}

    def _c_channel_expire(self, request: Request, channel_id: str) -> tuple[int, Any]:
        return 200, self.expire_channel(channel_id)

    def _c_notifications(self, request: Request) -> tuple[int, Any]:
        if request.method == "DELETE":
            self.clear_notifications()
            return 204, None
        return 200, {"value": self.notifications(request.args.get("channel_id"), request.args.get("state"))}

    def _c_notifications_config(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, self.notification_config()
        return 200, self.configure_notifications(**self._control_body(request))

    def _c_notifications_flush(self, request: Request) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, {"timeout"})
        timeout = _number(body.get("timeout", 10.0), "timeout", minimum=0)
        flushed = self.flush_notifications(timeout)
        status = self.notification_status()
        if not flushed:
            return 504, {
                **status,
                "flushed": False,
                "error": f"deliveries still in flight after {timeout:g} s",
            }
        return 200, {**status, "flushed": True}

    def _c_notifications_pause(self, request: Request) -> tuple[int, Any]:
        return 200, self.pause_notifications()

    def _c_notifications_resume(self, request: Request) -> tuple[int, Any]:
        return 200, self.resume_notifications()

    def _c_notifications_status(self, request: Request) -> tuple[int, Any]:
        return 200, self.notification_status()

    def _c_faults(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.faults()}
        if request.method == "DELETE":
            self.clear_faults()
            return 204, None
        body = self._control_body(request)
        _check_fields(body, _FAULT_KEYS, ["path"])
        return 201, self.add_fault(**body)

    def _c_fault(self, request: Request, fault_id: str) -> tuple[int, Any]:
        self.remove_fault(fault_id)
        return 204, None

    def _c_requests(self, request: Request) -> tuple[int, Any]:
        if request.method == "DELETE":
            self.clear_requests()
            return 204, None
        args = request.args
        return 200, {"value": self.requests(args.get("account"), args.get("path_prefix"), args.get("method"))}


_CALENDAR_FIELDS = {"summary", "calendar_id", "primary", "access_role", "time_zone", "background_color"}
_EVENT_PATCH_FIELDS = {
    "summary",
    "description",
    "location",
    "start",
    "end",
    "time_zone",
    "recurrence",
    "status",
    "meet",
    "conference_data",
    "attendees",
}
_EVENT_FIELDS = _EVENT_PATCH_FIELDS | {"all_day", "organizer", "id"}
