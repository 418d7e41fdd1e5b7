"""The OAuth helper's logic without a browser: settings, authorize URLs, PKCE, the state store, the code
exchange (against the Graph emulator's real PKCE check and against a scripted token endpoint), the
account lookup, the curl, and the pages (werkzeug's test client)."""

from __future__ import annotations

import json
import logging
import shlex
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from werkzeug.test import Client

from local.emulators.graph import GraphEmulator
from local.servers import RunningServer, serve
from oauth_helper.__main__ import PathOnlyRequestHandler, redact_query
from oauth_helper.config import API_URL_PLACEHOLDER, Settings, load_settings
from oauth_helper.flow import (
    GOOGLE_SCOPES,
    PendingAuthorization,
    StateError,
    StateStore,
    TokenError,
    Tokens,
    account_email,
    code_challenge,
    connect_body,
    connect_curl,
    exchange_code,
    new_code_verifier,
    providers,
    redirect_uri,
    start_authorization,
)
from oauth_helper.web import OAuthHelperApp

GOOGLE_SCOPE_URLS = [
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events.readonly",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
]


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "port": 3000,
        "microsoft_client_id": "ms-client",
        "microsoft_client_secret": "ms-secret",
        "google_client_id": "g-client.apps.googleusercontent.com",
        "google_client_secret": "g-secret",
        "calbot_api_url": "https://api.example.test/api/v1",
    }
    return Settings(**{**base, **overrides})


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeResponse:
    def __init__(self, status_code: int, body: Any) -> None:
        self.status_code = status_code
        self._body = body
        self.text = body if isinstance(body, str) else json.dumps(body)

    def json(self) -> Any:
        if isinstance(self._body, str):
            raise ValueError("not JSON")
        return self._body


class FakeHttp:
    """A scripted provider: records what the helper sends, answers what the test says."""

    def __init__(
        self,
        token: tuple[int, Any] = (200, {"access_token": "at-1", "refresh_token": "rt-1", "scope": "x"}),
        account: tuple[int, Any] = (200, {"mail": "jane@contoso.example", "email": "jane@gmail.example"}),
        fail: Exception | None = None,
    ) -> None:
        self.token, self.account, self.fail = token, account, fail
        self.posts: list[tuple[str, dict[str, str]]] = []
        self.gets: list[tuple[str, dict[str, str]]] = []

    def post(self, url: str, *, data: dict[str, str], headers: dict[str, str], timeout: float) -> Any:
        self.posts.append((url, dict(data)))
        if self.fail:
            raise self.fail
        return FakeResponse(*self.token)

    def get(self, url: str, *, headers: dict[str, str], timeout: float) -> Any:
        self.gets.append((url, dict(headers)))
        return FakeResponse(*self.account)


# ------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------


def test_settings_from_env_file_with_real_environment_winning(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "MICROSOFT_CLIENT_ID=file-id\nMICROSOFT_CLIENT_SECRET='file secret'\nGOOGLE_CLIENT_ID=g-file\n"
        "MICROSOFT_TENANT=contoso.onmicrosoft.com\nOAUTH_HELPER_PORT=4100\n"
    )
    loaded = load_settings(
        env_file, environ={"MICROSOFT_CLIENT_ID": "env-id"}, stack_state=tmp_path / "none.json"
    )
    assert loaded.microsoft_client_id == "env-id"
    assert loaded.microsoft_client_secret == "file secret"
    assert loaded.microsoft_tenant == "contoso.onmicrosoft.com"
    assert loaded.google_client_id == "g-file" and loaded.google_client_secret == ""
    assert loaded.port == 4100 and loaded.base_url == "http://localhost:4100"
    assert load_settings(env_file, environ={}, port=4200, stack_state=tmp_path / "n").port == 4200


def test_settings_defaults_are_the_real_services(tmp_path: Path) -> None:
    loaded = load_settings(tmp_path / "missing.env", environ={}, stack_state=tmp_path / "none.json")
    assert loaded.port == 3000
    assert loaded.microsoft_tenant == "common"
    assert loaded.microsoft_login_base_url == "https://login.microsoftonline.com"
    assert loaded.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert loaded.google_auth_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert loaded.google_token_url == "https://oauth2.googleapis.com/token"
    assert loaded.google_userinfo_url == "https://openidconnect.googleapis.com/v1/userinfo"
    assert loaded.calbot_api_url == API_URL_PLACEHOLDER


