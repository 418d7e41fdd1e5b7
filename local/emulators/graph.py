"""Emulator of the Microsoft identity platform (v2.0 token/authorize) and Microsoft Graph v1.0.

One WSGI app serves both, so the local stack points `MS_LOGIN_BASE_URL=<url>` and
`GRAPH_BASE_URL=<url>/v1.0` at the same server. It follows /work/shared/PROTOCOLS.md, including
the unpleasant parts real clients trip over: refresh tokens rotate (a redeemed one keeps working only
for `rotation_grace_seconds` of emulator time, then dies; 0 kills it at once), `offline_access` is
needed for a refresh token to come back, the granted
`scope` is not an echo of the request, token strings carry `!*$+/=`, calendar ids are long
base64-like strings ending in `=`, nextLinks are absolute, subscriptions are only created after a
real validation handshake against the notification URL, and errors have the exact AADSTS / Graph
shapes. Tests and the local stack drive it through `/_control` (HTTP) or the Python methods.

Never import the production package (`calbot`) from here, and never the other way round.
"""

from __future__ import annotations

import base64
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote_plus, unquote, urlencode, urlsplit, urlunsplit

import requests as _http
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

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
REFRESH_TOKEN_INACTIVITY = timedelta(days=90)  # AAD: 700082 after 90 days unused
AUTH_CODE_LIFETIME = timedelta(minutes=10)
REVOKE_CODES = (70008, 700082, 700084, 50173, 65001)
CHANGE_TYPES = ("created", "updated", "deleted")
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


class EmulatorError(ValueError):
    """Misuse of the control API (Python or HTTP); `status` is the HTTP status /_control answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
    # Filled by the events/delta extension; keyed by event id.
    events: dict[str, dict[str, Any]] = field(default_factory=dict)


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
class _Ctx:
    """Per-request facts gathered for headers, fault matching and the request log."""

    request_id: str
    client_request_id: str
    account_id: str | None = None
    client_id: str | None = None
    fault_id: str | None = None


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _new_access_token() -> str:
    # Like MSA access tokens: "EwA" + standard base64, so '+', '/' and '=' appear.
    return "EwA" + base64.b64encode(os.urandom(540)).decode()


def _new_refresh_token() -> str:
    # Like MSA refresh tokens: "M.C5xx_BAY.0.U.-C..." with '!', '*' and '$$' inside (form-encode them!).
    parts = [secrets.token_urlsafe(90) for _ in range(3)]
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


# --------------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------------


class GraphEmulator:
    """Microsoft identity platform + Graph v1.0 emulator; a WSGI app (`wsgi_app`, or the instance)."""

    def __init__(
        self,
        *,
        page_size: int = 10,
        subscription_max_minutes: int = 10080,
        rotation_grace_seconds: float = 86400.0,
        validation_timeout: float = 10.0,
    ) -> None:
        self.page_size = page_size
        self.subscription_max_minutes = subscription_max_minutes
        # Microsoft keeps a redeemed refresh token usable for a while ("the old one eventually dies"):
        # a client that retries with the token it just sent (e.g. 409, then replace: true) still works,
        # but one that never stores the rotated token breaks once the grace is over.
        self.rotation_grace = timedelta(seconds=rotation_grace_seconds)
        self.validation_timeout = validation_timeout
        # One re-entrant lock around all state: the app is served by a threaded server.
        self._lock = threading.RLock()
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

    def now(self) -> datetime:
        """The emulator's clock (real UTC time plus any `advance_clock` offset)."""
        return datetime.now(UTC) + self._clock_offset

    def advance_clock(self, seconds: float) -> datetime:
        """Move the emulator's clock forward (expires access tokens, subscriptions, idle refresh tokens)."""
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

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._faults]

    def remove_fault(self, fault_id: str) -> None:
        with self._lock:
            before = len(self._faults)
            self._faults = [rule for rule in self._faults if rule.id != fault_id]
            if len(self._faults) == before:
                raise EmulatorError(f"no fault {fault_id!r}", 404)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = []

    def requests(
        self, account: str | None = None, path_prefix: str | None = None, method: str | None = None
    ) -> list[dict[str, Any]]:
        """The request log (never bodies), oldest first; `account` is an id, mail or UPN."""
        with self._lock:
            account_id = None
            if account:
                found = self._find_account(account)
                if found is None:
                    return []
                account_id = found.id
            return [
                dict(entry)
                for entry in self._log
                if (account_id is None or entry["account"] == account_id)
                and (not path_prefix or entry["path"].startswith(path_prefix))
                and (not method or entry["method"] == method.upper())
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self._log = []

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
        if rt.invalid_code is None and self.now() - rt.last_used_at > REFRESH_TOKEN_INACTIVITY:
            rt.invalid_code = 700082
        if (
            rt.invalid_code is None
            and rt.superseded_at
            and self.now() - rt.superseded_at >= self.rotation_grace
        ):
            rt.invalid_code = 70008  # rotated away and the grace is over
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
        }

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
            Rule("/v1.0/me", endpoint="me", methods=["GET"]),
            Rule("/v1.0/me/calendars", endpoint="calendars", methods=["GET"]),
            Rule("/v1.0/me/calendars/<calendar_id>", endpoint="calendar", methods=["GET"]),
            Rule("/v1.0/subscriptions", endpoint="subscriptions", methods=["GET", "POST"]),
            Rule(
                "/v1.0/subscriptions/<subscription_id>",
                endpoint="subscription",
                methods=["GET", "PATCH", "DELETE"],
            ),
        ]

    def _dispatch_service(self, request: Request) -> Response:
        ctx = _Ctx(
            request_id=str(uuid.uuid4()),
            client_request_id=request.headers.get("client-request-id") or str(uuid.uuid4()),
        )
        identity = "/oauth2/" in request.path
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
            endpoint, args = adapter.match()
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
            rt.superseded_at = self.now()
            self._refresh_invalid_code(rt)  # a zero grace kills it at once
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
        return body

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
            body = {
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
            return self._graph_json(self._subscription_json(sub))

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
            Rule("/_control/subscriptions", endpoint="subscriptions", methods=["GET"]),
            Rule("/_control/subscriptions/<subscription_id>", endpoint="subscription", methods=["DELETE"]),
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


_CALENDAR_FIELDS = {"name", "is_default", "can_edit", "color", "owner_name", "owner_address", "calendar_id"}


def _redirect(location: str) -> Response:
    response = Response(status=302)
    response.headers["Location"] = location
    return response
