"""Graph emulator state models: the constants of the protocol, the records a backend keeps
(apps, mailboxes, calendars, events, tokens, subscriptions), fault rules and the per-request context,
and the token and id generators that make them look like Microsoft's."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from local.emulators.core.faults import FaultRule
from local.emulators.core.requestlog import RequestContext

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
ACCESS_TOKEN_BYTES = 1740  # a personal account's (MSA) token: 3 + 2320 characters of standard base64


REFRESH_TOKEN_PART_BYTES = 400  # three parts -> ~1,620 characters


AUTH_CODE_LIFETIME = timedelta(minutes=10)


REVOKE_CODES = (70008, 700082, 700084, 50173, 65001)


CHANGE_TYPES = ("created", "updated", "deleted")


LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


# The tenantId every notification carries (one fixed directory for all emulated mailboxes).
TENANT_ID = "5c2d7f0e-8b1a-4e6d-9f3c-a4b8e1d2c7f6"


_NOTIFICATION_EVENT_TYPE = "#Microsoft.Graph.Event"  # sic: notifications capitalize it, event JSON does not


TLS_VERSIONS = ("v1_0", "v1_1", "v1_2", "v1_3")


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


# Graph's SDKs call OData functions as `delta()` (Kiota) or `microsoft.graph.delta` (older SDKs); the
# service takes every spelling, with or without the namespace and the parentheses.
_DELTA_SEGMENT = re.compile(r"/(?:microsoft\.graph\.)?delta(?:\(\))?$", re.IGNORECASE)


def _odata_function_path(path: str) -> str:
    return _DELTA_SEGMENT.sub("/delta", path.rstrip("/")) if "/v1.0/" in path else path


def _new_access_token() -> str:
    """A work or school account's access token, as Graph issues them (PROTOCOLS: a JWT, commonly 1.5-2.5
    KB): an RS256 JWT with the v1 claims Graph puts in, their values random (about 2,300 characters).
    Nothing verifies it: the emulator looks tokens up as it issued them. Its size and make-up matter to
    what stores it (calbot.tokencache packs a JWT's parts)."""
    header = {"typ": "JWT", "nonce": _b64u(32), "alg": "RS256", "x5t": _b64u(20), "kid": _b64u(20)}
    issued = 1_765_000_000 + secrets.randbelow(10**8)
    claims: dict[str, Any] = {
        "aud": "00000003-0000-0000-c000-000000000000",
        "iss": f"https://sts.windows.net/{TENANT_ID}/",
        "iat": issued,
        "nbf": issued,
        "exp": issued + 4_500 + secrets.randbelow(600),
        "acct": 0,
        "acr": "1",
        "acrs": ["p1"],
        "aio": _b64u(72),
        "amr": ["pwd", "mfa"],
        "app_displayname": "Meeting bots",
        "appid": _guid(),
        "appidacr": "1",
        "family_name": "Doe",
        "given_name": "Jane",
        "idtyp": "user",
        "ipaddr": f"203.0.113.{secrets.randbelow(255)}",
        "name": "Jane Doe",
        "oid": _guid(),
        "platf": "3",
        "puid": "10032001" + secrets.token_hex(4).upper(),
        "rh": "1.A" + _b64u(60) + ".",
        "scp": "Calendars.Read email openid profile User.Read",
        "sid": _guid(),
        "signin_state": ["kmsi"],
        "sub": _b64u(32),
        "tenant_region_scope": "NA",
        "tid": TENANT_ID,
        "unique_name": "jane.doe@contoso.onmicrosoft.com",
        "upn": "jane.doe@contoso.onmicrosoft.com",
        "uti": _b64u(16),
        "ver": "1.0",
        "wids": [_guid(), "b79fbf4d-3ef9-4689-8143-76b194e85509"],
        "xms_ftd": _b64u(40),
        "xms_idrel": "1 22",
        "xms_st": {"sub": _b64u(32)},
        "xms_tcdt": 1_600_000_000,
        "xms_tdbr": "EU",
    }
    parts = (json.dumps(header, separators=(",", ":")), json.dumps(claims, separators=(",", ":")))
    return ".".join([*(_b64u_text(p) for p in parts), _b64u(256)])


def _new_msa_access_token() -> str:
    # A personal (MSA) account's: opaque, "EwA" + standard base64, so '+', '/' and '=' appear.
    return "EwA" + base64.b64encode(os.urandom(ACCESS_TOKEN_BYTES)).decode()


def _b64u(n: int) -> str:
    return base64.urlsafe_b64encode(os.urandom(n)).rstrip(b"=").decode()


def _b64u_text(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _guid() -> str:
    return str(uuid.uuid4())


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


@dataclass(kw_only=True)
class GraphFault(FaultRule):
    """`error` is the AAD error for identity paths ("invalid_grant", "invalid_client", ...; `aadsts`
    picks the code) and the Graph error code otherwise."""

    aadsts: int | None = None

    def __post_init__(self) -> None:
        if self.aadsts is not None:
            self.aadsts = int(self.aadsts)


@dataclass(kw_only=True)
class GraphContext(RequestContext):
    """Per-request facts gathered for headers, fault matching and the request log."""

    request_id: str
    client_request_id: str
    # Where the caller reached us (scheme://host), for the issuer and the OpenID documents' URLs.
    base_url: str = ""
    # The token request asked for client_info=1 (MSAL always does).
    client_info: bool = False
    identity: bool = False  # a Microsoft identity platform path (login.microsoftonline.com's)