def test_curl_api_url_comes_from_the_running_local_stack(tmp_path: Path) -> None:
    state = tmp_path / "stack.json"
    state.write_text(json.dumps({"api_url": "http://127.0.0.1:3000/api/v1"}))
    assert load_settings(tmp_path / "x", environ={}, stack_state=state).calbot_api_url == (
        "http://127.0.0.1:3000/api/v1"
    )
    explicit = {"CALBOT_API_URL": "https://calbot.example/api/v1/"}
    assert load_settings(tmp_path / "x", environ=explicit, stack_state=state).calbot_api_url == (
        "https://calbot.example/api/v1"
    )


@pytest.mark.parametrize(
    "environ", [{"MICROSOFT_TENANT": "../evil"}, {"MICROSOFT_TENANT": "a/b"}, {"OAUTH_HELPER_PORT": "x"}]
)
def test_bad_settings_are_refused(tmp_path: Path, environ: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        load_settings(tmp_path / "x", environ=environ, stack_state=tmp_path / "n")


# ------------------------------------------------------------------------------------------------
# PKCE, authorize URLs, state
# ------------------------------------------------------------------------------------------------


def test_pkce_s256_matches_rfc_7636_example() -> None:
    assert code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifiers = {new_code_verifier() for _ in range(20)}
    assert len(verifiers) == 20
    unreserved = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    assert all(43 <= len(v) <= 128 and set(v) <= unreserved for v in verifiers)


def test_microsoft_authorize_url() -> None:
    cfg = settings(microsoft_tenant="contoso.example", microsoft_login_base_url="http://127.0.0.1:9")
    ms = providers(cfg)["microsoft"]
    states = StateStore()
    url = start_authorization(ms, states)
    assert url.startswith("http://127.0.0.1:9/contoso.example/oauth2/v2.0/authorize?")
    params = query(url)
    assert params["scope"] == ["offline_access User.Read Calendars.Read"]
    assert params["client_id"] == ["ms-client"]
    assert params["response_type"] == ["code"]
    assert params["redirect_uri"] == ["http://localhost:3000/api/microsoft/oauth-callback"]
    assert params["code_challenge_method"] == ["S256"]
    assert "client_secret" not in params
    pending = states.consume(params["state"][0], "microsoft")
    assert code_challenge(pending.code_verifier) == params["code_challenge"][0]
    assert pending.redirect_uri == params["redirect_uri"][0]
    assert ms.token_url == "http://127.0.0.1:9/contoso.example/oauth2/v2.0/token"


def test_google_authorize_url() -> None:
    google = providers(settings(google_auth_url="http://127.0.0.1:9/o/oauth2/v2/auth"))["google"]
    states = StateStore()
    url = start_authorization(google, states)
    assert url.startswith("http://127.0.0.1:9/o/oauth2/v2/auth?")
    params = query(url)
    assert params["scope"][0].split() == GOOGLE_SCOPE_URLS == list(GOOGLE_SCOPES)
    assert params["access_type"] == ["offline"] and params["prompt"] == ["consent"]
    assert params["redirect_uri"] == ["http://localhost:3000/api/google/oauth-callback"]
    assert params["code_challenge_method"] == ["S256"]
    pending = states.consume(params["state"][0], "google")
    assert code_challenge(pending.code_verifier) == params["code_challenge"][0]


def test_each_login_gets_its_own_state_and_verifier() -> None:
    ms = providers(settings())["microsoft"]
    states = StateStore()
    first, second = query(start_authorization(ms, states)), query(start_authorization(ms, states))
    assert first["state"] != second["state"] and first["code_challenge"] != second["code_challenge"]
    assert len(states) == 2


def test_state_is_single_use() -> None:
    states = StateStore()
    state = states.issue("microsoft", "v", "http://localhost:3000/api/microsoft/oauth-callback")
    assert states.consume(state, "microsoft").code_verifier == "v"
    with pytest.raises(StateError, match="unknown or was already used"):
        states.consume(state, "microsoft")


def test_state_expires_after_ten_minutes() -> None:
    clock = FakeClock()
    states = StateStore(clock=clock)
    fresh = states.issue("google", "v1", "r")
    stale = states.issue("google", "v2", "r")
    clock.now += 599
    assert states.consume(fresh, "google").code_verifier == "v1"
    clock.now += 1
    with pytest.raises(StateError, match="expired"):
        states.consume(stale, "google")


def test_state_of_another_provider_unknown_or_missing_is_refused() -> None:
    states = StateStore()
    state = states.issue("microsoft", "v", "r")
    with pytest.raises(StateError, match="issued for microsoft"):
        states.consume(state, "google")
    with pytest.raises(StateError):  # consumed by the failed attempt: no second try
        states.consume(state, "microsoft")
    for forged in (None, "", "forged"):
        with pytest.raises(StateError):
            states.consume(forged, "microsoft")


def test_state_store_is_bounded_and_drops_expired_entries() -> None:
    clock = FakeClock()
    states = StateStore(clock=clock, max_pending=3)
    issued = [states.issue("microsoft", f"v{i}", "r") for i in range(4)]
    assert len(states) == 3
    with pytest.raises(StateError):
        states.consume(issued[0], "microsoft")
    clock.now += 600
    states.issue("microsoft", "v", "r")
    assert len(states) == 1


# ------------------------------------------------------------------------------------------------
# Code exchange
# ------------------------------------------------------------------------------------------------


def pending_for(provider: str, verifier: str = "verifier-123") -> PendingAuthorization:
    return PendingAuthorization(provider, verifier, f"http://localhost:3000/api/{provider}/oauth-callback", 0)


def test_microsoft_exchange_sends_the_pkce_verifier_and_scope() -> None:
    http = FakeHttp()
    ms = providers(settings())["microsoft"]
    tokens = exchange_code(ms, "the-code", pending_for("microsoft"), http)
    assert tokens.refresh_token == "rt-1" and tokens.access_token == "at-1"
    assert "rt-1" not in repr(tokens) and "at-1" not in repr(tokens)
    ((url, form),) = http.posts
    assert url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "http://localhost:3000/api/microsoft/oauth-callback",
        "client_id": "ms-client",
        "client_secret": "ms-secret",
        "code_verifier": "verifier-123",
        "scope": "offline_access User.Read Calendars.Read",
    }


