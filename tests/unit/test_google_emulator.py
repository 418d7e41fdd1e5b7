"""The Google OAuth + Calendar v3 emulator behaves like the real services (PROTOCOLS.md)."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug.test import Client, TestResponse
from werkzeug.wrappers import Request, Response

from local.emulators.google import SCOPE_CALENDAR_READONLY, SCOPE_EMAIL, GoogleEmulator
from local.servers import RunningServer, serve

CLIENT_ID = "123456789012-abcdef.apps.googleusercontent.com"
SECRET = "GOCSPX-unit-test-secret"
EMAIL = "sam.rivera@gmail.example"
CAL = "/calendar/v3"
REDIRECT = "https://app.example/oauth/callback"


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def emu() -> GoogleEmulator:
    emulator = GoogleEmulator(notification_coalesce_seconds=0.0)
    emulator.add_app(CLIENT_ID, SECRET)
    return emulator


@pytest.fixture
def client(emu: GoogleEmulator) -> Client:
    return Client(emu)


@pytest.fixture
def account(emu: GoogleEmulator) -> dict[str, Any]:
    return emu.add_account(EMAIL, name="Sam Rivera", time_zone="Europe/Berlin", client_id=CLIENT_ID)


def refresh(client: Client, token: str, secret: str = SECRET, client_id: str = CLIENT_ID) -> TestResponse:
    return client.post(
        "/token",
        data={
            "client_id": client_id,
            "client_secret": secret,
            "grant_type": "refresh_token",
            "refresh_token": token,
        },
    )


def bearer(client: Client, account: dict[str, Any]) -> dict[str, str]:
    answer = refresh(client, account["refresh_token"])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return {"Authorization": f"Bearer {answer.json['access_token']}"}


def api_error(answer: TestResponse, status: int, reason: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.get_data(as_text=True)
    error = answer.json["error"]
    assert error["code"] == status
    assert error["errors"][0]["reason"] == reason
    return error


def list_all(
    client: Client, headers: dict[str, str], query: dict[str, str]
) -> tuple[list[dict[str, Any]], str]:
    """Follow nextPageToken to the end; (items, nextSyncToken)."""
    items: list[dict[str, Any]] = []
    params = dict(query)
    for _ in range(50):
        answer = client.get(f"{CAL}/calendars/primary/events", query_string=params, headers=headers)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body = answer.json
        items += body["items"]
        if "nextPageToken" in body:
            assert "nextSyncToken" not in body  # only the last page carries it
            params = {**query, "pageToken": body["nextPageToken"]}
            continue
        return items, body["nextSyncToken"]
    raise AssertionError("paging never ended")


def pkce_pair() -> tuple[str, str]:
    verifier = base64.urlsafe_b64encode(b"v" * 40).decode().rstrip("=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def authorize(client: Client, *, consent: str = "accept", **extra: str) -> TestResponse:
    params = {
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": f"openid email {SCOPE_CALENDAR_READONLY}",
        "state": "st-123",
        **extra,
    }
    page = client.get("/o/oauth2/v2/auth", query_string=params)
    assert page.status_code == 200, page.get_data(as_text=True)
    assert "<button type='submit' name='consent' value='accept'>Allow</button>" in page.get_data(as_text=True)
    return client.post("/o/oauth2/v2/auth", data={**params, "consent": consent})


def redirect_query(answer: TestResponse) -> dict[str, str]:
    assert answer.status_code == 302, answer.get_data(as_text=True)
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


class Receiver:
    """A webhook endpoint that records Google's body-less notification POSTs."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            self.calls.append({"headers": dict(request.headers), "body": request.get_data()})
        return Response(status=200)(environ, start_response)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, RunningServer]]:
    app = Receiver()
    server = serve(app, name="google-webhook")
    yield app, server
    server.shutdown()


# --------------------------------------------------------------------------------------------------
# OAuth: token endpoint
# --------------------------------------------------------------------------------------------------


