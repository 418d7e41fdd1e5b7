"""The Microsoft identity platform's wire side (v2.0): the token endpoint (refresh and authorization
code grants, AADSTS errors), OpenID Connect discovery and keys, and the authorize endpoint (consent
page, codes with PKCE)."""

from __future__ import annotations

import hashlib
import html
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from werkzeug.wrappers import Request, Response

from local.emulators.core.backend import AuthCode, ConsentWording, consent_page
from local.emulators.core.helpers import b64url, with_query
from local.emulators.core.keys import signing_key
from local.emulators.core.routing import route
from local.emulators.core.service import redirect
from local.emulators.graph.backend import GraphBackend
from local.emulators.graph.models import (
    _TENANT_RE,
    AAD_JSON,
    ACCESS_TOKEN_SECONDS,
    AUTH_CODE_LIFETIME,
    TENANT_ID,
    Account,
    GraphContext,
    _graph_scope,
    _new_auth_code,
)

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


_CONSENT = ConsentWording(
    "Permissions requested", "<h1>Permissions requested</h1>", "would like to", "Accept"
)


class _AadError(Exception):
    def __init__(
        self, status: int, error: str, code: int, suberror: str | None = None, **fields: object
    ) -> None:
        super().__init__(f"{error} AADSTS{code}")
        self.status, self.error, self.code, self.suberror, self.fields = status, error, code, suberror, fields


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "<unknown>"


def _aadsts_text(code: int, fields: dict[str, object]) -> str:
    template = _AADSTS_TEXT.get(code, "Emulated failure.")
    return f"AADSTS{code}: " + template.format_map(_Fields(fields))


class GraphIdentity(GraphBackend):
    """/{tenant}/oauth2/v2.0/*, /{tenant}/v2.0/.well-known/openid-configuration and
    /{tenant}/discovery/v2.0/keys."""

    def _aad_body(self, exc: _AadError, ctx: GraphContext) -> dict[str, Any]:
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

    def _aad_error_response(self, exc: _AadError, ctx: GraphContext) -> Response:
        response = Response(json.dumps(self._aad_body(exc, ctx)), status=exc.status, content_type=AAD_JSON)
        response.headers["Cache-Control"] = "no-store, no-cache"
        return response

    @route("/<tenant>/oauth2/v2.0/token")
    def _h_token(self, request: Request, ctx: GraphContext, tenant: str) -> Response:
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

    def _grant_refresh_token(self, form: Any, ctx: GraphContext) -> dict[str, Any]:
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

    def _grant_authorization_code(self, form: Any, ctx: GraphContext) -> dict[str, Any]:
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
                computed = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
            else:
                computed = verifier
            if not verifier or not secrets.compare_digest(computed, code.code_challenge):
                raise _AadError(400, "invalid_grant", 50148)
        code.redeemed = True
        requested = form["scope"].split() if form.get("scope") else code.scopes
        return self._issue_tokens(self._accounts[code.account_id], code.client_id, requested, ctx)

    def _issue_tokens(
        self, account: Account, client_id: str, requested: list[str], ctx: GraphContext
    ) -> dict[str, Any]:
        """Mint tokens for the consented Graph scopes; 65001 if more is asked than was consented."""
        consented = account.consents.get(client_id, [])
        consented_lower = {s.lower() for s in consented}
        asked = [name for name in (_graph_scope(s) for s in requested) if name and name != ".default"]
        if not consented or any(name.lower() not in consented_lower for name in asked):
            raise _AadError(400, "invalid_grant", 65001, suberror="consent_required", client_id=client_id)
        ctx.account_id = account.id
        at = self._mint_access_token(account.id, client_id, consented, ACCESS_TOKEN_SECONDS)
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
            body["client_info"] = b64url(json.dumps(info, separators=(",", ":")).encode())
        return body

    def _id_token(self, account: Account, client_id: str, scopes: set[str], ctx: GraphContext) -> str:
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
            "sub": b64url(digest),
            "oid": account.id,
            "tid": TENANT_ID,
            "ver": "2.0",
        }
        if "profile" in scopes:
            claims.update(name=account.display_name, preferred_username=account.user_principal_name)
        if "email" in scopes and account.mail:
            claims["email"] = account.mail
        return signing_key().sign(claims)

    @route("/<tenant>/v2.0/.well-known/openid-configuration", "GET")
    def _h_openid_configuration(self, request: Request, ctx: GraphContext, tenant: str) -> Response:
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

    @route("/<tenant>/discovery/v2.0/keys", "GET")
    def _h_jwks(self, request: Request, ctx: GraphContext, tenant: str) -> Response:
        if not _TENANT_RE.match(tenant):
            raise _AadError(400, "invalid_tenant", 90002, tenant=tenant)
        body = {"keys": [signing_key().jwk]}
        return Response(json.dumps(body), status=200, content_type="application/json; charset=utf-8")

    @route("/<tenant>/oauth2/v2.0/authorize", "GET", "POST")
    def _h_authorize(self, request: Request, ctx: GraphContext, tenant: str) -> Response:
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
                return redirect(with_query(redirect_uri, query + ([("state", state)] if state else [])))

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
        return redirect(
            with_query(redirect_uri, [("code", code.code)] + ([("state", state)] if state else []))
        )

    def _consent_page(self, request: Request, account: Account, scopes: list[str]) -> Response:
        return consent_page(request, _CONSENT, ("account_id", account.id), account.address, scopes)

    def _error_page(self, status: int, code: int, **fields: object) -> Response:
        text = html.escape(_aadsts_text(code, fields))
        page = f"<!doctype html><html><body><h1>Sign in</h1><p id='error'>{text}</p></body></html>"
        return Response(page, status=status, content_type="text/html; charset=utf-8")
