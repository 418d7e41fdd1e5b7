"""Emulator of the Microsoft identity platform (v2.0 token/authorize) and Microsoft Graph v1.0.

One WSGI app serves both, so the local stack points `MS_LOGIN_BASE_URL=<url>` and
`GRAPH_BASE_URL=<url>/v1.0` at the same server. It follows /work/shared/PROTOCOLS.md, including
the unpleasant parts real clients trip over: a refresh returns a new refresh token only when that
request's `scope` asks for `offline_access`; every refresh token dies `REFRESH_TOKEN_LIFETIME` (90
days) of emulator time after it was issued, however often it was used, so a client that stops
rotating loses the account; rotation does not revoke the redeemed token (two refreshes racing with
one token both succeed); the granted `scope` is not an echo of the request and never lists
`offline_access`; tokens are as large as real ones (access ~2.3 KB, refresh ~1.6 KB) and their strings
carry `!*$+/=`; calendar ids are long
base64-like strings ending in `=`, nextLinks are absolute, subscriptions are only created after a
real validation handshake against the notification URL, and errors have the exact AADSTS / Graph
shapes. What official SDKs send works too: MSAL reads `/{tenant}/v2.0/.well-known/openid-configuration`
and `/{tenant}/discovery/v2.0/keys` (the public URLs follow `X-Forwarded-Proto`, as behind TLS), a token
request asking for `openid` gets an RS256 `id_token` and one with `client_info=1` a `client_info`, and
Graph SDKs' `delta()` / `microsoft.graph.delta` are the same delta function. Tests and the local
stack drive it through `/_control` (HTTP) or the Python methods.

Events: single events, series masters (Graph patternedRecurrence, expanded with dateutil in the
series' zone, so 09:00 local stays 09:00 across DST) and occurrence overrides (exceptions,
cancellations). `GET /me[/calendars/{id}]/calendarView/delta` fixes its window on the first call,
keeps server-side sync states behind opaque tokens (410 syncStateNotFound once gone), never lists
masters, and gives occurrences/exceptions only id/seriesMasterId/type/start/end, so clients must
fetch `GET /me/events/{id}`. Times come back in UTC unless `Prefer: outlook.timezone` asks otherwise;
zones are Windows names (`windows_zones`).

Change notifications: every control change to events POSTs Graph-shaped notifications
(`{"value": [{subscriptionId, subscriptionExpirationDateTime, changeType, resource:
"Users/{oid}/Events/{id}", resourceData, clientState, tenantId}]}`) to each live subscription covering
the calendar (`/me/events` = the default calendar only), on background threads, never under the lock.
Knobs (NOTIFICATION_DEFAULTS) add a delay, duplicates and a batching window; an answer later than
3 s or not 2xx is a failed attempt, retried with backoff, and a subscription whose deliveries keep
failing is removed with a `subscriptionRemoved` lifecycle notification. `/_control/notifications`
logs every attempt; `flush` waits for deliveries instead of sleeping; `pause`/`resume` hold them.
Lifecycle notifications (reauthorizationRequired, subscriptionRemoved, missed) are sent on demand.

Never import the production package (`calbot`) from here, and never the other way round.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import html
import json
import logging
import os
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import requests as _http
from dateutil import rrule as _rr
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from local.emulators import windows_zones
from local.emulators.common import EmulatorControls, EmulatorError
from local.emulators.common import signing_key as _signing_key

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------

GRAPH_JSON = (
    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
)
AAD_JSON = "application/json; charset=utf-8"
GRAPH_METADATA = "https://graph.microsoft.com/v1.0/$metadata"
GRAPH_RESOURCE_PREFIX = "https://graph.microsoft.com/"

DEFAULT_SCOPES = "offline_access User.Read Calendars.Read"
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")
ACCESS_TOKEN_SECONDS = 3599
# A refresh token's fixed lifetime from issue (PROTOCOLS: use does not extend it; each rotation
# starts a new token with its own lifetime). AAD answers invalid_grant AADSTS700082 past it.
REFRESH_TOKEN_LIFETIME = timedelta(days=90)
# Real sizes (PROTOCOLS): access tokens commonly 1.5-2.5 KB, refresh tokens 1-2 KB.
ACCESS_TOKEN_BYTES = 1740  # -> 3 + 2320 characters of standard base64
REFRESH_TOKEN_PART_BYTES = 400  # three parts -> ~1,620 characters
AUTH_CODE_LIFETIME = timedelta(minutes=10)
REVOKE_CODES = (70008, 700082, 700084, 50173, 65001)
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
# The tenantId every notification carries (one fixed directory for all emulated mailboxes).
TENANT_ID = "5c2d7f0e-8b1a-4e6d-9f3c-a4b8e1d2c7f6"
_NOTIFICATION_EVENT_TYPE = "#Microsoft.Graph.Event"  # sic: notifications capitalize it, event JSON does not
TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_TENANT_RE = re.compile(
    r"^(?:common|organizations|consumers"
    r"|[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
    r"|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)$"
)
# /me/events, me/calendars/{id}/events and the OData key form me/calendars('{id}')/events.
_RESOURCE_RE = re.compile(
    r"^/?me/(?:events|calendars/(?P<cal>[^/()]+)/events|calendars\('(?P<calq>[^']+)'\)/events)$",
    re.IGNORECASE,
)
# REST ids are URL-safe base64 (plus legacy '+' and '/'); anything else (e.g. a double-encoded
# '%3D') is rejected the way Exchange does.
_ID_RE = re.compile(r"^[A-Za-z0-9\-_+/=]+$")

# Message bodies of the AADSTS codes we emit; `{name}` fields are filled per error.
_AADSTS_TEXT: dict[int, str] = {
    50148: (
        "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE."
    ),
    50173: (
        "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user "
        "might have changed or reset their password. The grant was issued on '{issued}' and the "
        "TokensValidFrom date (before which tokens are not valid) for this user is '{now}'."
    ),
    54005: (
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an "
        "existing refresh token."
    ),
    65001: (
        "The user or administrator has not consented to use the application with ID '{client_id}' named "
        "'{client_id}'. Send an interactive authorization request for this user and resource."
    ),
    65004: "User declined to consent to access the app.",
    70000: "Provided grant is invalid or malformed.",
    70003: "The app requested an unsupported grant type '{grant_type}'.",
    70008: (
        "The provided authorization code or refresh token has expired due to inactivity. Send a new "
        "interactive authorization request for this user and resource."
    ),
    90002: (
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
        "into the correct cloud."
    ),
    90033: "A transient error has occurred. Please try again.",
    500112: (
        "The reply address '{got}' does not match the reply address '{expected}' provided when requesting "
        "Authorization code."
    ),
    50034: "The user account {login_hint} does not exist in the directory.",
    700016: (
        "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
        "happen if the application has not been installed by the administrator of the tenant or consented "
        "to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
    ),
    700082: (
        "The refresh token has expired due to inactivity. The token was issued on {issued} and was inactive "
        "for 90.00:00:00."
    ),
    700084: (
        "The refresh token was issued to a single page app (SPA), and therefore has a fixed, limited "
        "lifetime of 1.00:00:00, which cannot be extended. It is now expired and a new sign in request must "
        "be sent by the SPA to the sign in page. The token was issued on {issued}."
    ),
    900144: "The request body must contain the following parameter: '{param}'.",
    900561: "The endpoint only accepts POST, OPTIONS requests. Received a {method} request.",
    7000215: (
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
        "value, not the client secret ID, for a secret added to app '{client_id}'."
    ),
    7000218: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    7000222: (
        "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create "
        "new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials "
        "for added security: https://aka.ms/certCreds."
    ),
}
_AAD_DEFAULT_CODE = {
    "invalid_grant": 70008,
    "invalid_client": 7000215,
    "invalid_request": 900144,
    "unauthorized_client": 700016,
    "temporarily_unavailable": 90033,
}
_GRAPH_DEFAULT_ERROR: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Bad request."),
    401: ("InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ResourceNotFound", "The object was not found."),
    409: ("Conflict", "Conflict."),
    410: ("Gone", "The resource is gone."),
    429: ("TooManyRequests", "Please retry after"),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceNotAvailable", "Service is unavailable. Please retry after"),
    504: ("GatewayTimeout", "Gateway timeout."),
}
_HEX_COLORS = {
    "auto": "",
    "lightBlue": "#a6d1f5",
    "lightGreen": "#87d28e",
    "lightOrange": "#fcab73",
    "lightGray": "#c0c0c0",
    "lightYellow": "#f4d07a",
    "lightTeal": "#62d3cf",
    "lightPink": "#f08cc0",
    "lightBrown": "#ca8b64",
    "lightRed": "#f88c9b",
    "maxColor": "",
}


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class _AadError(Exception):
    def __init__(
        self, status: int, error: str, code: int, suberror: str | None = None, **fields: object
    ) -> None:
        super().__init__(f"{error} AADSTS{code}")
        self.status, self.error, self.code, self.suberror, self.fields = status, error, code, suberror, fields


class _GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "<unknown>"


def _aadsts_text(code: int, fields: dict[str, object]) -> str:
    template = _AADSTS_TEXT.get(code, "Emulated failure.")
    return f"AADSTS{code}: " + template.format_map(_Fields(fields))


# --------------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------------


@dataclass
class App:
    client_id: str
    client_secret: str
    secret_expired: bool = False


@dataclass
class StoredEvent:
    """One stored Outlook item: a single event, a series master, or an occurrence override.

    Overrides (type "exception") are keyed by the occurrence id they replace; a cancelled override
    that was never edited stands for a cancelled plain occurrence. Times are aware, in `zone`.
    """

    id: str
    calendar_id: str
    type: str  # singleInstance | seriesMaster | exception
    ical_uid: str
    subject: str
    body_html: str
    location: str | None
    online_meeting_url: str | None
    organizer_name: str
    organizer_address: str
    zone: str  # IANA, used for arithmetic
    zone_name: str  # what Graph shows (a Windows name when one exists)
    start: datetime
    end: datetime
    is_all_day: bool
    created: datetime
    modified: datetime
    change_key: str
    seq: int = 0  # the calendar's change sequence at this item's last change
    recurrence: dict[str, Any] | None = None  # normalized Graph patternedRecurrence (masters)
    series_master_id: str | None = None  # overrides
    original_date: date | None = None  # overrides: local date of the occurrence replaced
    original_start: datetime | None = None  # overrides: start of the occurrence replaced
    is_cancelled: bool = False
    edited: bool = False  # overrides: changed (exception) rather than only cancelled
    attendees: list[dict[str, Any]] = field(default_factory=list)  # Graph attendee resources


@dataclass
class Calendar:
    id: str
    name: str
    color: str
    is_default: bool
    can_edit: bool
    owner_name: str
    owner_address: str
    owned: bool
    change_key: str
    # Keyed by event id (overrides by their occurrence id), in creation order.
    events: dict[str, StoredEvent] = field(default_factory=dict)
    # Bumped by every event change; StoredEvent.seq records the value of an item's last change.
    change_seq: int = 0


@dataclass
class Account:
    id: str
    display_name: str
    mail: str | None
    user_principal_name: str
    # Insertion-ordered: Graph lists calendars in a stable order.
    calendars: dict[str, Calendar] = field(default_factory=dict)
    # client_id -> consented Graph scopes (canonical names, e.g. "Calendars.Read"), in consent order.
    consents: dict[str, list[str]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.mail or self.user_principal_name

    def matches(self, ref: str) -> bool:
        ref_l = ref.lower()
        return (
            ref == self.id or ref_l == self.user_principal_name.lower() or ref_l == (self.mail or "").lower()
        )


@dataclass
class RefreshToken:
    token: str
    client_id: str
    account_id: str
    scopes: list[str]
    issued_at: datetime
    last_used_at: datetime
    invalid_code: int | None = None  # set once revoked / rotated away / expired
    superseded_at: datetime | None = None  # when a newer token was issued in exchange for this one


@dataclass
class AccessToken:
    token: str
    client_id: str
    account_id: str
    scopes: list[str]
    expires_at: datetime


@dataclass
class AuthCode:
    code: str
    client_id: str
    account_id: str
    redirect_uri: str
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str
    expires_at: datetime
    redeemed: bool = False


@dataclass
class Subscription:
    id: str
    account_id: str
    client_id: str
    resource: str
    calendar_id: str | None  # None: all of /me/events
    change_type: str
    notification_url: str
    lifecycle_notification_url: str | None
    client_state: str | None
    expiration: datetime
    latest_tls: str
    created_at: datetime
    # Emulator clock time of the first unanswered reauthorizationRequired challenge (PATCH or
    # /reauthorize clears it); change notifications pause once the configured grace is over.
    reauthorization_required_at: datetime | None = None
    consecutive_failures: int = 0  # failed delivery attempts in a row (a success resets it)
    lost_notifications: int = 0  # changes not notified because delivery was paused for reauthorization


_FAULT_KEYS = {
    "path",
    "method",
    "account",
    "status",
    "retry_after",
    "error",
    "aadsts",
    "message",
    "times",
    "delay",
}


@dataclass
class FaultRule:
    id: str
    path: str
    pattern: re.Pattern[str]
    method: str | None
    account: str | None
    status: int | None
    retry_after: int | None
    error: str | None  # AAD "error" for identity paths, Graph error code for Graph paths
    aadsts: int | None
    message: str | None
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
            "retry_after": self.retry_after,
            "error": self.error,
            "aadsts": self.aadsts,
            "message": self.message,
            "times": self.times,
            "delay": self.delay,
            "hits": self.hits,
            "remaining": -1 if self.times < 0 else max(0, self.times - self.hits),
        }


@dataclass
class _Delivery:
    """One notification POST (one copy of it when duplicates are configured) and its retries."""

    id: str
    generation: int  # reset() starts a new generation; older deliveries stop quietly
    kind: str  # "change" | "lifecycle"
    url: str
    items: list[dict[str, Any]]  # the "value" items; change items are dropped once their subscription dies
    copy: int  # 1..notification_duplicates
    backoff: tuple[float, ...]  # waits before attempts 2, 3, ...: at most 1 + len(backoff) attempts
    lifecycle_event: str | None = None
    attempt: int = 0  # attempts made so far
    delayed: bool = False  # notification_delay_seconds already waited

    def subscription_ids(self) -> list[str]:
        return list(dict.fromkeys(item["subscriptionId"] for item in self.items))


@dataclass
class _Ctx:
    """Per-request facts gathered for headers, fault matching and the request log."""

    request_id: str
    client_request_id: str
    account_id: str | None = None
    client_id: str | None = None
    fault_id: str | None = None
    # Where the caller reached us (scheme://host), for the issuer and the OpenID documents' URLs.
    base_url: str = ""
    # The token request asked for client_info=1 (MSAL always does).
    client_info: bool = False


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


# Graph's SDKs call OData functions as `delta()` (Kiota) or `microsoft.graph.delta` (older SDKs); the
# service takes every spelling, with or without the namespace and the parentheses.
_DELTA_SEGMENT = re.compile(r"/(?:microsoft\.graph\.)?delta(?:\(\))?$", re.IGNORECASE)


def _odata_function_path(path: str) -> str:
    return _DELTA_SEGMENT.sub("/delta", path.rstrip("/")) if "/v1.0/" in path else path


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _new_access_token() -> str:
    # Like MSA access tokens: "EwA" + standard base64, so '+', '/' and '=' appear.
    return "EwA" + base64.b64encode(os.urandom(ACCESS_TOKEN_BYTES)).decode()


def _new_refresh_token() -> str:
    # Like MSA refresh tokens: "M.C5xx_BAY.0.U.-C..." with '!', '*' and '$$' inside (form-encode them!).
    parts = [secrets.token_urlsafe(REFRESH_TOKEN_PART_BYTES) for _ in range(3)]
    return f"M.C5{secrets.randbelow(90) + 10}_BAY.0.U.-C{parts[0]}!{parts[1]}*{parts[2]}$$"


def _new_auth_code() -> str:
    return "M.C5" + f"{secrets.randbelow(90) + 10}_BL2.2.U." + secrets.token_urlsafe(64) + "$"


def _new_calendar_id() -> str:
    # Outlook REST ids: long URL-safe base64 with padding, e.g. "AAMkAGI2...AAA=".
    return "AAMkAGI2" + base64.urlsafe_b64encode(os.urandom(99)).decode() + "AAA="


def _new_change_key() -> str:
    return base64.b64encode(os.urandom(22)).decode()


def _graph_dt(value: datetime) -> str:
    """Graph's DateTimeOffset rendering: UTC with 7 fractional digits, e.g. 2026-12-02T11:00:00.0000000Z."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0Z"