def test_google_exchange_has_no_scope_parameter() -> None:
    http = FakeHttp()
    exchange_code(providers(settings())["google"], "g-code", pending_for("google"), http)
    ((url, form),) = http.posts
    assert url == "https://oauth2.googleapis.com/token"
    assert form["code_verifier"] == "verifier-123" and form["client_id"].startswith("g-client")
    assert "scope" not in form


@pytest.mark.parametrize(
    ("http", "error", "status"),
    [
        (
            FakeHttp(token=(400, {"error": "invalid_grant", "error_description": "AADSTS70008"})),
            "invalid_grant",
            400,
        ),
        (FakeHttp(token=(401, {"error": "invalid_client"})), "invalid_client", 401),
        (FakeHttp(token=(200, {"access_token": "a"})), "no_refresh_token", None),
        (FakeHttp(token=(502, "<html>bad gateway</html>")), "invalid_token_response", 502),
        (FakeHttp(token=(500, {})), "http_500", 500),
        (FakeHttp(fail=requests.ConnectionError("refused")), "token_endpoint_unreachable", None),
    ],
)
def test_exchange_failures_raise_token_error(http: FakeHttp, error: str, status: int | None) -> None:
    with pytest.raises(TokenError) as caught:
        exchange_code(providers(settings())["microsoft"], "c", pending_for("microsoft"), http)
    assert caught.value.error == error and caught.value.status == status
    assert "ms-secret" not in str(caught.value)


@pytest.fixture(scope="module")
def graph() -> Iterator[tuple[GraphEmulator, RunningServer]]:
    emulator = GraphEmulator()
    server = serve(emulator, name="graph-oauth-helper-unit")
    yield emulator, server
    server.shutdown()


