"""What both emulators' backends keep alike: access tokens, authorization codes, the lookups of apps
and accounts (by id or address), and the consent page their authorize endpoints show."""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.core.clock import EmulatorClock
from local.emulators.core.errors import EmulatorError


@dataclass
class AccessToken:
    token: str
    client_id: str
    account_id: str
    scopes: list[str]
    expires_at: datetime


@dataclass(kw_only=True)
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


@dataclass(frozen=True)
class ConsentWording:
    title: str
    heading: str  # HTML
    wants: str  # "would like to", "wants to"
    accept: str  # the accept button's label


def consent_page(
    request: Request, wording: ConsentWording, hint: tuple[str, str], signed_in_as: str, scopes: list[str]
) -> Response:
    """The authorize endpoint's consent form: it posts the request's parameters back, `hint` (name,
    value) naming the account, with consent=accept or consent=deny."""
    name, value = hint
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in request.args.items(multi=True)
        if k != name
    )
    hidden += f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
    items = "".join(f"<li>{html.escape(s)}</li>" for s in scopes)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{wording.title}</title></head>"
        f"<body>{wording.heading}<p>Signed in as <b>{html.escape(signed_in_as)}</b></p>"
        f"<p>App <code>{html.escape(request.args.get('client_id', ''))}</code> {wording.wants}:</p>"
        f"<ul>{items}</ul><form method='post' action='{html.escape(request.path)}'>{hidden}"
        f"<button type='submit' name='consent' value='accept'>{wording.accept}</button> "
        "<button type='submit' name='consent' value='deny'>Cancel</button></form></body></html>"
    )
    return Response(page, content_type="text/html; charset=utf-8")


class Backend(EmulatorClock):
    """Mixin: apps and accounts by id (accounts also by address: `matches(ref)`), and the token
    controls both emulators have."""

    _lock: threading.RLock
    _apps: dict[str, Any]
    _accounts: dict[str, Any]
    _access_tokens: dict[str, AccessToken]
    _sync_tokens: dict[str, Any]  # token -> a sync state (kind, account_id, calendar_id, issued_at)
    # The emulator's access-token generator (they look like the provider's).
    new_access_token: Callable[[], str]

    def _app(self, client_id: str) -> Any:
        app = self._apps.get(client_id)
        if app is None:
            raise EmulatorError(f"no app {client_id!r}", 404)
        return app

    def _find_account(self, ref: str) -> Any:
        if ref in self._accounts:
            return self._accounts[ref]
        return next((a for a in self._accounts.values() if a.matches(ref)), None)

    def _account(self, ref: str) -> Any:
        acc = self._find_account(ref)
        if acc is None:
            raise EmulatorError(f"no account {ref!r}", 404)
        return acc

    def _mint_access_token(
        self, account_id: str, client_id: str, scopes: list[str], seconds: int
    ) -> AccessToken:
        """A new access token, valid `seconds` of emulator time (lock held)."""
        at = AccessToken(
            self.new_access_token(),
            client_id,
            account_id,
            list(scopes),
            self.now() + timedelta(seconds=seconds),
        )
        self._access_tokens[at.token] = at
        return at

    def _sync_state_of(
        self, token: str, kind: str, owner: tuple[str, str | None], max_age: timedelta | None
    ) -> Any:
        """The live sync state behind `token` of that kind for that (account id, calendar id), or None
        (unknown, forgotten, or older than `max_age` of emulator time)."""
        state = self._sync_tokens.get(token)
        if state is None or state.kind != kind or (state.account_id, state.calendar_id) != owner:
            return None
        if max_age is not None and self.now() - state.issued_at > max_age:
            return None
        return state

    def _forget_sync_states(self, account_id: str) -> int:
        """Forget every sync state of the account (lock held): their tokens' next use answers 410."""
        doomed = [token for token, state in self._sync_tokens.items() if state.account_id == account_id]
        for token in doomed:
            del self._sync_tokens[token]
        return len(doomed)

    def expire_app_secret(self, client_id: str) -> None:
        """The app's secret stops working: the token endpoint answers 401 invalid_client."""
        with self._lock:
            self._app(client_id).secret_expired = True

    def expire_access_tokens(self, account: str | None = None) -> int:
        """Expire all access tokens (of one account if given); the API then answers 401."""
        with self._lock:
            account_id = self._account(account).id if account else None
            past = self.now() - timedelta(seconds=1)
            expired = 0
            for at in self._access_tokens.values():
                if account_id in (None, at.account_id) and at.expires_at > past:
                    at.expires_at = past
                    expired += 1
            return expired