def _graph_offset_dt(value: datetime) -> str:
    """The DateTimeOffset form notifications use: 7 fractional digits and an explicit offset."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0+00:00"


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_datetime(raw: object) -> datetime | None:
    if not isinstance(raw, str) or "T" not in raw:
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _graph_scope(scope: str) -> str | None:
    """Canonical Graph permission name of a requested scope, or None for OIDC scopes."""
    if scope.lower().startswith(GRAPH_RESOURCE_PREFIX):
        scope = scope[len(GRAPH_RESOURCE_PREFIX) :]
    if scope.lower() in OIDC_SCOPES:
        return None
    return scope


def _has_scope_family(scopes: Iterable[str], family: str) -> bool:
    prefix = family.lower() + "."
    return any(s.lower().startswith(prefix) for s in scopes)


def _with_query(url: str, params: list[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + params
    return urlunsplit(parts._replace(query=urlencode(query)))


def _is_loopback_url(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


def _check_fields(body: dict[str, Any], allowed: set[str], required: Iterable[str] = ()) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise EmulatorError(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = [name for name in required if body.get(name) in (None, "")]
    if missing:
        raise EmulatorError(f"missing field(s): {', '.join(missing)}")


# Change-notification delivery knobs (GraphEmulator keyword arguments, POST /_control/notifications/config).
NOTIFICATION_DEFAULTS: dict[str, Any] = {
    "notification_delay_seconds": 0.0,  # real seconds waited before a POST is first sent
    "notification_duplicates": 1,  # copies of every POST (Graph may deliver the same change twice)
    "notification_batch_window_seconds": 0.0,  # items for one URL within this window share a POST
    "notification_timeout_seconds": 3.0,  # Graph's answer deadline; later or non-2xx = failed attempt
    "notification_retry_backoff": (1.0, 2.0, 4.0),  # waits between attempts: 1 + len() attempts at most
    "notification_max_consecutive_failures": 10,  # failed attempts in a row that remove a subscription
    # Emulator-clock seconds change notifications keep flowing after a reauthorizationRequired
    # challenge before they pause (changes in the pause are lost); None: never pause.
    "notification_reauthorization_grace_seconds": 600.0,
}


def _number(raw: object, name: str, *, minimum: float, strict: bool = False) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise EmulatorError(f"{name} must be a number, got {raw!r}")
    if raw < minimum or (strict and raw == minimum):
        raise EmulatorError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {raw!r}")
    return float(raw)


def _notification_knobs(changes: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied, every value checked; EmulatorError on unknown names or bad values."""
    unknown = sorted(set(changes) - set(NOTIFICATION_DEFAULTS))
    if unknown:
        raise EmulatorError(
            f"unknown notification setting(s): {', '.join(unknown)}; "
            f"known: {', '.join(NOTIFICATION_DEFAULTS)}"
        )
    config = dict(base)
    for name, raw in changes.items():
        if name in ("notification_delay_seconds", "notification_batch_window_seconds"):
            config[name] = _number(raw, name, minimum=0)
        elif name == "notification_timeout_seconds":
            config[name] = _number(raw, name, minimum=0, strict=True)
        elif name in ("notification_duplicates", "notification_max_consecutive_failures"):
            config[name] = _positive_int(raw, name, 1000)
        elif name == "notification_retry_backoff":
            if not isinstance(raw, list | tuple) or len(raw) > 20:
                raise EmulatorError(f"{name} must be a list of at most 20 waits in seconds, got {raw!r}")
            config[name] = tuple(_number(wait, name, minimum=0) for wait in raw)
        elif name == "notification_reauthorization_grace_seconds":
            config[name] = None if raw is None else _number(raw, name, minimum=0)
    return config


# --------------------------------------------------------------------------------------------------
# Events: ids, times, recurrence (module helpers)
# --------------------------------------------------------------------------------------------------

EVENT_ID_PREFIX = "AAMkAGI2"
# Graph event ids are URL-safe base64 ('-', '_', '=' padding), never '/'.
_EVENT_ID_RE = re.compile(r"^[A-Za-z0-9\-_=]+$")
_OCCURRENCE_MARK = b"\x01OCC"
# MS-OXOCAL GlobalObjectId as hex: class id, then 4 bytes (YYMD) that are zero for a series and
# carry the original date for an occurrence, then the unique part.
_ICAL_UID_HEAD = "040000008200E00074C5B7101A82E008"
_EVENT_JSON_TYPE = "#microsoft.graph.event"
_DELTA_CONTEXT = f"{GRAPH_METADATA}#Collection(event)"
_MAX_SYNC_TOKENS = 5000
_NOT_FOUND_IN_STORE = "The specified object was not found in the store."

_WEEKDAYS: dict[str, _rr.weekday] = {
    "sunday": _rr.SU,
    "monday": _rr.MO,
    "tuesday": _rr.TU,
    "wednesday": _rr.WE,
    "thursday": _rr.TH,
    "friday": _rr.FR,
    "saturday": _rr.SA,
}
_WEEK_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_PATTERN_TYPES = ("daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly", "relativeYearly")
_RANGE_TYPES = ("endDate", "noEnd", "numbered")
_NO_DATE = "0001-01-01"  # what Graph puts in range.endDate when there is none

_PREFER_TZ_RE = re.compile(r'outlook\.timezone\s*=\s*(?:"([^"]*)"|([^,;]*))', re.IGNORECASE)
_PREFER_PAGE_RE = re.compile(r"odata\.maxpagesize\s*=\s*\"?(\d+)", re.IGNORECASE)
_PREFER_BODY_RE = re.compile(r'outlook\.body-content-type\s*=\s*"?(text|html)"?', re.IGNORECASE)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "leave as is" default of update_event (None means "clear")


def _new_event_id() -> str:
    # Like Outlook REST event ids: "AAMkAGI2..." long URL-safe base64 ending in "AAA=".
    return EVENT_ID_PREFIX + base64.urlsafe_b64encode(os.urandom(105)).decode() + "AAA="


def _occurrence_id(master_id: str, on: date) -> str:
    """Stable id of the occurrence of `master_id` originally on local date `on` (one per day at most)."""
    raw = _OCCURRENCE_MARK + on.strftime("%Y%m%d").encode() + master_id.encode()
    return EVENT_ID_PREFIX + base64.urlsafe_b64encode(raw).decode()


def _parse_occurrence_id(event_id: str) -> tuple[str, date] | None:
    if not event_id.startswith(EVENT_ID_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(event_id[len(EVENT_ID_PREFIX) :])
        if not raw.startswith(_OCCURRENCE_MARK):
            return None
        mark = len(_OCCURRENCE_MARK)
        on = datetime.strptime(raw[mark : mark + 8].decode(), "%Y%m%d").date()
        return raw[mark + 8 :].decode(), on
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None


def _new_ical_uid() -> str:
    return _ICAL_UID_HEAD + "00000000" + secrets.token_hex(28).upper()


def _occurrence_ical_uid(uid: str, on: date) -> str:
    head = len(_ICAL_UID_HEAD)
    if not uid.startswith(_ICAL_UID_HEAD) or len(uid) < head + 8:
        return uid
    return uid[:head] + f"{on.year:04X}{on.month:02X}{on.day:02X}" + uid[head + 8 :]


def _zone(name: str) -> tuple[str, str]:
    """(IANA, display name) of a Windows or IANA zone name; EmulatorError if unknown."""
    try:
        return windows_zones.resolve(name)
    except ValueError:
        raise EmulatorError(
            f"unknown time zone {name!r}: use a Windows name ('Pacific Standard Time') or an IANA one"
        ) from None


def _localize(naive: datetime, tz: ZoneInfo) -> datetime:
    # Through UTC so that a wall time inside a DST gap lands on a real instant.
    return naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz)


def _local_dt(value: datetime) -> str:
    """Graph's dateTimeTimeZone.dateTime: no offset, 7 fractional digits."""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond:06d}0"


def _control_time(raw: object, tz: ZoneInfo, name: str) -> datetime:
    """A control-API time: ISO 8601 with an offset (converted) or naive / a date (read in `tz`)."""
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, date):
        value = datetime.combine(raw, dt_time())
    elif isinstance(raw, str) and raw.strip():
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise EmulatorError(f"{name}: not an ISO 8601 date/time: {raw!r}") from None
    else:
        raise EmulatorError(f"{name} must be an ISO 8601 date/time string")
    if value.tzinfo is None:
        return _localize(value, tz)
    return value.astimezone(tz)


def _parse_date(raw: object, name: str) -> date:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw.strip()[:10])
        except ValueError:
            pass
    raise EmulatorError(f"{name} must be a date (YYYY-MM-DD), got {raw!r}")


def _positive_int(raw: object, name: str, upper: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1 or (upper is not None and raw > upper):
        bound = f" and at most {upper}" if upper is not None else ""
        raise EmulatorError(f"{name} must be an integer of at least 1{bound}, got {raw!r}")
    return raw


def _normalize_recurrence(raw: object, start: datetime, zone_name: str) -> dict[str, Any]:
    """Check a Graph patternedRecurrence and fill in the defaults Graph reports back."""
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("pattern"), dict)
        or not isinstance(raw.get("range"), dict)
    ):
        raise EmulatorError("recurrence must be a Graph patternedRecurrence: {pattern: {...}, range: {...}}")
    pattern, rng = raw["pattern"], raw["range"]
    ptype = pattern.get("type")
    if ptype not in _PATTERN_TYPES:
        raise EmulatorError(f"recurrence.pattern.type must be one of {', '.join(_PATTERN_TYPES)}")
    interval = _positive_int(pattern.get("interval", 1), "recurrence.pattern.interval", 99)
    days_raw = pattern.get("daysOfWeek") or []
    if not isinstance(days_raw, list) or any(
        not isinstance(d, str) or d.lower() not in _WEEKDAYS for d in days_raw
    ):
        raise EmulatorError(f"recurrence.pattern.daysOfWeek must list days among {', '.join(_WEEKDAYS)}")
    days = list(dict.fromkeys(d.lower() for d in days_raw))
    if ptype in ("weekly", "relativeMonthly", "relativeYearly") and not days:
        raise EmulatorError(f"recurrence.pattern.daysOfWeek is required for {ptype}")
    first_day = str(pattern.get("firstDayOfWeek") or "sunday").lower()
    if first_day not in _WEEKDAYS:
        raise EmulatorError("recurrence.pattern.firstDayOfWeek must be a day name")
    index = str(pattern.get("index") or "first").lower()
    if index not in _WEEK_INDEX:
        raise EmulatorError(f"recurrence.pattern.index must be one of {', '.join(_WEEK_INDEX)}")
    day_of_month = pattern.get("dayOfMonth") or 0
    if ptype in ("absoluteMonthly", "absoluteYearly"):
        day_of_month = _positive_int(day_of_month, "recurrence.pattern.dayOfMonth", 31)
    month = pattern.get("month") or 0
    if ptype in ("absoluteYearly", "relativeYearly"):
        month = _positive_int(month, "recurrence.pattern.month", 12)

    rtype = rng.get("type")
    if rtype not in _RANGE_TYPES:
        raise EmulatorError(f"recurrence.range.type must be one of {', '.join(_RANGE_TYPES)}")
    rzone_iana, rzone_name = _zone(str(rng.get("recurrenceTimeZone") or zone_name))
    first_local = start.astimezone(ZoneInfo(rzone_iana))
    start_date = (
        _parse_date(rng["startDate"], "recurrence.range.startDate")
        if rng.get("startDate")
        else first_local.date()
    )
    end_date = _NO_DATE
    count = 0
    if rtype == "endDate":
        if not rng.get("endDate") or rng.get("endDate") == _NO_DATE:
            raise EmulatorError("recurrence.range.endDate is required for an endDate range")
        end = _parse_date(rng["endDate"], "recurrence.range.endDate")
        if end < start_date:
            raise EmulatorError("recurrence.range.endDate is before its startDate")
        end_date = end.isoformat()
    elif rtype == "numbered":
        count = _positive_int(rng.get("numberOfOccurrences"), "recurrence.range.numberOfOccurrences")
    return {
        "pattern": {
            "type": ptype,
            "interval": interval,
            "month": month,
            "dayOfMonth": day_of_month,
            "daysOfWeek": days,
            "firstDayOfWeek": first_day,
            "index": index,
        },
        "range": {
            "type": rtype,
            "startDate": start_date.isoformat(),
            "endDate": end_date,
            "recurrenceTimeZone": rzone_name,
            "numberOfOccurrences": count,
        },
    }


def _series_rule(recurrence: dict[str, Any], dtstart: datetime) -> _rr.rrule:
    """The dateutil rule for a Graph pattern + range, on naive local times from `dtstart`.

    As in Graph, `dtstart` (range.startDate at the series' time of day) is only an occurrence if it
    fits the pattern, and a numbered range counts real occurrences. absolute patterns on days 29-31
    fall on the last day of shorter months (what Outlook does), via BYMONTHDAY=d,-1 + BYSETPOS=1.
    """
    pattern, rng = recurrence["pattern"], recurrence["range"]
    ptype = pattern["type"]
    days = tuple(_WEEKDAYS[d] for d in pattern["daysOfWeek"])
    kwargs: dict[str, Any] = {"dtstart": dtstart, "interval": pattern["interval"]}
    if ptype == "daily":
        freq = _rr.DAILY
    elif ptype == "weekly":
        freq = _rr.WEEKLY
        kwargs.update(byweekday=days, wkst=_WEEKDAYS[pattern["firstDayOfWeek"]])
    else:
        freq = _rr.MONTHLY if ptype.endswith("Monthly") else _rr.YEARLY
        if ptype.endswith("Yearly"):
            kwargs["bymonth"] = pattern["month"]
        if ptype.startswith("absolute"):
            day = pattern["dayOfMonth"]
            if day > 28:
                kwargs.update(bymonthday=(day, -1), bysetpos=1)
            else:
                kwargs["bymonthday"] = day
        else:
            kwargs.update(byweekday=days, bysetpos=_WEEK_INDEX[pattern["index"]])
    if rng["type"] == "endDate":
        kwargs["until"] = datetime.combine(date.fromisoformat(rng["endDate"]), dt_time.max)
    elif rng["type"] == "numbered":
        kwargs["count"] = rng["numberOfOccurrences"]
    return _rr.rrule(freq, **kwargs)


def _html_to_text(content: str) -> str:
    text = re.sub(r"(?is)<(script|style|head)[^>]*>.*?</\1>", " ", content)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
    text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def _body_preview(body_html: str) -> str:
    return " ".join(_html_to_text(body_html).split())[:255]


def _body_document(body_html: str) -> str:
    # Outlook stores HTML bodies as whole documents.
    if not body_html or body_html.lstrip().lower().startswith(("<html", "<!doctype")):
        return body_html
    return (
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n'
        f"</head>\r\n<body>\r\n{body_html}\r\n</body>\r\n</html>\r\n"
    )


def _location_json(name: str | None) -> dict[str, Any]:
    if not name:
        return {
            "displayName": "",
            "locationType": "default",
            "uniqueIdType": "unknown",
            "address": {},
            "coordinates": {},
        }
    return {"displayName": name, "locationType": "default", "uniqueId": name, "uniqueIdType": "private"}


def _removed_item(event_id: str) -> dict[str, Any]:
    return {"@odata.type": _EVENT_JSON_TYPE, "id": event_id, "@removed": {"reason": "deleted"}}


@dataclass
class _ViewItem:
    """An event as one calendarView / GET answer sees it; times are filled in per request."""

    id: str
    type: str  # singleInstance | occurrence | exception | seriesMaster
    start: datetime  # aware, in the event's zone
    end: datetime
    is_all_day: bool
    zone_name: str
    version: str  # changes whenever anything a client sees of this item changes
    full: dict[str, Any]  # Graph event JSON with "start"/"end" placeholders


@dataclass
class _Prefs:
    """What the request's Prefer headers ask for."""

    zone: tuple[str, ZoneInfo] | None  # (label, zone); None: each event's own zone
    page_size: int | None
    text_body: bool
    applied: list[str]


@dataclass
class _DeltaRound:
    """One delta round (first sync or one deltaLink call): its items, frozen when it started."""

    account_id: str
    calendar_id: str
    window: tuple[datetime, datetime]
    entries: list[_ViewItem | dict[str, Any]]
    snapshot: dict[str, str]  # id -> version of everything in the window when the round started
    skip_tokens: dict[int, str] = field(default_factory=dict)
    delta_token: str | None = None


@dataclass
class _SyncToken:
    kind: str  # "skip" | "delta"
    account_id: str
    calendar_id: str
    issued_at: datetime
    round: _DeltaRound
    offset: int = 0


# --------------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------------


