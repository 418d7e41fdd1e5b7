"""Google OAuth 2.0's wire side: the token endpoint (refresh and authorization-code grants, ID
tokens) and the authorize endpoint (consent page, codes with PKCE)."""

from __future__ import annotations

import hashlib
import html
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from local.emulators.core.backend import ConsentWording, consent_page
from local.emulators.core.helpers import b64url, with_query
from local.emulators.core.keys import signing_key
from local.emulators.core.requestlog import RequestContext
from local.emulators.core.routing import route
from local.emulators.core.service import redirect
from local.emulators.google.backend import GoogleBackend
from local.emulators.google.errors import _ApiError, _OAuthError
from local.emulators.google.models import (
    ACCESS_TOKEN_SECONDS,
    AUTH_CODE_LIFETIME,
    ISSUER,
    JSON_TYPE,
    SCOPE_EMAIL,
    SCOPE_PROFILE,
    TESTING_APP_REFRESH_LIFETIME,
    GoogleAccount,
    GoogleApp,
    _AuthCode,
    _new_auth_code,
    _normalize_scopes,
    _RefreshToken,
)

_CONSENT = ConsentWording(
    "Sign in - Google Accounts", "<h1>Choose what the app can access</h1>", "wants to", "Allow"
)


class GoogleIdentity(GoogleBackend):
    """/token, /o/oauth2/v2/auth and /oauth2/v3/certs."""

    @staticmethod
    def _json(body: dict[str, Any] | None, status: int = 200) -> Response:
        if body is None:
            return Response(status=status)
        response = Response(json.dumps(body), status=status, content_type=JSON_TYPE)
        response.headers["Cache-Control"] = "private, max-age=0, must-revalidate, no-transform"
        return response

    @staticmethod
    def _oauth_error(exc: _OAuthError) -> Response:
        body = {"error": exc.error, "error_description": exc.description}
        response = Response(json.dumps(body), status=exc.status, content_type=JSON_TYPE)
        response.headers["Cache-Control"] = "no-cache, no-store, max-age=0, must-revalidate"
        return response

    def _client_credentials(self, request: Request) -> tuple[str, str]:
        auth = request.authorization
        if auth is not None and auth.type == "basic" and auth.username:
            return auth.username, auth.password or ""
        return request.form.get("client_id", ""), request.form.get("client_secret", "")

    @route("/token")
    def _h_token(self, request: Request, ctx: RequestContext) -> Response:
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

    def _grant_refresh_token(self, form: Any, app: GoogleApp, ctx: RequestContext) -> dict[str, Any]:
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

    def _grant_authorization_code(self, form: Any, app: GoogleApp, ctx: RequestContext) -> dict[str, Any]:
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
                computed = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
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
        ctx: RequestContext,
    ) -> dict[str, Any]:
        ctx.account_id = account.id
        at = self._mint_access_token(account.id, client_id, scopes, ACCESS_TOKEN_SECONDS)
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
            "at_hash": b64url(half),
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

    @route("/oauth2/v3/certs", "GET")
    def _h_certs(self, request: Request, ctx: RequestContext) -> Response:
        return self._json({"keys": [signing_key().jwk]})

    @route("/o/oauth2/v2/auth", "GET", "POST")
    def _h_authorize(self, request: Request, ctx: RequestContext) -> Response:
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

            def back(query: list[tuple[str, str]]) -> Response:
                return redirect(with_query(redirect_uri, query + ([("state", state)] if state else [])))

            if request.method == "GET":
                return self._consent_page(request, account, scopes)
            if params.get("consent") != "accept":
                return back([("error", "access_denied")])
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
        return back([("code", code.code), ("scope", " ".join(code.scopes))])

    def _consent_page(self, request: Request, account: GoogleAccount, scopes: list[str]) -> Response:
        return consent_page(request, _CONSENT, ("login_hint", account.email), account.email, scopes)

    @staticmethod
    def _error_page(status: int, error: str, message: str) -> Response:
        text = f"Error {status}: {html.escape(error)}"
        page = (
            "<!doctype html><html><body><h1>Access blocked: authorization error</h1>"
            f"<p id='error'>{text}</p><p id='error-description'>{html.escape(message)}</p></body></html>"
        )
        return Response(page, status=status, content_type="text/html; charset=utf-8")