def emulator_code(server: RunningServer, authorize_url: str, consent: str = "accept") -> str:
    """What the browser does at the consent page: POST the authorize parameters with consent=accept."""
    form = {k: v[0] for k, v in query(authorize_url).items()} | {"consent": consent}
    resp = requests.post(
        f"{server.url}/common/oauth2/v2.0/authorize", data=form, allow_redirects=False, timeout=30
    )
    assert resp.status_code in (302, 303), resp.text
    return resp.headers["Location"]


def test_exchange_against_the_graph_emulator_pkce_check(
    graph: tuple[GraphEmulator, RunningServer],
) -> None:
    emulator, server = graph
    app = emulator.add_app()
    emulator.add_account(client_id=app["client_id"], user_principal_name="pkce.unit@contoso.example")
    cfg = settings(
        microsoft_client_id=app["client_id"],
        microsoft_client_secret=app["client_secret"],
        microsoft_login_base_url=server.url,
        graph_base_url=f"{server.url}/v1.0",
    )
    ms = providers(cfg)["microsoft"]
    states = StateStore()
    http = requests.Session()

    location = emulator_code(
        server, start_authorization(ms, states) + "&login_hint=pkce.unit@contoso.example"
    )
    params = query(location)
    pending = states.consume(params["state"][0], "microsoft")
    tokens = exchange_code(ms, params["code"][0], pending, http)
    assert tokens.refresh_token
    assert account_email(ms, cfg, tokens, http) == "pkce.unit@contoso.example"

    # The same flow with a verifier that does not match the challenge is refused (AADSTS50148).
    location = emulator_code(
        server, start_authorization(ms, states) + "&login_hint=pkce.unit@contoso.example"
    )
    params = query(location)
    pending = states.consume(params["state"][0], "microsoft")
    forged = PendingAuthorization("microsoft", new_code_verifier(), pending.redirect_uri, pending.issued_at)
    with pytest.raises(TokenError) as caught:
        exchange_code(ms, params["code"][0], forged, http)
    assert caught.value.error == "invalid_grant" and "50148" in caught.value.description


def test_exchange_against_the_google_emulator_pkce_check() -> None:
    from local.emulators.google import GoogleEmulator

    emulator = GoogleEmulator()
    with serve(emulator, name="google-oauth-helper-unit") as server:
        cfg = settings(
            google_auth_url=f"{server.url}/o/oauth2/v2/auth",
            google_token_url=f"{server.url}/token",
            google_userinfo_url=f"{server.url}/v1/userinfo",
        )
        app = emulator.add_app(redirect_uris=[redirect_uri(cfg, "google")])
        cfg = replace(cfg, google_client_id=app["client_id"], google_client_secret=app["client_secret"])
        emulator.add_account("pkce.unit@gmail.example", client_id=app["client_id"])
        google = providers(cfg)["google"]
        states, http = StateStore(), requests.Session()

        def authorize() -> tuple[str, PendingAuthorization]:
            url = start_authorization(google, states)
            form = {k: v[0] for k, v in query(url).items()} | {"consent": "accept"}
            resp = requests.post(google.authorize_url, data=form, allow_redirects=False, timeout=30)
            assert resp.status_code in (302, 303), resp.text
            params = query(resp.headers["Location"])
            return params["code"][0], states.consume(params["state"][0], "google")

        code, pending = authorize()
        tokens = exchange_code(google, code, pending, http)
        assert tokens.refresh_token  # prompt=consent: a refresh token even though consent existed
        assert account_email(google, cfg, tokens, http) == "pkce.unit@gmail.example"

        code, pending = authorize()
        forged = PendingAuthorization("google", new_code_verifier(), pending.redirect_uri, pending.issued_at)
        with pytest.raises(TokenError) as caught:
            exchange_code(google, code, forged, http)
        assert caught.value.error == "invalid_grant"