def test_refresh_gives_an_access_token_and_never_rotates(client: Client, account: dict[str, Any]) -> None:
    first = refresh(client, account["refresh_token"])
    assert first.status_code == 200
    body = first.json
    # no refresh_token; an id_token because the grant includes `openid`, as Google does
    assert set(body) == {"access_token", "expires_in", "scope", "token_type", "id_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599
    assert SCOPE_CALENDAR_READONLY in body["scope"].split()
    second = refresh(client, account["refresh_token"])  # the same refresh token keeps working
    assert second.status_code == 200 and second.json["access_token"] != body["access_token"]


def test_revoked_refresh_token_is_invalid_grant(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    assert emu.revoke(EMAIL) == 1
    answer = refresh(client, account["refresh_token"])
    assert answer.status_code == 400
    assert answer.json == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


def test_client_errors_are_401_invalid_client(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    wrong = refresh(client, account["refresh_token"], secret="nope")
    assert wrong.status_code == 401
    assert wrong.json == {"error": "invalid_client", "error_description": "Unauthorized"}
    unknown = refresh(client, account["refresh_token"], client_id="999-x.apps.googleusercontent.com")
    assert unknown.status_code == 401
    assert unknown.json == {"error": "invalid_client", "error_description": "The OAuth client was not found."}
    emu.expire_app_secret(CLIENT_ID)
    assert refresh(client, account["refresh_token"]).json["error"] == "invalid_client"
    emu.add_app(CLIENT_ID, SECRET)  # re-registering revives it
    assert refresh(client, account["refresh_token"]).status_code == 200
    emu.delete_app(CLIENT_ID)
    deleted = refresh(client, account["refresh_token"])
    assert (
        deleted.status_code == 401 and deleted.json["error_description"] == "The OAuth client was not found."
    )


def test_bad_token_requests(client: Client, account: dict[str, Any]) -> None:
    missing = client.post(
        "/token", data={"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "refresh_token"}
    )
    assert missing.status_code == 400
    assert missing.json == {
        "error": "invalid_request",
        "error_description": "Missing required parameter: refresh_token",
    }
    grant = client.post(
        "/token", data={"client_id": CLIENT_ID, "client_secret": SECRET, "grant_type": "password"}
    )
    assert grant.status_code == 400 and grant.json["error"] == "unsupported_grant_type"
    garbage = refresh(client, "1//0garbage")
    assert garbage.status_code == 400 and garbage.json["error"] == "invalid_grant"


def test_testing_apps_refresh_tokens_die_after_seven_days(emu: GoogleEmulator, client: Client) -> None:
    emu.add_app("777-testing.apps.googleusercontent.com", "sec", testing=True)
    acc = emu.add_account("tester@gmail.example", client_id="777-testing.apps.googleusercontent.com")
    args = {"secret": "sec", "client_id": "777-testing.apps.googleusercontent.com"}
    assert refresh(client, acc["refresh_token"], **args).status_code == 200
    emu.advance_clock(7 * 86400 - 60)  # used daily or not, it lives 7 days from issue
    assert refresh(client, acc["refresh_token"], **args).status_code == 200
    emu.advance_clock(60)
    refused = refresh(client, acc["refresh_token"], **args)
    assert refused.status_code == 400
    assert refused.json == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    # A published app's token is not limited that way.
    published = emu.add_account("published@gmail.example", client_id=CLIENT_ID)
    emu.advance_clock(30 * 86400)
    assert refresh(client, published["refresh_token"]).status_code == 200


def test_tokens_are_as_large_as_real_ones(emu: GoogleEmulator, client: Client) -> None:
    acc = emu.add_account("sizes@gmail.example", client_id=CLIENT_ID)
    assert acc["refresh_token"].startswith("1//") and 90 <= len(acc["refresh_token"]) <= 512
    body = refresh(client, acc["refresh_token"]).json
    assert body["access_token"].startswith("ya29.") and 200 <= len(body["access_token"]) <= 2048


# --------------------------------------------------------------------------------------------------
# OAuth: authorize page and code exchange
# --------------------------------------------------------------------------------------------------


def exchange(client: Client, code: str, verifier: str | None, redirect_uri: str = REDIRECT) -> TestResponse:
    data = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
    }
    if verifier is not None:
        data["code_verifier"] = verifier
    return client.post("/token", data=data)


def test_authorization_code_with_pkce_first_consent_gives_a_refresh_token(
    emu: GoogleEmulator, client: Client
) -> None:
    emu.add_account(EMAIL, client_id=CLIENT_ID, consent=False)
    verifier, challenge = pkce_pair()
    query = redirect_query(
        authorize(client, access_type="offline", code_challenge=challenge, code_challenge_method="S256")
    )
    assert query["state"] == "st-123"
    assert SCOPE_EMAIL in query["scope"].split()  # "email" comes back in its long form
    answer = exchange(client, query["code"], verifier)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["refresh_token"].startswith("1//")
    assert refresh(client, answer.json["refresh_token"]).status_code == 200
    again = exchange(client, query["code"], verifier)  # codes are single-use
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"


def test_bad_or_missing_code_verifier_is_invalid_grant(emu: GoogleEmulator, client: Client) -> None:
    emu.add_account(EMAIL, client_id=CLIENT_ID, consent=False)
    _, challenge = pkce_pair()
    code = redirect_query(authorize(client, code_challenge=challenge, code_challenge_method="S256"))["code"]
    bad = exchange(client, code, "not-the-verifier-" + "x" * 40)
    assert bad.status_code == 400
    assert bad.json == {"error": "invalid_grant", "error_description": "Invalid code verifier."}
    code = redirect_query(authorize(client, code_challenge=challenge, code_challenge_method="S256"))["code"]
    assert exchange(client, code, None).json["error"] == "invalid_grant"
    code = redirect_query(authorize(client, code_challenge="plain-verifier-" + "p" * 40))["code"]
    assert exchange(client, code, "plain-verifier-" + "p" * 40).status_code == 200  # method defaults to plain


def test_repeat_consent_gives_a_refresh_token_only_with_prompt_consent(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    # The account consented when it was added: a plain repeat of the flow returns no refresh token.
    code = redirect_query(authorize(client, access_type="offline", login_hint=EMAIL))["code"]
    plain = exchange(client, code, None)
    assert plain.status_code == 200 and "refresh_token" not in plain.json
    code = redirect_query(authorize(client, access_type="offline", prompt="consent"))["code"]
    assert "refresh_token" in exchange(client, code, None).json
    online = redirect_query(authorize(client, prompt="consent"))["code"]  # access_type online (default)
    assert "refresh_token" not in exchange(client, online, None).json


def test_code_is_bound_to_its_redirect_uri_and_expires(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    code = redirect_query(authorize(client))["code"]
    assert exchange(client, code, None, redirect_uri="https://evil.example/cb").json["error"] == (
        "redirect_uri_mismatch"
    )
    code = redirect_query(authorize(client))["code"]
    emu.advance_clock(11 * 60)
    assert exchange(client, code, None).json["error"] == "invalid_grant"


def test_deny_redirects_with_access_denied_and_state(client: Client, account: dict[str, Any]) -> None:
    query = redirect_query(authorize(client, consent="deny"))
    assert query == {"error": "access_denied", "state": "st-123"}


def test_authorize_errors_are_pages_not_redirects(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    base = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT, "response_type": "code"}
    unknown = client.get("/o/oauth2/v2/auth", query_string={**base, "client_id": "nope", "scope": "openid"})
    assert unknown.status_code == 401 and "invalid_client" in unknown.get_data(as_text=True)
    no_scope = client.get("/o/oauth2/v2/auth", query_string=base)
    assert no_scope.status_code == 400 and "scope" in no_scope.get_data(as_text=True)
    emu.add_app(CLIENT_ID, SECRET, redirect_uris=["https://registered.example/cb"])
    mismatch = client.get("/o/oauth2/v2/auth", query_string={**base, "scope": "openid"})
    assert mismatch.status_code == 400 and "redirect_uri_mismatch" in mismatch.get_data(as_text=True)


# --------------------------------------------------------------------------------------------------
# Userinfo, auth errors, scopes
# --------------------------------------------------------------------------------------------------


def test_userinfo(client: Client, account: dict[str, Any]) -> None:
    answer = client.get("/v1/userinfo", headers=bearer(client, account))
    assert answer.status_code == 200
    assert answer.json == {
        "sub": account["id"],
        "name": "Sam Rivera",
        "given_name": "Sam",
        "family_name": "Rivera",
        "picture": answer.json["picture"],
        "email": EMAIL,
        "email_verified": True,
    }


def test_bad_or_expired_access_token_is_401_auth_error(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    headers = bearer(client, account)
    assert client.get(f"{CAL}/users/me/calendarList", headers=headers).status_code == 200
    emu.expire_access_tokens(EMAIL)
    answer = client.get(f"{CAL}/users/me/calendarList", headers=headers)
    error = api_error(answer, 401, "authError")
    assert error["status"] == "UNAUTHENTICATED"
    assert error["errors"] == [
        {
            "domain": "global",
            "reason": "authError",
            "message": "Invalid Credentials",
            "locationType": "header",
            "location": "Authorization",
        }
    ]
    assert api_error(client.get("/v1/userinfo"), 401, "authError")


def test_calendar_scopes_are_enforced(emu: GoogleEmulator, client: Client) -> None:
    acc = emu.add_account("narrow@gmail.example", client_id=CLIENT_ID, scopes=f"openid {SCOPE_EMAIL}")
    answer = client.get(f"{CAL}/users/me/calendarList", headers=bearer(client, acc))
    assert api_error(answer, 403, "insufficientPermissions")["status"] == "PERMISSION_DENIED"


# --------------------------------------------------------------------------------------------------
# calendarList
# --------------------------------------------------------------------------------------------------


def test_calendar_list_pages_and_marks_only_the_primary(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    for n in range(4):
        emu.add_calendar(EMAIL, summary=f"Team {n}", access_role="reader" if n % 2 else "owner")
    headers = bearer(client, account)
    seen: list[dict[str, Any]] = []
    params: dict[str, str] = {"maxResults": "2"}
    pages = 0
    while True:
        body = client.get(f"{CAL}/users/me/calendarList", query_string=params, headers=headers).json
        pages += 1
        seen += body["items"]
        if "nextPageToken" not in body:
            assert body["nextSyncToken"]
            break
        params = {"maxResults": "2", "pageToken": body["nextPageToken"]}
    assert pages == 3 and len(seen) == 5
    primary = [c for c in seen if c.get("primary")]
    assert [c["id"] for c in primary] == [EMAIL]
    assert all("primary" not in c for c in seen if c["id"] != EMAIL)
    assert {c["accessRole"] for c in seen} == {"owner", "reader"}
    assert all(c["kind"] == "calendar#calendarListEntry" and c["timeZone"] == "Europe/Berlin" for c in seen)


# --------------------------------------------------------------------------------------------------
# events: full sync, incremental sync, errors
# --------------------------------------------------------------------------------------------------


def test_full_sync_pages_then_incremental_shows_exactly_the_changes(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    singles = [
        emu.add_event(
            EMAIL,
            "primary",
            summary=f"Meeting {n}",
            start=base + timedelta(hours=n),
            end=base + timedelta(hours=n, minutes=30),
        )
        for n in range(5)
    ]
    series = emu.add_event(
        EMAIL,
        "primary",
        summary="Weekly",
        start=base,
        end=base + timedelta(hours=1),
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=3"],
    )
    headers = bearer(client, account)
    query = {"singleEvents": "true", "maxResults": "2"}
    items, sync_token = list_all(client, headers, query)
    assert len(items) == 5 + 3
    assert {i["id"] for i in items} >= {s["id"] for s in singles}
    assert sum(1 for i in items if i.get("recurringEventId") == series["id"]) == 3

    emu.update_event(singles[0]["id"], summary="Renamed")
    emu.update_event(singles[1]["id"], start=base + timedelta(days=2))  # moved; keeps its duration
    emu.delete_event(singles[2]["id"])
    instance_id = [i["id"] for i in items if i.get("recurringEventId") == series["id"]][1]
    emu.cancel_event(instance_id)

    changed, next_token = list_all(client, headers, {"singleEvents": "true", "syncToken": sync_token})
    by_id = {i["id"]: i for i in changed}
    assert set(by_id) == {singles[0]["id"], singles[1]["id"], singles[2]["id"], instance_id}
    assert by_id[singles[0]["id"]]["summary"] == "Renamed"
    moved = by_id[singles[1]["id"]]
    assert datetime.fromisoformat(moved["start"]["dateTime"]) == base + timedelta(days=2)
    assert datetime.fromisoformat(moved["end"]["dateTime"]) == base + timedelta(days=2, minutes=30)
    deleted = by_id[singles[2]["id"]]
    assert set(deleted) == {"kind", "etag", "id", "status"} and deleted["status"] == "cancelled"
    cancelled = by_id[instance_id]
    assert set(cancelled) == {"kind", "etag", "id", "status", "recurringEventId", "originalStartTime"}
    assert cancelled["recurringEventId"] == series["id"]

    # Nothing changed since: the same token comes back, with no items.
    quiet, same = list_all(client, headers, {"singleEvents": "true", "syncToken": next_token})
    assert quiet == [] and same == next_token


def test_expired_sync_token_is_410_full_sync_required(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    headers = bearer(client, account)
    _, sync_token = list_all(client, headers, {"singleEvents": "true"})
    assert emu.expire_sync_tokens(EMAIL) >= 1
    answer = client.get(
        f"{CAL}/calendars/primary/events", query_string={"syncToken": sync_token}, headers=headers
    )
    error = api_error(answer, 410, "fullSyncRequired")
    assert error["errors"][0] == {
        "domain": "calendar",
        "reason": "fullSyncRequired",
        "message": "Sync token is no longer valid, a full sync is required.",
        "locationType": "parameter",
        "location": "syncToken",
    }
    unknown = client.get(
        f"{CAL}/calendars/primary/events",
        query_string={"syncToken": "CPDAlvWDx70CEPDAlvWDx70CGAU="},
        headers=headers,
    )
    api_error(unknown, 410, "fullSyncRequired")


@pytest.mark.parametrize(
    "extra",
    [
        {"timeMin": "2026-01-01T00:00:00Z"},
        {"timeMax": "2026-01-01T00:00:00Z"},
        {"orderBy": "startTime", "singleEvents": "true"},
        {"showDeleted": "false"},
    ],
)
def test_sync_token_with_request_restrictions_is_400(
    client: Client, account: dict[str, Any], extra: dict[str, str]
) -> None:
    headers = bearer(client, account)
    _, sync_token = list_all(client, headers, {})
    answer = client.get(
        f"{CAL}/calendars/primary/events", query_string={"syncToken": sync_token, **extra}, headers=headers
    )
    api_error(answer, 400, "syncTokenWithRequestRestrictions")


def test_order_by_start_time_needs_single_events(client: Client, account: dict[str, Any]) -> None:
    answer = client.get(
        f"{CAL}/calendars/primary/events",
        query_string={"orderBy": "startTime"},
        headers=bearer(client, account),
    )
    assert api_error(answer, 400, "badRequest")["message"] == (
        "The requested ordering is not available for the particular query."
    )


def test_unknown_calendar_and_event_are_404(client: Client, account: dict[str, Any]) -> None:
    headers = bearer(client, account)
    api_error(client.get(f"{CAL}/calendars/nobody%40gmail.example/events", headers=headers), 404, "notFound")
    api_error(client.get(f"{CAL}/calendars/primary/events/abcdefghij", headers=headers), 404, "notFound")


# --------------------------------------------------------------------------------------------------
# Recurrence
# --------------------------------------------------------------------------------------------------


def test_weekly_series_across_dst_with_exdate_and_a_moved_instance(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    # Mondays 09:00 Berlin from 16 March 2026; Berlin switches to summer time on 29 March.
    series = emu.add_event(
        EMAIL,
        "primary",
        summary="Standup",
        start="2026-03-16T09:00:00",
        end="2026-03-16T09:15:00",
        time_zone="Europe/Berlin",
        recurrence=["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=5", "EXDATE;TZID=Europe/Berlin:20260323T090000"],
        description="Join: https://acme.zoom.us/j/81234567890",
    )
    sid = series["id"]
    moved_id = f"{sid}_20260406T070000Z"  # 09:00 CEST = 07:00Z
    emu.update_event(moved_id, start="2026-04-06T11:00:00+02:00", end="2026-04-06T11:30:00+02:00")
    headers = bearer(client, account)
    window = {"timeMin": "2026-03-01T00:00:00Z", "timeMax": "2026-05-01T00:00:00Z"}
    answer = client.get(
        f"{CAL}/calendars/primary/events",
        query_string={**window, "singleEvents": "true", "orderBy": "startTime"},
        headers=headers,
    )
    items = answer.json["items"]
    assert [i["id"] for i in items] == [
        f"{sid}_20260316T080000Z",  # 09:00 CET = 08:00Z
        f"{sid}_20260330T070000Z",  # after the switch: still 09:00 local
        moved_id,
        f"{sid}_20260413T070000Z",
    ]
    assert items[0]["start"] == {"dateTime": "2026-03-16T09:00:00+01:00", "timeZone": "Europe/Berlin"}
    assert items[1]["start"] == {"dateTime": "2026-03-30T09:00:00+02:00", "timeZone": "Europe/Berlin"}
    assert items[2]["start"]["dateTime"] == "2026-04-06T11:00:00+02:00"
    assert items[2]["originalStartTime"] == {
        "dateTime": "2026-04-06T09:00:00+02:00",
        "timeZone": "Europe/Berlin",
    }
    assert all(i["recurringEventId"] == sid and "recurrence" not in i for i in items)
    assert all(i["description"].endswith("zoom.us/j/81234567890") for i in items)

    masters = client.get(f"{CAL}/calendars/primary/events", query_string=window, headers=headers).json[
        "items"
    ]
    master = next(i for i in masters if i["id"] == sid)
    assert master["recurrence"] == [
        "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=5",
        "EXDATE;TZID=Europe/Berlin:20260323T090000",
    ]
    assert any(i["id"] == moved_id and i["recurringEventId"] == sid for i in masters)  # the exception

    one = client.get(f"{CAL}/calendars/primary/events/{sid}_20260330T070000Z", headers=headers)
    assert one.status_code == 200 and one.json["recurringEventId"] == sid
    assert (
        client.get(f"{CAL}/calendars/primary/events/{sid}_20260323T080000Z", headers=headers).status_code
        == 404
    )


def test_all_day_series_instance_ids_use_dates(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    series = emu.add_event(
        EMAIL,
        "primary",
        summary="Holiday",
        start="2026-12-24",
        end="2026-12-25",
        all_day=True,
        recurrence=["RRULE:FREQ=YEARLY;COUNT=2"],
    )
    answer = client.get(
        f"{CAL}/calendars/primary/events",
        query_string={
            "singleEvents": "true",
            "timeMin": "2026-12-01T00:00:00Z",
            "timeMax": "2028-01-01T00:00:00Z",
        },
        headers=bearer(client, account),
    )
    items = answer.json["items"]
    assert [i["id"] for i in items] == [f"{series['id']}_20261224", f"{series['id']}_20271224"]
    assert items[1]["start"] == {"date": "2027-12-24"} and items[1]["originalStartTime"] == {
        "date": "2027-12-24"
    }


def test_meet_event_has_hangout_link_and_conference_data(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    start = datetime.now(UTC) + timedelta(days=1)
    ev = emu.add_event(
        EMAIL,
        "primary",
        summary="Sync",
        start=start,
        end=start + timedelta(minutes=30),
        meet="https://meet.google.com/abc-defg-hij",
    )
    body = client.get(f"{CAL}/calendars/primary/events/{ev['id']}", headers=bearer(client, account)).json
    assert body["hangoutLink"] == "https://meet.google.com/abc-defg-hij"
    conference = body["conferenceData"]
    assert conference["entryPoints"][0]["entryPointType"] == "video"
    assert conference["entryPoints"][0]["uri"] == "https://meet.google.com/abc-defg-hij"
    assert conference["conferenceSolution"]["key"] == {"type": "hangoutsMeet"}
    assert conference["conferenceId"] == "abc-defg-hij"
    assert body["organizer"] == {"email": EMAIL, "displayName": "Sam Rivera", "self": True}


# --------------------------------------------------------------------------------------------------
# Push notifications
# --------------------------------------------------------------------------------------------------


def watch(
    client: Client, headers: dict[str, str], url: str, channel_id: str = "chan-1", **extra: Any
) -> TestResponse:
    body = {"id": channel_id, "type": "web_hook", "address": url, "token": "chan-secret-token", **extra}
    return client.post(f"{CAL}/calendars/primary/events/watch", json=body, headers=headers)


def test_watch_sends_sync_then_exists_and_stop_silences_it(
    emu: GoogleEmulator, client: Client, account: dict[str, Any], receiver: tuple[Receiver, RunningServer]
) -> None:
    hook, server = receiver
    headers = bearer(client, account)
    answer = watch(client, headers, f"{server.url}/hook")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    channel = answer.json
    assert (
        channel["kind"] == "api#channel"
        and channel["id"] == "chan-1"
        and channel["token"] == "chan-secret-token"
    )
    expiration_ms = int(channel["expiration"])  # a string of milliseconds
    assert abs(expiration_ms / 1000 - (emu.now().timestamp() + 604800)) < 60
    assert emu.flush_notifications()
    start = datetime.now(UTC) + timedelta(days=1)
    emu.add_event(EMAIL, "primary", summary="New", start=start, end=start + timedelta(hours=1))
    assert emu.flush_notifications()

    assert [c["headers"]["X-Goog-Resource-State"] for c in hook.calls] == ["sync", "exists"]
    first, second = (c["headers"] for c in hook.calls)
    assert all(c["body"] == b"" for c in hook.calls)
    assert first["X-Goog-Channel-Id"] == "chan-1"
    assert first["X-Goog-Channel-Token"] == "chan-secret-token"
    assert first["X-Goog-Resource-Id"] == channel["resourceId"]
    assert first["X-Goog-Resource-Uri"] == channel["resourceUri"]
    assert first["X-Goog-Channel-Expiration"].endswith(" GMT")
    assert int(second["X-Goog-Message-Number"]) > int(first["X-Goog-Message-Number"])
    logged = emu.notifications(channel_id="chan-1")
    assert [n["resource_state"] for n in logged] == ["sync", "exists"] and all(
        n["status"] == 200 for n in logged
    )

    stop = client.post(
        f"{CAL}/channels/stop", json={"id": "chan-1", "resourceId": channel["resourceId"]}, headers=headers
    )
    assert stop.status_code == 204
    emu.add_event(EMAIL, "primary", summary="After stop", start=start, end=start + timedelta(hours=1))
    assert emu.flush_notifications()
    assert len(hook.calls) == 2
    again = client.post(
        f"{CAL}/channels/stop", json={"id": "chan-1", "resourceId": channel["resourceId"]}, headers=headers
    )
    assert api_error(again, 404, "notFound")["message"].startswith("Channel 'chan-1' not found for project")


def test_watch_refuses_duplicate_ids_and_plain_http(
    client: Client, account: dict[str, Any], receiver: tuple[Receiver, RunningServer]
) -> None:
    _, server = receiver
    headers = bearer(client, account)
    assert watch(client, headers, f"{server.url}/hook", "dup").status_code == 200
    api_error(watch(client, headers, f"{server.url}/hook", "dup"), 400, "channelIdNotUnique")
    api_error(watch(client, headers, "http://hooks.example/x", "other"), 400, "push.webhookUrlNotHttps")


def test_watch_ttl_is_capped_and_stop_needs_the_right_resource_id(
    emu: GoogleEmulator, client: Client, account: dict[str, Any], receiver: tuple[Receiver, RunningServer]
) -> None:
    _, server = receiver
    headers = bearer(client, account)
    answer = watch(client, headers, f"{server.url}/hook", params={"ttl": str(90 * 86400)})
    assert abs(int(answer.json["expiration"]) / 1000 - (emu.now().timestamp() + 30 * 86400)) < 60
    wrong = client.post(f"{CAL}/channels/stop", json={"id": "chan-1", "resourceId": "other"}, headers=headers)
    api_error(wrong, 404, "notFound")


# --------------------------------------------------------------------------------------------------
# Faults, clock, log, control API
# --------------------------------------------------------------------------------------------------


def test_faults_rate_limit_403_and_429_with_retry_after(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    headers = bearer(client, account)
    emu.add_fault(path=r"/events$", reason="rateLimitExceeded", times=1)
    emu.add_fault(path=r"/events$", reason="userRateLimitExceeded", times=1)
    emu.add_fault(path=r"/events$", status=429, retry_after=7, times=1)
    url = f"{CAL}/calendars/primary/events"
    first = api_error(client.get(url, headers=headers), 403, "rateLimitExceeded")
    assert first["errors"][0]["domain"] == "usageLimits" and first["message"] == "Rate Limit Exceeded"
    api_error(client.get(url, headers=headers), 403, "userRateLimitExceeded")
    limited = client.get(url, headers=headers)
    api_error(limited, 429, "rateLimitExceeded")
    assert limited.headers["Retry-After"] == "7"
    assert client.get(url, headers=headers).status_code == 200  # every rule used up
    emu.add_fault(path="^/token$", error="invalid_grant", account=EMAIL, times=-1)
    assert refresh(client, account["refresh_token"]).json["error"] == "invalid_grant"
    emu.clear_faults()
    assert refresh(client, account["refresh_token"]).status_code == 200


def test_clock_advance_expires_access_tokens_and_channels(
    emu: GoogleEmulator, client: Client, account: dict[str, Any], receiver: tuple[Receiver, RunningServer]
) -> None:
    hook, server = receiver
    headers = bearer(client, account)
    assert watch(client, headers, f"{server.url}/hook", params={"ttl": "7200"}).status_code == 200
    assert emu.flush_notifications()
    emu.advance_clock(3600)
    api_error(client.get(f"{CAL}/users/me/calendarList", headers=headers), 401, "authError")
    emu.advance_clock(3601)
    assert emu.channels(active_only=True) == []
    start = datetime.now(UTC) + timedelta(days=3)
    emu.add_event(EMAIL, "primary", summary="Late", start=start, end=start + timedelta(hours=1))
    assert emu.flush_notifications()
    assert [c["headers"]["X-Goog-Resource-State"] for c in hook.calls] == ["sync"]  # nothing after expiry


def test_request_log_never_shows_token_values(
    client: Client, emu: GoogleEmulator, account: dict[str, Any]
) -> None:
    headers = bearer(client, account)
    _, sync_token = list_all(client, headers, {})
    client.get(f"{CAL}/calendars/primary/events", query_string={"syncToken": sync_token}, headers=headers)
    entries = emu.requests(account=EMAIL, path_prefix=f"{CAL}/calendars")
    assert entries and all(e["account"] == account["id"] for e in entries)
    assert any("syncToken=%3Credacted%3E" in e["query"] for e in entries)
    assert all(sync_token not in e["query"] for e in entries)
    assert [e["status"] for e in emu.requests(path_prefix="/token")] == [200]


def test_control_api_over_http(client: Client) -> None:
    assert client.post("/_control/apps", json={"client_id": "c2", "client_secret": "s2"}).status_code == 201
    made = client.post("/_control/accounts", json={"email": "http@gmail.example", "client_id": "c2"})
    assert made.status_code == 201, made.get_data(as_text=True)
    event = client.post(
        "/_control/accounts/http@gmail.example/calendars/http@gmail.example/events",
        json={
            "summary": "Via HTTP",
            "start": "2026-12-01T10:00:00Z",
            "end": "2026-12-01T11:00:00Z",
            "meet": True,
        },
    )
    assert event.status_code == 201 and event.json["hangout_link"].startswith("https://meet.google.com/")
    patched = client.patch(f"/_control/events/{event.json['id']}", json={"summary": "Renamed"})
    assert patched.json["summary"] == "Renamed"
    assert client.post(f"/_control/events/{event.json['id']}/cancel").json["status"] == "cancelled"
    tokens = client.get("/_control/issued-tokens").json
    assert made.json["refresh_token"] in tokens["refresh_tokens"]
    bad = client.post("/_control/accounts", json={"email": "x@gmail.example", "bogus": 1})
    assert bad.status_code == 400 and "bogus" in bad.json["error"]
    assert client.post("/_control/clock", json={"advance_seconds": 60}).status_code == 200


def test_incremental_after_series_changes_lists_its_instances(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    series = emu.add_event(
        EMAIL,
        "primary",
        summary="Daily",
        start=start,
        end=start + timedelta(minutes=15),
        time_zone="UTC",
        recurrence=["RRULE:FREQ=DAILY;COUNT=3"],
    )
    headers = bearer(client, account)
    full, token = list_all(client, headers, {"singleEvents": "true"})
    old_ids = {i["id"] for i in full}
    assert len(old_ids) == 3

    emu.update_event(series["id"], summary="Daily (renamed)")
    renamed, token = list_all(client, headers, {"singleEvents": "true", "syncToken": token})
    assert {i["id"] for i in renamed} == old_ids and all(i["summary"] == "Daily (renamed)" for i in renamed)

    emu.update_event(series["id"], start=start + timedelta(hours=1))  # the whole series moves an hour
    moved, token = list_all(client, headers, {"singleEvents": "true", "syncToken": token})
    cancelled = {i["id"] for i in moved if i["status"] == "cancelled"}
    live = {i["id"] for i in moved if i["status"] == "confirmed"}
    assert cancelled == old_ids and len(live) == 3 and not live & old_ids

    emu.delete_event(series["id"])
    gone, _ = list_all(client, headers, {"singleEvents": "true", "syncToken": token})
    assert {i["id"] for i in gone} >= live | {series["id"]}
    assert all(
        set(i) <= {"kind", "etag", "id", "status", "recurringEventId", "originalStartTime"} for i in gone
    )
    assert all(i["status"] == "cancelled" for i in gone)


def test_deleted_calendar_sends_not_exists_then_nothing(
    emu: GoogleEmulator, client: Client, account: dict[str, Any], receiver: tuple[Receiver, RunningServer]
) -> None:
    hook, server = receiver
    team = emu.add_calendar(EMAIL, summary="Team")
    headers = bearer(client, account)
    body = {"id": "team-chan", "type": "web_hook", "address": f"{server.url}/hook"}
    calendar_path = f"{CAL}/calendars/{team['id'].replace('@', '%40')}"
    assert client.post(f"{calendar_path}/events/watch", json=body, headers=headers).status_code == 200
    assert emu.flush_notifications()
    emu.delete_calendar(EMAIL, team["id"])
    assert emu.flush_notifications()
    assert [c["headers"]["X-Goog-Resource-State"] for c in hook.calls] == ["sync", "not_exists"]
    api_error(client.get(f"{calendar_path}/events", headers=headers), 404, "notFound")
    assert emu.channels(active_only=True) == []


def test_series_turned_into_a_single_event_cancels_its_other_instances(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    series = emu.add_event(
        EMAIL, "primary", start=start, end=start + timedelta(hours=1), recurrence=["RRULE:FREQ=DAILY;COUNT=3"]
    )
    headers = bearer(client, account)
    full, token = list_all(client, headers, {"singleEvents": "true"})
    emu.update_event(series["id"], recurrence=None, start=start + timedelta(hours=2))
    changed, _ = list_all(client, headers, {"singleEvents": "true", "syncToken": token})
    by_id = {i["id"]: i for i in changed}
    assert {i["id"] for i in full} <= {k for k, v in by_id.items() if v["status"] == "cancelled"}
    assert by_id[series["id"]]["status"] == "confirmed" and "recurrence" not in by_id[series["id"]]


def test_openid_scope_gives_a_signed_id_token(emu: GoogleEmulator, client: Client) -> None:
    """Google answers every token request of a grant that includes `openid` with an ID token."""
    import jwt

    account = emu.add_account(EMAIL, name="Sam Rivera", client_id=CLIENT_ID)  # default scopes: openid ...
    answer = refresh(client, account["refresh_token"])
    assert answer.status_code == 200
    id_token = answer.json["id_token"]
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "RS256"
    keys = client.get("/oauth2/v3/certs")
    assert keys.status_code == 200
    [jwk] = [key for key in keys.json["keys"] if key["kid"] == header["kid"]]
    claims = jwt.decode(
        id_token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=CLIENT_ID,
        issuer="https://accounts.google.com",
    )
    assert claims["sub"] == account["id"] and claims["azp"] == CLIENT_ID
    assert claims["email"] == EMAIL and claims["email_verified"] is True and claims["name"] == "Sam Rivera"
    # at_hash: the left half of the access token's SHA-256 (OpenID Connect Core 3.1.3.6)
    half = hashlib.sha256(answer.json["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(half).decode().rstrip("=")

    calendar_only = emu.add_account(
        "other@gmail.example", client_id=CLIENT_ID, scopes=SCOPE_CALENDAR_READONLY
    )
    plain = refresh(client, calendar_only["refresh_token"])
    assert plain.status_code == 200 and "id_token" not in plain.json


def test_max_attendees_returns_only_the_participant_past_the_limit(
    emu: GoogleEmulator, client: Client, account: dict[str, Any]
) -> None:
    start = datetime(2027, 3, 1, 9, tzinfo=UTC)
    ev = emu.add_event(
        EMAIL,
        EMAIL,
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        attendees=[EMAIL, "a@example.org", "b@example.org"],
    )
    headers = bearer(client, account)
    url = f"{CAL}/calendars/{EMAIL}/events"
    whole = client.get(url, query_string={"maxAttendees": "3"}, headers=headers).json["items"][0]
    assert len(whole["attendees"]) == 3 and "attendeesOmitted" not in whole
    cut = client.get(url, query_string={"maxAttendees": "2"}, headers=headers).json["items"][0]
    assert [a["email"] for a in cut["attendees"]] == [EMAIL] and cut["attendeesOmitted"] is True
    one = client.get(f"{url}/{ev['id']}", query_string={"maxAttendees": "1"}, headers=headers).json
    assert [a.get("self") for a in one["attendees"]] == [True] and one["attendeesOmitted"] is True
    for bad in ("0", "-1", "x"):
        api_error(client.get(url, query_string={"maxAttendees": bad}, headers=headers), 400, "invalid")
