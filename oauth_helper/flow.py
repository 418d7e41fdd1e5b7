"""The OAuth authorization-code flow with PKCE, without HTTP serving: provider definitions, the
authorize URL, the server-side `state` store, the code exchange, the account lookup and the curl.

The web layer (oauth_helper/web.py) only turns requests into calls here and results into pages, so
everything that matters for security (state single use and expiry, PKCE, what is sent where) is unit
tested without a server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shlex
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from oauth_helper.config import Settings

# Exactly what the guide and PROTOCOLS.md ask for: offline_access is what makes Microsoft return a
# refresh token; Google returns one for access_type=offline (and, with prompt=consent, every time).
MICROSOFT_SCOPES = ("offline_access", "User.Read", "Calendars.Read")
GOOGLE_SCOPES = (
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events.readonly",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
)
STATE_TTL_SECONDS = 600
HTTP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Provider:
    key: str  # "microsoft" | "google": the URL segment
    label: str
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    redirect_uri: str
    extra_authorize_params: tuple[tuple[str, str], ...] = ()
    scope_on_exchange: bool = False  # Microsoft's v2.0 token endpoint wants `scope` again
    tenant: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def missing(self) -> list[str]:
        prefix = self.key.upper()
        return [
            f"{prefix}_{name}"
            for name, value in (("CLIENT_ID", self.client_id), ("CLIENT_SECRET", self.client_secret))
            if not value
        ]


def redirect_uri(settings: Settings, provider: str) -> str:
    return f"{settings.base_url}/api/{provider}/oauth-callback"


def providers(settings: Settings) -> dict[str, Provider]:
    login = f"{settings.microsoft_login_base_url}/{settings.microsoft_tenant}/oauth2/v2.0"
    return {
        "microsoft": Provider(
            key="microsoft",
            label="Microsoft",
            client_id=settings.microsoft_client_id,
            client_secret=settings.microsoft_client_secret,
            authorize_url=f"{login}/authorize",
            token_url=f"{login}/token",
            scopes=MICROSOFT_SCOPES,
            redirect_uri=redirect_uri(settings, "microsoft"),
            # select_account: a user connecting a second mailbox must be able to pick another account.
            extra_authorize_params=(("response_mode", "query"), ("prompt", "select_account")),
            scope_on_exchange=True,
            tenant=settings.microsoft_tenant,
        ),
        "google": Provider(
            key="google",
            label="Google",
            client_id=settings.google_client_id,
            client_secret=settings.google_client_secret,
            authorize_url=settings.google_auth_url,
            token_url=settings.google_token_url,
            scopes=GOOGLE_SCOPES,
            redirect_uri=redirect_uri(settings, "google"),
            # Without prompt=consent Google returns a refresh token only on the very first consent.
            extra_authorize_params=(
                ("access_type", "offline"),
                ("prompt", "consent"),
                ("include_granted_scopes", "true"),
            ),
        ),
    }


# ------------------------------------------------------------------------------------------------
# PKCE (RFC 7636)
# ------------------------------------------------------------------------------------------------


def new_code_verifier() -> str:
    """86 characters from the unreserved set (RFC 7636 allows 43-128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# ------------------------------------------------------------------------------------------------
# State
# ------------------------------------------------------------------------------------------------


class StateError(Exception):
    """The callback's `state` is not one we issued for this provider in the last 10 minutes."""


@dataclass(frozen=True)
class PendingAuthorization:
    provider: str
    code_verifier: str
    redirect_uri: str
    issued_at: float


class StateStore:
    """Server-side, single-use, expiring `state` values, each bound to its provider and PKCE verifier.

    The verifier never leaves the server, so a code stolen from the redirect is useless without it,
    and a callback whose state we did not issue (CSRF, a replayed or stale link) is refused before
    any token exchange.
    """

    def __init__(
        self,
        ttl_seconds: float = STATE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        max_pending: int = 1000,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.max_pending = max_pending
        self._pending: OrderedDict[str, PendingAuthorization] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, provider: str, code_verifier: str, redirect_uri: str) -> str:
        state = secrets.token_urlsafe(32)
        with self._lock:
            self._purge_expired()
            while len(self._pending) >= self.max_pending:  # a bounded store: drop the oldest
                self._pending.popitem(last=False)
            self._pending[state] = PendingAuthorization(provider, code_verifier, redirect_uri, self.clock())
        return state

    def consume(self, state: str | None, provider: str) -> PendingAuthorization:
        """The pending authorization for `state`, removed so it can never be used again."""
        if not state:
            raise StateError("the callback carries no state")
        with self._lock:
            pending = self._pending.pop(state, None)
        if pending is None:
            raise StateError("this state is unknown or was already used")
        if self.clock() - pending.issued_at >= self.ttl_seconds:
            raise StateError("this state has expired (sign-in took longer than 10 minutes)")
        if pending.provider != provider:
            raise StateError(f"this state was issued for {pending.provider}, not {provider}")
        return pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def _purge_expired(self) -> None:
        now = self.clock()
        for state in [s for s, p in self._pending.items() if now - p.issued_at >= self.ttl_seconds]:
            del self._pending[state]


# ------------------------------------------------------------------------------------------------
# Authorize, exchange, account
# ------------------------------------------------------------------------------------------------


def start_authorization(provider: Provider, states: StateStore) -> str:
    """A fresh verifier and state, remembered server-side; returns the URL to send the browser to."""
    verifier = new_code_verifier()
    state = states.issue(provider.key, verifier, provider.redirect_uri)
    params = [
        ("client_id", provider.client_id),
        ("response_type", "code"),
        ("redirect_uri", provider.redirect_uri),
        ("scope", " ".join(provider.scopes)),
        ("state", state),
        ("code_challenge", code_challenge(verifier)),
        ("code_challenge_method", "S256"),
        *provider.extra_authorize_params,
    ]
    separator = "&" if urlsplit(provider.authorize_url).query else "?"
    return f"{provider.authorize_url}{separator}{urlencode(params)}"


class HttpResponse(Protocol):
    status_code: int
    text: str

    def json(self) -> Any: ...


class HttpClient(Protocol):
    """The slice of `requests` the flow uses (a requests.Session, or a fake in tests)."""

    def post(self, url: str, *, data: dict[str, str], headers: dict[str, str], timeout: float) -> Any: ...

    def get(self, url: str, *, headers: dict[str, str], timeout: float) -> Any: ...


class TokenError(Exception):
    """The token endpoint refused the code (or could not be reached); `error` is the OAuth code."""

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class Tokens:
    refresh_token: str
    access_token: str
    scope: str

    def __repr__(self) -> str:  # never print token material, even in a traceback or a debugger
        return f"Tokens(scope={self.scope!r})"


def exchange_code(provider: Provider, code: str, pending: PendingAuthorization, http: HttpClient) -> Tokens:
    """Redeem the authorization code (with the PKCE verifier) for tokens at the provider."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": pending.redirect_uri,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        "code_verifier": pending.code_verifier,
    }
    if provider.scope_on_exchange:
        form["scope"] = " ".join(provider.scopes)
    try:
        response = http.post(
            provider.token_url,
            data=form,
            headers={"Accept": "application/json"},
            timeout=HTTP_TIMEOUT_SECONDS,
        )
    except Exception as exc:  # requests' ConnectionError, Timeout, ...: say what failed, not the form
        raise TokenError(
            "token_endpoint_unreachable",
            f"could not reach {provider.token_url} ({type(exc).__name__})",
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TokenError(
            "invalid_token_response",
            f"the token endpoint answered HTTP {response.status_code} without a JSON object",
            response.status_code,
        )
    if response.status_code != 200 or "error" in body:
        raise TokenError(
            str(body.get("error") or f"http_{response.status_code}"),
            str(body.get("error_description") or ""),
            response.status_code,
        )
    refresh_token = body.get("refresh_token")
    if not isinstance(refresh_token, str) or not refresh_token:
        hint = (
            "make sure offline_access is among the app's permissions and that you accepted the consent"
            if provider.key == "microsoft"
            else "Google returns one only with access_type=offline; remove the app's access at "
            "https://myaccount.google.com/permissions and try again"
        )
        raise TokenError("no_refresh_token", f"the provider returned no refresh token: {hint}")
    access_token = body.get("access_token")
    return Tokens(
        refresh_token=refresh_token,
        access_token=access_token if isinstance(access_token, str) else "",
        scope=str(body.get("scope") or ""),
    )


def account_email(provider: Provider, settings: Settings, tokens: Tokens, http: HttpClient) -> str | None:
    """The signed-in account's email (Graph `mail`, else `userPrincipalName`; Google `email`), or None
    when it cannot be read: the token is what matters, the email is a courtesy."""
    if not tokens.access_token:
        return None
    url = f"{settings.graph_base_url}/me" if provider.key == "microsoft" else settings.google_userinfo_url
    try:
        response = http.get(
            url,
            headers={"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json"},
            timeout=HTTP_TIMEOUT_SECONDS,
        )
        body = response.json() if response.status_code == 200 else None
    except Exception:
        return None
    if not isinstance(body, dict):
        return None
    keys = ("mail", "userPrincipalName") if provider.key == "microsoft" else ("email",)
    for key in keys:
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


# ------------------------------------------------------------------------------------------------
# The next step: connect the account
# ------------------------------------------------------------------------------------------------


def connect_body(provider: Provider, refresh_token: str) -> dict[str, str]:
    """The body of POST /calendar/create_outlook_calendar for this account (API.md)."""
    if provider.key == "microsoft":
        body = {
            "microsoft_client_id": provider.client_id,
            "microsoft_client_secret": provider.client_secret,
            "microsoft_refresh_token": refresh_token,
        }
        if provider.tenant and provider.tenant != "common":
            body["microsoft_tenant"] = provider.tenant
        return body
    return {
        "google_client_id": provider.client_id,
        "google_client_secret": provider.client_secret,
        "google_refresh_token": refresh_token,
    }


def connect_curl(settings: Settings, provider: Provider, refresh_token: str) -> str:
    """A ready-to-paste curl; shell-quoted, so any character in a secret is safe."""
    url = f"{settings.calbot_api_url}/calendar/create_outlook_calendar"
    body = json.dumps(connect_body(provider, refresh_token), indent=2)
    return (
        f"curl -X POST {shlex.quote(url)} \\\n"
        "  -H 'Authorization: Token <YOUR_API_KEY>' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(body)}"
    )