def test_account_email_fallbacks() -> None:
    cfg = settings()
    ms, google = providers(cfg)["microsoft"], providers(cfg)["google"]
    tokens = Tokens("rt", "at", "")
    personal = FakeHttp(account=(200, {"mail": None, "userPrincipalName": "alex@outlook.example"}))
    assert account_email(ms, cfg, tokens, personal) == "alex@outlook.example"
    assert personal.gets[0][0] == "https://graph.microsoft.com/v1.0/me"
    assert personal.gets[0][1]["Authorization"] == "Bearer at"
    userinfo = FakeHttp(account=(200, {"email": "g@gmail.example", "sub": "1"}))
    assert account_email(google, cfg, tokens, userinfo) == "g@gmail.example"
    assert userinfo.gets[0][0] == "https://openidconnect.googleapis.com/v1/userinfo"
    assert account_email(ms, cfg, tokens, FakeHttp(account=(401, {"error": {}}))) is None
    assert account_email(ms, cfg, Tokens("rt", "", ""), FakeHttp()) is None


def test_connect_body_and_curl() -> None:
    cfg = settings(microsoft_client_secret="it's~secret", microsoft_tenant="contoso.example")
    ms, google = providers(cfg)["microsoft"], providers(cfg)["google"]
    assert connect_body(ms, "rt-ms") == {
        "microsoft_client_id": "ms-client",
        "microsoft_client_secret": "it's~secret",
        "microsoft_refresh_token": "rt-ms",
        "microsoft_tenant": "contoso.example",
    }
    assert "microsoft_tenant" not in connect_body(providers(settings())["microsoft"], "rt")
    assert connect_body(google, "rt-g") == {
        "google_client_id": "g-client.apps.googleusercontent.com",
        "google_client_secret": "g-secret",
        "google_refresh_token": "rt-g",
    }
    curl = connect_curl(cfg, ms, "rt-ms")
    argv = shlex.split(curl.replace("\\\n", " "))  # what the shell would run
    assert argv[:3] == ["curl", "-X", "POST"]
    assert argv[3] == "https://api.example.test/api/v1/calendar/create_outlook_calendar"
    assert "Authorization: Token <YOUR_API_KEY>" in argv
    assert json.loads(argv[argv.index("-d") + 1]) == connect_body(ms, "rt-ms")


# ------------------------------------------------------------------------------------------------
# Pages (werkzeug test client, scripted provider)
# ------------------------------------------------------------------------------------------------


def login(client: Client, provider: str) -> dict[str, list[str]]:
    resp = client.get(f"/api/{provider}/login")
    assert resp.status_code == 302
    assert resp.headers["Cache-Control"] == "no-store"
    return query(resp.headers["Location"])


def test_index_disables_a_provider_without_credentials() -> None:
    app = OAuthHelperApp(settings(google_client_secret=""), http=FakeHttp())
    page = Client(app).get("/")
    text = page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "href='/api/microsoft/login'" in text
    assert "id='google-login' disabled" in text and "GOOGLE_CLIENT_SECRET" in text
    refused = Client(app).get("/api/google/login")
    assert refused.status_code == 400 and "GOOGLE_CLIENT_SECRET" in refused.get_data(as_text=True)


def test_callback_result_page_shows_token_email_and_curl_escaped() -> None:
    http = FakeHttp(
        token=(200, {"access_token": "at", "refresh_token": "rt<script>x</script>"}),
        account=(200, {"mail": "<b>jane</b>@contoso.example"}),
    )
    client = Client(OAuthHelperApp(settings(), http=http))
    state = login(client, "microsoft")["state"][0]
    resp = client.get(f"/api/microsoft/oauth-callback?code=c1&state={state}")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store" and resp.headers["Referrer-Policy"] == "no-referrer"
    assert "<script>x</script>" not in text and "<b>jane" not in text
    assert "id='refresh-token' readonly" in text and "rt&lt;script&gt;x&lt;/script&gt;" in text
    assert "&lt;b&gt;jane&lt;/b&gt;@contoso.example" in text
    assert "id='curl'" in text and "create_outlook_calendar" in text and "id='copy'" in text
    assert http.posts[0][1]["code"] == "c1"
    # The same callback again (a reload, a replay): refused, and no second exchange.
    again = client.get(f"/api/microsoft/oauth-callback?code=c1&state={state}")
    assert again.status_code == 400 and "state check failed" in again.get_data(as_text=True)
    assert len(http.posts) == 1