class GraphEmulator(EmulatorControls):
    """Microsoft identity platform + Graph v1.0 emulator; a WSGI app (`wsgi_app`, or the instance)."""

    def __init__(
        self,
        *,
        page_size: int = 10,
        subscription_max_minutes: int = 10080,
        validation_timeout: float = 10.0,
        default_response_timezone: str | None = None,
        delta_page_size: int = 10,
        delta_token_max_age_seconds: float | None = None,
        notification_delay_seconds: float = 0.0,
        notification_duplicates: int = 1,
        notification_batch_window_seconds: float = 0.0,
        notification_timeout_seconds: float = 3.0,
        notification_retry_backoff: Sequence[float] = (1.0, 2.0, 4.0),
        notification_max_consecutive_failures: int = 10,
        notification_reauthorization_grace_seconds: float | None = 600.0,
    ) -> None:
        """`default_response_timezone`: the zone of event times when a request has no
        `Prefer: outlook.timezone` header: None = UTC (what Graph does), "original" = each event's own
        zone, or a Windows / IANA name. `delta_page_size`: calendarView delta page size without
        `Prefer: odata.maxpagesize`. `delta_token_max_age_seconds`: skip/delta tokens older than this
        (emulator clock) answer 410 syncStateNotFound; None = never by age.

        `notification_*`: change-notification delivery knobs (see NOTIFICATION_DEFAULTS); they can be
        changed at runtime with `configure_notifications`, and `reset()` restores these values.
        """
        if default_response_timezone not in (None, "original"):
            _zone(default_response_timezone)  # EmulatorError (a ValueError) if unknown
        if delta_page_size < 1:
            raise EmulatorError("delta_page_size must be at least 1")
        self.default_response_timezone = default_response_timezone
        self.delta_page_size = delta_page_size
        self.delta_token_max_age = (
            timedelta(seconds=delta_token_max_age_seconds)
            if delta_token_max_age_seconds is not None
            else None
        )
        self.page_size = page_size
        self.subscription_max_minutes = subscription_max_minutes
        self.validation_timeout = validation_timeout
        # One re-entrant lock around all state: the app is served by a threaded server.
        self._lock = threading.RLock()
        # Signalled (under the same lock) whenever a notification delivery or batch finishes.
        self._deliveries_changed = threading.Condition(self._lock)
        self._notification_defaults = _notification_knobs(
            {
                "notification_delay_seconds": notification_delay_seconds,
                "notification_duplicates": notification_duplicates,
                "notification_batch_window_seconds": notification_batch_window_seconds,
                "notification_timeout_seconds": notification_timeout_seconds,
                "notification_retry_backoff": notification_retry_backoff,
                "notification_max_consecutive_failures": notification_max_consecutive_failures,
                "notification_reauthorization_grace_seconds": notification_reauthorization_grace_seconds,
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
        """Forget everything (apps, accounts, tokens, subscriptions, faults, log, clock offset)."""
        with self._lock:
            self._apps: dict[str, App] = {}
            self._accounts: dict[str, Account] = {}
            self._refresh_tokens: dict[str, RefreshToken] = {}
            self._access_tokens: dict[str, AccessToken] = {}
            self._auth_codes: dict[str, AuthCode] = {}
            self._subscriptions: dict[str, Subscription] = {}
            self._faults: list[FaultRule] = []
            self._log: list[dict[str, Any]] = []
            self._log_seq = 0
            self._clock_offset = timedelta(0)
            self._sync_tokens: dict[str, _SyncToken] = {}
            self._resync_required: set[str] = set()
            # Change notifications: deliveries still running from before are abandoned (generation).
            self._generation += 1
            self._notification_config = dict(self._notification_defaults)
            self._notification_log: list[dict[str, Any]] = []
            self._notification_seq = 0
            self._in_flight = 0  # deliveries (incl. their delay and backoff waits) + open batches
            self._batches: dict[str, list[dict[str, Any]]] = {}  # notificationUrl -> items waiting
            self._delivery_paused = False
            self._queued: list[_Delivery] = []  # deliveries held while paused
            self._deliveries_changed.notify_all()

    def advance_clock(self, seconds: float) -> datetime:
        """Move the emulator's clock forward (expires access tokens, subscriptions, refresh tokens)."""
        with self._lock:
            self._clock_offset += timedelta(seconds=seconds)
            return self.now()

    def add_app(self, client_id: str | None = None, client_secret: str | None = None) -> dict[str, Any]:
        """Register (or re-register, un-expiring the secret) an app registration."""
        with self._lock:
            app = App(client_id or str(uuid.uuid4()), client_secret or secrets.token_urlsafe(30))
            self._apps[app.client_id] = app
            return {"client_id": app.client_id, "client_secret": app.client_secret}

    def apps(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"client_id": a.client_id, "secret_expired": a.secret_expired} for a in self._apps.values()
            ]

    def expire_app_secret(self, client_id: str) -> None:
        with self._lock:
            self._app(client_id).secret_expired = True

    def add_account(
        self,
        *,
        client_id: str,
        user_principal_name: str,
        mail: str | None = None,
        display_name: str | None = None,
        calendars: list[dict[str, Any]] | None = None,
        scopes: str = DEFAULT_SCOPES,
        object_id: str | None = None,
        refresh_token: str | None = None,
    ) -> dict[str, Any]:
        """Create a mailbox that has consented to `client_id`; returns its id, a refresh token, calendars.

        `mail=None` models a personal account (Graph returns `mail: null`). `refresh_token` fixes the
        first token's string (e.g. for checked-in sample events); it still rotates on first use.
        """
        with self._lock:
            self._app(client_id)
            if any(a.matches(user_principal_name) for a in self._accounts.values()):
                raise EmulatorError(f"account {user_principal_name!r} already exists", 409)
            account = Account(
                id=object_id or str(uuid.uuid4()),
                display_name=display_name or user_principal_name.split("@")[0],
                mail=mail,
                user_principal_name=user_principal_name,
            )
            if account.id in self._accounts:
                raise EmulatorError(f"account id {account.id!r} already exists", 409)
            if refresh_token is not None and refresh_token in self._refresh_tokens:
                raise EmulatorError("that refresh token string is already in use", 409)
            self._accounts[account.id] = account
            specs = calendars or [{"name": "Calendar", "is_default": True}]
            if not any(spec.get("is_default") for spec in specs):
                specs = [{**specs[0], "is_default": True}, *specs[1:]]  # a mailbox always has one default
            created = [self.add_calendar(account.id, **spec) for spec in specs]
            token = self.issue_refresh_token(account.id, client_id, scopes, refresh_token=refresh_token)
            return {"id": account.id, "refresh_token": token, "calendars": created}

    def accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._account_dict(a) for a in self._accounts.values()]

    def add_calendar(
        self,
        account: str,
        *,
        name: str,
        is_default: bool = False,
        can_edit: bool = True,
        color: str = "auto",
        owner_name: str | None = None,
        owner_address: str | None = None,
        calendar_id: str | None = None,
    ) -> dict[str, Any]:
        """Add a calendar; a different owner address makes it a shared calendar (no share/remove)."""
        with self._lock:
            acc = self._account(account)
            if color not in _HEX_COLORS:
                raise EmulatorError(f"unknown color {color!r}; one of {', '.join(_HEX_COLORS)}")
            address = owner_address or acc.address
            cal = Calendar(
                id=calendar_id or _new_calendar_id(),
                name=name,
                color=color,
                is_default=is_default,
                can_edit=can_edit,
                owner_name=owner_name or acc.display_name,
                owner_address=address,
                owned=address.lower() == acc.address.lower(),
                change_key=_new_change_key(),
            )
            if is_default:
                for other in acc.calendars.values():
                    other.is_default = False
            acc.calendars[cal.id] = cal
            return {"id": cal.id, "name": cal.name}

    def calendar(self, account: str, calendar_id: str) -> Calendar:
        """The live calendar object (for extensions that add events)."""
        with self._lock:
            cal = self._account(account).calendars.get(calendar_id)
            if cal is None:
                raise EmulatorError(f"no calendar {calendar_id!r}", 404)
            return cal

    def issue_refresh_token(
        self, account: str, client_id: str, scopes: str | None = None, *, refresh_token: str | None = None
    ) -> str:
        """Consent `client_id` for the account (adding `scopes`) and return a new valid refresh token."""
        with self._lock:
            acc = self._account(account)
            self._app(client_id)
            if refresh_token is not None and refresh_token in self._refresh_tokens:
                raise EmulatorError("that refresh token string is already in use", 409)
            requested = (scopes or DEFAULT_SCOPES).split()
            self._consent(acc, client_id, requested)
            return self._new_refresh(acc.id, client_id, requested, refresh_token).token

    def revoke(self, account: str, code: int = 50173) -> int:
        """Invalidate all the account's refresh tokens; later use fails with invalid_grant AADSTS<code>."""
        if code not in REVOKE_CODES:
            raise EmulatorError(f"code must be one of {REVOKE_CODES}")
        with self._lock:
            acc = self._account(account)
            revoked = 0
            for rt in self._refresh_tokens.values():
                if rt.account_id == acc.id and rt.invalid_code is None:
                    rt.invalid_code = code
                    revoked += 1
            return revoked

    def expire_access_tokens(self, account: str | None = None) -> int:
        """Expire all access tokens (of one account if given); Graph then answers 401."""
        with self._lock:
            account_id = self._account(account).id if account else None
            past = self.now() - timedelta(seconds=1)
            expired = 0
            for at in self._access_tokens.values():
                if (account_id is None or at.account_id == account_id) and at.expires_at > past:
                    at.expires_at = past
                    expired += 1
            return expired

    def issued_tokens(self) -> dict[str, list[str]]:
        """Every refresh and access token ever issued, valid or not (leak tests grep for them)."""
        with self._lock:
            return {"refresh_tokens": list(self._refresh_tokens), "access_tokens": list(self._access_tokens)}

    def refresh_tokens(self, account: str) -> list[dict[str, Any]]:
        """Currently valid refresh tokens of an account, oldest first."""
        with self._lock:
            acc = self._account(account)
            return [
                {
                    "refresh_token": rt.token,
                    "client_id": rt.client_id,
                    "scope": " ".join(rt.scopes),
                    "issued_at": _iso(rt.issued_at),
                    "superseded": rt.superseded_at is not None,
                }
                for rt in self._refresh_tokens.values()
                if rt.account_id == acc.id and self._refresh_invalid_code(rt) is None
            ]

    def subscriptions(self, active_only: bool = False) -> list[dict[str, Any]]:
        """All subscriptions (expired ones too, flagged, unless active_only)."""
        with self._lock:
            now = self.now()
            return [
                self._subscription_control_dict(s, now)
                for s in self._subscriptions.values()
                if not active_only or s.expiration > now
            ]

    def delete_subscription(self, subscription_id: str) -> None:
        """Remove a subscription behind the client's back."""
        with self._lock:
            if self._subscriptions.pop(subscription_id, None) is None:
                raise EmulatorError(f"no subscription {subscription_id!r}", 404)

    def add_fault(
        self,
        *,
        path: str,
        method: str | None = None,
        account: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        error: str | None = None,
        aadsts: int | None = None,
        message: str | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> dict[str, Any]:
        """Add a fault rule (first matching active rule wins); returns it with its `id`.

        `path` is a regex searched in the request path. `error` is the AAD error for identity paths
        ("invalid_grant", "invalid_client", ...; `aadsts` picks the code) and the Graph error code
        otherwise. A rule with only `delay` slows the request down and then lets it through.
        """
        try:
            pattern = re.compile(path)
        except re.error as exc:
            raise EmulatorError(f"bad path regex: {exc}") from None
        if status is None and error is None and not delay:
            raise EmulatorError("a fault needs status, error or delay")
        if status is not None and not 100 <= int(status) <= 599:
            raise EmulatorError("status must be an HTTP status code")
        if times == 0 or times < -1:
            raise EmulatorError("times must be positive, or -1 for 'until cleared'")
        if delay < 0:
            raise EmulatorError("delay must be >= 0")
        rule = FaultRule(
            id=uuid.uuid4().hex[:12],
            path=path,
            pattern=pattern,
            method=method.upper() if method else None,
            account=account,
            status=int(status) if status is not None else None,
            retry_after=int(retry_after) if retry_after is not None else None,
            error=error,
            aadsts=int(aadsts) if aadsts is not None else None,
            message=message,
            times=int(times),
            delay=float(delay),
        )
        with self._lock:
            self._faults.append(rule)
        return rule.to_dict()

    # ----------------------------------------------------------------------------------------------
    # Python control API: events and delta
    # ----------------------------------------------------------------------------------------------

    def add_event(
        self,
        account: str,
        calendar_id: str,
        *,
        start: str | datetime | date,
        end: str | datetime | date,
        subject: str = "",
        time_zone: str = "UTC",
        is_all_day: bool = False,
        body_html: str = "",
        location: str | None = None,
        online_meeting_url: str | None = None,
        organizer: str | dict[str, str] | None = None,
        recurrence: dict[str, Any] | None = None,
        event_id: str | None = None,
        attendees: list[str | dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Create a single event, or a series master when `recurrence` (Graph patternedRecurrence) is
        given; returns its control view. `attendees`: addresses or {"address", "name", "type",
        "response"} (large meetings carry hundreds).

        `start`/`end`: ISO 8601 with an offset (converted into `time_zone`) or naive (read in it);
        all-day events take dates or midnights, end exclusive. `time_zone`: Windows or IANA name.
        `online_meeting_url` makes it a Teams meeting (onlineMeeting.joinUrl). `organizer`: an address
        or {"name", "address"}; default the calendar's owner.
        """
        with self._lock:
            acc = self._account(account)
            cal = acc.calendars.get(calendar_id)
            if cal is None:
                raise EmulatorError(f"no calendar {calendar_id!r} in account {account!r}", 404)
            if event_id is not None:
                if not isinstance(event_id, str) or not _EVENT_ID_RE.match(event_id):
                    raise EmulatorError("id must be URL-safe base64 characters (A-Z a-z 0-9 - _ =)")
                if self._find_stored(event_id) is not None:
                    raise EmulatorError(f"event id {event_id!r} already exists", 409)
            iana, zone_name = _zone(time_zone)
            tz = ZoneInfo(iana)
            begin, finish = _control_time(start, tz, "start"), _control_time(end, tz, "end")
            self._check_times(begin, finish, bool(is_all_day))
            org_name, org_address = self._organizer(cal, organizer)
            now = self.now()
            ev = StoredEvent(
                id=event_id or _new_event_id(),
                calendar_id=cal.id,
                type="seriesMaster" if recurrence is not None else "singleInstance",
                ical_uid=_new_ical_uid(),
                subject=str(subject or ""),
                body_html=str(body_html or ""),
                location=location or None,
                online_meeting_url=online_meeting_url or None,
                organizer_name=org_name,
                organizer_address=org_address,
                zone=iana,
                zone_name=zone_name,
                start=begin,
                end=finish,
                is_all_day=bool(is_all_day),
                created=now,
                modified=now,
                change_key=_new_change_key(),
                attendees=_attendees(attendees),
            )
            if recurrence is not None:
                ev.recurrence = _normalize_recurrence(recurrence, begin, zone_name)
            self._bump(cal, ev)
            cal.events[ev.id] = ev
            view = self._event_view(acc, cal, ev)
        self._on_change(acc.id, cal.id, [ev.id], "created")
        return view

    def update_event(
        self,
        event_id: str,
        *,
        subject: Any = UNSET,
        start: Any = UNSET,
        end: Any = UNSET,
        time_zone: Any = UNSET,
        body_html: Any = UNSET,
        location: Any = UNSET,
        online_meeting_url: Any = UNSET,
        recurrence: Any = UNSET,
    ) -> dict[str, Any]:
        """Change an event; only the arguments given change (None clears location / meeting URL).

        A master edit changes the series: subject/body/location/link also reach exceptions that had
        the old value; a time, zone or recurrence change drops all the series' exceptions and
        cancellations (as Outlook does). An occurrence id creates (or updates) an exception: new
        start/end move it. `start` alone keeps the duration; `time_zone` alone keeps the wall times.
        """
        with self._lock:
            acc, cal, ev, occurrence = self._locate(event_id)
            backup = None
            if ev is None:
                if recurrence is not UNSET:
                    raise EmulatorError("an occurrence cannot get a recurrence of its own")
                master, on, begin, finish = occurrence  # type: ignore[misc]
                ev = self._new_override(cal, master, on, begin, finish)
            elif ev.is_cancelled:
                raise EmulatorError(f"event {event_id!r} is cancelled", 409)
            elif ev.type == "exception" and recurrence is not UNSET:
                raise EmulatorError("an occurrence cannot get a recurrence of its own")
            else:
                backup = dataclasses.replace(ev)
            try:
                changed = self._apply_patch(
                    cal,
                    ev,
                    subject=subject,
                    start=start,
                    end=end,
                    time_zone=time_zone,
                    body_html=body_html,
                    location=location,
                    online_meeting_url=online_meeting_url,
                    recurrence=recurrence,
                )
            except (EmulatorError, TypeError, ValueError):
                if backup is not None:  # all or nothing: a rejected patch leaves the event as it was
                    vars(ev).update(vars(backup))
                raise
            cal.events[ev.id] = ev  # a new exception is stored only once its patch is accepted
            view = self._event_view(acc, cal, ev)
        self._on_change(acc.id, cal.id, changed, "updated")
        return view

    def cancel_event(self, event_id: str) -> dict[str, Any]:
        """Cancel a single event, a whole series (master id) or one occurrence (occurrence id).

        Cancelled items leave calendarView (delta reports them removed); GET still answers them with
        `isCancelled: true`. Cancelling twice changes nothing.
        """
        with self._lock:
            acc, cal, ev, occurrence = self._locate(event_id)
            if ev is None:
                master, on, begin, finish = occurrence  # type: ignore[misc]
                ev = self._new_override(cal, master, on, begin, finish)
                cal.events[ev.id] = ev
            elif ev.is_cancelled:
                return self._event_view(acc, cal, ev)
            ev.is_cancelled = True
            self._bump(cal, ev)
            view = self._event_view(acc, cal, ev)
        self._on_change(acc.id, cal.id, [ev.id], "updated")
        return view

    def delete_event(self, event_id: str) -> None:
        """Delete a single event or a whole series (with its exceptions); for an occurrence or an
        exception, delete just that occurrence (it stays gone: a cancelled override is kept)."""
        with self._lock:
            acc, cal, ev, occurrence = self._locate(event_id)
            if ev is None or ev.type == "exception":
                if ev is None:
                    master, on, begin, finish = occurrence  # type: ignore[misc]
                    ev = self._new_override(cal, master, on, begin, finish)
                    cal.events[ev.id] = ev
                ev.is_cancelled = True
                self._bump(cal, ev)
                changed = [ev.id]
            else:
                changed = [ev.id] + [o.id for o in self._overrides(cal, ev.id)]
                for item_id in changed:
                    del cal.events[item_id]
                cal.change_seq += 1
        self._on_change(acc.id, cal.id, changed, "deleted")

    def event(self, event_id: str) -> dict[str, Any]:
        """Control view of a stored event, or of an occurrence by its occurrence id."""
        with self._lock:
            acc, cal, ev, occurrence = self._locate(event_id)
            if ev is not None:
                return self._event_view(acc, cal, ev)
            master, on, begin, finish = occurrence  # type: ignore[misc]
            return self._event_view(
                acc, cal, self._new_override(cal, master, on, begin, finish, virtual=True)
            )

    def events(self, account: str) -> list[dict[str, Any]]:
        """Control views of every stored item of the account (masters, exceptions, cancelled ones)."""
        with self._lock:
            acc = self._account(account)
            return [
                self._event_view(acc, cal, ev) for cal in acc.calendars.values() for ev in cal.events.values()
            ]

    def occurrences(
        self, event_id: str, start: str | datetime | date, end: str | datetime | date
    ) -> list[dict[str, Any]]:
        """The series' live occurrences and exceptions overlapping [start, end) (naive = UTC)."""
        with self._lock:
            acc, cal, ev, _ = self._locate(event_id)
            if ev is None or ev.type != "seriesMaster":
                raise EmulatorError(f"{event_id!r} is not a series master")
            utc = ZoneInfo("UTC")
            items = self._calendar_view(
                acc,
                cal,
                (_control_time(start, utc, "start"), _control_time(end, utc, "end")),
                series=ev.id,
            )
            return [
                {
                    "id": item.id,
                    "type": item.type,
                    "series_master_id": ev.id,
                    "subject": item.full["subject"],
                    "start": item.start.isoformat(),
                    "end": item.end.isoformat(),
                }
                for item in items
            ]

    def expire_delta_tokens(self, account: str) -> int:
        """Forget every delta/skip token of the account: their next use answers 410 syncStateNotFound."""
        with self._lock:
            acc = self._account(account)
            doomed = [t for t, state in self._sync_tokens.items() if state.account_id == acc.id]
            for token in doomed:
                del self._sync_tokens[token]
            return len(doomed)

    def require_resync(self, account: str) -> None:
        """Make the account's next calendarView delta call answer 410 resyncRequired (once)."""
        with self._lock:
            self._resync_required.add(self._account(account).id)

    # ----------------------------------------------------------------------------------------------
    # Python control API: change and lifecycle notifications
    # ----------------------------------------------------------------------------------------------

    def notification_config(self) -> dict[str, Any]:
        """The current delivery knobs (names as in NOTIFICATION_DEFAULTS)."""
        with self._lock:
            return self._config_view()

    def configure_notifications(self, **knobs: Any) -> dict[str, Any]:
        """Change delivery knobs at runtime (all checked before any is applied); returns them all.

        Deliveries already under way keep the retry backoff they started with.
        """
        with self._lock:
            self._notification_config = _notification_knobs(knobs, self._notification_config)
            return self._config_view()

    def notifications(
        self, subscription_id: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first (never bodies): `kind` "change" or "lifecycle"."""
        with self._lock:
            return [
                dict(entry, subscription_ids=list(entry["subscription_ids"]))
                for entry in self._notification_log
                if (subscription_id is None or subscription_id in entry["subscription_ids"])
                and (kind is None or entry["kind"] == kind)
            ]

    def notification_status(self) -> dict[str, Any]:
        """{paused, in_flight (deliveries and open batches still running), queued (held by pause)}."""
        with self._lock:
            return {
                "paused": self._delivery_paused,
                "in_flight": self._in_flight,
                "queued": len(self._queued),
            }

    def flush_notifications(self, timeout: float = 10.0) -> bool:
        """Wait until every delivery in flight (delays, batch windows, retries included) has finished.

        Deliveries held by `pause_notifications` are not waited for. True when all finished, False
        when `timeout` (real seconds) ran out first.
        """
        with self._deliveries_changed:
            return self._deliveries_changed.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    def pause_notifications(self) -> dict[str, Any]:
        """Hold every delivery (new ones and retries) until `resume_notifications`."""
        with self._lock:
            self._delivery_paused = True
            return self.notification_status()

    def resume_notifications(self) -> dict[str, Any]:
        """Release the held deliveries (in order) and deliver normally again."""
        with self._lock:
            self._delivery_paused = False
            held, self._queued = self._queued, []
            self._in_flight += len(held)
            status = self.notification_status()
        for delivery in held:
            self._launch(delivery)
        return {**status, "released": len(held)}

    def expire_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Expire a subscription now: no more notifications, and Graph answers 404 for it."""
        with self._lock:
            sub = self._subscriptions.get(subscription_id)
            if sub is None:
                raise EmulatorError(f"no subscription {subscription_id!r}", 404)
            now = self.now()
            sub.expiration = min(sub.expiration, now)
            return self._subscription_control_dict(sub, now)

    def send_lifecycle_notification(self, subscription_id: str, event: str) -> dict[str, Any]:
        """Send a lifecycle notification (`event` one of LIFECYCLE_EVENTS) and apply what it means.

        subscriptionRemoved removes the subscription; reauthorizationRequired flags it until a PATCH
        renew or POST /subscriptions/{id}/reauthorize (notifications pause after the grace knob);
        missed only tells the client to resync. Without a lifecycleNotificationUrl nothing is sent
        (as in Graph) but the effect still applies.
        """
        if event not in LIFECYCLE_EVENTS:
            raise EmulatorError(f"event must be one of {', '.join(LIFECYCLE_EVENTS)}, got {event!r}")
        with self._lock:
            sub = self._subscriptions.get(subscription_id)
            if sub is None:
                raise EmulatorError(f"no subscription {subscription_id!r}", 404)
            if event == "subscriptionRemoved":
                del self._subscriptions[sub.id]
            elif event == "reauthorizationRequired" and sub.reauthorization_required_at is None:
                sub.reauthorization_required_at = self.now()
            deliveries = self._lifecycle_deliveries(sub, event)
        for delivery in deliveries:
            self._launch(delivery)
        return {
            "subscription_id": sub.id,
            "lifecycle_event": event,
            "lifecycle_notification_url": sub.lifecycle_notification_url,
            "sent": bool(deliveries),
        }

    def _on_change(self, account: str, calendar_id: str, event_ids: list[str], change_type: str) -> None:
        """Called (without the lock held by the control method) after every control change.

        `account` is the account id, `change_type` one of created / updated / deleted (cancellations
        are "updated": the item still exists with isCancelled; DELETE is "deleted"). Queues a change
        notification for every live subscription covering the calendar: `/me/calendars/{id}/events`
        for that calendar, `/me/events` for the account's default calendar only (as Graph does). Ids
        of a series' occurrences/exceptions changed together with their master collapse onto the
        master (a series edit or delete is one item for the master id).
        """
        starters: list[Callable[[], None]] = []
        with self._lock:
            acc = self._accounts.get(account)
            cal = acc.calendars.get(calendar_id) if acc is not None else None
            if acc is None or cal is None:
                return
            masters = set(event_ids)
            ids = [
                eid
                for eid in dict.fromkeys(event_ids)
                if (parsed := _parse_occurrence_id(eid)) is None or parsed[0] not in masters
            ]
            now = self.now()
            by_url: dict[str, list[dict[str, Any]]] = {}
            for sub in self._subscriptions.values():
                if (
                    sub.account_id != acc.id
                    or sub.expiration <= now
                    or change_type not in sub.change_type.split(",")
                    or not (sub.calendar_id == cal.id if sub.calendar_id is not None else cal.is_default)
                ):
                    continue
                if self._paused_for_reauthorization(sub, now):
                    sub.lost_notifications += len(ids)
                    continue
                items = by_url.setdefault(sub.notification_url, [])
                for eid in ids:
                    stored = cal.events.get(eid)
                    change_key = stored.change_key if stored is not None else _new_change_key()
                    resource = f"Users/{acc.id}/Events/{eid}"
                    items.append(
                        {
                            "subscriptionId": sub.id,
                            "subscriptionExpirationDateTime": _graph_offset_dt(sub.expiration),
                            "changeType": change_type,
                            "resource": resource,
                            "resourceData": {
                                "@odata.type": _NOTIFICATION_EVENT_TYPE,
                                "@odata.id": resource,
                                "@odata.etag": f'W/"{change_key}"',
                                "id": eid,
                            },
                            "clientState": sub.client_state,
                            "tenantId": TENANT_ID,
                        }
                    )
            for url, items in by_url.items():
                if items:
                    starters += self._queue_change_items(url, items)
        for start in starters:
            start()

    # ----------------------------------------------------------------------------------------------
    # Notification delivery: background threads, never sending under the lock
    # ----------------------------------------------------------------------------------------------

    def _config_view(self) -> dict[str, Any]:
        config = dict(self._notification_config)
        config["notification_retry_backoff"] = list(config["notification_retry_backoff"])
        return config

    def _paused_for_reauthorization(self, sub: Subscription, now: datetime) -> bool:
        grace = self._notification_config["notification_reauthorization_grace_seconds"]
        since = sub.reauthorization_required_at
        return since is not None and grace is not None and now >= since + timedelta(seconds=grace)

    def _new_deliveries(
        self, kind: str, url: str, items: list[dict[str, Any]], event: str | None = None
    ) -> list[_Delivery]:
        """One delivery per configured copy, counted in flight (lock held); start them with _launch."""
        config = self._notification_config
        delivery_id = uuid.uuid4().hex[:12]
        copies = [
            _Delivery(
                id=delivery_id,
                generation=self._generation,
                kind=kind,
                url=url,
                items=list(items),  # the dicts are never changed once built; retries filter the list
                copy=copy,
                backoff=tuple(config["notification_retry_backoff"]),
                lifecycle_event=event,
            )
            for copy in range(1, config["notification_duplicates"] + 1)
        ]
        self._in_flight += len(copies)
        return copies

    def _lifecycle_deliveries(self, sub: Subscription, event: str) -> list[_Delivery]:
        if not sub.lifecycle_notification_url:
            return []
        item = {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _graph_offset_dt(sub.expiration),
            "tenantId": TENANT_ID,
            "clientState": sub.client_state,
            "lifecycleEvent": event,
        }
        return self._new_deliveries("lifecycle", sub.lifecycle_notification_url, [item], event)

    def _queue_change_items(self, url: str, items: list[dict[str, Any]]) -> list[Callable[[], None]]:
        """Send now, or add to the URL's open batch (opening one if needed); lock held."""
        window = self._notification_config["notification_batch_window_seconds"]
        if window <= 0:
            return [functools.partial(self._launch, d) for d in self._new_deliveries("change", url, items)]
        batch = self._batches.get(url)
        if batch is not None:
            batch.extend(items)
            return []
        self._batches[url] = list(items)
        self._in_flight += 1
        generation = self._generation

        def start_timer() -> None:
            threading.Thread(
                target=self._close_batch, args=(url, window, generation), name="graph-batch", daemon=True
            ).start()

        return [start_timer]

    def _close_batch(self, url: str, window: float, generation: int) -> None:
        time.sleep(window)
        with self._lock:
            if generation != self._generation:
                return
            items = self._batches.pop(url, [])
            deliveries = self._new_deliveries("change", url, items) if items else []
            self._in_flight -= 1
            self._deliveries_changed.notify_all()
        for delivery in deliveries:
            self._launch(delivery)

    def _launch(self, delivery: _Delivery) -> None:
        """Run a delivery (already counted in flight) on its own thread."""
        threading.Thread(target=self._deliver, args=(delivery,), name="graph-notify", daemon=True).start()

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
                    if d.kind == "change":
                        now = self.now()
                        d.items = [
                            item
                            for item in d.items
                            if (sub := self._subscriptions.get(item["subscriptionId"])) is not None
                            and sub.expiration > now
                        ]
                        if not d.items:
                            return  # every subscription it was for is gone or expired
                    timeout = self._notification_config["notification_timeout_seconds"]
                    d.attempt += 1
                    body = json.dumps({"value": d.items}).encode()
                    at = self.now()
                status, error, duration = self._post_notification(d.url, body, timeout)
                with self._lock:
                    if d.generation != self._generation:
                        return
                    removals = self._account_attempt(d, error is None)
                    will_retry = (
                        error is not None
                        and d.attempt <= len(d.backoff)
                        and (
                            d.kind == "lifecycle"
                            or any(s in self._subscriptions for s in d.subscription_ids())
                        )
                    )
                    self._notification_seq += 1
                    self._notification_log.append(
                        {
                            "seq": self._notification_seq,
                            "delivery_id": d.id,
                            "kind": d.kind,
                            "lifecycle_event": d.lifecycle_event,
                            "time": _iso(at),
                            "url": d.url,
                            "subscription_id": d.items[0]["subscriptionId"],
                            "subscription_ids": d.subscription_ids(),
                            "items": len(d.items),
                            "copy": d.copy,
                            "attempt": d.attempt,
                            "max_attempts": 1 + len(d.backoff),
                            "ok": error is None,
                            "status": status,
                            "error": error,
                            "duration_seconds": round(duration, 3),
                            "will_retry": will_retry,
                        }
                    )
                for delivery in removals:
                    self._launch(delivery)
                if not will_retry:
                    return
                time.sleep(d.backoff[d.attempt - 1])
        finally:
            with self._lock:
                if d.generation == self._generation:
                    self._in_flight -= 1
                    self._deliveries_changed.notify_all()

    def _account_attempt(self, d: _Delivery, ok: bool) -> list[_Delivery]:
        """Count a change delivery's outcome against its subscriptions; remove those that failed too
        often (Graph drops endpoints that keep failing) and return their subscriptionRemoved deliveries."""
        if d.kind != "change":
            return []  # lifecycle deliveries never count against a subscription
        limit = self._notification_config["notification_max_consecutive_failures"]
        removals: list[_Delivery] = []
        for sub_id in d.subscription_ids():
            sub = self._subscriptions.get(sub_id)
            if sub is None:
                continue
            sub.consecutive_failures = 0 if ok else sub.consecutive_failures + 1
            if sub.consecutive_failures >= limit:
                del self._subscriptions[sub.id]
                log.info("subscription %s removed after %d failed deliveries", sub.id, limit)
                removals += self._lifecycle_deliveries(sub, "subscriptionRemoved")
        return removals

    @staticmethod
    def _post_notification(url: str, body: bytes, timeout: float) -> tuple[int | None, str | None, float]:
        """POST one notification; (status, error or None when delivered in time with a 2xx, seconds)."""
        session = _http.Session()
        session.trust_env = not _is_loopback_url(url)  # loopback never goes through an HTTP(S)_PROXY
        started = time.monotonic()
        try:
            answer = session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=timeout,
                allow_redirects=False,
            )
        except _http.Timeout:
            return None, f"timeout: no answer within {timeout:g} s", time.monotonic() - started
        except _http.RequestException as exc:
            return None, f"connection failed: {type(exc).__name__}", time.monotonic() - started
        finally:
            session.close()
        duration = time.monotonic() - started
        if duration > timeout:
            late = f"late: answered after {duration:.2f} s (deadline {timeout:g} s)"
            return answer.status_code, late, duration
        if not 200 <= answer.status_code < 300:
            return answer.status_code, f"HTTP {answer.status_code}", duration
        return answer.status_code, None, duration

    # ----------------------------------------------------------------------------------------------
    # State helpers (call with the lock held)
    # ----------------------------------------------------------------------------------------------

    def _app(self, client_id: str) -> App:
        app = self._apps.get(client_id)
        if app is None:
            raise EmulatorError(f"no app {client_id!r}", 404)
        return app

    def _find_account(self, ref: str) -> Account | None:
        if ref in self._accounts:
            return self._accounts[ref]
        return next((a for a in self._accounts.values() if a.matches(ref)), None)

    def _account(self, ref: str) -> Account:
        acc = self._find_account(ref)
        if acc is None:
            raise EmulatorError(f"no account {ref!r}", 404)
        return acc

    def _account_dict(self, acc: Account) -> dict[str, Any]:
        return {
            "id": acc.id,
            "display_name": acc.display_name,
            "mail": acc.mail,
            "user_principal_name": acc.user_principal_name,
            "consents": {client: " ".join(scopes) for client, scopes in acc.consents.items()},
            "calendars": [
                {"id": c.id, "name": c.name, "is_default": c.is_default, "can_edit": c.can_edit}
                for c in acc.calendars.values()
            ],
        }

    def _consent(self, acc: Account, client_id: str, requested: Iterable[str]) -> None:
        granted = acc.consents.setdefault(client_id, [])
        for scope in requested:
            name = _graph_scope(scope)
            if name and name != ".default" and name.lower() not in {g.lower() for g in granted}:
                granted.append(name)

    def _new_refresh(
        self, account_id: str, client_id: str, scopes: list[str], token: str | None = None
    ) -> RefreshToken:
        now = self.now()
        rt = RefreshToken(token or _new_refresh_token(), client_id, account_id, list(scopes), now, now)
        self._refresh_tokens[rt.token] = rt
        return rt

    def _refresh_invalid_code(self, rt: RefreshToken) -> int | None:
        # Dead a fixed time after issue, however often it was used; rotation (superseded_at) alone does
        # not end it: the redeemed token stays valid until its own expiry.
        if rt.invalid_code is None and self.now() - rt.issued_at >= REFRESH_TOKEN_LIFETIME:
            rt.invalid_code = 700082
        return rt.invalid_code

    def _subscription_control_dict(self, sub: Subscription, now: datetime) -> dict[str, Any]:
        return {
            "id": sub.id,
            "account_id": sub.account_id,
            "application_id": sub.client_id,
            "resource": sub.resource,
            "calendar_id": sub.calendar_id,
            "change_type": sub.change_type,
            "notification_url": sub.notification_url,
            "lifecycle_notification_url": sub.lifecycle_notification_url,
            "client_state": sub.client_state,
            "expiration_date_time": _graph_dt(sub.expiration),
            "created_date_time": _graph_dt(sub.created_at),
            "expired": sub.expiration <= now,
            "reauthorization_required": sub.reauthorization_required_at is not None,
            "notifications_paused": self._paused_for_reauthorization(sub, now),
            "consecutive_failures": sub.consecutive_failures,
            "lost_notifications": sub.lost_notifications,
        }

    # ----------------------------------------------------------------------------------------------
    # Events: state helpers and views (call with the lock held)
    # ----------------------------------------------------------------------------------------------

    def _find_stored(self, event_id: str) -> tuple[Account, Calendar, StoredEvent] | None:
        for acc in self._accounts.values():
            for cal in acc.calendars.values():
                ev = cal.events.get(event_id)
                if ev is not None:
                    return acc, cal, ev
        return None

    def _locate(
        self, event_id: str
    ) -> tuple[Account, Calendar, StoredEvent | None, tuple[StoredEvent, date, datetime, datetime] | None]:
        """A stored item, or (master, original date, start, end) of a plain occurrence; 404 otherwise."""
        found = self._find_stored(event_id)
        if found is not None:
            return found[0], found[1], found[2], None
        parsed = _parse_occurrence_id(event_id)
        if parsed is not None:
            stored = self._find_stored(parsed[0])
            if stored is not None and stored[2].type == "seriesMaster":
                acc, cal, master = stored
                times = self._occurrence_on(master, parsed[1])
                if times is not None:
                    return acc, cal, None, (master, parsed[1], *times)
        raise EmulatorError(f"no event {event_id!r}", 404)

    @staticmethod
    def _organizer(cal: Calendar, organizer: str | dict[str, str] | None) -> tuple[str, str]:
        if organizer is None:
            return cal.owner_name, cal.owner_address
        if isinstance(organizer, str) and "@" in organizer:
            return organizer.split("@")[0], organizer
        if isinstance(organizer, dict) and isinstance(organizer.get("address"), str):
            address = organizer["address"]
            return str(organizer.get("name") or address.split("@")[0]), address
        raise EmulatorError('organizer must be an address or {"name": ..., "address": ...}')

    @staticmethod
    def _check_times(start: datetime, end: datetime, is_all_day: bool) -> None:
        if end <= start:
            raise EmulatorError("end must be after start")
        if is_all_day and (start.time() != dt_time() or end.time() != dt_time()):
            raise EmulatorError("an all-day event starts and ends at midnight (end exclusive)")

    def _bump(self, cal: Calendar, ev: StoredEvent) -> None:
        cal.change_seq += 1
        ev.seq = cal.change_seq
        ev.modified = self.now()
        ev.change_key = _new_change_key()

    @staticmethod
    def _overrides(cal: Calendar, master_id: str) -> list[StoredEvent]:
        return [o for o in cal.events.values() if o.series_master_id == master_id]

    def _new_override(
        self,
        cal: Calendar,
        master: StoredEvent,
        on: date,
        start: datetime,
        end: datetime,
        *,
        virtual: bool = False,
    ) -> StoredEvent:
        """An override standing for the occurrence of `master` on `on` (not stored here)."""
        tz = ZoneInfo(master.zone)
        now = self.now()
        return StoredEvent(
            id=_occurrence_id(master.id, on),
            calendar_id=cal.id,
            type="occurrence" if virtual else "exception",
            ical_uid=_occurrence_ical_uid(master.ical_uid, on),
            subject=master.subject,
            body_html=master.body_html,
            location=master.location,
            online_meeting_url=master.online_meeting_url,
            organizer_name=master.organizer_name,
            organizer_address=master.organizer_address,
            zone=master.zone,
            zone_name=master.zone_name,
            start=start.astimezone(tz),
            end=end.astimezone(tz),
            is_all_day=master.is_all_day,
            created=master.created if virtual else now,
            modified=master.modified if virtual else now,
            change_key=master.change_key,
            seq=master.seq,
            series_master_id=master.id,
            original_date=on,
            original_start=start.astimezone(tz),
        )

    _PROPAGATED = ("subject", "body_html", "location", "online_meeting_url")

    def _apply_patch(self, cal: Calendar, ev: StoredEvent, **changes: Any) -> list[str]:
        """Apply update_event's arguments to a stored item; returns the ids of every changed item."""
        old = {name: getattr(ev, name) for name in self._PROPAGATED}
        old_start, old_end, old_zone = ev.start, ev.end, ev.zone
        if changes["time_zone"] is not UNSET:
            iana, ev.zone_name = _zone(str(changes["time_zone"]))
            ev.zone = iana
            new_tz = ZoneInfo(iana)
            ev.start = _localize(ev.start.replace(tzinfo=None), new_tz)
            ev.end = _localize(ev.end.replace(tzinfo=None), new_tz)
        tz = ZoneInfo(ev.zone)
        start, end = changes["start"], changes["end"]
        if start is not UNSET:
            duration = ev.end - ev.start
            ev.start = _control_time(start, tz, "start")
            ev.end = _control_time(end, tz, "end") if end is not UNSET else ev.start + duration
        elif end is not UNSET:
            ev.end = _control_time(end, tz, "end")
        self._check_times(ev.start, ev.end, ev.is_all_day)
        for name in self._PROPAGATED:
            value = changes[name]
            if value is not UNSET:
                setattr(ev, name, (str(value) if name in ("subject", "body_html") else value) or None)
        ev.subject, ev.body_html = ev.subject or "", ev.body_html or ""
        was_master = ev.type == "seriesMaster"
        timing_changed = (ev.start, ev.end, ev.zone) != (old_start, old_end, old_zone)
        recurrence = changes["recurrence"]
        if recurrence is not UNSET:
            if recurrence is None:
                ev.type, ev.recurrence = "singleInstance", None
            else:
                ev.type = "seriesMaster"
                ev.recurrence = _normalize_recurrence(recurrence, ev.start, ev.zone_name)
        elif was_master and timing_changed and ev.recurrence is not None:
            # The series follows its master: same pattern and end, new first date / zone.
            rng = {**ev.recurrence["range"], "startDate": None, "recurrenceTimeZone": ev.zone_name}
            ev.recurrence = _normalize_recurrence({**ev.recurrence, "range": rng}, ev.start, ev.zone_name)
        if ev.type == "exception":
            ev.edited = True
        self._bump(cal, ev)
        changed = [ev.id]
        if was_master:
            overrides = self._overrides(cal, ev.id)
            if timing_changed or recurrence is not UNSET:
                for override in overrides:
                    del cal.events[override.id]
                    changed.append(override.id)
            else:
                for override in overrides:
                    touched = False
                    for name in self._PROPAGATED:
                        if getattr(ev, name) != old[name] and getattr(override, name) == old[name]:
                            setattr(override, name, getattr(ev, name))
                            touched = True
                    if touched:
                        self._bump(cal, override)
                        changed.append(override.id)
        return changed

    def _event_view(self, acc: Account, cal: Calendar, ev: StoredEvent) -> dict[str, Any]:
        shown_type = "occurrence" if ev.type == "exception" and not ev.edited else ev.type
        return {
            "id": ev.id,
            "account_id": acc.id,
            "calendar_id": cal.id,
            "type": shown_type,
            "subject": ev.subject,
            "start": ev.start.isoformat(),
            "end": ev.end.isoformat(),
            "time_zone": ev.zone_name,
            "iana_time_zone": ev.zone,
            "is_all_day": ev.is_all_day,
            "is_cancelled": ev.is_cancelled,
            "series_master_id": ev.series_master_id,
            "original_start": ev.original_start.isoformat() if ev.original_start else None,
            "recurrence": json.loads(json.dumps(ev.recurrence)) if ev.recurrence else None,
            "body_html": ev.body_html,
            "location": ev.location,
            "online_meeting_url": ev.online_meeting_url,
            "organizer": {"name": ev.organizer_name, "address": ev.organizer_address},
            "ical_uid": ev.ical_uid,
            "change_key": ev.change_key,
            "created": _iso(ev.created),
            "last_modified": _iso(ev.modified),
        }

    # Series expansion --------------------------------------------------------------------------

    @staticmethod
    def _series_parts(master: StoredEvent) -> tuple[_rr.rrule, ZoneInfo, timedelta]:
        """(rule on naive local times, the zone it runs in, wall-clock duration) of a series."""
        assert master.recurrence is not None
        rng = master.recurrence["range"]
        # All-day series stay on their own dates; others expand in the recurrence time zone, so
        # 09:00 local stays 09:00 local across DST (the UTC instant shifts).
        tz = ZoneInfo(master.zone) if master.is_all_day else ZoneInfo(_zone(rng["recurrenceTimeZone"])[0])
        first = master.start.astimezone(tz).replace(tzinfo=None)
        duration = master.end.astimezone(tz).replace(tzinfo=None) - first
        dtstart = datetime.combine(date.fromisoformat(rng["startDate"]), first.time())
        return _series_rule(master.recurrence, dtstart), tz, duration

    def _expand(
        self, master: StoredEvent, window: tuple[datetime, datetime]
    ) -> list[tuple[date, datetime, datetime]]:
        """(original local date, start, end) of the series' occurrences overlapping the window."""
        rule, tz, duration = self._series_parts(master)
        window_start, window_end = window
        low = window_start.astimezone(tz).replace(tzinfo=None) - duration - timedelta(days=1)
        high = window_end.astimezone(tz).replace(tzinfo=None) + timedelta(days=1)
        found = []
        for naive in rule.between(low, high, inc=True):
            start, end = _localize(naive, tz), _localize(naive + duration, tz)
            if start < window_end and end > window_start:
                found.append((naive.date(), start, end))
        return found

    def _occurrence_on(self, master: StoredEvent, on: date) -> tuple[datetime, datetime] | None:
        rule, tz, duration = self._series_parts(master)
        hits = rule.between(datetime.combine(on, dt_time()), datetime.combine(on, dt_time.max), inc=True)
        if not hits:
            return None
        return _localize(hits[0], tz), _localize(hits[0] + duration, tz)

    def _calendar_view(
        self, acc: Account, cal: Calendar, window: tuple[datetime, datetime], series: str | None = None
    ) -> list[_ViewItem]:
        """Single events, occurrences and exceptions overlapping [start, end), ordered by start."""
        window_start, window_end = window
        items: list[_ViewItem] = []
        for ev in list(cal.events.values()):
            if ev.is_cancelled:
                continue
            if ev.type == "singleInstance":
                if series is None and ev.start < window_end and ev.end > window_start:
                    items.append(self._stored_item(acc, ev))
            elif ev.type == "seriesMaster":
                if series is not None and ev.id != series:
                    continue
                for on, start, end in self._expand(ev, window):
                    if _occurrence_id(ev.id, on) not in cal.events:
                        items.append(self._occurrence_item(acc, ev, on, start, end))
            else:
                master = cal.events.get(ev.series_master_id or "")
                if master is None or master.is_cancelled or (series is not None and master.id != series):
                    continue
                if ev.start < window_end and ev.end > window_start:
                    items.append(self._stored_item(acc, ev, master))
        items.sort(key=lambda item: (item.start.astimezone(UTC), item.id))
        return items

    def _resolve_item(self, acc: Account, event_id: str, cal: Calendar | None) -> _ViewItem | None:
        """What GET /me/events/{id} shows, cancelled items included; None if there is no such item."""
        calendars = [cal] if cal is not None else list(acc.calendars.values())
        for candidate in calendars:
            ev = candidate.events.get(event_id)
            if ev is not None:
                master = candidate.events.get(ev.series_master_id or "")
                item = self._stored_item(acc, ev, master)
                if master is not None and master.is_cancelled:
                    item.full["isCancelled"] = True
                return item
        parsed = _parse_occurrence_id(event_id)
        if parsed is None:
            return None
        for candidate in calendars:
            master = candidate.events.get(parsed[0])
            if master is not None and master.type == "seriesMaster":
                times = self._occurrence_on(master, parsed[1])
                if times is None:
                    return None
                item = self._occurrence_item(acc, master, parsed[1], *times)
                item.full["isCancelled"] = master.is_cancelled
                return item
        return None

    def _stored_item(self, acc: Account, ev: StoredEvent, master: StoredEvent | None = None) -> _ViewItem:
        shown_type = "occurrence" if ev.type == "exception" and not ev.edited else ev.type
        full = self._event_json(
            acc,
            ev,
            event_id=ev.id,
            event_type=shown_type,
            series_master_id=ev.series_master_id,
            original_start=ev.original_start,
            ical_uid=ev.ical_uid,
            cancelled=ev.is_cancelled,
            recurrence=ev.recurrence if ev.type == "seriesMaster" else None,
        )
        version = f"{ev.seq}/{master.seq}" if master is not None else str(ev.seq)
        return _ViewItem(ev.id, shown_type, ev.start, ev.end, ev.is_all_day, ev.zone_name, version, full)

    def _occurrence_item(
        self, acc: Account, master: StoredEvent, on: date, start: datetime, end: datetime
    ) -> _ViewItem:
        occurrence_id = _occurrence_id(master.id, on)
        tz = ZoneInfo(master.zone)
        start, end = start.astimezone(tz), end.astimezone(tz)
        full = self._event_json(
            acc,
            master,
            event_id=occurrence_id,
            event_type="occurrence",
            series_master_id=master.id,
            original_start=start,
            ical_uid=_occurrence_ical_uid(master.ical_uid, on),
            cancelled=False,
            recurrence=None,
        )
        version = f"o{master.seq}"
        return _ViewItem(
            occurrence_id, "occurrence", start, end, master.is_all_day, master.zone_name, version, full
        )

    @staticmethod
    def _event_json(
        acc: Account,
        src: StoredEvent,
        *,
        event_id: str,
        event_type: str,
        series_master_id: str | None,
        original_start: datetime | None,
        ical_uid: str,
        cancelled: bool,
        recurrence: dict[str, Any] | None,
    ) -> dict[str, Any]:
        url = src.online_meeting_url
        is_organizer = src.organizer_address.lower() == acc.address.lower()
        body: dict[str, Any] = {
            "@odata.etag": f'W/"{src.change_key}"',
            "id": event_id,
            "createdDateTime": _graph_dt(src.created),
            "lastModifiedDateTime": _graph_dt(src.modified),
            "changeKey": src.change_key,
            "categories": [],
            "transactionId": None,
            "originalStartTimeZone": src.zone_name,
            "originalEndTimeZone": src.zone_name,
            "iCalUId": ical_uid,
            "reminderMinutesBeforeStart": 15,
            "isReminderOn": True,
            "hasAttachments": False,
            "subject": src.subject,
            "bodyPreview": _body_preview(src.body_html),
            "importance": "normal",
            "sensitivity": "normal",
            "isAllDay": src.is_all_day,
            "isCancelled": cancelled,
            "isOrganizer": is_organizer,
            "responseRequested": True,
            "seriesMasterId": series_master_id,
            "showAs": "free" if src.is_all_day else "busy",
            "type": event_type,
            "webLink": (
                f"https://outlook.office365.com/owa/?itemid={quote(event_id, safe='')}"
                "&exvsurl=1&path=/calendar/item"
            ),
            "onlineMeetingUrl": None,
            "isOnlineMeeting": url is not None,
            "onlineMeetingProvider": "teamsForBusiness" if url else "unknown",
            "allowNewTimeProposals": True,
            "isDraft": False,
            "hideAttendees": False,
            "responseStatus": {
                "response": "organizer" if is_organizer else "none",
                "time": "0001-01-01T00:00:00Z",
            },
            "body": {"contentType": "html", "content": _body_document(src.body_html)},
            "start": None,
            "end": None,
            "location": _location_json(src.location),
            "locations": [_location_json(src.location)] if src.location else [],
            "recurrence": json.loads(json.dumps(recurrence)) if recurrence else None,
            "attendees": [json.loads(json.dumps(a)) for a in src.attendees],
            "organizer": {"emailAddress": {"name": src.organizer_name, "address": src.organizer_address}},
            "onlineMeeting": {"joinUrl": url} if url else None,
        }
        if original_start is not None:
            body["originalStart"] = _iso(original_start)
        return body

    # Rendering per request ----------------------------------------------------------------------

    def _prefs(self, request: Request) -> _Prefs:
        header = ", ".join(request.headers.getlist("Prefer"))
        applied: list[str] = []
        zone: tuple[str, ZoneInfo] | None
        if self.default_response_timezone is None:
            zone = ("UTC", ZoneInfo("UTC"))
        elif self.default_response_timezone == "original":
            zone = None
        else:
            zone = (self.default_response_timezone, ZoneInfo(_zone(self.default_response_timezone)[0]))
        match = _PREFER_TZ_RE.search(header)
        if match:
            name = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
            try:
                iana, _ = windows_zones.resolve(name)
            except ValueError:
                raise _GraphError(
                    400,
                    "TimeZoneNotSupportedException",
                    "A valid TimeZone value must be specified. The following TimeZone value is not "
                    f"supported: '{name}'.",
                ) from None
            zone = (name, ZoneInfo(iana))
            applied.append(f'outlook.timezone="{name}"')
        page_size = None
        match = _PREFER_PAGE_RE.search(header)
        if match:
            page_size = max(1, min(int(match.group(1)), 1000))
            applied.append(f"odata.maxpagesize={page_size}")
        match = _PREFER_BODY_RE.search(header)
        text_body = bool(match and match.group(1).lower() == "text")
        if match:
            applied.append(f'outlook.body-content-type="{match.group(1).lower()}"')
        return _Prefs(zone, page_size, text_body, applied)

    @staticmethod
    def _times_json(value: datetime, item: _ViewItem, prefs: _Prefs) -> dict[str, str]:
        label, tz = prefs.zone if prefs.zone is not None else (item.zone_name, value.tzinfo)
        # All-day events are floating: midnight of their dates in whatever zone is asked for.
        local = value if item.is_all_day else value.astimezone(tz)
        return {"dateTime": _local_dt(local.replace(tzinfo=None)), "timeZone": label}

    def _render(
        self, item: _ViewItem, prefs: _Prefs, *, minimal: bool = False, delta: bool = False
    ) -> dict[str, Any]:
        start, end = self._times_json(item.start, item, prefs), self._times_json(item.end, item, prefs)
        if minimal:
            # calendarView delta: occurrences and exceptions carry only these.
            return {
                "@odata.type": _EVENT_JSON_TYPE,
                "@odata.etag": item.full["@odata.etag"],
                "id": item.id,
                "seriesMasterId": item.full["seriesMasterId"],
                "type": item.type,
                "start": start,
                "end": end,
            }
        body: dict[str, Any] = {"@odata.type": _EVENT_JSON_TYPE} if delta else {}
        body.update(item.full)
        body["start"], body["end"] = start, end
        if prefs.text_body:
            body["body"] = {"contentType": "text", "content": _html_to_text(body["body"]["content"])}
        return body

    def _prefer_response(self, body: dict[str, Any], prefs: _Prefs) -> Response:
        response = self._graph_json(body)
        if prefs.applied:
            response.headers["Preference-Applied"] = ", ".join(prefs.applied)
        return response

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
        return [
            # No methods: the token endpoint answers wrong methods itself (AADSTS900561).
            Rule("/<tenant>/oauth2/v2.0/token", endpoint="token"),
            Rule("/<tenant>/oauth2/v2.0/authorize", endpoint="authorize", methods=["GET", "POST"]),
            Rule(
                "/<tenant>/v2.0/.well-known/openid-configuration",
                endpoint="openid_configuration",
                methods=["GET"],
            ),
            Rule("/<tenant>/discovery/v2.0/keys", endpoint="jwks", methods=["GET"]),
            Rule("/v1.0/me", endpoint="me", methods=["GET"]),
            Rule("/v1.0/me/calendars", endpoint="calendars", methods=["GET"]),
            Rule("/v1.0/me/calendars/<calendar_id>", endpoint="calendar", methods=["GET"]),
            # Graph paths are case-insensitive; both spellings of calendarView are in use.
            Rule("/v1.0/me/calendarView/delta", endpoint="view_delta", methods=["GET"]),
            Rule("/v1.0/me/calendarview/delta", endpoint="view_delta", methods=["GET"]),
            Rule(
                "/v1.0/me/calendars/<calendar_id>/calendarView/delta",
                endpoint="calendar_view_delta",
                methods=["GET"],
            ),
            Rule(
                "/v1.0/me/calendars/<calendar_id>/calendarview/delta",
                endpoint="calendar_view_delta",
                methods=["GET"],
            ),
            Rule("/v1.0/me/events/<event_id>", endpoint="event", methods=["GET"]),
            Rule("/v1.0/me/events/<event_id>/instances", endpoint="event_instances", methods=["GET"]),
            Rule(
                "/v1.0/me/calendars/<calendar_id>/events/<event_id>",
                endpoint="calendar_event",
                methods=["GET"],
            ),
            Rule("/v1.0/subscriptions", endpoint="subscriptions", methods=["GET", "POST"]),
            Rule(
                "/v1.0/subscriptions/<subscription_id>",
                endpoint="subscription",
                methods=["GET", "PATCH", "DELETE"],
            ),
            Rule(
                "/v1.0/subscriptions/<subscription_id>/reauthorize",
                endpoint="subscription_reauthorize",
                methods=["POST"],
            ),
        ]

    def _dispatch_service(self, request: Request) -> Response:
        ctx = _Ctx(
            request_id=str(uuid.uuid4()),
            client_request_id=request.headers.get("client-request-id") or str(uuid.uuid4()),
        )
        identity = "/oauth2/" in request.path or "/v2.0/" in request.path
        # Behind a TLS terminator (or an https-rewriting client, as in the MSAL test) the public scheme
        # is the forwarded one: MSAL accepts only https authorities and token endpoints.
        scheme = request.headers.get("X-Forwarded-Proto") or request.scheme
        ctx.base_url = f"{scheme}://{request.host}"
        with self._lock:
            self._resolve_caller(request, ctx)
            rule = self._take_fault(request, ctx)
        try:
            response: Response | None = None
            if rule is not None:
                if rule.delay:
                    time.sleep(rule.delay)  # outside the lock: other requests keep flowing
                if rule.status is not None or rule.error is not None:
                    response = self._fault_response(rule, identity, ctx)
            if response is None:
                response = self._route(request, ctx)
        except _AadError as exc:
            response = self._aad_error_response(exc, ctx)
        except _GraphError as exc:
            response = self._graph_error(exc, ctx)
        except Exception:  # a bug in the emulator: answer like Graph would, keep the trace in the log
            log.exception("graph emulator failed on %s %s", request.method, request.path)
            response = self._graph_error(_GraphError(500, "InternalServerError", "Emulator failure."), ctx)
        response.headers["request-id"] = ctx.request_id
        response.headers["client-request-id"] = ctx.client_request_id
        if identity:
            response.headers["x-ms-request-id"] = ctx.request_id
        self._append_log(request, ctx, response.status_code)
        return response

    def _route(self, request: Request, ctx: _Ctx) -> Response:
        adapter = self._service_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match(_odata_function_path(request.path))
        except MethodNotAllowed:
            raise _GraphError(
                405, "BadRequest", f"The HTTP method '{request.method}' is not supported for this resource."
            ) from None
        except NotFound:
            if request.path.startswith("/v1.0/"):
                segment = request.path.rstrip("/").rsplit("/", 1)[-1]
                raise _GraphError(
                    400, "BadRequest", f"Resource not found for the segment '{segment}'."
                ) from None
            raise _GraphError(404, "NotFound", f"No such endpoint: {request.path}") from None
        except HTTPException as exc:
            raise _GraphError(exc.code or 400, "BadRequest", exc.description or "Bad request.") from None
        handler: Callable[..., Response] = getattr(self, f"_h_{endpoint}")
        return handler(request, ctx, **args)

    def _resolve_caller(self, request: Request, ctx: _Ctx) -> None:
        """Which account/app a request is about (for fault matching and the log), valid or not."""
        if request.path.endswith("/oauth2/v2.0/token") and request.method == "POST":
            rt = self._refresh_tokens.get(request.form.get("refresh_token", ""))
            code = self._auth_codes.get(request.form.get("code", ""))
            ctx.client_id = request.form.get("client_id") or None
            if rt is not None:
                ctx.account_id = rt.account_id
            elif code is not None:
                ctx.account_id = code.account_id
        elif request.path.endswith("/oauth2/v2.0/authorize"):
            hint = request.values.get("login_hint") or request.values.get("account_id")
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
                    "query": request.query_string.decode("latin-1"),
                    "account": ctx.account_id,
                    "client_id": ctx.client_id,
                    "status": status,
                    "request_id": ctx.request_id,
                    "fault": ctx.fault_id,
                }
            )

    # ----------------------------------------------------------------------------------------------
    # Faults
    # ----------------------------------------------------------------------------------------------

    def _take_fault(self, request: Request, ctx: _Ctx) -> FaultRule | None:
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

    def _fault_response(self, rule: FaultRule, identity: bool, ctx: _Ctx) -> Response:
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        if identity:
            error = rule.error or (
                "invalid_request" if (rule.status or 500) < 429 else "temporarily_unavailable"
            )
            status = rule.status or (401 if error == "invalid_client" else 400)
            code = rule.aadsts or _AAD_DEFAULT_CODE.get(error, 90033)
            response = self._aad_error_response(_AadError(status, error, code, param="emulated"), ctx)
            response.headers.update(headers)
            return response
        status = rule.status or 400
        default_code, default_message = _GRAPH_DEFAULT_ERROR.get(
            status, ("UnknownError", "Emulated failure.")
        )
        return self._graph_error(
            _GraphError(status, rule.error or default_code, rule.message or default_message, headers), ctx
        )

    # ----------------------------------------------------------------------------------------------
    # Response builders
    # ----------------------------------------------------------------------------------------------

    def _graph_json(self, body: dict[str, Any] | None, status: int = 200) -> Response:
        if body is None:
            return Response(status=status)
        return Response(json.dumps(body), status=status, content_type=GRAPH_JSON)

    def _graph_error(self, exc: _GraphError, ctx: _Ctx) -> Response:
        body = {
            "error": {
                "code": exc.code,
                "message": exc.message,
                "innerError": {
                    "date": self.now().strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": ctx.request_id,
                    "client-request-id": ctx.client_request_id,
                },
            }
        }
        response = self._graph_json(body, exc.status)
        response.headers.update(exc.headers)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="", '
                'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                'client_id="00000003-0000-0000-c000-000000000000"'
            )
        return response

    def _aad_body(self, exc: _AadError, ctx: _Ctx) -> dict[str, Any]:
        stamp = self.now().strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id, correlation_id = ctx.request_id, ctx.client_request_id
        # Real descriptions are multi-line: "\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ...".
        description = (
            f"{_aadsts_text(exc.code, exc.fields)}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
        )
        body: dict[str, Any] = {
            "error": exc.error,
            "error_description": description,
            "error_codes": [exc.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={exc.code}",
        }
        if exc.suberror:
            body["suberror"] = exc.suberror
        return body

    def _aad_error_response(self, exc: _AadError, ctx: _Ctx) -> Response:
        response = Response(json.dumps(self._aad_body(exc, ctx)), status=exc.status, content_type=AAD_JSON)
        response.headers["Cache-Control"] = "no-store, no-cache"
        return response

    # ----------------------------------------------------------------------------------------------
    # Identity: token endpoint
    # ----------------------------------------------------------------------------------------------

    def _h_token(self, request: Request, ctx: _Ctx, tenant: str) -> Response:
        if request.method != "POST":
            raise _AadError(400, "invalid_request", 900561, method=request.method)
        if not _TENANT_RE.match(tenant):
            raise _AadError(400, "invalid_request", 90002, tenant=tenant)
        form = request.form
        for param in ("grant_type", "client_id"):
            if not form.get(param):
                raise _AadError(400, "invalid_request", 900144, param=param)
        client_id = form["client_id"]
        ctx.client_info = form.get("client_info") == "1"
        with self._lock:
            app = self._apps.get(client_id)
            # Checked in AAD's order: the app, its credential, then the grant.
            if app is None:
                raise _AadError(400, "unauthorized_client", 700016, client_id=client_id, tenant=tenant)
            if not form.get("client_secret"):
                raise _AadError(401, "invalid_client", 7000218)
            if not secrets.compare_digest(form["client_secret"], app.client_secret):
                raise _AadError(401, "invalid_client", 7000215, client_id=client_id)
            if app.secret_expired:
                raise _AadError(401, "invalid_client", 7000222, client_id=client_id)
            grant_type = form["grant_type"]
            if grant_type == "refresh_token":
                body = self._grant_refresh_token(form, ctx)
            elif grant_type == "authorization_code":
                body = self._grant_authorization_code(form, ctx)
            else:
                raise _AadError(400, "unsupported_grant_type", 70003, grant_type=grant_type)
        response = Response(json.dumps(body), status=200, content_type=AAD_JSON)
        response.headers["Cache-Control"] = "no-store, no-cache"
        response.headers["Pragma"] = "no-cache"
        return response

    def _grant_refresh_token(self, form: Any, ctx: _Ctx) -> dict[str, Any]:
        for param in ("refresh_token", "scope"):
            if not form.get(param):
                raise _AadError(400, "invalid_request", 900144, param=param)
        rt = self._refresh_tokens.get(form["refresh_token"])
        if rt is None:
            raise _AadError(400, "invalid_grant", 70008)
        if rt.client_id != form["client_id"]:
            raise _AadError(400, "invalid_grant", 70000)
        invalid = self._refresh_invalid_code(rt)
        if invalid is not None:
            raise _AadError(
                400,
                "invalid_grant",
                invalid,
                suberror="consent_required" if invalid == 65001 else None,
                client_id=rt.client_id,
                issued=rt.issued_at.strftime("%m/%d/%Y %H:%M:%S"),
                now=self.now().strftime("%m/%d/%Y %H:%M:%S"),
            )
        account = self._accounts[rt.account_id]
        body = self._issue_tokens(account, rt.client_id, form["scope"].split(), ctx)
        rt.last_used_at = self.now()
        if "refresh_token" in body and rt.superseded_at is None:
            rt.superseded_at = self.now()  # bookkeeping only: the redeemed token keeps working
        return body

    def _grant_authorization_code(self, form: Any, ctx: _Ctx) -> dict[str, Any]:
        for param in ("code", "redirect_uri"):
            if not form.get(param):
                raise _AadError(400, "invalid_request", 900144, param=param)
        code = self._auth_codes.get(form["code"])
        if code is None or code.expires_at <= self.now():
            raise _AadError(400, "invalid_grant", 70008)
        if code.redeemed:
            raise _AadError(400, "invalid_grant", 54005)
        if code.client_id != form["client_id"]:
            raise _AadError(400, "invalid_grant", 70000)
        if code.redirect_uri != form["redirect_uri"]:
            raise _AadError(
                400, "invalid_grant", 500112, got=form["redirect_uri"], expected=code.redirect_uri
            )
        if code.code_challenge is not None:
            verifier = form.get("code_verifier") or ""
            if code.code_challenge_method == "S256":
                computed = _b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
            else:
                computed = verifier
            if not verifier or not secrets.compare_digest(computed, code.code_challenge):
                raise _AadError(400, "invalid_grant", 50148)
        code.redeemed = True
        requested = form["scope"].split() if form.get("scope") else code.scopes
        return self._issue_tokens(self._accounts[code.account_id], code.client_id, requested, ctx)

    def _issue_tokens(
        self, account: Account, client_id: str, requested: list[str], ctx: _Ctx
    ) -> dict[str, Any]:
        """Mint tokens for the consented Graph scopes; 65001 if more is asked than was consented."""
        consented = account.consents.get(client_id, [])
        consented_lower = {s.lower() for s in consented}
        asked = [name for name in (_graph_scope(s) for s in requested) if name and name != ".default"]
        if not consented or any(name.lower() not in consented_lower for name in asked):
            raise _AadError(400, "invalid_grant", 65001, suberror="consent_required", client_id=client_id)
        ctx.account_id = account.id
        at = AccessToken(
            _new_access_token(),
            client_id,
            account.id,
            list(consented),
            self.now() + timedelta(seconds=ACCESS_TOKEN_SECONDS),
        )
        self._access_tokens[at.token] = at
        requested_lower = {s.lower() for s in requested}
        # Like AAD: `scope` lists every consented Graph permission (not an echo of the request) plus
        # the OIDC scopes asked for, and never offline_access.
        oidc = [s for s in ("profile", "openid", "email") if s in requested_lower]
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join([*consented, *oidc]),
            "expires_in": ACCESS_TOKEN_SECONDS,
            "ext_expires_in": ACCESS_TOKEN_SECONDS,
            "access_token": at.token,
        }
        if "offline_access" in requested_lower:
            body["refresh_token"] = self._new_refresh(account.id, client_id, requested).token
        if "openid" in requested_lower:
            body["id_token"] = self._id_token(account, client_id, requested_lower, ctx)
        if ctx.client_info:
            info = {"uid": account.id, "utid": TENANT_ID}
            body["client_info"] = _b64url(json.dumps(info, separators=(",", ":")).encode())
        return body

    def _id_token(self, account: Account, client_id: str, scopes: set[str], ctx: _Ctx) -> str:
        """A v2.0 ID token, RS256-signed with the key `/{tenant}/discovery/v2.0/keys` serves.

        `sub` is pairwise (per app), `oid` the account's object id; `name` / `preferred_username`
        come with `profile`, `email` with `email` (and only when the account has a mail address)."""
        now = int(self.now().timestamp())
        digest = hashlib.sha256(f"{client_id}:{account.id}".encode()).digest()
        claims: dict[str, Any] = {
            "aud": client_id,
            "iss": f"{ctx.base_url}/{TENANT_ID}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + ACCESS_TOKEN_SECONDS,
            "sub": _b64url(digest),
            "oid": account.id,
            "tid": TENANT_ID,
            "ver": "2.0",
        }
        if "profile" in scopes:
            claims.update(name=account.display_name, preferred_username=account.user_principal_name)
        if "email" in scopes and account.mail:
            claims["email"] = account.mail
        return _signing_key().sign(claims)

    # ----------------------------------------------------------------------------------------------
    # Identity: OpenID Connect discovery (what MSAL reads before its first token request)
    # ----------------------------------------------------------------------------------------------

    def _h_openid_configuration(self, request: Request, ctx: _Ctx, tenant: str) -> Response:
        if not _TENANT_RE.match(tenant):
            raise _AadError(400, "invalid_tenant", 90002, tenant=tenant)
        base = f"{ctx.base_url}/{tenant}"
        # Multi-tenant authorities name no tenant in their issuer: the token's `tid` fills it in.
        issuer_tenant = "{tenantid}" if tenant.lower() in ("common", "organizations", "consumers") else tenant
        document = {
            "issuer": f"{ctx.base_url}/{issuer_tenant}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "userinfo_endpoint": f"{ctx.base_url}/oidc/userinfo",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "nbf",
                "name",
                "preferred_username",
                "email",
                "oid",
                "tid",
                "ver",
                "nonce",
            ],
            "request_uri_parameter_supported": False,
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "tenant_region_scope": None,
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }
        return Response(json.dumps(document), status=200, content_type="application/json; charset=utf-8")

    def _h_jwks(self, request: Request, ctx: _Ctx, tenant: str) -> Response:
        if not _TENANT_RE.match(tenant):
            raise _AadError(400, "invalid_tenant", 90002, tenant=tenant)
        body = {"keys": [_signing_key().jwk]}
        return Response(json.dumps(body), status=200, content_type="application/json; charset=utf-8")

    # ----------------------------------------------------------------------------------------------
    # Identity: authorize endpoint (consent page + code issuance with PKCE)
    # ----------------------------------------------------------------------------------------------

    def _h_authorize(self, request: Request, ctx: _Ctx, tenant: str) -> Response:
        params = request.args if request.method == "GET" else request.form
        client_id = params.get("client_id", "")
        redirect_uri = params.get("redirect_uri", "")
        state = params.get("state")
        with self._lock:
            # Errors we cannot safely redirect are shown as a page, like login.microsoftonline.com does.
            if not _TENANT_RE.match(tenant):
                return self._error_page(400, 90002, tenant=tenant)
            if not client_id:
                return self._error_page(400, 900144, param="client_id")
            if client_id not in self._apps:
                return self._error_page(400, 700016, client_id=client_id, tenant=tenant)
            if not redirect_uri or urlsplit(redirect_uri).scheme not in ("http", "https"):
                return self._error_page(400, 900144, param="redirect_uri")

            def redirect_error(error: str, description: str) -> Response:
                query = [("error", error), ("error_description", description)]
                return _redirect(_with_query(redirect_uri, query + ([("state", state)] if state else [])))

            if params.get("response_type") != "code":
                return redirect_error(
                    "unsupported_response_type", "AADSTS70005: response_type must be 'code'."
                )
            scopes = params.get("scope", "").split()
            if not scopes:
                return redirect_error("invalid_request", _aadsts_text(900144, {"param": "scope"}))
            challenge = params.get("code_challenge") or None
            method = params.get("code_challenge_method") or "plain"
            if challenge and method not in ("S256", "plain"):
                return redirect_error("invalid_request", "AADSTS501491: Invalid code_challenge_method.")
            hint = params.get("account_id") or params.get("login_hint")
            if hint:
                account = self._find_account(hint)
                if account is None:
                    return self._error_page(400, 50034, login_hint=hint)
            else:
                account = next((a for a in self._accounts.values() if client_id in a.consents), None)
                if account is None:
                    return self._error_page(400, 50034, login_hint="(none registered for this app)")
            ctx.account_id = account.id

            if request.method == "GET":
                return self._consent_page(request, account, scopes)
            if params.get("consent") != "accept":
                return redirect_error("access_denied", _aadsts_text(65004, {}))
            self._consent(account, client_id, scopes)
            code = AuthCode(
                code=_new_auth_code(),
                client_id=client_id,
                account_id=account.id,
                redirect_uri=redirect_uri,
                scopes=scopes,
                code_challenge=challenge,
                code_challenge_method=method,
                expires_at=self.now() + AUTH_CODE_LIFETIME,
            )
            self._auth_codes[code.code] = code
        return _redirect(
            _with_query(redirect_uri, [("code", code.code)] + ([("state", state)] if state else []))
        )

    def _consent_page(self, request: Request, account: Account, scopes: list[str]) -> Response:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in request.args.items(multi=True)
            if k != "account_id"
        )
        hidden += f'<input type="hidden" name="account_id" value="{html.escape(account.id)}">'
        items = "".join(f"<li>{html.escape(s)}</li>" for s in scopes)
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Permissions requested</title></head>"
            f"<body><h1>Permissions requested</h1><p>Signed in as <b>{html.escape(account.address)}</b></p>"
            f"<p>App <code>{html.escape(request.args.get('client_id', ''))}</code> would like to:</p>"
            f"<ul>{items}</ul><form method='post' action='{html.escape(request.path)}'>{hidden}"
            "<button type='submit' name='consent' value='accept'>Accept</button> "
            "<button type='submit' name='consent' value='deny'>Cancel</button></form></body></html>"
        )
        return Response(page, content_type="text/html; charset=utf-8")

    def _error_page(self, status: int, code: int, **fields: object) -> Response:
        text = html.escape(_aadsts_text(code, fields))
        page = f"<!doctype html><html><body><h1>Sign in</h1><p id='error'>{text}</p></body></html>"
        return Response(page, status=status, content_type="text/html; charset=utf-8")

    # ----------------------------------------------------------------------------------------------
    # Graph: auth and shared helpers
    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def _bearer_token(request: Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def _authenticate(self, request: Request, ctx: _Ctx) -> tuple[AccessToken, Account]:
        token = self._bearer_token(request)
        if token is None:
            raise _GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        at = self._access_tokens.get(token)
        account = self._accounts.get(at.account_id) if at else None
        if at is None or account is None or at.expires_at <= self.now():
            raise _GraphError(
                401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."
            )
        ctx.account_id, ctx.client_id = account.id, at.client_id
        return at, account

    @staticmethod
    def _require_scope(at: AccessToken, family: str) -> None:
        if not _has_scope_family(at.scopes, family):
            raise _GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    @staticmethod
    def _select(item: dict[str, Any], request: Request, type_name: str) -> dict[str, Any]:
        raw = request.args.get("$select")
        if not raw:
            return item
        wanted = [s.strip() for s in raw.split(",") if s.strip()]
        for name in wanted:
            if name not in item:
                raise _GraphError(
                    400,
                    "BadRequest",
                    f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.",
                )
        return {k: v for k, v in item.items() if k in wanted or k == "id" or k.startswith("@odata.")}

    @staticmethod
    def _json_body(request: Request) -> dict[str, Any]:
        body = request.get_json(silent=True) if request.mimetype == "application/json" else None
        if not isinstance(body, dict):
            raise _GraphError(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload "
                "is of valid JSON format.",
            )
        return body

    # ----------------------------------------------------------------------------------------------
    # Graph: /me and calendars
    # ----------------------------------------------------------------------------------------------

    def _h_me(self, request: Request, ctx: _Ctx) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _has_scope_family(at.scopes, "User"):
                raise _GraphError(
                    403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
                )
            given, _, surname = acc.display_name.partition(" ")
            body: dict[str, Any] = {
                "@odata.context": f"{GRAPH_METADATA}#users/$entity",
                "businessPhones": [],
                "displayName": acc.display_name,
                "givenName": given or None,
                "jobTitle": None,
                "mail": acc.mail,
                "mobilePhone": None,
                "officeLocation": None,
                "preferredLanguage": "en-US",
                "surname": surname or None,
                "userPrincipalName": acc.user_principal_name,
                "id": acc.id,
            }
            return self._graph_json(self._select(body, request, "user"))

    def _calendar_json(self, cal: Calendar) -> dict[str, Any]:
        return {
            "id": cal.id,
            "name": cal.name,
            "color": cal.color,
            "hexColor": _HEX_COLORS.get(cal.color, ""),
            "isDefaultCalendar": cal.is_default,
            "changeKey": cal.change_key,
            "canShare": cal.owned,
            "canViewPrivateItems": cal.owned,
            "canEdit": cal.can_edit,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
            "isTallyingResponses": cal.owned,
            "isRemovable": cal.owned and not cal.is_default,
            "owner": {"name": cal.owner_name, "address": cal.owner_address},
        }

    def _h_calendars(self, request: Request, ctx: _Ctx) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            top = self._top(request)
            offset = self._decode_skiptoken(request.args.get("$skiptoken"))
            calendars = list(acc.calendars.values())
            page = calendars[offset : offset + top]
            body: dict[str, Any] = {
                "@odata.context": f"{GRAPH_METADATA}#users('{acc.id}')/calendars",
                "value": [self._select(self._calendar_json(c), request, "calendar") for c in page],
            }
            if offset + top < len(calendars):
                body["@odata.nextLink"] = self._next_link(
                    request, "$skiptoken", self._skiptoken(offset + top)
                )
            return self._graph_json(body)

    def _h_calendar(self, request: Request, ctx: _Ctx, calendar_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            if not _ID_RE.match(calendar_id):
                raise _GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            cal = acc.calendars.get(calendar_id)
            if cal is None:
                raise _GraphError(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            body = {"@odata.context": f"{GRAPH_METADATA}#users('{acc.id}')/calendars/$entity"}
            body.update(self._calendar_json(cal))
            return self._graph_json(self._select(body, request, "calendar"))

    def _top(self, request: Request) -> int:
        raw = request.args.get("$top")
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise _GraphError(400, "BadRequest", f"Invalid value '{raw}' for $top query option found.")
        return int(raw)

    @staticmethod
    def _skiptoken(offset: int) -> str:
        # Opaque to clients (and base64 with '=', so it must be URL-encoded in the nextLink).
        return base64.b64encode(json.dumps({"o": offset, "n": secrets.token_hex(4)}).encode()).decode()

    @staticmethod
    def _decode_skiptoken(raw: str | None) -> int:
        if raw is None:
            return 0
        try:
            offset = json.loads(base64.b64decode(raw, validate=True))["o"]
            if not isinstance(offset, int) or offset < 0:
                raise ValueError
            return offset
        except (ValueError, KeyError, TypeError):
            raise _GraphError(400, "BadRequest", "The $skiptoken is invalid or has expired.") from None

    @staticmethod
    def _next_link(request: Request, key: str, value: str) -> str:
        # Absolute, on the host the client used; other query options ($top, $select) carried over.
        params = [(k, v) for k, v in request.args.items(multi=True) if k != key] + [(key, value)]
        return f"{request.host_url.rstrip('/')}{request.path}?{urlencode(params, safe='$')}"

    # ----------------------------------------------------------------------------------------------
    # Graph: events, instances and calendarView delta
    # ----------------------------------------------------------------------------------------------

    def _graph_calendar(self, acc: Account, calendar_id: str | None) -> Calendar:
        if calendar_id is None:
            default = next((c for c in acc.calendars.values() if c.is_default), None)
            if default is None:
                raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND_IN_STORE)
            return default
        if not _ID_RE.match(calendar_id):
            raise _GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        cal = acc.calendars.get(calendar_id)
        if cal is None:
            raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND_IN_STORE)
        return cal

    @staticmethod
    def _window(request: Request) -> tuple[datetime, datetime]:
        raw_start, raw_end = request.args.get("startDateTime"), request.args.get("endDateTime")
        if not raw_start or not raw_end:
            raise _GraphError(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters "
                "StartDateTime and EndDateTime.",
            )
        start, end = _parse_datetime(raw_start), _parse_datetime(raw_end)
        for name, raw, value in (("StartDateTime", raw_start, start), ("EndDateTime", raw_end, end)):
            if value is None:
                raise _GraphError(
                    400, "ErrorInvalidParameter", f"The value '{raw}' of parameter '{name}' is invalid."
                )
        assert start is not None and end is not None
        if end <= start:
            raise _GraphError(
                400,
                "ErrorInvalidParameter",
                "The parameter 'EndDateTime' must be later than 'StartDateTime'.",
            )
        return start, end

    @staticmethod
    def _select_loose(item: dict[str, Any], request: Request) -> dict[str, Any]:
        # Loose $select: keep what was asked for among the properties we have; unknown names are
        # ignored (Graph knows many more properties than the emulator models).
        raw = request.args.get("$select")
        if not raw:
            return item
        wanted = {s.strip() for s in raw.split(",") if s.strip()}
        return {k: v for k, v in item.items() if k in wanted or k == "id" or k.startswith("@odata.")}

    def _h_event(
        self, request: Request, ctx: _Ctx, event_id: str, calendar_id: str | None = None
    ) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            cal = self._graph_calendar(acc, calendar_id) if calendar_id is not None else None
            if not _ID_RE.match(event_id):
                raise _GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            prefs = self._prefs(request)
            item = self._resolve_item(acc, event_id, cal)
            if item is None:
                raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND_IN_STORE)
            scope = f"users('{acc.id}')" + (f"/calendars('{cal.id}')" if cal is not None else "")
            body = {"@odata.context": f"{GRAPH_METADATA}#{scope}/events/$entity", **self._render(item, prefs)}
            return self._prefer_response(self._select_loose(body, request), prefs)

    def _h_calendar_event(self, request: Request, ctx: _Ctx, calendar_id: str, event_id: str) -> Response:
        return self._h_event(request, ctx, event_id, calendar_id)

    def _h_event_instances(self, request: Request, ctx: _Ctx, event_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            if not _ID_RE.match(event_id):
                raise _GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            window = self._window(request)
            prefs = self._prefs(request)
            found = next(
                ((c, c.events[event_id]) for c in acc.calendars.values() if event_id in c.events), None
            )
            if found is None:
                raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND_IN_STORE)
            cal, ev = found
            # Only a series has instances; a single event (or an occurrence) lists none.
            items = self._calendar_view(acc, cal, window, series=ev.id) if ev.type == "seriesMaster" else []
            top = prefs.page_size or self._top(request)
            offset = self._decode_skiptoken(request.args.get("$skiptoken"))
            body: dict[str, Any] = {
                "@odata.context": f"{GRAPH_METADATA}#Collection(event)",
                "value": [
                    self._select_loose(self._render(i, prefs), request) for i in items[offset : offset + top]
                ],
            }
            if offset + top < len(items):
                body["@odata.nextLink"] = self._next_link(
                    request, "$skiptoken", self._skiptoken(offset + top)
                )
            return self._prefer_response(body, prefs)

    def _h_view_delta(self, request: Request, ctx: _Ctx, calendar_id: str | None = None) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            cal = self._graph_calendar(acc, calendar_id)
            prefs = self._prefs(request)
            if acc.id in self._resync_required:
                self._resync_required.discard(acc.id)
                raise _GraphError(
                    410,
                    "resyncRequired",
                    "Resync required. Replace any local cached data with the data returned by a full sync.",
                )
            skip, delta = request.args.get("$skiptoken"), request.args.get("$deltatoken")
            if skip is not None or delta is not None:
                # The window (and everything else) comes from the token; new start/end are ignored.
                state = self._sync_state(
                    skip if skip is not None else delta, "skip" if skip else "delta", acc, cal
                )
                if state.kind == "skip":
                    round_, offset = state.round, state.offset
                else:
                    round_, offset = self._incremental_round(acc, cal, state.round), 0
            else:
                window = self._window(request)
                items = self._calendar_view(acc, cal, window)
                snapshot = {item.id: item.version for item in items}
                round_, offset = _DeltaRound(acc.id, cal.id, window, list(items), snapshot), 0
            return self._serve_round(request, prefs, round_, offset)

    def _h_calendar_view_delta(self, request: Request, ctx: _Ctx, calendar_id: str) -> Response:
        return self._h_view_delta(request, ctx, calendar_id)

    def _sync_state(self, token: str | None, kind: str, acc: Account, cal: Calendar) -> _SyncToken:
        state = self._sync_tokens.get(token or "")
        expired = (
            state is not None
            and self.delta_token_max_age is not None
            and self.now() - state.issued_at > self.delta_token_max_age
        )
        if (
            state is None
            or expired
            or state.kind != kind
            or (state.account_id, state.calendar_id) != (acc.id, cal.id)
        ):
            raise _GraphError(410, "syncStateNotFound", "The sync state generation is not found.")
        return state

    def _incremental_round(self, acc: Account, cal: Calendar, previous: _DeltaRound) -> _DeltaRound:
        """What changed in the window since `previous` started: created/updated items in their
        current state (each once), then removals (deleted, cancelled, moved out of the window)."""
        items = self._calendar_view(acc, cal, previous.window)
        snapshot = {item.id: item.version for item in items}
        old = previous.snapshot
        entries: list[_ViewItem | dict[str, Any]] = [i for i in items if old.get(i.id) != i.version]
        entries += [_removed_item(item_id) for item_id in old if item_id not in snapshot]
        return _DeltaRound(acc.id, cal.id, previous.window, entries, snapshot)

    def _mint_sync_token(self, state: _SyncToken) -> str:
        token = secrets.token_urlsafe(96)
        self._sync_tokens[token] = state
        while len(self._sync_tokens) > _MAX_SYNC_TOKENS:  # the oldest sync states are forgotten
            del self._sync_tokens[next(iter(self._sync_tokens))]
        return token

    def _serve_round(self, request: Request, prefs: _Prefs, round_: _DeltaRound, offset: int) -> Response:
        size = prefs.page_size or self.delta_page_size
        page = round_.entries[offset : offset + size]
        value = [
            entry
            if isinstance(entry, dict)
            else self._render(entry, prefs, minimal=entry.type != "singleInstance", delta=True)
            for entry in page
        ]
        body: dict[str, Any] = {"@odata.context": _DELTA_CONTEXT}
        base = f"{request.host_url.rstrip('/')}{request.path}"
        if offset + size < len(round_.entries):
            following = offset + size
            token = round_.skip_tokens.get(following)
            if token is None or token not in self._sync_tokens:
                token = self._mint_sync_token(
                    _SyncToken("skip", round_.account_id, round_.calendar_id, self.now(), round_, following)
                )
                round_.skip_tokens[following] = token
            body["@odata.nextLink"] = f"{base}?{urlencode([('$skiptoken', token)], safe='$')}"
        else:
            token = round_.delta_token
            if token is None or token not in self._sync_tokens:
                token = self._mint_sync_token(
                    _SyncToken("delta", round_.account_id, round_.calendar_id, self.now(), round_)
                )
                round_.delta_token = token
        body["value"] = value
        if offset + size >= len(round_.entries):
            body["@odata.deltaLink"] = f"{base}?{urlencode([('$deltatoken', token)], safe='$')}"
        return self._prefer_response(body, prefs)

    # ----------------------------------------------------------------------------------------------
    # Graph: subscriptions
    # ----------------------------------------------------------------------------------------------

    def _subscription_json(self, sub: Subscription, with_context: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if with_context:
            body["@odata.context"] = f"{GRAPH_METADATA}#subscriptions/$entity"
        body.update(
            {
                "id": sub.id,
                "resource": sub.resource,
                "applicationId": sub.client_id,
                "changeType": sub.change_type,
                "clientState": sub.client_state,
                "notificationUrl": sub.notification_url,
                "notificationQueryOptions": None,
                "lifecycleNotificationUrl": sub.lifecycle_notification_url,
                "expirationDateTime": _graph_dt(sub.expiration),
                "creatorId": sub.account_id,
                "includeResourceData": None,
                "latestSupportedTlsVersion": sub.latest_tls,
                "encryptionCertificate": None,
                "encryptionCertificateId": None,
                "notificationUrlAppId": None,
                "notificationContentType": None,
            }
        )
        return body

    def _check_expiration(self, raw: object) -> datetime:
        expiration = _parse_datetime(raw)
        if expiration is None:
            raise _GraphError(400, "InvalidRequest", f"Invalid expirationDateTime '{raw}'.")
        now = self.now()
        limit = self.subscription_max_minutes
        if expiration <= now:
            raise _GraphError(400, "InvalidRequest", "Subscription expiration can only be in the future.")
        if expiration > now + timedelta(minutes=limit):
            raise _GraphError(
                400, "InvalidRequest", f"Subscription expiration can only be {limit} minutes in the future."
            )
        return expiration

    @staticmethod
    def _check_notification_url(name: str, url: object) -> str:
        if not isinstance(url, str):
            raise _GraphError(400, "InvalidRequest", f"'{name}' must be a string.")
        parts = urlsplit(url)
        # https only, like Graph; plain http is tolerated for loopback so the local stack can run.
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
        ):
            raise _GraphError(400, "InvalidRequest", f"Invalid {name} '{url}'. The url must use https.")
        return url

    def _subscription_for(self, acc: Account, at: AccessToken, subscription_id: str) -> Subscription:
        sub = self._subscriptions.get(subscription_id)
        if (
            sub is None
            or sub.account_id != acc.id
            or sub.client_id != at.client_id
            or sub.expiration <= self.now()
        ):
            raise _GraphError(404, "ResourceNotFound", "The object was not found.")
        return sub

    def _h_subscriptions(self, request: Request, ctx: _Ctx) -> Response:
        if request.method == "POST":
            return self._create_subscription(request, ctx)
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            now = self.now()
            value = [
                self._subscription_json(s, with_context=False)
                for s in self._subscriptions.values()
                if s.account_id == acc.id and s.client_id == at.client_id and s.expiration > now
            ]
            return self._graph_json({"@odata.context": f"{GRAPH_METADATA}#subscriptions", "value": value})

    def _create_subscription(self, request: Request, ctx: _Ctx) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            body = self._json_body(request)
            for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
                if not body.get(name):
                    raise _GraphError(400, "InvalidRequest", f"'{name}' is a required property.")
            resource = body["resource"]
            match = _RESOURCE_RE.match(resource) if isinstance(resource, str) else None
            if match is None:
                raise _GraphError(400, "InvalidRequest", f"Unsupported resource '{resource}'.")
            self._require_scope(at, "Calendars")
            calendar_id = match.group("cal") or match.group("calq")
            if calendar_id is not None:
                calendar_id = unquote(calendar_id)
                # Another mailbox's calendar looks exactly like a missing one.
                if calendar_id not in acc.calendars:
                    raise _GraphError(
                        404, "ResourceNotFound", "The specified object was not found in the store."
                    )
            change_types = [c.strip() for c in str(body["changeType"]).split(",")]
            if any(c not in CHANGE_TYPES for c in change_types) or len(set(change_types)) != len(
                change_types
            ):
                raise _GraphError(
                    400,
                    "InvalidRequest",
                    f"Invalid changeType '{body['changeType']}'; use created, updated, deleted.",
                )
            client_state = body.get("clientState")
            if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
                raise _GraphError(
                    400, "InvalidRequest", "clientState must be a string of at most 128 characters."
                )
            expiration = self._check_expiration(body["expirationDateTime"])
            notification_url = self._check_notification_url("notificationUrl", body["notificationUrl"])
            lifecycle_url = body.get("lifecycleNotificationUrl")
            if lifecycle_url is not None:
                lifecycle_url = self._check_notification_url("lifecycleNotificationUrl", lifecycle_url)
            tls = body.get("latestSupportedTlsVersion") or "v1_2"
            if tls not in TLS_VERSIONS:
                raise _GraphError(400, "InvalidRequest", f"Invalid latestSupportedTlsVersion '{tls}'.")
            if body.get("includeResourceData"):
                raise _GraphError(
                    400,
                    "InvalidRequest",
                    "includeResourceData requires an encryptionCertificate (not emulated).",
                )
            client_id = at.client_id

        # The handshake runs without the lock: the endpoint may call back into this emulator.
        for url in filter(None, (notification_url, lifecycle_url)):
            if not self._validate_endpoint(url):
                raise _GraphError(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK "
                    "to validation request.",
                )

        with self._lock:
            sub = Subscription(
                id=str(uuid.uuid4()),
                account_id=acc.id,
                client_id=client_id,
                resource=resource,
                calendar_id=calendar_id,
                change_type=",".join(change_types),
                notification_url=notification_url,
                lifecycle_notification_url=lifecycle_url,
                client_state=client_state,
                expiration=expiration,
                latest_tls=tls,
                created_at=self.now(),
            )
            self._subscriptions[sub.id] = sub
            return self._graph_json(self._subscription_json(sub), 201)

    def _validate_endpoint(self, url: str) -> bool:
        """Graph's handshake: POST ?validationToken=<token>; the endpoint must echo it as text/plain."""
        token = (
            f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        )
        separator = "&" if urlsplit(url).query else "?"
        # quote_plus: spaces arrive as '+', so endpoints must decode the query properly.
        target = f"{url}{separator}validationToken={quote_plus(token)}"
        session = _http.Session()
        # Loopback endpoints must not be sent through an HTTP(S)_PROXY from the environment.
        session.trust_env = not _is_loopback_url(url)
        try:
            answer = session.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=self.validation_timeout,
                allow_redirects=False,
            )
        except _http.RequestException as exc:
            log.info("subscription validation of %s failed: %s", url, exc)
            return False
        finally:
            session.close()
        content_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return (
            answer.status_code == 200
            and content_type == "text/plain"
            and answer.content.decode("utf-8", "replace") == token
        )

    def _h_subscription(self, request: Request, ctx: _Ctx, subscription_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            sub = self._subscription_for(acc, at, subscription_id)
            if request.method == "GET":
                return self._graph_json(self._subscription_json(sub))
            if request.method == "DELETE":
                del self._subscriptions[sub.id]
                return self._graph_json(None, 204)
            body = self._json_body(request)
            if not body.get("expirationDateTime"):
                raise _GraphError(400, "InvalidRequest", "'expirationDateTime' is a required property.")
            sub.expiration = self._check_expiration(body["expirationDateTime"])
            sub.reauthorization_required_at = None  # renewing also reauthorizes
            return self._graph_json(self._subscription_json(sub))

    def _h_subscription_reauthorize(self, request: Request, ctx: _Ctx, subscription_id: str) -> Response:
        """POST /subscriptions/{id}/reauthorize: answer a reauthorizationRequired challenge (no renewal)."""
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            sub = self._subscription_for(acc, at, subscription_id)
            sub.reauthorization_required_at = None
            return self._graph_json(None, 204)

    # ----------------------------------------------------------------------------------------------
    # Control API (/_control, JSON, no auth: local only)
    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def _control_rules() -> list[Rule]:
        return [
            Rule("/_control/reset", endpoint="reset", methods=["POST"]),
            Rule("/_control/clock", endpoint="clock", methods=["GET", "POST"]),
            Rule("/_control/apps", endpoint="apps", methods=["GET", "POST"]),
            Rule("/_control/apps/<client_id>/expire-secret", endpoint="app_expire", methods=["POST"]),
            Rule("/_control/accounts", endpoint="accounts", methods=["GET", "POST"]),
            Rule("/_control/accounts/<account>/calendars", endpoint="account_calendars", methods=["POST"]),
            Rule("/_control/accounts/<account>/refresh-token", endpoint="account_token", methods=["POST"]),
            Rule("/_control/accounts/<account>/revoke", endpoint="account_revoke", methods=["POST"]),
            Rule("/_control/access-tokens/expire", endpoint="expire_access", methods=["POST"]),
            Rule("/_control/refresh-tokens", endpoint="refresh_tokens", methods=["GET"]),
            Rule("/_control/issued-tokens", endpoint="issued_tokens", methods=["GET"]),
            Rule("/_control/subscriptions", endpoint="subscriptions", methods=["GET"]),
            Rule("/_control/subscriptions/<subscription_id>", endpoint="subscription", methods=["DELETE"]),
            Rule(
                "/_control/subscriptions/<subscription_id>/expire",
                endpoint="subscription_expire",
                methods=["POST"],
            ),
            Rule(
                "/_control/subscriptions/<subscription_id>/lifecycle",
                endpoint="subscription_lifecycle",
                methods=["POST"],
            ),
            Rule("/_control/notifications", endpoint="notifications", methods=["GET", "DELETE"]),
            Rule("/_control/notifications/config", endpoint="notifications_config", methods=["GET", "POST"]),
            Rule("/_control/notifications/flush", endpoint="notifications_flush", methods=["POST"]),
            Rule("/_control/notifications/pause", endpoint="notifications_pause", methods=["POST"]),
            Rule("/_control/notifications/resume", endpoint="notifications_resume", methods=["POST"]),
            Rule("/_control/notifications/status", endpoint="notifications_status", methods=["GET"]),
            Rule("/_control/faults", endpoint="faults", methods=["GET", "POST", "DELETE"]),
            Rule("/_control/faults/<fault_id>", endpoint="fault", methods=["DELETE"]),
            Rule("/_control/requests", endpoint="requests", methods=["GET", "DELETE"]),
            Rule(
                "/_control/accounts/<account>/calendars/<calendar_id>/events",
                endpoint="calendar_events",
                methods=["POST"],
            ),
            Rule("/_control/accounts/<account>/events", endpoint="account_events", methods=["GET"]),
            Rule("/_control/accounts/<account>/delta/expire", endpoint="delta_expire", methods=["POST"]),
            Rule(
                "/_control/accounts/<account>/delta/resync-required",
                endpoint="delta_resync",
                methods=["POST"],
            ),
            Rule("/_control/events/<event_id>", endpoint="event", methods=["GET", "PATCH", "DELETE"]),
            Rule("/_control/events/<event_id>/cancel", endpoint="event_cancel", methods=["POST"]),
            Rule("/_control/events/<event_id>/occurrences", endpoint="event_occurrences", methods=["GET"]),
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
            self.advance_clock(float(body["advance_seconds"]))
        return 200, {"now": _iso(self.now())}

    def _c_apps(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.apps()}
        body = self._control_body(request)
        _check_fields(body, {"client_id", "client_secret"})
        return 201, self.add_app(body.get("client_id"), body.get("client_secret"))

    def _c_app_expire(self, request: Request, client_id: str) -> tuple[int, Any]:
        self.expire_app_secret(client_id)
        return 200, {"client_id": client_id, "secret_expired": True}

    def _c_accounts(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.accounts()}
        body = self._control_body(request)
        allowed = {
            "client_id",
            "mail",
            "user_principal_name",
            "display_name",
            "calendars",
            "scopes",
            "id",
            "refresh_token",
        }
        _check_fields(body, allowed, ["client_id", "user_principal_name"])
        calendars = body.get("calendars")
        if calendars is not None:
            if not isinstance(calendars, list) or not all(isinstance(c, dict) for c in calendars):
                raise EmulatorError("calendars must be a list of objects")
            for spec in calendars:
                _check_fields(spec, _CALENDAR_FIELDS, ["name"])
        result = self.add_account(
            client_id=body["client_id"],
            user_principal_name=body["user_principal_name"],
            mail=body.get("mail"),
            display_name=body.get("display_name"),
            calendars=calendars,
            scopes=body.get("scopes") or DEFAULT_SCOPES,
            object_id=body.get("id"),
            refresh_token=body.get("refresh_token"),
        )
        return 201, result

    def _c_account_calendars(self, request: Request, account: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, _CALENDAR_FIELDS, ["name"])
        return 201, self.add_calendar(account, **body)

    def _c_account_token(self, request: Request, account: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, {"client_id", "scopes", "refresh_token"}, ["client_id"])
        token = self.issue_refresh_token(
            account, body["client_id"], body.get("scopes"), refresh_token=body.get("refresh_token")
        )
        return 201, {"refresh_token": token}

    def _c_account_revoke(self, request: Request, account: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, {"code"})
        return 200, {"revoked": self.revoke(account, int(body.get("code") or 50173))}

    def _c_expire_access(self, request: Request) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, {"account"})
        return 200, {"expired": self.expire_access_tokens(body.get("account"))}

    def _c_issued_tokens(self, request: Request) -> tuple[int, Any]:
        return 200, self.issued_tokens()

    def _c_refresh_tokens(self, request: Request) -> tuple[int, Any]:
        account = request.args.get("account")
        if not account:
            raise EmulatorError("query parameter 'account' is required")
        return 200, {"value": self.refresh_tokens(account)}

    def _c_subscriptions(self, request: Request) -> tuple[int, Any]:
        active_only = request.args.get("active", "") in ("1", "true")
        return 200, {"value": self.subscriptions(active_only=active_only)}

    def _c_subscription(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        self.delete_subscription(subscription_id)
        return 204, None

    def _c_subscription_expire(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        return 200, self.expire_subscription(subscription_id)

    def _c_subscription_lifecycle(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, {"event"}, ["event"])
        return 200, self.send_lifecycle_notification(subscription_id, body["event"])

    def _c_notifications(self, request: Request) -> tuple[int, Any]:
        if request.method == "DELETE":
            self.clear_notifications()
            return 204, None
        args = request.args
        return 200, {"value": self.notifications(args.get("subscription_id"), args.get("kind"))}

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
            error = f"deliveries still in flight after {timeout:g} s"
            return 504, {**status, "flushed": False, "error": error}
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
        entries = self.requests(args.get("account"), args.get("path_prefix"), args.get("method"))
        return 200, {"value": entries}

    def _c_calendar_events(self, request: Request, account: str, calendar_id: str) -> tuple[int, Any]:
        body = self._control_body(request)
        _check_fields(body, _EVENT_FIELDS, ["start", "end"])
        fields = dict(body)
        event_id = fields.pop("id", None)
        return 201, self.add_event(account, calendar_id, event_id=event_id, **fields)

    def _c_account_events(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"value": self.events(account)}

    def _c_delta_expire(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"expired": self.expire_delta_tokens(account)}

    def _c_delta_resync(self, request: Request, account: str) -> tuple[int, Any]:
        self.require_resync(account)
        return 200, {"resync_required": True}

    def _c_event(self, request: Request, event_id: str) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, self.event(event_id)
        if request.method == "DELETE":
            self.delete_event(event_id)
            return 204, None
        body = self._control_body(request)
        _check_fields(body, _EVENT_PATCH_FIELDS)
        return 200, self.update_event(event_id, **body)

    def _c_event_cancel(self, request: Request, event_id: str) -> tuple[int, Any]:
        return 200, self.cancel_event(event_id)

    def _c_event_occurrences(self, request: Request, event_id: str) -> tuple[int, Any]:
        start, end = request.args.get("start"), request.args.get("end")
        if not start or not end:
            raise EmulatorError("query parameters 'start' and 'end' are required")
        return 200, {"value": self.occurrences(event_id, start, end)}


_CALENDAR_FIELDS = {"name", "is_default", "can_edit", "color", "owner_name", "owner_address", "calendar_id"}
_EVENT_PATCH_FIELDS = {
    "subject",
    "start",
    "end",
    "time_zone",
    "body_html",
    "location",
    "online_meeting_url",
    "recurrence",
}
_EVENT_FIELDS = _EVENT_PATCH_FIELDS | {"is_all_day", "organizer", "id", "attendees"}
_ATTENDEE_TYPES = {"required", "optional", "resource"}
_ATTENDEE_RESPONSES = {"none", "organizer", "tentativelyAccepted", "accepted", "declined", "notResponded"}


def _attendees(raw: list[str | dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Control-API attendees as Graph attendee resources (type, status, emailAddress)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise EmulatorError("attendees must be a list")
    out = []
    for item in raw:
        spec = {"address": item} if isinstance(item, str) else item
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("address"), str)
            or "@" not in spec["address"]
        ):
            raise EmulatorError('attendees must be addresses or {"address": ..., ...} objects')
        kind, response = spec.get("type", "required"), spec.get("response", "none")
        if kind not in _ATTENDEE_TYPES or response not in _ATTENDEE_RESPONSES:
            raise EmulatorError(
                f"attendee type must be one of {sorted(_ATTENDEE_TYPES)}, response one of "
                f"{sorted(_ATTENDEE_RESPONSES)}"
            )
        out.append(
            {
                "type": kind,
                "status": {"response": response, "time": "0001-01-01T00:00:00Z"},
                "emailAddress": {
                    "name": str(spec.get("name") or spec["address"]),
                    "address": spec["address"],
                },
            }
        )
    return out


def _redirect(location: str) -> Response:
    response = Response(status=302)
    response.headers["Location"] = location
    return response
