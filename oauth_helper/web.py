"""The helper's web pages (werkzeug WSGI): index, login redirects, callbacks, result and error pages.

Thin on purpose: the flow itself (state, PKCE, exchange) is oauth_helper/flow.py. Every value put in a
page is HTML-escaped; every response is `no-store` with `Referrer-Policy: no-referrer`, so neither the
token page nor the callback URL's code ends up in a cache or another site's Referer header.
"""

from __future__ import annotations

import html
import logging
import secrets
from collections.abc import Iterable
from typing import Any

import requests
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from oauth_helper.config import Settings
from oauth_helper.flow import (
    HttpClient,
    Provider,
    StateError,
    StateStore,
    TokenError,
    account_email,
    connect_curl,
    exchange_code,
    providers,
    start_authorization,
)

log = logging.getLogger("oauth_helper")

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.5rem} .providers{display:flex;gap:1rem;flex-wrap:wrap;margin:1.5rem 0}
.button,button{display:inline-block;padding:.6rem 1.1rem;border-radius:6px;border:1px solid #888;
background:#f4f4f4;color:#1b1b1b;text-decoration:none;font-size:1rem;cursor:pointer}
.button.microsoft{background:#2f2f2f;color:#fff;border-color:#2f2f2f}
.button.google{background:#fff;color:#1f1f1f;border-color:#747775}
button[disabled]{opacity:.5;cursor:not-allowed} .note{color:#555;font-size:.9rem}
textarea{width:100%;font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#f4f4f4;padding:1rem;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.error{color:#a00000} code{background:#f4f4f4;padding:0 .2rem}
"""

# Copies with the async Clipboard API where the page may use it, else select() + execCommand (which
# still works where navigator.clipboard is missing or refused), else tells the user to press Ctrl+C.
_COPY_SCRIPT = """
document.getElementById('copy').addEventListener('click', async function () {
  var box = document.getElementById('refresh-token');
  var button = this;
  var done = function () { button.textContent = 'Copied'; };
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(box.value); done(); return;
    }
  } catch (e) { /* fall through to the legacy path */ }
  box.focus(); box.select();
  try { if (document.execCommand('copy')) { done(); return; } } catch (e) { /* below */ }
  button.textContent = 'Press Ctrl+C to copy';
});
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


class OAuthHelperApp:
    """WSGI app. `http` is how it talks to the providers (a requests.Session by default)."""

    def __init__(
        self, settings: Settings, states: StateStore | None = None, http: HttpClient | None = None
    ) -> None:
        self.settings = settings
        self.providers = providers(settings)
        self.states = states if states is not None else StateStore()  # an empty store is falsy
        self.http: HttpClient = http if http is not None else requests.Session()
        self.url_map = Map(
            [
                Rule("/", endpoint="index", methods=["GET"]),
                Rule("/api/<provider>/login", endpoint="login", methods=["GET"]),
                Rule("/api/<provider>/oauth-callback", endpoint="callback", methods=["GET"]),
            ]
        )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
            response = getattr(self, f"_h_{endpoint}")(request, **args)
        except NotFound:
            response = self._page("Not found", "<p class='error'>There is no such page.</p>", status=404)
        except HTTPException as exc:
            response = self._page(
                "Request refused", f"<p class='error'>{_e(exc.description)}</p>", status=exc.code or 400
            )
        except Exception as exc:  # a page, never a stack trace; the type only, never token material
            log.error("internal error on %s: %s", request.path, type(exc).__name__)
            response = self._page("Something went wrong", "<p class='error'>Internal error.</p>", 500)
        _secure_headers(response)
        return response(environ, start_response)

    # --------------------------------------------------------------------------------------------
    # Handlers
    # --------------------------------------------------------------------------------------------

    def _h_index(self, request: Request) -> Response:
        buttons, notes = [], []
        for provider in self.providers.values():
            if provider.configured:
                buttons.append(
                    f"<a class='button {provider.key}' id='{provider.key}-login' "
                    f"href='/api/{provider.key}/login'>Sign in with {_e(provider.label)}</a>"
                )
            else:
                buttons.append(
                    f"<button type='button' class='button {provider.key}' id='{provider.key}-login' "
                    f"disabled>Sign in with {_e(provider.label)}</button>"
                )
                notes.append(
                    f"<p class='note' id='{provider.key}-disabled'>{_e(provider.label)} is disabled: set "
                    f"{' and '.join(f'<code>{_e(name)}</code>' for name in provider.missing)} in your "
                    "<code>.env</code> file (see <code>oauth_helper/.env.example</code>) and restart the "
                    "helper.</p>"
                )
        redirects = "".join(
            f"<li>{_e(p.label)}: <code>{_e(p.redirect_uri)}</code></li>" for p in self.providers.values()
        )
        body = (
            "<p>Sign in with the account whose calendar you want to connect. After you accept, this page "
            "shows the account's refresh token and the request that connects it.</p>"
            f"<div class='providers'>{''.join(buttons)}</div>{''.join(notes)}"
            "<p class='note'>Redirect URIs to register for your app (platform <em>Web</em>):</p>"
            f"<ul class='note'>{redirects}</ul>"
        )
        return self._page("Get a calendar refresh token", body)

    def _h_login(self, request: Request, provider: str) -> Response:
        p = self._provider(provider)
        if not p.configured:
            return self._page(
                f"{p.label} is not configured",
                f"<p class='error' id='error'>Set {_e(' and '.join(p.missing))} in your .env file and "
                "restart the helper.</p><p><a href='/'>Back</a></p>",
                status=400,
            )
        response = Response(status=302)
        response.headers["Location"] = start_authorization(p, self.states)
        return response

    def _h_callback(self, request: Request, provider: str) -> Response:
        p = self._provider(provider)
        args = request.args
        try:
            pending = self.states.consume(args.get("state"), p.key)
        except StateError as exc:
            return self._error(
                "State check failed",
                f"The state check failed: {exc}. No token was requested. Start again from the "
                "helper's home page (each sign-in link works once, for 10 minutes).",
                status=400,
            )
        if args.get("error"):
            description = args.get("error_description") or ""
            return self._error(
                f"{p.label} refused the sign-in",
                f"{p.label} returned an error: {args['error']}"
                + (f" ({description})" if description else ""),
                status=400,
            )
        code = args.get("code")
        if not code:
            return self._error("No authorization code", f"{p.label} sent no authorization code.", 400)
        try:
            tokens = exchange_code(p, code, pending, self.http)
        except TokenError as exc:
            status = 502 if exc.status is None or exc.status >= 500 else 400
            if exc.error == "no_refresh_token":
                status = 400
            return self._error(
                "Token exchange failed",
                f"{p.label}'s token endpoint refused the code: {exc.error}"
                + (f" ({exc.description})" if exc.description else ""),
                status=status,
            )
        email = account_email(p, self.settings, tokens, self.http)
        return self._result(p, tokens.refresh_token, email)

    # --------------------------------------------------------------------------------------------
    # Pages
    # --------------------------------------------------------------------------------------------

    def _provider(self, key: str) -> Provider:
        provider = self.providers.get(key)
        if provider is None:
            raise NotFound()
        return provider

    def _result(self, provider: Provider, refresh_token: str, email: str | None) -> Response:
        account = (
            f"<p>Account: <strong id='account-email'>{_e(email)}</strong></p>"
            if email
            else "<p class='note' id='account-email'>(The account's email could not be read; the token "
            "works anyway.)</p>"
        )
        curl = connect_curl(self.settings, provider, refresh_token)
        nonce = secrets.token_urlsafe(16)
        body = (
            f"{account}<h2>Refresh token</h2>"
            "<textarea id='refresh-token' readonly rows='6' spellcheck='false'>"
            f"{_e(refresh_token)}</textarea>"
            "<p><button type='button' id='copy'>Copy</button></p>"
            "<p class='note'>Treat it like a password: anyone holding it and your client secret can read "
            "this calendar. It is not stored by this helper.</p>"
            "<h2>Connect the account</h2>"
            "<p>Replace <code>&lt;YOUR_API_KEY&gt;</code> with your calbot API key and run:</p>"
            f"<pre id='curl'>{_e(curl)}</pre>"
            "<p><a href='/'>Connect another account</a></p>"
            f"<script nonce='{nonce}'>{_COPY_SCRIPT}</script>"
        )
        return self._page(f"{provider.label} account authorized", body, nonce=nonce)

    def _error(self, title: str, message: str, status: int) -> Response:
        body = f"<p class='error' id='error'>{_e(message)}</p><p><a href='/'>Back to the start</a></p>"
        return self._page(title, body, status=status)

    @staticmethod
    def _page(title: str, body: str, status: int = 200, nonce: str | None = None) -> Response:
        page = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{_e(title)}</h1>{body}</body></html>"
        )
        response = Response(page, status=status, content_type="text/html; charset=utf-8")
        script = f"'nonce-{nonce}'" if nonce else "'none'"
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; "
            "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        )
        return response


def _secure_headers(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