@pytest.mark.parametrize("state_kind", ["forged", "missing", "other_provider", "expired"])
def test_bad_state_never_reaches_the_token_endpoint(state_kind: str) -> None:
    http, clock = FakeHttp(), FakeClock()
    client = Client(OAuthHelperApp(settings(), states=StateStore(clock=clock), http=http))
    state = {
        "forged": "forged-state",
        "missing": "",
        "other_provider": login(client, "google")["state"][0],
        "expired": login(client, "microsoft")["state"][0],
    }[state_kind]
    clock.now += 601
    resp = client.get(f"/api/microsoft/oauth-callback?code=c&state={state}")
    assert resp.status_code == 400
    assert "The state check failed" in resp.get_data(as_text=True)
    assert http.posts == []


def test_provider_error_is_shown_escaped_without_exchange() -> None:
    http = FakeHttp()
    client = Client(OAuthHelperApp(settings(), http=http))
    state = login(client, "google")["state"][0]
    resp = client.get(
        "/api/google/oauth-callback",
        query_string={"error": "access_denied", "error_description": "<img src=x>", "state": state},
    )
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400
    assert "access_denied" in text and "&lt;img src=x&gt;" in text and "<img" not in text
    assert http.posts == []


def test_token_endpoint_error_is_an_error_page() -> None:
    http = FakeHttp(token=(400, {"error": "invalid_grant", "error_description": "AADSTS54005: redeemed"}))
    client = Client(OAuthHelperApp(settings(), http=http))
    state = login(client, "microsoft")["state"][0]
    resp = client.get(f"/api/microsoft/oauth-callback?code=c&state={state}")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "invalid_grant" in text and "AADSTS54005" in text
    assert "refresh-token" not in text
    unreachable = FakeHttp(fail=requests.ConnectionError("down"))
    client = Client(OAuthHelperApp(settings(), http=unreachable))
    state = login(client, "microsoft")["state"][0]
    resp = client.get(f"/api/microsoft/oauth-callback?code=c&state={state}")
    assert resp.status_code == 502 and "token_endpoint_unreachable" in resp.get_data(as_text=True)


def test_unknown_provider_and_missing_code() -> None:
    client = Client(OAuthHelperApp(settings(), http=FakeHttp()))
    assert client.get("/api/yahoo/login").status_code == 404
    state = login(client, "microsoft")["state"][0]
    resp = client.get(f"/api/microsoft/oauth-callback?state={state}")
    assert resp.status_code == 400 and "no authorization code" in resp.get_data(as_text=True)


def test_access_log_never_carries_the_query(caplog: pytest.LogCaptureFixture) -> None:
    assert redact_query('"GET /api/microsoft/oauth-callback?code=SECRET&state=S HTTP/1.1" 200 -') == (
        '"GET /api/microsoft/oauth-callback?<redacted> HTTP/1.1" 200 -'
    )
    handler = PathOnlyRequestHandler.__new__(PathOnlyRequestHandler)  # only `log` is exercised
    handler.client_address = ("127.0.0.1", 1)
    handler.headers = {}  # type: ignore[assignment]
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        handler.log("info", '"%s" %s %s', "GET /cb?code=SECRET-CODE&state=ST HTTP/1.1", "200", "-")
    assert "SECRET-CODE" not in caplog.text and "/cb?<redacted>" in caplog.text


def test_main_explains_a_busy_port_and_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from oauth_helper.__main__ import main

    monkeypatch.delenv("OAUTH_HELPER_PORT", raising=False)
    monkeypatch.delenv("MICROSOFT_TENANT", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port), "--env-file", str(tmp_path / "none.env")]) == 1
    assert f"could not listen on port {port}" in capsys.readouterr().err
    monkeypatch.setenv("MICROSOFT_TENANT", "bad/tenant")
    assert main(["--env-file", str(tmp_path / "none.env")]) == 2
    assert "MICROSOFT_TENANT" in capsys.readouterr().err
