"""The Microsoft identity + Graph emulator behaves like the real services (PROTOCOLS.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
from werkzeug.test import Client, TestResponse
from werkzeug.wrappers import Request, Response

from local.emulators.graph import GRAPH_JSON, TENANT_ID, GraphEmulator
from local.servers import RunningServer, serve

CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "s3cr3t~value"
SCOPES = "offline_access User.Read Calendars.Read"
TOKEN_PATH = "/common/oauth2/v2.0/token"


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def emu() -> GraphEmulator:
    emulator = GraphEmulator()
    emulator.add_app(CLIENT_ID, SECRET)
    return emulator


@pytest.fixture
def client(emu: GraphEmulator) -> Client:
    return Client(emu)


def add_account(emu: GraphEmulator, upn: str = "jane@contoso.example", **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("mail", upn)
    return emu.add_account(client_id=CLIENT_ID, user_principal_name=upn, display_name="Jane Doe", **kwargs)


def refresh(
    client: Client, refresh_token: str, scope: str = SCOPES, secret: str = SECRET, client_id: str = CLIENT_ID
) -> TestResponse:
    return client.post(
        TOKEN_PATH,
        data={
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "scope": scope,
        },
    )


def access_token(client: Client, account: dict[str, Any]) -> str:
    answer = refresh(client, account["refresh_token"])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    account["refresh_token"] = answer.json["refresh_token"]  # keep up with rotation
    return answer.json["access_token"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def in_minutes(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def assert_aad_error(answer: TestResponse, status: int, error: str, code: int) -> None:
    assert answer.status_code == status, answer.get_data(as_text=True)
    body = answer.json
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert (
        f"\r\nTrace ID: {body['trace_id']}\r\nCorrelation ID: {body['correlation_id']}"
        in body["error_description"]
    )
    assert body["error_uri"] == f"https://login.microsoftonline.com/error?code={code}"


class Webhook:
    """A notification endpoint whose answer to the validation handshake depends on the path."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        token = request.args.get("validationToken", "")
        self.calls.append(
            {
                "path": request.path,
                "method": request.method,
                "token": token,
                "raw_query": request.query_string.decode(),
                "content_type": request.headers.get("Content-Type"),
                "body": request.get_data(),
            }
        )
        mode = request.path.rsplit("/", 1)[-1]
        if mode == "echo":
            response = Response(token, content_type="text/plain; charset=utf-8")
        elif mode == "wrong-body":
            response = Response(token.upper(), content_type="text/plain")
        elif mode == "wrong-type":
            response = Response(json.dumps(token), content_type="application/json")
        elif mode == "accepted":
            response = Response(token, status=202, content_type="text/plain")
        elif mode == "slow":
            time.sleep(1.0)
            response = Response(token, content_type="text/plain")
        else:
            response = Response("no", status=404)
        return response(environ, start_response)


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[Webhook, RunningServer]]:
    app = Webhook()
    server = serve(app, name="webhook")
    yield app, server
    server.shutdown()


def subscription_body(url: str, resource: str = "/me/events", **extra: Any) -> dict[str, Any]:
    return {
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": in_minutes(60),
        "clientState": "opaque-state",
        **extra,
    }


# --------------------------------------------------------------------------------------------------
# Identity: refresh-token grant
# --------------------------------------------------------------------------------------------------


def test_refresh_rotates_and_the_old_token_lives_on_until_its_own_expiry(
    emu: GraphEmulator, client: Client
) -> None:
    account = add_account(emu)
    first = account["refresh_token"]
    answer = refresh(client, first)
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"].startswith("no-store")
    body = answer.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599 and body["ext_expires_in"] == 3599
    assert _is_jwt(body["access_token"])  # a work account's (PROTOCOLS)
    assert body["refresh_token"].startswith("M.C5") and body["refresh_token"] != first
    # The granted scope is not an echo of the request: no offline_access in it.
    assert body["scope"].split() == ["User.Read", "Calendars.Read"]

    # Rotation does not revoke the redeemed token (PROTOCOLS): both stay valid, each until 90 days
    # after its own issue.
    tokens = {t["refresh_token"]: t["superseded"] for t in emu.refresh_tokens(account["id"])}
    assert tokens == {first: True, body["refresh_token"]: False}
    emu.advance_clock(timedelta(days=30).total_seconds())
    again = refresh(client, first)
    assert again.status_code == 200 and again.json["refresh_token"] not in (first, body["refresh_token"])


def test_tokens_are_as_large_as_real_ones(emu: GraphEmulator, client: Client) -> None:
    """Access tokens 1.5-2.5 KB, refresh tokens 1-2 KB (PROTOCOLS): storage meets real sizes."""
    account = add_account(emu)
    assert 1000 <= len(account["refresh_token"]) <= 2048
    body = refresh(client, account["refresh_token"]).json
    assert 1500 <= len(body["access_token"]) <= 2560
    assert 1000 <= len(body["refresh_token"]) <= 2048
    for token in (body["access_token"], body["refresh_token"]):
        assert token.isascii() and not any(c.isspace() for c in token)


def test_a_refresh_token_dies_90_days_after_issue_however_often_it_was_used(
    emu: GraphEmulator, client: Client
) -> None:
    account = add_account(emu)
    first = account["refresh_token"]
    # Used every 10 days, never rotated (no offline_access asked): use does not extend its life.
    for _ in range(8):
        emu.advance_clock(timedelta(days=10).total_seconds())
        answer = refresh(client, first, scope="User.Read Calendars.Read")
        assert answer.status_code == 200 and "refresh_token" not in answer.json
    emu.advance_clock(timedelta(days=10).total_seconds())  # day 90 since issue
    answer = refresh(client, first, scope="User.Read Calendars.Read")
    assert_aad_error(answer, 400, "invalid_grant", 700082)
    assert "expired" in answer.json["error_description"]
    assert emu.refresh_tokens(account["id"]) == []


def test_each_rotation_starts_a_new_90_day_lifetime(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    first = account["refresh_token"]
    emu.advance_clock(timedelta(days=89).total_seconds())
    rotated = refresh(client, first).json["refresh_token"]
    emu.advance_clock(timedelta(days=2).total_seconds())  # day 91: the first is dead, the rotated lives
    assert_aad_error(refresh(client, first), 400, "invalid_grant", 700082)
    assert refresh(client, rotated).status_code == 200


def test_no_refresh_token_without_offline_access(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    answer = refresh(client, account["refresh_token"], scope="User.Read Calendars.Read")
    assert answer.status_code == 200
    assert "refresh_token" not in answer.json
    assert _is_jwt(answer.json["access_token"])
    assert [t["superseded"] for t in emu.refresh_tokens(account["id"])] == [False]  # nothing rotated
    # Nothing was rotated, so the token the client holds still works.
    assert refresh(client, account["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "scope",
    [
        SCOPES,
        "offline_access openid profile email User.Read Calendars.Read",
        "OFFLINE_ACCESS https://graph.microsoft.com/Calendars.Read",
    ],
)
def test_the_response_scope_never_echoes_offline_access(
    emu: GraphEmulator, client: Client, scope: str
) -> None:
    account = add_account(emu)
    answer = refresh(client, account["refresh_token"], scope=scope)
    assert answer.status_code == 200 and "refresh_token" in answer.json
    granted = answer.json["scope"].split()
    assert "offline_access" not in {s.lower() for s in granted}
    assert {"User.Read", "Calendars.Read"} <= set(granted)


def test_full_graph_scope_uris_are_accepted(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    scope = "offline_access https://graph.microsoft.com/User.Read https://graph.microsoft.com/Calendars.Read"
    assert refresh(client, account["refresh_token"], scope=scope).status_code == 200


def test_scope_beyond_consent_needs_interaction(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    answer = refresh(client, account["refresh_token"], scope="offline_access Mail.Read")
    assert_aad_error(answer, 400, "invalid_grant", 65001)
    assert answer.json["suberror"] == "consent_required"


def test_wrong_secret_is_invalid_client_7000215(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    answer = refresh(client, account["refresh_token"], secret="not-it")
    assert_aad_error(answer, 401, "invalid_client", 7000215)
    assert CLIENT_ID in answer.json["error_description"]
    assert answer.headers["Content-Type"] == "application/json; charset=utf-8"


def test_expired_secret_is_invalid_client_7000222(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    assert client.post(f"/_control/apps/{CLIENT_ID}/expire-secret").status_code == 200
    assert_aad_error(refresh(client, account["refresh_token"]), 401, "invalid_client", 7000222)


def test_unknown_client_is_700016(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    answer = refresh(client, account["refresh_token"], client_id="00000000-0000-0000-0000-000000000000")
    assert_aad_error(answer, 400, "unauthorized_client", 700016)


@pytest.mark.parametrize("code", [50173, 700082, 70008, 65001])
def test_revoked_tokens_fail_with_the_chosen_code(emu: GraphEmulator, client: Client, code: int) -> None:
    account = add_account(emu)
    other_token = emu.issue_refresh_token(account["id"], CLIENT_ID)
    answer = client.post(f"/_control/accounts/{account['id']}/revoke", json={"code": code})
    assert answer.status_code == 200 and answer.json == {"revoked": 2}
    for token in (account["refresh_token"], other_token):
        assert_aad_error(refresh(client, token), 400, "invalid_grant", code)
    assert emu.refresh_tokens(account["id"]) == []


def test_refresh_token_of_another_client_is_70000(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    emu.add_app("other-client", "other-secret")
    answer = refresh(client, account["refresh_token"], client_id="other-client", secret="other-secret")
    assert_aad_error(answer, 400, "invalid_grant", 70000)


def test_missing_parameters_are_invalid_request_900144(emu: GraphEmulator, client: Client) -> None:
    answer = client.post(TOKEN_PATH, data={"client_id": CLIENT_ID, "client_secret": SECRET})
    assert_aad_error(answer, 400, "invalid_request", 900144)
    assert "'grant_type'" in answer.json["error_description"]
    answer = client.post(
        TOKEN_PATH, data={"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "refresh_token"}
    )
    assert "'refresh_token'" in answer.json["error_description"]


def test_unknown_refresh_token_and_get_on_token_endpoint(emu: GraphEmulator, client: Client) -> None:
    assert_aad_error(refresh(client, "M.C5_never_issued"), 400, "invalid_grant", 70008)
    assert_aad_error(client.get(TOKEN_PATH), 400, "invalid_request", 900561)


def test_unused_refresh_tokens_expire_after_90_days(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    emu.advance_clock(timedelta(days=91).total_seconds())
    assert_aad_error(refresh(client, account["refresh_token"]), 400, "invalid_grant", 700082)


def test_tenants_guid_and_domain_work_but_garbage_does_not(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    data = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "grant_type": "refresh_token",
        "refresh_token": account["refresh_token"],
        "scope": SCOPES,
    }
    answer = client.post("/9188040d-6c67-4c5b-b112-36a304b66dad/oauth2/v2.0/token", data=data)
    assert answer.status_code == 200
    data["refresh_token"] = answer.json["refresh_token"]
    assert client.post("/contoso.onmicrosoft.com/oauth2/v2.0/token", data=data).status_code == 200
    assert_aad_error(client.post("/not_a_tenant/oauth2/v2.0/token", data=data), 400, "invalid_request", 90002)


def test_concurrent_refreshes_of_one_token_all_succeed() -> None:
    """Rotation does not revoke the old token, so refreshes racing with one token all succeed."""
    emu = GraphEmulator()
    emu.add_app(CLIENT_ID, SECRET)
    account = add_account(emu)
    answers: list[requests.Response] = []
    with serve(emu, name="graph") as server:

        def worker() -> None:
            answer = requests.post(
                f"{server.url}{TOKEN_PATH}",
                data={
                    "client_id": CLIENT_ID,
                    "client_secret": SECRET,
                    "grant_type": "refresh_token",
                    "refresh_token": account["refresh_token"],
                    "scope": SCOPES,
                },
                timeout=10,
            )
            answers.append(answer)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [a.status_code for a in answers] == [200] * 8
    rotated = {a.json()["refresh_token"] for a in answers}
    assert len(rotated) == 8 and account["refresh_token"] not in rotated
    assert len(emu.refresh_tokens(account["id"])) == 9  # each winner's new token, and the old one


# --------------------------------------------------------------------------------------------------
# Identity: authorize + authorization_code with PKCE
# --------------------------------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(b"v" * 40).decode().rstrip("=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def authorize(client: Client, challenge: str, **extra: str) -> dict[str, list[str]]:
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "redirect_uri": "http://127.0.0.1:9999/callback",
        "scope": SCOPES,
        "state": "st/ate=1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    page = client.get("/common/oauth2/v2.0/authorize", query_string=params)
    assert page.status_code == 200
    html_text = page.get_data(as_text=True)
    assert "Accept" in html_text and "<form" in html_text
    answer = client.post(
        "/common/oauth2/v2.0/authorize", data={**params, "consent": "accept", **_hidden_account(html_text)}
    )
    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == "http://127.0.0.1:9999/callback"
    return parse_qs(location.query)


def _hidden_account(page: str) -> dict[str, str]:
    marker = 'name="account_id" value="'
    start = page.index(marker) + len(marker)
    return {"account_id": page[start : page.index('"', start)]}


def redeem(client: Client, code: str, verifier: str) -> TestResponse:
    return client.post(
        TOKEN_PATH,
        data={
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://127.0.0.1:9999/callback",
            "code_verifier": verifier,
            "scope": SCOPES,
        },
    )


def test_authorize_then_code_with_pkce_issues_tokens_once(emu: GraphEmulator, client: Client) -> None:
    add_account(emu, "first@contoso.example")
    second = add_account(emu, "second@contoso.example")
    verifier, challenge = pkce_pair()
    query = authorize(client, challenge, login_hint="second@contoso.example")
    assert query["state"] == ["st/ate=1"]
    answer = redeem(client, query["code"][0], verifier)
    assert answer.status_code == 200
    assert answer.json["refresh_token"].startswith("M.C5")
    me = client.get("/v1.0/me", headers=auth(answer.json["access_token"]))
    assert me.json["id"] == second["id"]
    # Codes are single use.
    assert_aad_error(redeem(client, query["code"][0], verifier), 400, "invalid_grant", 54005)


def test_authorize_without_hint_picks_the_first_account_of_the_client(
    emu: GraphEmulator, client: Client
) -> None:
    first = add_account(emu, "first@contoso.example")
    add_account(emu, "second@contoso.example")
    verifier, challenge = pkce_pair()
    answer = redeem(client, authorize(client, challenge)["code"][0], verifier)
    assert client.get("/v1.0/me", headers=auth(answer.json["access_token"])).json["id"] == first["id"]


def test_code_with_a_bad_verifier_is_invalid_grant(emu: GraphEmulator, client: Client) -> None:
    add_account(emu)
    _, challenge = pkce_pair()
    code = authorize(client, challenge)["code"][0]
    assert_aad_error(redeem(client, code, "a-different-verifier-" + "x" * 30), 400, "invalid_grant", 50148)


def test_declined_consent_redirects_with_access_denied(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    answer = client.post(
        "/common/oauth2/v2.0/authorize",
        data={
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": "https://app.example/cb?x=1",
            "scope": SCOPES,
            "state": "s1",
            "account_id": account["id"],
            "consent": "deny",
        },
    )
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["s1"] and query["x"] == ["1"]
    assert "code" not in query


def test_authorize_with_unknown_client_shows_an_error_page(client: Client) -> None:
    answer = client.get(
        "/common/oauth2/v2.0/authorize",
        query_string={"client_id": "nope", "response_type": "code", "redirect_uri": "https://a.example/cb"},
    )
    assert answer.status_code == 400
    assert "AADSTS700016" in answer.get_data(as_text=True)


# --------------------------------------------------------------------------------------------------
# Graph: auth, /me, calendars
# --------------------------------------------------------------------------------------------------


def test_me_for_a_personal_account_has_mail_null(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu, "alex.personal@outlook.example", mail=None)
    answer = client.get(
        "/v1.0/me", headers={**auth(access_token(client, account)), "client-request-id": "abc-1"}
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == GRAPH_JSON
    assert answer.headers["client-request-id"] == "abc-1" and answer.headers["request-id"]
    body = answer.json
    assert body["mail"] is None
    assert body["userPrincipalName"] == "alex.personal@outlook.example"
    assert body["id"] == account["id"] and body["displayName"] == "Jane Doe"
    assert body["@odata.context"] == "https://graph.microsoft.com/v1.0/$metadata#users/$entity"
    assert body["businessPhones"] == [] and body["jobTitle"] is None


@pytest.mark.parametrize("header", [None, "Bearer EwA-not-a-token", "Basic abc"])
def test_graph_without_a_valid_token_is_401(client: Client, header: str | None) -> None:
    answer = client.get("/v1.0/me", headers={"Authorization": header} if header else {})
    assert answer.status_code == 401
    error = answer.json["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    assert error["innerError"]["request-id"] == answer.headers["request-id"]


def test_expired_access_tokens_are_401_until_refreshed(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    token = access_token(client, account)
    assert client.get("/v1.0/me", headers=auth(token)).status_code == 200
    assert client.post("/_control/access-tokens/expire").json == {"expired": 1}
    answer = client.get("/v1.0/me", headers=auth(token))
    assert answer.status_code == 401
    assert answer.json["error"]["message"] == "Access token has expired or is not yet valid."
    assert client.get("/v1.0/me", headers=auth(access_token(client, account))).status_code == 200


def test_calendars_page_over_25_with_top_10(emu: GraphEmulator, client: Client) -> None:
    calendars = [{"name": f"Cal {i:02d}", "is_default": i == 0} for i in range(25)]
    account = add_account(emu, calendars=calendars)
    token = access_token(client, account)
    url: str | None = "/v1.0/me/calendars?$top=10"
    pages: list[list[dict[str, Any]]] = []
    while url:
        answer = client.get(url, headers=auth(token))
        assert answer.status_code == 200, answer.get_data(as_text=True)
        pages.append(answer.json["value"])
        url = answer.json.get("@odata.nextLink")
        if url:
            assert url.startswith("http://localhost/v1.0/me/calendars?")
            assert "$top=10" in url and "$skiptoken=" in url
    assert [len(page) for page in pages] == [10, 10, 5]
    ids = [c["id"] for page in pages for c in page]
    assert len(set(ids)) == 25
    assert sorted(ids) == sorted(c["id"] for c in account["calendars"])
    first = pages[0][0]
    assert first["isDefaultCalendar"] is True and first["owner"]["address"] == "jane@contoso.example"
    assert first["id"].startswith("AAMk") and first["id"].endswith("=")


def test_calendars_default_page_size_and_select() -> None:
    emu = GraphEmulator(page_size=3)
    emu.add_app(CLIENT_ID, SECRET)
    client = Client(emu)
    account = add_account(emu, calendars=[{"name": f"C{i}"} for i in range(6)])
    token = access_token(client, account)
    answer = client.get("/v1.0/me/calendars?$select=name,isDefaultCalendar", headers=auth(token))
    assert len(answer.json["value"]) == 3 and "@odata.nextLink" in answer.json
    assert set(answer.json["value"][0]) == {"id", "name", "isDefaultCalendar"}
    assert "$select=name%2CisDefaultCalendar" in answer.json["@odata.nextLink"]
    # An exact multiple of the page size ends without an empty trailing page.
    last = client.get(answer.json["@odata.nextLink"], headers=auth(token))
    assert len(last.json["value"]) == 3 and "@odata.nextLink" not in last.json
    assert set(last.json["value"][0]) == {"id", "name", "isDefaultCalendar"}


def test_single_calendar_needs_correct_id_encoding(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    token = access_token(client, account)
    cal_id = account["calendars"][0]["id"]
    answer = client.get(f"/v1.0/me/calendars/{quote(cal_id, safe='')}", headers=auth(token))
    assert answer.status_code == 200 and answer.json["id"] == cal_id
    double = quote(quote(cal_id, safe=""), safe="")
    answer = client.get(f"/v1.0/me/calendars/{double}", headers=auth(token))
    assert answer.status_code == 400 and answer.json["error"]["code"] == "ErrorInvalidIdMalformed"


def test_unknown_graph_route_is_a_graph_error(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    answer = client.get("/v1.0/me/nonsense", headers=auth(access_token(client, account)))
    assert answer.status_code == 400
    assert answer.json["error"]["code"] == "BadRequest"
    assert answer.headers["Content-Type"] == GRAPH_JSON and answer.headers["request-id"]


def test_calendars_need_a_calendars_scope(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu, scopes="offline_access User.Read")
    answer = client.get(
        "/v1.0/me/calendars", headers=auth(access_token_for(client, account, "offline_access User.Read"))
    )
    assert answer.status_code == 403 and answer.json["error"]["code"] == "ErrorAccessDenied"


def access_token_for(client: Client, account: dict[str, Any], scope: str) -> str:
    answer = refresh(client, account["refresh_token"], scope=scope)
    assert answer.status_code == 200
    return answer.json["access_token"]


# --------------------------------------------------------------------------------------------------
# Graph: subscriptions and the validation handshake
# --------------------------------------------------------------------------------------------------


def test_validation_handshake_over_real_http_creates_subscription(
    emu: GraphEmulator, webhook: tuple[Webhook, RunningServer]
) -> None:
    hook, hook_server = webhook
    account = add_account(emu)
    with serve(emu, name="graph") as graph:
        token_answer = requests.post(
            f"{graph.url}{TOKEN_PATH}",
            data={
                "client_id": CLIENT_ID,
                "client_secret": SECRET,
                "grant_type": "refresh_token",
                "refresh_token": account["refresh_token"],
                "scope": SCOPES,
            },
            timeout=10,
        )
        token = token_answer.json()["access_token"]
        cal_id = account["calendars"][0]["id"]
        hook.calls.clear()
        answer = requests.post(
            f"{graph.url}/v1.0/subscriptions",
            headers=auth(token),
            json=subscription_body(
                f"{hook_server.url}/notify/echo",
                resource=f"/me/calendars/{cal_id}/events",
                lifecycleNotificationUrl=f"{hook_server.url}/lifecycle/echo",
            ),
            timeout=10,
        )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["applicationId"] == CLIENT_ID and body["creatorId"] == account["id"]
    assert body["resource"] == f"/me/calendars/{cal_id}/events"
    assert body["clientState"] == "opaque-state" and body["latestSupportedTlsVersion"] == "v1_2"
    assert body["expirationDateTime"].endswith("0Z") and len(body["expirationDateTime"]) == 28
    # Both URLs were validated: POST, text/plain, empty body, spaces sent as '+'.
    assert [c["path"] for c in hook.calls] == ["/notify/echo", "/lifecycle/echo"]
    call = hook.calls[0]
    assert call["method"] == "POST" and call["body"] == b""
    assert call["content_type"] == "text/plain; charset=utf-8"
    assert call["token"].startswith("Validation: Testing client application reachability")
    assert "+" in call["raw_query"] and "%3A" in call["raw_query"]
    stored = emu.subscriptions()
    assert len(stored) == 1 and stored[0]["account_id"] == account["id"]
    assert stored[0]["calendar_id"] == cal_id and stored[0]["client_state"] == "opaque-state"


@pytest.mark.parametrize("mode", ["wrong-body", "wrong-type", "accepted", "missing"])
def test_failed_validation_stores_nothing(
    emu: GraphEmulator, webhook: tuple[Webhook, RunningServer], mode: str
) -> None:
    hook, hook_server = webhook
    account = add_account(emu)
    with serve(emu, name="graph") as graph:
        token = access_token(Client(emu), account)
        answer = requests.post(
            f"{graph.url}/v1.0/subscriptions",
            headers=auth(token),
            json=subscription_body(f"{hook_server.url}/notify/{mode}"),
            timeout=10,
        )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "ValidationError"
    assert error["message"].startswith("Subscription validation request failed.")
    assert emu.subscriptions() == []


def test_failed_lifecycle_validation_stores_nothing(
    emu: GraphEmulator, client: Client, webhook: tuple[Webhook, RunningServer]
) -> None:
    _, hook_server = webhook
    account = add_account(emu)
    body = subscription_body(
        f"{hook_server.url}/n/echo", lifecycleNotificationUrl=f"{hook_server.url}/l/wrong-type"
    )
    answer = client.post("/v1.0/subscriptions", headers=auth(access_token(client, account)), json=body)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "ValidationError"
    assert emu.subscriptions() == []


def test_slow_validation_times_out(webhook: tuple[Webhook, RunningServer]) -> None:
    _, hook_server = webhook
    emu = GraphEmulator(validation_timeout=0.3)
    emu.add_app(CLIENT_ID, SECRET)
    client = Client(emu)
    account = add_account(emu)
    body = subscription_body(f"{hook_server.url}/n/slow")
    answer = client.post("/v1.0/subscriptions", headers=auth(access_token(client, account)), json=body)
    assert answer.status_code == 400 and answer.json["error"]["code"] == "ValidationError"


def test_subscription_expiry_limit_reflects_configuration(webhook: tuple[Webhook, RunningServer]) -> None:
    _, hook_server = webhook
    emu = GraphEmulator(subscription_max_minutes=4230)
    emu.add_app(CLIENT_ID, SECRET)
    client = Client(emu)
    token = access_token(client, add_account(emu))
    url = f"{hook_server.url}/n/echo"
    too_far = subscription_body(url, expirationDateTime=in_minutes(4231))
    answer = client.post("/v1.0/subscriptions", headers=auth(token), json=too_far)
    assert answer.status_code == 400
    assert answer.json["error"] == {
        **answer.json["error"],
        "code": "InvalidRequest",
        "message": "Subscription expiration can only be 4230 minutes in the future.",
    }
    past = subscription_body(url, expirationDateTime=in_minutes(-1))
    assert client.post("/v1.0/subscriptions", headers=auth(token), json=past).status_code == 400
    ok = subscription_body(url, expirationDateTime=in_minutes(4229))
    assert client.post("/v1.0/subscriptions", headers=auth(token), json=ok).status_code == 201


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"resource": "/me/messages"}, 400, "InvalidRequest"),
        ({"changeType": "created,moved"}, 400, "InvalidRequest"),
        ({"clientState": "x" * 129}, 400, "InvalidRequest"),
        ({"notificationUrl": "http://hooks.example/n"}, 400, "InvalidRequest"),
        ({"expirationDateTime": "tomorrow"}, 400, "InvalidRequest"),
        ({"resource": "me/calendars/AAMkAGI2bm9zdWNoAAA=/events"}, 404, "ResourceNotFound"),
    ],
)
def test_bad_subscription_requests_are_refused(
    emu: GraphEmulator, client: Client, overrides: dict[str, str], status: int, code: str
) -> None:
    token = access_token(client, add_account(emu))
    # The notification URL is never contacted: parameter checks come first.
    body = {**subscription_body("https://hooks.example/n"), **overrides}
    answer = client.post("/v1.0/subscriptions", headers=auth(token), json=body)
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.json["error"]["code"] == code
    assert emu.subscriptions() == []


def test_another_accounts_calendar_is_refused(
    emu: GraphEmulator, client: Client, webhook: tuple[Webhook, RunningServer]
) -> None:
    _, hook_server = webhook
    jane = add_account(emu)
    bob = add_account(emu, "bob@contoso.example")
    bob_calendar = bob["calendars"][0]["id"]
    body = subscription_body(f"{hook_server.url}/n/echo", resource=f"me/calendars/{bob_calendar}/events")
    answer = client.post("/v1.0/subscriptions", headers=auth(access_token(client, jane)), json=body)
    assert answer.status_code == 404 and answer.json["error"]["code"] == "ResourceNotFound"
    assert emu.subscriptions() == []


def test_subscription_get_patch_delete_and_404(
    emu: GraphEmulator, client: Client, webhook: tuple[Webhook, RunningServer]
) -> None:
    _, hook_server = webhook
    account = add_account(emu)
    token = access_token(client, account)
    created = client.post(
        "/v1.0/subscriptions", headers=auth(token), json=subscription_body(f"{hook_server.url}/n/echo")
    )
    assert created.status_code == 201
    sub_id = created.json["id"]
    path = f"/v1.0/subscriptions/{sub_id}"

    assert client.get(path, headers=auth(token)).json["id"] == sub_id
    listing = client.get("/v1.0/subscriptions", headers=auth(token)).json["value"]
    assert [s["id"] for s in listing] == [sub_id]

    renewed = client.patch(path, headers=auth(token), json={"expirationDateTime": in_minutes(10000)})
    assert renewed.status_code == 200
    assert renewed.json["expirationDateTime"] > created.json["expirationDateTime"]
    too_far = client.patch(path, headers=auth(token), json={"expirationDateTime": in_minutes(10081)})
    assert too_far.status_code == 400 and "10080 minutes" in too_far.json["error"]["message"]

    assert client.delete(path, headers=auth(token)).status_code == 204
    for answer in (
        client.get(path, headers=auth(token)),
        client.patch(path, headers=auth(token), json={"expirationDateTime": in_minutes(60)}),
        client.delete(path, headers=auth(token)),
    ):
        assert answer.status_code == 404
        assert answer.json["error"] == {
            **answer.json["error"],
            "code": "ResourceNotFound",
            "message": "The object was not found.",
        }


def test_subscriptions_gone_behind_the_clients_back(
    emu: GraphEmulator, client: Client, webhook: tuple[Webhook, RunningServer]
) -> None:
    _, hook_server = webhook
    account = add_account(emu)
    token = access_token(client, account)
    url = f"{hook_server.url}/n/echo"
    removed = client.post("/v1.0/subscriptions", headers=auth(token), json=subscription_body(url)).json["id"]
    expiring = client.post("/v1.0/subscriptions", headers=auth(token), json=subscription_body(url)).json["id"]

    assert client.delete(f"/_control/subscriptions/{removed}").status_code == 204
    patch = {"expirationDateTime": in_minutes(120)}
    assert client.patch(f"/v1.0/subscriptions/{removed}", headers=auth(token), json=patch).status_code == 404

    emu.advance_clock(61 * 60)  # past the 60-minute expiry; the access token expired too
    token = access_token(client, account)
    assert client.get(f"/v1.0/subscriptions/{expiring}", headers=auth(token)).status_code == 404
    assert client.get("/v1.0/subscriptions", headers=auth(token)).json["value"] == []
    listed = client.get("/_control/subscriptions").json["value"]
    assert [(s["id"], s["expired"]) for s in listed] == [(expiring, True)]
    assert client.get("/_control/subscriptions?active=1").json["value"] == []


def test_subscription_list_is_per_app_and_account(
    emu: GraphEmulator, client: Client, webhook: tuple[Webhook, RunningServer]
) -> None:
    _, hook_server = webhook
    jane = add_account(emu)
    bob = add_account(emu, "bob@contoso.example")
    emu.add_app("other-app", "other-secret")
    other_rt = emu.issue_refresh_token(jane["id"], "other-app")
    other_token = refresh(client, other_rt, client_id="other-app", secret="other-secret").json["access_token"]
    url = f"{hook_server.url}/n/echo"
    mine = client.post(
        "/v1.0/subscriptions", headers=auth(access_token(client, jane)), json=subscription_body(url)
    )
    client.post("/v1.0/subscriptions", headers=auth(other_token), json=subscription_body(url))
    client.post("/v1.0/subscriptions", headers=auth(access_token(client, bob)), json=subscription_body(url))
    listing = client.get("/v1.0/subscriptions", headers=auth(access_token(client, jane))).json["value"]
    assert [s["id"] for s in listing] == [mine.json["id"]]
    assert len(emu.subscriptions()) == 3
    # Another app cannot see or delete it either.
    assert (
        client.delete(f"/v1.0/subscriptions/{mine.json['id']}", headers=auth(other_token)).status_code == 404
    )


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


def test_throttling_fault_then_success(emu: GraphEmulator, client: Client) -> None:
    token = access_token(client, add_account(emu))
    rule = client.post(
        "/_control/faults", json={"path": "^/v1.0/me/calendars", "status": 429, "retry_after": 7}
    )
    assert rule.status_code == 201 and rule.json["id"]
    throttled = client.get("/v1.0/me/calendars", headers=auth(token))
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "7"
    assert throttled.json["error"]["code"] == "TooManyRequests"
    assert throttled.headers["Content-Type"] == GRAPH_JSON
    assert client.get("/v1.0/me/calendars", headers=auth(token)).status_code == 200
    assert client.get("/_control/faults").json["value"][0]["remaining"] == 0


def test_fault_times_two_and_method_matching(emu: GraphEmulator, client: Client) -> None:
    token = access_token(client, add_account(emu))
    emu.add_fault(path="/me$", method="GET", status=503, times=2, retry_after=1)
    statuses = [client.get("/v1.0/me", headers=auth(token)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    emu.add_fault(path="/me$", method="POST", status=503)
    assert client.get("/v1.0/me", headers=auth(token)).status_code == 200


def test_fault_until_cleared(emu: GraphEmulator, client: Client) -> None:
    token = access_token(client, add_account(emu))
    emu.add_fault(path="/me", status=500, times=-1)
    assert {client.get("/v1.0/me", headers=auth(token)).status_code for _ in range(4)} == {500}
    assert client.delete("/_control/faults").status_code == 204
    assert client.get("/v1.0/me", headers=auth(token)).status_code == 200


def test_fault_matches_only_its_account(emu: GraphEmulator, client: Client) -> None:
    jane = access_token(client, add_account(emu))
    bob = access_token(client, add_account(emu, "bob@contoso.example"))
    emu.add_fault(
        path="/v1.0/", account="bob@contoso.example", status=429, times=-1, error="ApplicationThrottled"
    )
    assert client.get("/v1.0/me", headers=auth(jane)).status_code == 200
    answer = client.get("/v1.0/me", headers=auth(bob))
    assert answer.status_code == 429 and answer.json["error"]["code"] == "ApplicationThrottled"


def test_token_endpoint_fault_with_aadsts_code(emu: GraphEmulator, client: Client) -> None:
    jane = add_account(emu)
    bob = add_account(emu, "bob@contoso.example")
    emu.add_fault(path="/oauth2/v2.0/token$", account=bob["id"], error="invalid_grant", aadsts=50173)
    assert refresh(client, jane["refresh_token"]).status_code == 200
    assert_aad_error(refresh(client, bob["refresh_token"]), 400, "invalid_grant", 50173)
    # The fault answered in place of the grant: bob's token was not consumed.
    assert refresh(client, bob["refresh_token"]).status_code == 200


def test_token_endpoint_throttling_fault_is_not_an_auth_error(emu: GraphEmulator, client: Client) -> None:
    account = add_account(emu)
    emu.add_fault(path="/token$", status=503, retry_after=2)
    answer = refresh(client, account["refresh_token"])
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "2"
    assert answer.json["error"] == "temporarily_unavailable"


def test_delay_fault_slows_then_answers_normally(emu: GraphEmulator, client: Client) -> None:
    token = access_token(client, add_account(emu))
    emu.add_fault(path="/me$", delay=0.3)
    started = time.monotonic()
    answer = client.get("/v1.0/me", headers=auth(token))
    assert answer.status_code == 200 and time.monotonic() - started >= 0.3


def test_bad_fault_rules_are_rejected(client: Client) -> None:
    assert client.post("/_control/faults", json={"path": "(", "status": 500}).status_code == 400
    assert client.post("/_control/faults", json={"path": "/me", "retryAfter": 3}).status_code == 400
    assert client.post("/_control/faults", json={"path": "/me"}).status_code == 400


# --------------------------------------------------------------------------------------------------
# Request log and control API
# --------------------------------------------------------------------------------------------------


def test_request_log_filters_and_never_holds_secrets(emu: GraphEmulator, client: Client) -> None:
    jane = add_account(emu)
    bob = add_account(emu, "bob@contoso.example")
    jane_token = access_token(client, jane)
    bob_token = access_token(client, bob)
    client.get("/v1.0/me", headers=auth(jane_token))
    client.get("/v1.0/me/calendars?$top=5", headers=auth(jane_token))
    client.get("/v1.0/me", headers=auth(bob_token))
    client.get("/v1.0/me")  # anonymous

    everything = client.get("/_control/requests").json["value"]
    assert len(everything) == 6  # two token calls, four Graph calls; /_control is not logged
    assert [e["status"] for e in everything][-1] == 401 and everything[-1]["account"] is None

    janes = client.get("/_control/requests", query_string={"account": "jane@contoso.example"}).json["value"]
    assert [(e["method"], e["path"]) for e in janes] == [
        ("POST", TOKEN_PATH),
        ("GET", "/v1.0/me"),
        ("GET", "/v1.0/me/calendars"),
    ]
    assert janes[2]["query"] == "$top=5" and janes[1]["client_id"] == CLIENT_ID
    graph_only = emu.requests(account=bob["id"], path_prefix="/v1.0/")
    assert [e["path"] for e in graph_only] == ["/v1.0/me"]

    dumped = json.dumps(everything)
    for secret in (jane_token, bob_token, jane["refresh_token"], SECRET, jane_token[:40], "M.C5"):
        assert secret not in dumped
    assert client.delete("/_control/requests").status_code == 204
    assert emu.requests() == []


def test_control_api_over_http(client: Client) -> None:
    assert (
        client.post("/_control/apps", json={"client_id": "app-2", "client_secret": "pw"}).status_code == 201
    )
    created = client.post(
        "/_control/accounts",
        json={
            "client_id": "app-2",
            "mail": None,
            "user_principal_name": "sam@outlook.example",
            "display_name": "Sam",
            "calendars": [
                {"name": "Work"},
                {"name": "Shared", "owner_address": "boss@x.example", "can_edit": False},
            ],
        },
    )
    assert created.status_code == 201
    account = created.json
    assert [c["name"] for c in account["calendars"]] == ["Work", "Shared"]
    assert account["refresh_token"].startswith("M.C5")

    extra = client.post(f"/_control/accounts/{account['id']}/calendars", json={"name": "Birthdays"})
    assert extra.status_code == 201 and extra.json["name"] == "Birthdays"
    listed = client.get("/_control/accounts").json["value"]
    assert len(listed) == 1 and listed[0]["mail"] is None
    assert [c["is_default"] for c in listed[0]["calendars"]] == [True, False, False]
    assert "refresh_token" not in json.dumps(listed)

    more = client.post(f"/_control/accounts/{account['id']}/refresh-token", json={"client_id": "app-2"})
    assert more.status_code == 201
    tokens = client.get("/_control/refresh-tokens", query_string={"account": "sam@outlook.example"}).json
    assert {t["refresh_token"] for t in tokens["value"]} == {
        account["refresh_token"],
        more.json["refresh_token"],
    }

    assert client.post("/_control/accounts", json={"client_id": "app-2", "upn": "x"}).status_code == 400
    assert client.post("/_control/accounts/nobody/revoke", json={}).status_code == 404
    assert client.post("/_control/reset").status_code == 204
    assert client.get("/_control/accounts").json["value"] == []


def test_shared_calendar_flags(emu: GraphEmulator, client: Client) -> None:
    account = add_account(
        emu,
        calendars=[
            {"name": "Calendar", "is_default": True},
            {
                "name": "Boss",
                "owner_name": "Boss",
                "owner_address": "boss@contoso.example",
                "can_edit": False,
            },
        ],
    )
    value = client.get("/v1.0/me/calendars", headers=auth(access_token(client, account))).json["value"]
    own, shared = value
    assert own["canShare"] is True and own["isRemovable"] is False and own["canEdit"] is True
    assert shared["canShare"] is False and shared["canEdit"] is False
    assert shared["owner"] == {"name": "Boss", "address": "boss@contoso.example"}


def test_fixed_sample_refresh_token_rotates_like_any_other(emu: GraphEmulator, client: Client) -> None:
    add_account(emu, refresh_token="M.C5_sample_token")
    rotated = refresh(client, "M.C5_sample_token")
    assert rotated.status_code == 200 and rotated.json["refresh_token"] != "M.C5_sample_token"
    emu.advance_clock(timedelta(days=90).total_seconds())  # its 90 days from issue are over
    assert_aad_error(refresh(client, "M.C5_sample_token"), 400, "invalid_grant", 700082)


def test_server_url_and_shutdown() -> None:
    server = serve(GraphEmulator(), name="graph")
    assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
    answer = requests.get(f"{server.url}/v1.0/me", timeout=5)
    assert answer.status_code == 401 and answer.headers["request-id"]
    server.shutdown()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/v1.0/me", timeout=2)


# --------------------------------------------------------------------------------------------------
# Events, series and calendarView delta
# --------------------------------------------------------------------------------------------------

WINDOW = "startDateTime=2026-10-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z"
MINIMAL_KEYS = {"@odata.type", "@odata.etag", "id", "seriesMasterId", "type", "start", "end"}
WEEKLY_MON_WED = {
    "pattern": {
        "type": "weekly",
        "interval": 1,
        "daysOfWeek": ["monday", "wednesday"],
        "firstDayOfWeek": "monday",
    },
    "range": {"type": "endDate", "startDate": "2026-10-19", "endDate": "2026-11-04"},
}


@pytest.fixture
def jane(emu: GraphEmulator, client: Client) -> dict[str, Any]:
    account = add_account(emu)
    account["calendar_id"] = account["calendars"][0]["id"]
    account["headers"] = auth(access_token(client, account))
    return account


def delta_url(account: dict[str, Any], window: str = WINDOW) -> str:
    return f"/v1.0/me/calendars/{account['calendar_id']}/calendarView/delta?{window}"


def sync(
    client: Client, url: str, headers: dict[str, str], page_size: int | None = None
) -> tuple[list[dict[str, Any]], str, list[int]]:
    """Follow nextLinks to the deltaLink; returns (items, deltaLink, page sizes)."""
    if page_size is not None:
        headers = {**headers, "Prefer": f"odata.maxpagesize={page_size}"}
    items: list[dict[str, Any]] = []
    sizes: list[int] = []
    next_url: str | None = url
    while next_url:
        answer = client.get(next_url, headers=headers)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body = answer.json
        assert body["@odata.context"] == "https://graph.microsoft.com/v1.0/$metadata#Collection(event)"
        items += body["value"]
        sizes.append(len(body["value"]))
        next_url = body.get("@odata.nextLink")
        if next_url:
            assert "@odata.deltaLink" not in body
            assert next_url.startswith("http://localhost/v1.0/me/calendars/") and "$skiptoken=" in next_url
        else:
            delta_link = body["@odata.deltaLink"]
            assert (
                delta_link.startswith("http://localhost/v1.0/me/calendars/") and "$deltatoken=" in delta_link
            )
    return items, delta_link, sizes


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in items}


def test_full_sync_of_230_events_pages_each_once(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    created = [
        emu.add_event(
            jane["id"],
            jane["calendar_id"],
            subject=f"Meeting {i:03d}",
            # Created out of order; delta orders by start.
            start=datetime(2026, 11, 2, tzinfo=UTC) + timedelta(hours=(i * 37) % 230 * 3),
            end=datetime(2026, 11, 2, 1, tzinfo=UTC) + timedelta(hours=(i * 37) % 230 * 3),
        )["id"]
        for i in range(230)
    ]
    first = client.get(delta_url(jane), headers={**jane["headers"], "Prefer": "odata.maxpagesize=50"})
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=50"
    items, delta_link, sizes = sync(client, delta_url(jane), jane["headers"], page_size=50)
    assert sizes == [50, 50, 50, 50, 30]
    assert [item["id"] for item in items if "@removed" not in item] == [item["id"] for item in items]
    assert len({item["id"] for item in items}) == 230 and {item["id"] for item in items} == set(created)
    starts = [item["start"]["dateTime"] for item in items]
    assert starts == sorted(starts)
    single = items[0]
    assert single["type"] == "singleInstance" and single["@odata.type"] == "#microsoft.graph.event"
    assert single["subject"].startswith("Meeting") and single["seriesMasterId"] is None
    assert single["id"].startswith("AAMk") and "/" not in single["id"]
    assert single["iCalUId"].startswith("040000008200E00074C5B7101A82E008")
    # Without a page-size preference the constructor's delta_page_size (10) applies.
    _, _, default_sizes = sync(client, delta_url(jane), jane["headers"])
    assert default_sizes == [10] * 23


def test_delta_link_without_changes_is_empty_with_a_new_delta_link(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    emu.add_event(
        jane["id"], jane["calendar_id"], subject="A", start="2026-12-01T09:00:00Z", end="2026-12-01T10:00:00Z"
    )
    items, delta_link, _ = sync(client, delta_url(jane), jane["headers"])
    assert len(items) == 1
    again, second_link, sizes = sync(client, delta_link, jane["headers"])
    assert again == [] and sizes == [0]
    assert second_link != delta_link
    # A deltaLink stays usable (replaying it gives the same answer while nothing changes).
    assert sync(client, delta_link, jane["headers"])[0] == []


def test_moved_edited_cancelled_deleted_and_moved_out(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    def add(subject: str, day: int) -> str:
        start = datetime(2026, 12, day, 9, tzinfo=UTC)
        return emu.add_event(
            jane["id"], jane["calendar_id"], subject=subject, start=start, end=start + timedelta(hours=1)
        )["id"]

    moved, edited, cancelled, deleted, leaving, untouched = (
        add(name, day)
        for name, day in [
            ("moved", 1),
            ("edited", 2),
            ("cancelled", 3),
            ("deleted", 4),
            ("leaving", 5),
            ("same", 6),
        ]
    )
    _, delta_link, _ = sync(client, delta_url(jane), jane["headers"])

    assert (
        client.patch(f"/_control/events/{moved}", json={"start": "2026-12-10T15:00:00+01:00"}).status_code
        == 200
    )
    client.patch(f"/_control/events/{edited}", json={"subject": "first edit"})
    client.patch(f"/_control/events/{edited}", json={"subject": "second edit", "location": "Room 1"})
    assert client.post(f"/_control/events/{cancelled}/cancel").status_code == 200
    assert client.delete(f"/_control/events/{deleted}").status_code == 204
    client.patch(
        f"/_control/events/{leaving}", json={"start": "2027-02-01T09:00:00Z", "end": "2027-02-01T10:00:00Z"}
    )
    fresh = add("new", 7)

    items, _, _ = sync(client, delta_link, jane["headers"])
    changes = by_id(items)
    assert len(items) == len(changes) == 6  # each changed item once, in its latest state
    assert untouched not in changes
    assert changes[moved]["start"] == {"dateTime": "2026-12-10T14:00:00.0000000", "timeZone": "UTC"}
    assert changes[moved]["end"] == {"dateTime": "2026-12-10T15:00:00.0000000", "timeZone": "UTC"}  # kept 1 h
    assert changes[edited]["subject"] == "second edit"
    assert changes[edited]["location"]["displayName"] == "Room 1"
    assert changes[fresh]["subject"] == "new" and "@removed" not in changes[fresh]
    for gone in (cancelled, deleted, leaving):
        assert changes[gone] == {
            "@odata.type": "#microsoft.graph.event",
            "id": gone,
            "@removed": {"reason": "deleted"},
        }

    headers = jane["headers"]
    assert client.get(f"/v1.0/me/events/{cancelled}", headers=headers).json["isCancelled"] is True
    missing = client.get(f"/v1.0/me/events/{deleted}", headers=headers)
    assert missing.status_code == 404 and missing.json["error"]["code"] == "ErrorItemNotFound"


def test_weekly_series_keeps_local_time_across_dst_and_items_are_minimal(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    master = emu.add_event(
        jane["id"],
        jane["calendar_id"],
        subject="Standup",
        start="2026-10-19T09:00:00",
        end="2026-10-19T09:15:00",
        time_zone="W. Europe Standard Time",
        recurrence=WEEKLY_MON_WED,
        body_html="<p>Join: https://teams.microsoft.com/l/meetup-join/19%3ameeting</p>",
        online_meeting_url="https://teams.microsoft.com/l/meetup-join/19%3ameeting",
    )
    items, _, _ = sync(client, delta_url(jane), jane["headers"])
    # Europe leaves summer time on Sunday 25 October 2026: 09:00 local is 07:00Z before, 08:00Z after.
    assert [(i["start"]["dateTime"], i["end"]["dateTime"]) for i in items] == [
        ("2026-10-19T07:00:00.0000000", "2026-10-19T07:15:00.0000000"),
        ("2026-10-21T07:00:00.0000000", "2026-10-21T07:15:00.0000000"),
        ("2026-10-26T08:00:00.0000000", "2026-10-26T08:15:00.0000000"),
        ("2026-10-28T08:00:00.0000000", "2026-10-28T08:15:00.0000000"),
        ("2026-11-02T08:00:00.0000000", "2026-11-02T08:15:00.0000000"),
        ("2026-11-04T08:00:00.0000000", "2026-11-04T08:15:00.0000000"),  # endDate is inclusive
    ]
    for item in items:
        assert set(item) == MINIMAL_KEYS  # no subject, body or link: fetch the master for those
        assert item["type"] == "occurrence" and item["seriesMasterId"] == master["id"]
        assert item["start"]["timeZone"] == "UTC" and "/" not in item["id"]
    assert master["id"] not in {i["id"] for i in items}  # masters are not in calendarView

    local = client.get(
        delta_url(jane), headers={**jane["headers"], "Prefer": 'outlook.timezone="W. Europe Standard Time"'}
    ).json["value"]
    assert {i["start"]["dateTime"][11:] for i in local} == {"09:00:00.0000000"}
    assert {i["start"]["timeZone"] for i in local} == {"W. Europe Standard Time"}

    # Occurrence ids are stable across syncs.
    assert [i["id"] for i in sync(client, delta_url(jane), jane["headers"])[0]] == [i["id"] for i in items]

    fetched = client.get(f"/v1.0/me/events/{master['id']}", headers=jane["headers"]).json
    assert fetched["type"] == "seriesMaster" and fetched["subject"] == "Standup"
    assert fetched["recurrence"] == {
        "pattern": {
            "type": "weekly",
            "interval": 1,
            "month": 0,
            "dayOfMonth": 0,
            "daysOfWeek": ["monday", "wednesday"],
            "firstDayOfWeek": "monday",
            "index": "first",
        },
        "range": {
            "type": "endDate",
            "startDate": "2026-10-19",
            "endDate": "2026-11-04",
            "recurrenceTimeZone": "W. Europe Standard Time",
            "numberOfOccurrences": 0,
        },
    }
    assert fetched["originalStartTimeZone"] == "W. Europe Standard Time"
    assert fetched["onlineMeeting"] == {"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting"}
    assert fetched["isOnlineMeeting"] is True and fetched["onlineMeetingProvider"] == "teamsForBusiness"
    assert fetched["onlineMeetingUrl"] is None
    assert fetched["body"]["contentType"] == "html" and "<body>" in fetched["body"]["content"]
    assert fetched["bodyPreview"] == "Join: https://teams.microsoft.com/l/meetup-join/19%3ameeting"

    occurrence = client.get(f"/v1.0/me/events/{items[2]['id']}", headers=jane["headers"]).json
    assert occurrence["type"] == "occurrence" and occurrence["subject"] == "Standup"
    assert occurrence["seriesMasterId"] == master["id"] and occurrence["recurrence"] is None
    assert occurrence["start"] == {"dateTime": "2026-10-26T08:00:00.0000000", "timeZone": "UTC"}
    assert occurrence["onlineMeeting"] == fetched["onlineMeeting"]
    assert occurrence["iCalUId"] != fetched["iCalUId"]


def test_moved_occurrence_comes_back_as_an_exception(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    master = emu.add_event(
        jane["id"],
        jane["calendar_id"],
        subject="Standup",
        start="2026-10-19T09:00:00",
        end="2026-10-19T09:15:00",
        time_zone="Europe/Berlin",  # IANA in, Windows name out
        recurrence=WEEKLY_MON_WED,
    )
    items, delta_link, _ = sync(client, delta_url(jane), jane["headers"])
    target, other = items[2]["id"], items[3]["id"]

    moved = client.patch(
        f"/_control/events/{target}", json={"start": "2026-10-27T14:00:00", "subject": "Moved standup"}
    )
    assert moved.status_code == 200, moved.get_data(as_text=True)
    assert moved.json["type"] == "exception" and moved.json["id"] == target
    assert moved.json["original_start"] == "2026-10-26T09:00:00+01:00"
    assert client.post(f"/_control/events/{other}/cancel").json["is_cancelled"] is True

    changes = by_id(sync(client, delta_link, jane["headers"])[0])
    assert set(changes) == {target, other}
    assert set(changes[target]) == MINIMAL_KEYS and changes[target]["type"] == "exception"
    assert changes[target]["start"]["dateTime"] == "2026-10-27T13:00:00.0000000"
    assert changes[target]["end"]["dateTime"] == "2026-10-27T13:15:00.0000000"
    assert changes[other]["@removed"] == {"reason": "deleted"}

    exception = client.get(f"/v1.0/me/events/{target}", headers=jane["headers"]).json
    assert exception["type"] == "exception" and exception["subject"] == "Moved standup"
    assert (
        exception["seriesMasterId"] == master["id"] and exception["originalStart"] == "2026-10-26T08:00:00Z"
    )
    assert exception["originalStartTimeZone"] == "W. Europe Standard Time"
    cancelled = client.get(f"/v1.0/me/events/{other}", headers=jane["headers"]).json
    assert cancelled["isCancelled"] is True and cancelled["type"] == "occurrence"
    # The calendar-scoped route finds the same items.
    scoped = client.get(f"/v1.0/me/calendars/{jane['calendar_id']}/events/{target}", headers=jane["headers"])
    assert scoped.status_code == 200 and scoped.json["id"] == target


def test_series_edit_updates_every_occurrence_and_recurrence_edit_removes_some(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    master = emu.add_event(
        jane["id"],
        jane["calendar_id"],
        subject="Standup",
        start="2026-10-19T09:00:00",
        end="2026-10-19T09:15:00",
        time_zone="W. Europe Standard Time",
        recurrence=WEEKLY_MON_WED,
    )
    items, delta_link, _ = sync(client, delta_url(jane), jane["headers"])
    emu.update_event(master["id"], online_meeting_url="https://teams.microsoft.com/l/meetup-join/new")
    changes, delta_link, _ = sync(client, delta_link, jane["headers"])
    assert [c["id"] for c in changes] == [i["id"] for i in items]
    assert all(set(c) == MINIMAL_KEYS for c in changes)

    mondays_only = {**WEEKLY_MON_WED, "pattern": {**WEEKLY_MON_WED["pattern"], "daysOfWeek": ["monday"]}}
    emu.update_event(master["id"], recurrence=mondays_only)
    changes = by_id(sync(client, delta_link, jane["headers"])[0])
    wednesdays = {
        i["id"] for i in items if datetime.fromisoformat(i["start"]["dateTime"][:19]).weekday() == 2
    }
    assert {i for i, c in changes.items() if "@removed" in c} == wednesdays
    assert len(wednesdays) == 3 and len(changes) == 6


def occurrence_dates(
    emu: GraphEmulator, account: dict[str, Any], recurrence: dict[str, Any], start: str
) -> list[str]:
    master = emu.add_event(
        account["id"],
        account["calendar_id"],
        subject="Series",
        start=f"{start}T10:00:00",
        end=f"{start}T11:00:00",
        time_zone="Eastern Standard Time",
        recurrence=recurrence,
    )
    found = emu.occurrences(master["id"], "2020-01-01T00:00:00Z", "2031-01-01T00:00:00Z")
    assert {o["start"][11:19] for o in found} == {"10:00:00"}  # 10:00 New York time, EST or EDT
    return [o["start"][:10] for o in found]


@pytest.mark.parametrize(
    ("pattern", "range_", "start", "expected"),
    [
        (  # last Friday of every month, six times (hand-checked on a 2026 calendar)
            {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"},
            {"type": "numbered", "numberOfOccurrences": 6},
            "2026-01-01",
            ["2026-01-30", "2026-02-27", "2026-03-27", "2026-04-24", "2026-05-29", "2026-06-26"],
        ),
        (  # first Monday of September (US Labor Day), until the end of 2028
            {"type": "relativeYearly", "interval": 1, "month": 9, "daysOfWeek": ["monday"], "index": "first"},
            {"type": "endDate", "endDate": "2028-12-31"},
            "2026-01-05",
            ["2026-09-07", "2027-09-06", "2028-09-04"],
        ),
        (  # 15 March every other year
            {"type": "absoluteYearly", "interval": 2, "month": 3, "dayOfMonth": 15},
            {"type": "endDate", "endDate": "2030-03-15"},
            "2026-03-15",
            ["2026-03-15", "2028-03-15", "2030-03-15"],
        ),
        (  # day 31: shorter months get their last day, as in Outlook
            {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
            {"type": "numbered", "numberOfOccurrences": 4},
            "2026-01-31",
            ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"],
        ),
        (  # Tue/Thu every other week, weeks starting Monday; the start (a Wednesday) is not one
            {
                "type": "weekly",
                "interval": 2,
                "daysOfWeek": ["tuesday", "thursday"],
                "firstDayOfWeek": "monday",
            },
            {"type": "numbered", "numberOfOccurrences": 5},
            "2026-03-04",
            ["2026-03-05", "2026-03-17", "2026-03-19", "2026-03-31", "2026-04-02"],
        ),
        (  # every third day across the US DST change (8 March 2026)
            {"type": "daily", "interval": 3},
            {"type": "numbered", "numberOfOccurrences": 4},
            "2026-03-03",
            ["2026-03-03", "2026-03-06", "2026-03-09", "2026-03-12"],
        ),
        (  # second weekday of the month: several days with an index pick the n-th matching day
            {
                "type": "relativeMonthly",
                "interval": 1,
                "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "index": "second",
            },
            {"type": "numbered", "numberOfOccurrences": 3},
            "2026-08-01",
            ["2026-08-04", "2026-09-02", "2026-10-02"],
        ),
    ],
)
def test_recurrence_patterns_expand_to_hand_checked_dates(
    emu: GraphEmulator,
    jane: dict[str, Any],
    pattern: dict[str, Any],
    range_: dict[str, Any],
    start: str,
    expected: list[str],
) -> None:
    assert occurrence_dates(emu, jane, {"pattern": pattern, "range": range_}, start) == expected


def test_expired_and_unknown_tokens_are_410_and_resync_required_once(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    for day in range(1, 4):
        emu.add_event(
            jane["id"],
            jane["calendar_id"],
            start=f"2026-12-0{day}T09:00:00Z",
            end=f"2026-12-0{day}T10:00:00Z",
        )
    headers = {**jane["headers"], "Prefer": "odata.maxpagesize=2"}
    first = client.get(delta_url(jane), headers=headers).json
    next_link = first["@odata.nextLink"]
    _, delta_link, _ = sync(client, delta_url(jane), jane["headers"])

    answer = client.post(f"/_control/accounts/{jane['id']}/delta/expire")
    assert answer.status_code == 200 and answer.json["expired"] >= 2
    for link in (next_link, delta_link, delta_url(jane, "$deltatoken=never-issued")):
        gone = client.get(link, headers=jane["headers"])
        assert gone.status_code == 410, link
        assert gone.json["error"]["code"] == "syncStateNotFound"
        assert gone.json["error"]["message"] == "The sync state generation is not found."

    _, delta_link, _ = sync(client, delta_url(jane), jane["headers"])  # a full sync recovers
    assert client.post("/_control/accounts/jane@contoso.example/delta/resync-required").status_code == 200
    resync = client.get(delta_link, headers=jane["headers"])
    assert resync.status_code == 410 and resync.json["error"]["code"] == "resyncRequired"
    assert client.get(delta_link, headers=jane["headers"]).status_code == 200  # only once


def test_delta_tokens_age_out_on_the_emulator_clock() -> None:
    emu = GraphEmulator(delta_token_max_age_seconds=3600)
    emu.add_app(CLIENT_ID, SECRET)
    client = Client(emu)
    account = add_account(emu)
    account["calendar_id"] = account["calendars"][0]["id"]
    _, delta_link, _ = sync(client, delta_url(account), auth(access_token(client, account)))
    emu.advance_clock(3601)
    gone = client.get(delta_link, headers=auth(access_token(client, account)))
    assert gone.status_code == 410 and gone.json["error"]["code"] == "syncStateNotFound"


def test_the_window_is_fixed_by_the_first_call(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    window = "startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-08T00:00:00Z"
    _, delta_link, _ = sync(client, delta_url(jane, window), jane["headers"])
    inside = emu.add_event(
        jane["id"], jane["calendar_id"], start="2026-12-07T23:30:00Z", end="2026-12-08T00:30:00Z"
    )
    emu.add_event(jane["id"], jane["calendar_id"], start="2026-12-20T09:00:00Z", end="2026-12-20T10:00:00Z")
    wider = delta_link + "&startDateTime=2026-01-01T00:00:00Z&endDateTime=2027-12-31T00:00:00Z"
    items, _, _ = sync(client, wider, jane["headers"])
    assert [i["id"] for i in items] == [inside["id"]]  # overlaps the window's end; the other is outside


def test_prefer_timezone_converts_and_the_default_is_utc(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    event = emu.add_event(
        jane["id"],
        jane["calendar_id"],
        subject="Pacific",
        start="2026-12-01T09:00:00",
        end="2026-12-01T09:30:00",
        time_zone="Pacific Standard Time",
    )
    path = f"/v1.0/me/events/{event['id']}"
    plain = client.get(path, headers=jane["headers"]).json
    assert plain["start"] == {"dateTime": "2026-12-01T17:00:00.0000000", "timeZone": "UTC"}
    assert plain["originalStartTimeZone"] == "Pacific Standard Time"
    assert plain["originalEndTimeZone"] == "Pacific Standard Time"
    for zone, expected in [
        ("Pacific Standard Time", "2026-12-01T09:00:00.0000000"),
        ("Europe/Berlin", "2026-12-01T18:00:00.0000000"),
        ("Tokyo Standard Time", "2026-12-02T02:00:00.0000000"),
    ]:
        answer = client.get(path, headers={**jane["headers"], "Prefer": f'outlook.timezone="{zone}"'})
        assert answer.json["start"] == {"dateTime": expected, "timeZone": zone}
        assert answer.headers["Preference-Applied"] == f'outlook.timezone="{zone}"'
    both = client.get(
        delta_url(jane),
        headers={
            **jane["headers"],
            "Prefer": 'odata.maxpagesize=5, outlook.timezone="Eastern Standard Time"',
        },
    )
    assert both.json["value"][0]["end"] == {
        "dateTime": "2026-12-01T12:30:00.0000000",
        "timeZone": "Eastern Standard Time",
    }
    bad = client.get(path, headers={**jane["headers"], "Prefer": "outlook.timezone='GMT+6:30'"})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "TimeZoneNotSupportedException"

    original = GraphEmulator(default_response_timezone="original")
    original.add_app(CLIENT_ID, SECRET)
    other = Client(original)
    account = add_account(original)
    made = original.add_event(
        account["id"],
        account["calendars"][0]["id"],
        start="2026-12-01T09:00:00-08:00",
        end="2026-12-01T10:00:00-08:00",
        time_zone="America/Los_Angeles",
    )
    shown = other.get(f"/v1.0/me/events/{made['id']}", headers=auth(access_token(other, account))).json
    assert shown["start"] == {"dateTime": "2026-12-01T09:00:00.0000000", "timeZone": "Pacific Standard Time"}


def test_all_day_events_are_midnight_to_midnight(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    event = emu.add_event(
        jane["id"],
        jane["calendar_id"],
        subject="Offsite",
        start="2026-12-03",
        end="2026-12-05",
        time_zone="Tokyo Standard Time",
        is_all_day=True,
    )
    for prefer in ({}, {"Prefer": 'outlook.timezone="Pacific Standard Time"'}):
        shown = client.get(f"/v1.0/me/events/{event['id']}", headers={**jane["headers"], **prefer}).json
        assert shown["isAllDay"] is True and shown["showAs"] == "free"
        assert shown["start"]["dateTime"] == "2026-12-03T00:00:00.0000000"
        assert shown["end"]["dateTime"] == "2026-12-05T00:00:00.0000000"  # exclusive
    with pytest.raises(ValueError, match="midnight"):
        emu.add_event(
            jane["id"], jane["calendar_id"], start="2026-12-03T10:00:00", end="2026-12-04", is_all_day=True
        )


def test_throttling_and_unavailability_faults_apply_to_delta(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    emu.add_event(jane["id"], jane["calendar_id"], start="2026-12-01T09:00:00Z", end="2026-12-01T10:00:00Z")
    emu.add_fault(path="/calendarView/delta$", status=429, retry_after=5)
    throttled = client.get(delta_url(jane), headers=jane["headers"])
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "5"
    assert throttled.json["error"]["code"] == "TooManyRequests"
    _, delta_link, _ = sync(client, delta_url(jane), jane["headers"])
    emu.add_fault(path="/calendarView/delta$", status=503, retry_after=2, account=jane["id"])
    unavailable = client.get(delta_link, headers=jane["headers"])
    assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "2"
    assert client.get(delta_link, headers=jane["headers"]).status_code == 200  # the token survived


def test_default_calendar_paths_scopes_and_errors(
    emu: GraphEmulator, client: Client, jane: dict[str, Any]
) -> None:
    event = emu.add_event(
        jane["id"], jane["calendar_id"], start="2026-12-01T09:00:00Z", end="2026-12-01T10:00:00Z"
    )
    for path in ("/v1.0/me/calendarView/delta", "/v1.0/me/calendarview/delta"):
        answer = client.get(f"{path}?{WINDOW}", headers=jane["headers"])
        assert answer.status_code == 200 and [i["id"] for i in answer.json["value"]] == [event["id"]]
        assert answer.json["@odata.deltaLink"].startswith(f"http://localhost{path}?$deltatoken=")
    no_window = client.get("/v1.0/me/calendarView/delta", headers=jane["headers"])
    assert no_window.status_code == 400 and no_window.json["error"]["code"] == "ErrorInvalidParameter"
    unknown = client.get(
        f"/v1.0/me/calendars/AAMkAGI2bm9zdWNoAAA=/calendarView/delta?{WINDOW}", headers=jane["headers"]
    )
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "ErrorItemNotFound"
    missing = client.get("/v1.0/me/events/AAMkAGI2bm9zdWNoAAA=", headers=jane["headers"])
    assert missing.status_code == 404 and missing.json["error"]["code"] == "ErrorItemNotFound"

    bob = add_account(emu, "bob@contoso.example", scopes="offline_access User.Read")
    bob_token = access_token_for(client, bob, "offline_access User.Read")
    for path in (f"/v1.0/me/calendarView/delta?{WINDOW}", f"/v1.0/me/events/{event['id']}"):
        denied = client.get(path, headers=auth(bob_token))
        assert denied.status_code == 403 and denied.json["error"]["code"] == "ErrorAccessDenied"
    # Another mailbox's event looks exactly like a missing one.
    other = client.get(
        f"/v1.0/me/events/{event['id']}",
        headers=auth(access_token(client, add_account(emu, "eve@contoso.example"))),
    )
    assert other.status_code == 404


def test_instances_lists_the_series_in_full(emu: GraphEmulator, client: Client, jane: dict[str, Any]) -> None:
    master = emu.add_event(
        jane["id"],
        jane["calendar_id"],
        subject="Standup",
        start="2026-10-19T09:00:00",
        end="2026-10-19T09:15:00",
        time_zone="W. Europe Standard Time",
        recurrence=WEEKLY_MON_WED,
    )
    window = "startDateTime=2026-10-20T00:00:00Z&endDateTime=2026-11-01T00:00:00Z"
    path = f"/v1.0/me/events/{master['id']}/instances?{window}"
    answer = client.get(path, headers={**jane["headers"], "Prefer": "odata.maxpagesize=2"})
    assert answer.status_code == 200
    first = answer.json["value"]
    assert [i["start"]["dateTime"] for i in first] == [
        "2026-10-21T07:00:00.0000000",
        "2026-10-26T08:00:00.0000000",
    ]
    assert all(i["subject"] == "Standup" and i["type"] == "occurrence" for i in first)
    rest = client.get(
        answer.json["@odata.nextLink"], headers={**jane["headers"], "Prefer": "odata.maxpagesize=2"}
    )
    assert [i["start"]["dateTime"][:10] for i in rest.json["value"]] == ["2026-10-28"]
    assert "@odata.nextLink" not in rest.json


def test_control_api_for_events_over_http(client: Client, jane: dict[str, Any]) -> None:
    calendar_id = jane["calendar_id"]
    created = client.post(
        f"/_control/accounts/jane@contoso.example/calendars/{calendar_id}/events",
        json={
            "id": "AAMkAGI2fixed-event_id=",
            "subject": "Fixed",
            "start": "2026-12-01T09:00:00",
            "end": "2026-12-01T10:00:00",
            "time_zone": "India Standard Time",
            "location": "Room 7",
            "organizer": {"name": "Boss", "address": "boss@contoso.example"},
        },
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    view = created.json
    assert view["id"] == "AAMkAGI2fixed-event_id=" and view["calendar_id"] == calendar_id
    assert view["start"] == "2026-12-01T09:00:00+05:30" and view["time_zone"] == "India Standard Time"
    assert view["type"] == "singleInstance" and view["iana_time_zone"] == "Asia/Kolkata"
    again = client.post(
        f"/_control/accounts/{jane['id']}/calendars/{calendar_id}/events",
        json={
            "id": "AAMkAGI2fixed-event_id=",
            "start": "2026-12-01T09:00:00Z",
            "end": "2026-12-01T10:00:00Z",
        },
    )
    assert again.status_code == 409
    for bad in (
        {"start": "2026-12-01T09:00:00Z"},
        {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T08:00:00Z"},
        {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T10:00:00Z", "time_zone": "Mars Standard Time"},
        {
            "start": "2026-12-01T09:00:00Z",
            "end": "2026-12-01T10:00:00Z",
            "recurrence": {"pattern": {"type": "hourly"}, "range": {}},
        },
        {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T10:00:00Z", "color": "red"},
    ):
        assert (
            client.post(
                f"/_control/accounts/{jane['id']}/calendars/{calendar_id}/events", json=bad
            ).status_code
            == 400
        )
    fetched = client.get(f"/v1.0/me/events/{view['id']}", headers=jane["headers"]).json
    assert (
        fetched["isOrganizer"] is False
        and fetched["organizer"]["emailAddress"]["address"] == "boss@contoso.example"
    )
    assert (
        fetched["location"]["displayName"] == "Room 7" and fetched["locations"][0]["displayName"] == "Room 7"
    )
    assert fetched["onlineMeeting"] is None and fetched["isOnlineMeeting"] is False

    listed = client.get(f"/_control/accounts/{jane['id']}/events").json["value"]
    assert [e["id"] for e in listed] == [view["id"]]
    patched = client.patch(f"/_control/events/{view['id']}", json={"time_zone": "UTC"})
    assert patched.json["start"] == "2026-12-01T09:00:00+00:00"  # wall time kept, zone changed
    assert patched.json["change_key"] != view["change_key"]
    assert client.patch(f"/_control/events/{view['id']}", json={"colour": "x"}).status_code == 400
    assert client.delete(f"/_control/events/{view['id']}").status_code == 204
    assert client.delete(f"/_control/events/{view['id']}").status_code == 404
    assert client.get(f"/_control/accounts/{jane['id']}/events").json["value"] == []


def test_every_control_change_calls_the_hook() -> None:
    calls: list[tuple[str, str, list[str], str]] = []

    class Recording(GraphEmulator):
        def _on_change(self, account: str, calendar_id: str, event_ids: list[str], change_type: str) -> None:
            calls.append((account, calendar_id, event_ids, change_type))

    emu = Recording()
    emu.add_app(CLIENT_ID, SECRET)
    account = add_account(emu)
    calendar_id = account["calendars"][0]["id"]
    master = emu.add_event(
        account["id"],
        calendar_id,
        start="2026-10-19T09:00:00",
        end="2026-10-19T09:15:00",
        recurrence=WEEKLY_MON_WED,
    )
    occurrence = emu.occurrences(master["id"], "2026-10-20T00:00:00Z", "2026-10-22T00:00:00Z")[0]["id"]
    emu.update_event(occurrence, subject="Just this one")
    emu.cancel_event(occurrence)
    emu.delete_event(master["id"])
    assert [(ids, kind) for _, _, ids, kind in calls] == [
        ([master["id"]], "created"),
        ([occurrence], "updated"),
        ([occurrence], "updated"),
        ([master["id"], occurrence], "deleted"),
    ]
    assert {(acc, cal) for acc, cal, _, _ in calls} == {(account["id"], calendar_id)}


def test_windows_zone_table_resolves() -> None:
    from zoneinfo import ZoneInfo

    from local.emulators.windows_zones import IANA_TO_WINDOWS, WINDOWS_TO_IANA, resolve

    assert len(WINDOWS_TO_IANA) >= 40
    for windows, iana in WINDOWS_TO_IANA.items():
        ZoneInfo(iana)
        assert resolve(windows) == (iana, windows)
    for iana, windows in IANA_TO_WINDOWS.items():
        ZoneInfo(iana)
        assert windows in WINDOWS_TO_IANA
    assert resolve("GMT Standard Time") == ("Europe/London", "GMT Standard Time")
    assert resolve("Europe/Amsterdam") == ("Europe/Amsterdam", "W. Europe Standard Time")
    assert resolve("pacific standard time") == ("America/Los_Angeles", "Pacific Standard Time")
    assert resolve("America/Argentina/Cordoba") == ("America/Argentina/Cordoba", "America/Argentina/Cordoba")
    for bad in ("Mars Standard Time", "", "../etc/passwd", "America"):
        with pytest.raises(ValueError):
            resolve(bad)


def test_a_rejected_patch_changes_nothing(emu: GraphEmulator, client: Client, jane: dict[str, Any]) -> None:
    master = emu.add_event(
        jane["id"],
        jane["calendar_id"],
        subject="Standup",
        start="2026-10-19T09:00:00",
        end="2026-10-19T09:15:00",
        time_zone="W. Europe Standard Time",
        recurrence=WEEKLY_MON_WED,
    )
    _, delta_link, _ = sync(client, delta_url(jane), jane["headers"])
    before = emu.event(master["id"])
    bad = client.patch(
        f"/_control/events/{master['id']}",
        json={"subject": "Changed", "time_zone": "Tokyo Standard Time", "start": "not a time"},
    )
    assert bad.status_code == 400
    assert emu.event(master["id"]) == before
    occurrence = emu.occurrences(master["id"], "2026-10-20T00:00:00Z", "2026-10-22T00:00:00Z")[0]["id"]
    rejected = client.patch(f"/_control/events/{occurrence}", json={"end": "2026-10-21T08:00:00"})
    assert rejected.status_code == 400  # ends before it starts
    assert [e["id"] for e in emu.events(jane["id"])] == [master["id"]]  # no stray exception stored
    assert sync(client, delta_link, jane["headers"])[0] == []


# --------------------------------------------------------------------------------------------------
# Change notifications and lifecycle notifications
# --------------------------------------------------------------------------------------------------

FAST_RETRIES = (0.05, 0.1)  # three attempts at most, in a fraction of a second


class Sink:
    """A webhook that records every notification POST.

    It echoes validation tokens (so subscriptions can be created against it); any other POST answers
    from `plans[path]` (consumed one per request: a status, or (seconds to sleep, status)), then from
    `always[path]`, then 202.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.posts: list[dict[str, Any]] = []
        self.plans: dict[str, list[int | tuple[float, int]]] = {}
        self.always: dict[str, int] = {}

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        token = request.args.get("validationToken")
        if token is not None:
            return Response(token, content_type="text/plain")(environ, start_response)
        body = request.get_data()
        with self.lock:
            self.posts.append(
                {
                    "path": request.path,
                    "content_type": request.headers.get("Content-Type"),
                    "body": body,
                    "json": json.loads(body),
                }
            )
            plan = self.plans.get(request.path)
            step = plan.pop(0) if plan else self.always.get(request.path, 202)
        if isinstance(step, tuple):
            time.sleep(step[0])
            step = step[1]
        return Response(status=step)(environ, start_response)

    def to(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [post for post in self.posts if post["path"] == path]

    def items(self, path: str) -> list[dict[str, Any]]:
        return [item for post in self.to(path) for item in post["json"]["value"]]

    def clear(self) -> None:
        with self.lock:
            self.posts.clear()


@pytest.fixture
def sink() -> Iterator[tuple[Sink, str]]:
    app = Sink()
    with serve(app, name="sink") as server:
        yield app, server.url


def subscribe(
    client: Client, account: dict[str, Any], url: str, resource: str = "/me/events", **extra: Any
) -> dict[str, Any]:
    """Create a subscription through the real validation handshake (the sink echoes the token)."""
    body = subscription_body(url, resource=resource, **extra)
    answer = client.post("/v1.0/subscriptions", headers=auth(access_token(client, account)), json=body)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer.json


def meeting(
    emu: GraphEmulator, account: dict[str, Any], calendar_id: str | None = None, hour: int = 9
) -> dict[str, Any]:
    return emu.add_event(
        account["id"],
        calendar_id or account["calendars"][0]["id"],
        subject="Sync",
        start=f"2026-12-01T{hour:02d}:00:00Z",
        end=f"2026-12-01T{hour:02d}:30:00Z",
    )


def settle(emu: GraphEmulator, hook: Sink) -> None:
    """Wait for deliveries in flight, then forget them (sink and log)."""
    assert emu.flush_notifications(10)
    hook.clear()
    emu.clear_notifications()


def sub_state(emu: GraphEmulator, subscription_id: str) -> dict[str, Any]:
    return next(s for s in emu.subscriptions() if s["id"] == subscription_id)


def test_a_moved_event_sends_one_graph_shaped_notification(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    sub = subscribe(client, account, f"{base}/notify")
    event = meeting(emu, account)
    settle(emu, hook)

    moved = emu.update_event(event["id"], start="2026-12-01T11:00:00Z")
    assert emu.flush_notifications(10)
    (post,) = hook.to("/notify")
    assert post["content_type"] == "application/json"
    (item,) = post["json"]["value"]
    resource = f"Users/{account['id']}/Events/{event['id']}"
    assert item == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": item["subscriptionExpirationDateTime"],
        "changeType": "updated",
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": resource,
            "@odata.etag": f'W/"{moved["change_key"]}"',
            "id": event["id"],
        },
        "clientState": "opaque-state",
        "tenantId": TENANT_ID,
    }
    # The same instant as the subscription's expiry, in the offset form notifications use.
    expiry = item["subscriptionExpirationDateTime"]
    assert expiry.endswith("+00:00")
    assert datetime.fromisoformat(expiry) == datetime.fromisoformat(sub["expirationDateTime"])
    (attempt,) = emu.notifications()
    assert attempt == {
        **attempt,
        "kind": "change",
        "url": f"{base}/notify",
        "subscription_id": sub["id"],
        "subscription_ids": [sub["id"]],
        "items": 1,
        "attempt": 1,
        "copy": 1,
        "ok": True,
        "status": 202,
        "error": None,
        "will_retry": False,
    }
    assert attempt["duration_seconds"] < 3


def test_created_cancelled_deleted_and_series_change_types(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    subscribe(client, account, f"{base}/all")
    subscribe(client, account, f"{base}/created-deleted", changeType="created,deleted")
    calendar_id = account["calendars"][0]["id"]

    def step(action: Any) -> list[tuple[str, str]]:
        action()
        assert emu.flush_notifications(10)
        seen = [(i["changeType"], i["resourceData"]["id"]) for i in hook.items("/all")]
        assert [(i["changeType"], i["resourceData"]["id"]) for i in hook.items("/created-deleted")] == [
            pair for pair in seen if pair[0] != "updated"
        ]
        hook.clear()
        return seen

    single = meeting(emu, account)
    settle(emu, hook)
    assert step(lambda: emu.cancel_event(single["id"])) == [("updated", single["id"])]  # still exists
    assert step(lambda: emu.delete_event(single["id"])) == [("deleted", single["id"])]

    created: dict[str, Any] = {}

    def add_series() -> None:
        created.update(
            emu.add_event(
                account["id"],
                calendar_id,
                start="2026-10-19T09:00:00",
                end="2026-10-19T09:15:00",
                recurrence=WEEKLY_MON_WED,
            )
        )

    assert step(add_series) == [("created", created["id"])]
    master = created["id"]
    occurrence = emu.occurrences(master, "2026-10-20T00:00:00Z", "2026-10-22T00:00:00Z")[0]["id"]
    # One occurrence edited: that occurrence (now an exception) is notified.
    assert step(lambda: emu.update_event(occurrence, subject="Just this one")) == [("updated", occurrence)]
    # A series edit that drops the exception, and the series' deletion: the master only.
    assert step(lambda: emu.update_event(master, start="2026-10-19T10:00:00")) == [("updated", master)]
    assert step(lambda: emu.update_event(occurrence, subject="Again")) == [("updated", occurrence)]
    assert step(lambda: emu.delete_event(master)) == [("deleted", master)]


def test_duplicates_send_the_same_post_several_times(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    subscribe(client, account, f"{base}/notify")
    emu.configure_notifications(notification_duplicates=3)
    event = meeting(emu, account)
    assert emu.flush_notifications(10)
    posts = hook.to("/notify")
    assert len(posts) == 3
    assert posts[0]["body"] == posts[1]["body"] == posts[2]["body"]
    assert [i["resourceData"]["id"] for i in posts[0]["json"]["value"]] == [event["id"]]
    attempts = emu.notifications()
    assert sorted(a["copy"] for a in attempts) == [1, 2, 3]
    assert len({a["delivery_id"] for a in attempts}) == 1 and all(a["ok"] for a in attempts)


def test_batch_window_puts_items_for_one_url_in_one_post(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    first = subscribe(client, account, f"{base}/notify")

    # No window: one POST per control call (separate POSTs may arrive in any order, as with Graph).
    ids = [meeting(emu, account, hour=h)["id"] for h in (8, 9, 10)]
    assert emu.flush_notifications(10)
    assert sorted(
        [i["resourceData"]["id"] for i in p["json"]["value"]] for p in hook.to("/notify")
    ) == sorted([event_id] for event_id in ids)
    settle(emu, hook)

    # A window: three calls inside it share one POST, in order.
    emu.configure_notifications(notification_batch_window_seconds=0.5)
    ids = [meeting(emu, account, hour=h)["id"] for h in (11, 12, 13)]
    assert hook.to("/notify") == []  # the window is still open
    assert emu.flush_notifications(10)
    (post,) = hook.to("/notify")
    assert [i["resourceData"]["id"] for i in post["json"]["value"]] == ids
    assert [i["changeType"] for i in post["json"]["value"]] == ["created"] * 3
    (attempt,) = emu.notifications()
    assert attempt["items"] == 3
    settle(emu, hook)

    # Two subscriptions with the same URL: one POST, one item each.
    default_calendar = account["calendars"][0]["id"]
    second = subscribe(client, account, f"{base}/notify", resource=f"/me/calendars/{default_calendar}/events")
    event = meeting(emu, account, hour=14)
    assert emu.flush_notifications(10)
    (post,) = hook.to("/notify")
    assert sorted(i["subscriptionId"] for i in post["json"]["value"]) == sorted([first["id"], second["id"]])
    assert {i["resourceData"]["id"] for i in post["json"]["value"]} == {event["id"]}
    (attempt,) = emu.notifications()
    assert sorted(attempt["subscription_ids"]) == sorted([first["id"], second["id"]])


def test_a_webhook_slower_than_3_seconds_is_recorded_late_and_retried(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    sub = subscribe(client, account, f"{base}/notify")
    emu.configure_notifications(notification_retry_backoff=FAST_RETRIES)
    hook.plans["/notify"] = [(4.0, 202)]  # the first POST is answered after 4 s, the next at once
    meeting(emu, account)
    assert emu.flush_notifications(15)
    late, retried = emu.notifications()
    assert late["attempt"] == 1 and not late["ok"] and late["status"] is None
    assert late["error"].startswith("timeout") and late["duration_seconds"] >= 2.9
    assert late["will_retry"] and late["max_attempts"] == 3
    assert retried["attempt"] == 2 and retried["ok"] and retried["status"] == 202
    assert retried["delivery_id"] == late["delivery_id"]
    first, second = hook.to("/notify")
    assert first["body"] == second["body"]
    assert sub_state(emu, sub["id"])["consecutive_failures"] == 0  # the success reset the count


def test_consecutive_failures_remove_the_subscription_with_a_lifecycle_notification(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    sub = subscribe(client, account, f"{base}/notify", lifecycleNotificationUrl=f"{base}/lifecycle")
    emu.configure_notifications(
        notification_retry_backoff=FAST_RETRIES,
        notification_max_consecutive_failures=3,
        notification_timeout_seconds=0.3,
    )
    # Two unanswered attempts then a success: the count starts again.
    hook.plans["/notify"] = [(0.6, 202), (0.6, 202), 202]
    meeting(emu, account, hour=8)
    assert emu.flush_notifications(10)
    assert [(a["attempt"], a["status"], a["ok"]) for a in emu.notifications()] == [
        (1, None, False),
        (2, None, False),
        (3, 202, True),
    ]
    assert sub_state(emu, sub["id"])["consecutive_failures"] == 0
    settle(emu, hook)

    # Error answers in time (a throttled webhook's 500s) are retried and never count: Graph keeps
    # retrying an endpoint that answers, and removes nothing for it.
    hook.always["/notify"] = 500
    meeting(emu, account, hour=7)
    assert emu.flush_notifications(10)
    answered = emu.notifications(kind="change")
    assert [(a["status"], a["error"], a["will_retry"]) for a in answered] == [
        (500, "HTTP 500", True),
        (500, "HTTP 500", True),
        (500, "HTTP 500", False),
    ]
    assert sub_state(emu, sub["id"])["consecutive_failures"] == 0 and emu.subscriptions() != []
    assert hook.items("/lifecycle") == []
    settle(emu, hook)
    del hook.always["/notify"]

    hook.plans["/notify"] = [(0.6, 202)] * 3  # no answer in time, three times in a row
    meeting(emu, account, hour=9)
    assert emu.flush_notifications(10)
    changes = emu.notifications(kind="change")
    assert [(a["attempt"], a["ok"], a["will_retry"]) for a in changes] == [
        (1, False, True),
        (2, False, True),
        (3, False, False),
    ]
    assert emu.subscriptions() == []
    (removed,) = hook.items("/lifecycle")
    assert removed == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": removed["subscriptionExpirationDateTime"],
        "tenantId": TENANT_ID,
        "clientState": "opaque-state",
        "lifecycleEvent": "subscriptionRemoved",
    }
    (lifecycle_attempt,) = emu.notifications(kind="lifecycle")
    assert lifecycle_attempt["lifecycle_event"] == "subscriptionRemoved" and lifecycle_attempt["ok"]
    patch = {"expirationDateTime": in_minutes(120)}
    path = f"/v1.0/subscriptions/{sub['id']}"
    assert client.patch(path, headers=auth(access_token(client, account)), json=patch).status_code == 404
    settle(emu, hook)
    meeting(emu, account, hour=10)
    assert emu.flush_notifications(10)
    assert hook.posts == [] and emu.notifications() == []


def test_lifecycle_control_sends_each_event(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    sub = subscribe(client, account, f"{base}/notify", lifecycleNotificationUrl=f"{base}/lifecycle")
    bare = subscribe(client, account, f"{base}/notify")  # no lifecycleNotificationUrl
    path = f"/_control/subscriptions/{sub['id']}/lifecycle"
    token = access_token(client, account)

    # Separate POSTs may arrive in any order (as with Graph): flush after each to keep them in order.
    for event in ("missed", "reauthorizationRequired"):
        answer = client.post(path, json={"event": event})
        assert answer.status_code == 200 and answer.json["sent"] is True
        assert emu.flush_notifications(10)
    assert sub_state(emu, sub["id"])["reauthorization_required"] is True
    renewed = client.patch(
        f"/v1.0/subscriptions/{sub['id']}", headers=auth(token), json={"expirationDateTime": in_minutes(90)}
    )
    assert renewed.status_code == 200
    assert sub_state(emu, sub["id"])["reauthorization_required"] is False  # renewing reauthorizes
    assert client.post(path, json={"event": "subscriptionRemoved"}).status_code == 200
    assert client.get(f"/v1.0/subscriptions/{sub['id']}", headers=auth(token)).status_code == 404
    assert emu.flush_notifications(10)

    items = hook.items("/lifecycle")
    assert [i["lifecycleEvent"] for i in items] == [
        "missed",
        "reauthorizationRequired",
        "subscriptionRemoved",
    ]
    for item in items:
        assert set(item) == {
            "subscriptionId",
            "subscriptionExpirationDateTime",
            "tenantId",
            "clientState",
            "lifecycleEvent",
        }
        assert item["subscriptionId"] == sub["id"] and item["clientState"] == "opaque-state"
        assert item["tenantId"] == TENANT_ID and "changeType" not in item
    # The last one carries the renewed expiry.
    assert datetime.fromisoformat(items[2]["subscriptionExpirationDateTime"]) == datetime.fromisoformat(
        renewed.json["expirationDateTime"]
    )
    assert len(hook.to("/lifecycle")) == 3 and hook.to("/notify") == []

    # Without a lifecycle URL nothing is sent, but the removal still happens.
    bare_path = f"/_control/subscriptions/{bare['id']}/lifecycle"
    answer = client.post(bare_path, json={"event": "subscriptionRemoved"})
    assert answer.status_code == 200 and answer.json["sent"] is False
    assert emu.subscriptions() == []
    assert client.post(bare_path, json={"event": "missed"}).status_code == 404
    assert client.post(path, json={"event": "renewed"}).status_code == 400


def test_notifications_pause_after_an_unanswered_reauthorization_challenge(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    sub = subscribe(client, account, f"{base}/notify", lifecycleNotificationUrl=f"{base}/lifecycle")
    emu.configure_notifications(notification_reauthorization_grace_seconds=60)
    emu.send_lifecycle_notification(sub["id"], "reauthorizationRequired")
    meeting(emu, account, hour=8)  # within the grace: still delivered
    assert emu.flush_notifications(10)
    assert len(hook.items("/notify")) == 1
    settle(emu, hook)

    emu.advance_clock(61)
    meeting(emu, account, hour=9)  # paused: lost
    assert emu.flush_notifications(10)
    assert hook.to("/notify") == []
    state = sub_state(emu, sub["id"])
    assert state["notifications_paused"] and state["lost_notifications"] == 1

    reauthorize = f"/v1.0/subscriptions/{sub['id']}/reauthorize"
    assert client.post(reauthorize, headers=auth(access_token(client, account))).status_code == 204
    event = meeting(emu, account, hour=10)
    assert emu.flush_notifications(10)
    assert [i["resourceData"]["id"] for i in hook.items("/notify")] == [event["id"]]
    assert sub_state(emu, sub["id"])["reauthorization_required"] is False


def test_an_expired_subscription_gets_nothing(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    expired = subscribe(client, account, f"{base}/expired")
    live = subscribe(client, account, f"{base}/live")
    answer = client.post(f"/_control/subscriptions/{expired['id']}/expire")
    assert answer.status_code == 200 and answer.json["expired"] is True
    assert client.post("/_control/subscriptions/nope/expire").status_code == 404

    event = meeting(emu, account)
    assert emu.flush_notifications(10)
    assert hook.to("/expired") == []
    assert [i["resourceData"]["id"] for i in hook.items("/live")] == [event["id"]]
    token = access_token(client, account)
    patch = {"expirationDateTime": in_minutes(120)}
    gone = client.patch(f"/v1.0/subscriptions/{expired['id']}", headers=auth(token), json=patch)
    assert gone.status_code == 404 and gone.json["error"]["code"] == "ResourceNotFound"
    listed = client.get("/v1.0/subscriptions", headers=auth(token)).json["value"]
    assert [s["id"] for s in listed] == [live["id"]]

    # Expiring on the clock works the same way.
    settle(emu, hook)
    emu.advance_clock(61 * 60)
    emu.cancel_event(event["id"])
    assert emu.flush_notifications(10)
    assert hook.posts == [] and emu.notifications() == []


def test_notifications_follow_account_and_calendar(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    jane = add_account(emu, calendars=[{"name": "Calendar", "is_default": True}, {"name": "Work"}])
    bob = add_account(emu, "bob@contoso.example")
    jane_default, jane_work = (c["id"] for c in jane["calendars"])
    subscribe(client, jane, f"{base}/jane-events")  # /me/events: the default calendar only
    subscribe(client, jane, f"{base}/jane-work", resource=f"/me/calendars/{jane_work}/events")
    bob_sub = subscribe(client, bob, f"{base}/bob")

    in_default = meeting(emu, jane, jane_default)
    in_work = meeting(emu, jane, jane_work)
    bobs = meeting(emu, bob)
    assert emu.flush_notifications(10)
    ids = {
        path: [i["resourceData"]["id"] for i in hook.items(path)]
        for path in ("/jane-events", "/jane-work", "/bob")
    }
    assert ids == {"/jane-events": [in_default["id"]], "/jane-work": [in_work["id"]], "/bob": [bobs["id"]]}
    (bob_item,) = hook.items("/bob")
    assert bob_item["subscriptionId"] == bob_sub["id"]
    assert bob_item["resource"] == f"Users/{bob['id']}/Events/{bobs['id']}"
    assert all(i["resource"].startswith(f"Users/{jane['id']}/") for i in hook.items("/jane-events"))


def test_flush_returns_only_when_deliveries_are_done(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    subscribe(client, account, f"{base}/notify")
    emu.configure_notifications(notification_delay_seconds=1.5)  # long enough for a loaded machine
    started = time.monotonic()
    meeting(emu, account)
    # The control call does not wait for delivery (nothing delivered yet, one in flight; a bound on
    # the call's own time would fail on a loaded machine).
    assert hook.to("/notify") == [] and emu.notification_status()["in_flight"] == 1
    assert emu.flush_notifications(10)
    assert time.monotonic() - started >= 1.5
    assert len(hook.to("/notify")) == 1 and emu.notification_status()["in_flight"] == 0

    emu.configure_notifications(notification_delay_seconds=2.0)
    meeting(emu, account, hour=10)
    assert emu.flush_notifications(0.05) is False
    late = client.post("/_control/notifications/flush", json={"timeout": 0.05})
    assert late.status_code == 504 and late.json["flushed"] is False and late.json["in_flight"] == 1
    done = client.post("/_control/notifications/flush", json={"timeout": 10})
    assert done.status_code == 200 and done.json == {**done.json, "flushed": True, "in_flight": 0}
    assert len(hook.to("/notify")) == 2


def test_pause_holds_deliveries_until_resume(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    account = add_account(emu)
    subscribe(client, account, f"{base}/notify")
    assert client.post("/_control/notifications/pause").json == {"paused": True, "in_flight": 0, "queued": 0}
    first, second = meeting(emu, account, hour=8), meeting(emu, account, hour=9)
    flushed = client.post("/_control/notifications/flush", json={"timeout": 10})
    assert flushed.status_code == 200 and flushed.json["queued"] == 2  # held ones are not waited for
    assert hook.posts == [] and emu.notifications() == []
    resumed = client.post("/_control/notifications/resume").json
    assert resumed["released"] == 2 and resumed["paused"] is False
    assert emu.flush_notifications(10)
    assert sorted(i["resourceData"]["id"] for i in hook.items("/notify")) == sorted(
        [first["id"], second["id"]]
    )

    # A reset forgets held deliveries.
    emu.pause_notifications()
    meeting(emu, account, hour=10)
    assert emu.flush_notifications(10) and emu.notification_status()["queued"] == 1
    emu.reset()
    assert emu.notification_status() == {"paused": False, "in_flight": 0, "queued": 0}


def test_notification_knobs_and_log_over_http(
    emu: GraphEmulator, client: Client, sink: tuple[Sink, str]
) -> None:
    hook, base = sink
    defaults = client.get("/_control/notifications/config").json
    assert defaults == {
        "notification_delay_seconds": 0.0,
        "notification_duplicates": 1,
        "notification_batch_window_seconds": 0.0,
        "notification_timeout_seconds": 3.0,
        "notification_retry_backoff": [1.0, 2.0, 4.0],
        "notification_max_consecutive_failures": 10,
        "notification_reauthorization_grace_seconds": 600.0,
    }
    changed = client.post(
        "/_control/notifications/config",
        json={"notification_duplicates": 2, "notification_retry_backoff": [0.05]},
    )
    assert changed.status_code == 200
    assert changed.json == {**defaults, "notification_duplicates": 2, "notification_retry_backoff": [0.05]}
    for bad in (
        {"notification_duplicates": 0},
        {"notification_delay_seconds": -1},
        {"notification_timeout_seconds": 0},
        {"notification_retry_backoff": "1,2"},
        {"notification_retry_backoff": [1, -2]},
        {"notification_batch_window": 1},
        {"notification_duplicates": 3, "notification_max_consecutive_failures": True},
    ):
        assert client.post("/_control/notifications/config", json=bad).status_code == 400, bad
    assert client.get("/_control/notifications/config").json == changed.json  # all or nothing

    account = add_account(emu)
    sub = subscribe(client, account, f"{base}/notify", lifecycleNotificationUrl=f"{base}/lifecycle")
    meeting(emu, account)
    emu.send_lifecycle_notification(sub["id"], "missed")
    assert client.post("/_control/notifications/flush").status_code == 200
    log = client.get("/_control/notifications").json["value"]
    assert sorted((e["kind"], e["copy"]) for e in log) == [
        ("change", 1),
        ("change", 2),
        ("lifecycle", 1),
        ("lifecycle", 2),
    ]
    assert all(e["ok"] and e["subscription_id"] == sub["id"] for e in log)
    assert [e["seq"] for e in log] == sorted(e["seq"] for e in log)
    only = client.get(f"/_control/notifications?kind=lifecycle&subscription_id={sub['id']}").json["value"]
    assert len(only) == 2 and {e["lifecycle_event"] for e in only} == {"missed"}
    assert client.get("/_control/notifications?subscription_id=other").json["value"] == []
    assert client.delete("/_control/notifications").status_code == 204
    assert client.get("/_control/notifications").json["value"] == []
    assert len(hook.to("/notify")) == 2 and len(hook.to("/lifecycle")) == 2

    # Constructor knobs are what reset() goes back to.
    custom = GraphEmulator(notification_duplicates=2, notification_retry_backoff=(0.5,))
    custom.configure_notifications(notification_duplicates=5)
    custom.reset()
    assert custom.notification_config()["notification_duplicates"] == 2
    assert custom.notification_config()["notification_retry_backoff"] == [0.5]
    with pytest.raises(ValueError):
        GraphEmulator(notification_duplicates=0)


# --------------------------------------------------------------------------------------------------
# What official SDKs send: delta() spellings, OpenID discovery, id_token and client_info (issue 16)
# --------------------------------------------------------------------------------------------------

# Kiota-generated Graph SDKs call `delta()`, older SDKs the namespaced `microsoft.graph.delta`.
DELTA_SPELLINGS = ["delta()", "microsoft.graph.delta", "microsoft.graph.delta()", "Delta()"]


@pytest.mark.parametrize("spelling", DELTA_SPELLINGS)
def test_sdk_spellings_of_the_delta_function_are_the_same_delta(
    emu: GraphEmulator, client: Client, jane: dict[str, Any], spelling: str
) -> None:
    created = {
        emu.add_event(
            jane["id"],
            jane["calendar_id"],
            subject=f"Meeting {i}",
            start=datetime(2026, 12, 1, 9, tzinfo=UTC) + timedelta(days=i),
            end=datetime(2026, 12, 1, 10, tzinfo=UTC) + timedelta(days=i),
        )["id"]
        for i in range(5)
    }
    for base in ("/v1.0/me/calendarView", f"/v1.0/me/calendars/{jane['calendar_id']}/calendarView"):
        seen: set[str] = set()
        url: str | None = f"{base}/{spelling}?{WINDOW}"
        headers = {**jane["headers"], "Prefer": "odata.maxpagesize=2"}
        while url:  # its nextLinks and deltaLink work too
            answer = client.get(url, headers=headers)
            assert answer.status_code == 200, answer.get_data(as_text=True)
            seen |= {item["id"] for item in answer.json["value"]}
            url = answer.json.get("@odata.nextLink")
            delta_link = answer.json.get("@odata.deltaLink")
        assert seen == created
        again = client.get(delta_link, headers=jane["headers"])
        assert again.status_code == 200 and again.json["value"] == []


def test_openid_configuration_and_keys(client: Client) -> None:
    for tenant, issuer_tenant in (("common", "{tenantid}"), (TENANT_ID, TENANT_ID)):
        answer = client.get(f"/{tenant}/v2.0/.well-known/openid-configuration")
        assert answer.status_code == 200 and answer.mimetype == "application/json"
        doc = answer.json
        assert doc["issuer"] == f"http://localhost/{issuer_tenant}/v2.0"
        assert doc["authorization_endpoint"] == f"http://localhost/{tenant}/oauth2/v2.0/authorize"
        assert doc["token_endpoint"] == f"http://localhost/{tenant}/oauth2/v2.0/token"
        assert doc["jwks_uri"] == f"http://localhost/{tenant}/discovery/v2.0/keys"
        assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
        assert "openid" in doc["scopes_supported"] and "code" in doc["response_types_supported"]
        keys = client.get(urlsplit(doc["jwks_uri"]).path)
        assert keys.status_code == 200
        [key] = keys.json["keys"]
        assert key["kty"] == "RSA" and key["use"] == "sig" and key["kid"] and key["n"] and key["e"]
        assert "d" not in key  # the public half only
    # Behind TLS the documents name the public https URLs.
    forwarded = client.get(
        "/common/v2.0/.well-known/openid-configuration", headers={"X-Forwarded-Proto": "https"}
    )
    assert forwarded.json["token_endpoint"] == "https://localhost/common/oauth2/v2.0/token"
    bad = client.get("/not a tenant/v2.0/.well-known/openid-configuration")
    assert bad.status_code == 400 and "AADSTS90002" in bad.json["error_description"]


def _verified_claims(client: Client, id_token: str) -> dict[str, Any]:
    import jwt

    jwks = client.get("/common/discovery/v2.0/keys").json
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256"
    [jwk] = [key for key in jwks["keys"] if key["kid"] == header["kid"]]
    return jwt.decode(
        id_token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer=f"http://localhost/{TENANT_ID}/v2.0",
    )


def test_sign_in_asking_for_openid_gets_a_signed_id_token_and_client_info(
    emu: GraphEmulator, client: Client
) -> None:
    account = add_account(emu)
    answer = client.post(
        TOKEN_PATH,
        data={
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "grant_type": "refresh_token",
            "refresh_token": account["refresh_token"],
            "scope": "openid profile email offline_access Calendars.Read",
            "client_info": "1",
        },
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    claims = _verified_claims(client, answer.json["id_token"])
    assert claims["oid"] == account["id"] and claims["tid"] == TENANT_ID and claims["ver"] == "2.0"
    assert claims["preferred_username"] == "jane@contoso.example" and claims["name"] == "Jane Doe"
    assert claims["email"] == "jane@contoso.example"
    assert claims["sub"] and claims["sub"] != account["id"]  # pairwise, per app
    assert claims["exp"] > claims["iat"]
    padded = answer.json["client_info"] + "=" * (-len(answer.json["client_info"]) % 4)
    assert json.loads(base64.urlsafe_b64decode(padded)) == {"uid": account["id"], "utid": TENANT_ID}

    # Without `openid` there is no id_token; without client_info=1 no client_info.
    plain = refresh(client, answer.json["refresh_token"])
    assert plain.status_code == 200
    assert "id_token" not in plain.json and "client_info" not in plain.json


def test_msal_confidential_client_works_against_the_emulator(emu: GraphEmulator) -> None:
    """Microsoft's own MSAL: OpenID discovery, the token request it builds, its id_token parsing."""
    import msal

    account = add_account(emu)
    with serve(emu, name="graph") as server:
        public = server.url.replace("http://", "https://")

        class LoopbackTls(requests.Session):
            # MSAL accepts https authorities only: this session is the TLS terminator in front.
            def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
                url = str(url).replace(public, server.url)
                kwargs["headers"] = {**(kwargs.get("headers") or {}), "X-Forwarded-Proto": "https"}
                return super().request(method, url, *args, **kwargs)

        session = LoopbackTls()
        app = msal.ConfidentialClientApplication(
            CLIENT_ID,
            client_credential=SECRET,
            authority=f"{public}/common",
            http_client=session,
            instance_discovery=False,
        )
        result = app.acquire_token_by_refresh_token(
            account["refresh_token"], scopes=["Calendars.Read", "User.Read"]
        )
        assert "access_token" in result, {k: v for k, v in result.items() if "token" not in k}
        assert result["id_token_claims"]["oid"] == account["id"]
        assert result["id_token_claims"]["iss"] == f"{public}/{TENANT_ID}/v2.0"
        [cached] = app.get_accounts()
        assert cached["home_account_id"] == f"{account['id']}.{TENANT_ID}"  # from client_info
        assert cached["username"] == "jane@contoso.example"
        answer = session.get(
            f"{server.url}/v1.0/me/calendarView/delta()?{WINDOW}",
            headers={"Authorization": f"Bearer {result['access_token']}"},
            timeout=10,
        )
        assert answer.status_code == 200 and "@odata.deltaLink" in answer.json()


def test_control_api_events_take_attendees_rendered_as_graph_attendees(
    client: Client, jane: dict[str, Any]
) -> None:
    url = f"/_control/accounts/{jane['id']}/calendars/{jane['calendar_id']}/events"
    crowd = [f"p{i}@fabrikam.example" for i in range(300)]
    created = client.post(
        url,
        json={
            "start": "2026-12-01T09:00:00Z",
            "end": "2026-12-01T10:00:00Z",
            "attendees": [
                {"address": "boss@contoso.example", "name": "Boss", "response": "accepted"},
                *crowd,
            ],
        },
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    fetched = client.get(f"/v1.0/me/events/{created.json['id']}", headers=jane["headers"]).json
    assert len(fetched["attendees"]) == 301
    assert fetched["attendees"][0] == {
        "type": "required",
        "status": {"response": "accepted", "time": "0001-01-01T00:00:00Z"},
        "emailAddress": {"name": "Boss", "address": "boss@contoso.example"},
    }
    selected = client.get(
        f"/v1.0/me/events/{created.json['id']}?$select=subject,start", headers=jane["headers"]
    ).json
    assert "attendees" not in selected  # $select on an event leaves the list behind
    for bad in (["not-an-address"], [{"address": "x@y.example", "response": "maybe"}], "x@y.example"):
        body = {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T10:00:00Z", "attendees": bad}
        assert client.post(url, json=body).status_code == 400


def _is_jwt(token: str) -> bool:
    """Three base64url parts, the first two JSON (header with alg, claims with aud)."""
    import base64

    parts = token.split(".")
    if len(parts) != 3:
        return False
    header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    return header.get("alg") == "RS256" and claims.get("aud") == "00000003-0000-0000-c000-000000000000"
