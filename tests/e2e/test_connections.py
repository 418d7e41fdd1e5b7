"""1/8 end to end: connecting Outlook accounts over HTTP against the local stack (a separate process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import E2EStack, start_stack, stop_stack

CLIENT_ID = "e2e-client"
CLIENT_SECRET = "e2e-client-secret-5f1c9b7e0d"


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


@pytest.fixture(scope="module")
def user(e2e: E2EStack) -> dict[str, Any]:
    """A fresh user of our own (the demo user is seeded with two accounts already)."""
    return e2e.admin("create-user", "--email", "owner@e2e.example", "--with-key")


def new_account(e2e: E2EStack, mail: str | None, upn: str, name: str = "Test User", **extra: Any) -> dict:
    return e2e.graph(
        "POST",
        "/accounts",
        json={
            "client_id": CLIENT_ID,
            "mail": mail,
            "user_principal_name": upn,
            "display_name": name,
            **extra,
        },
    ).json()


def connect(e2e: E2EStack, key: str, refresh_token: str, **extra: Any):
    body = {
        "microsoft_client_id": CLIENT_ID,
        "microsoft_client_secret": CLIENT_SECRET,
        "microsoft_refresh_token": refresh_token,
        **extra,
    }
    return e2e.api("POST", "/calendar/create_outlook_calendar", key=key, json=body)


def stored_credentials(e2e: E2EStack, user_id: str, account: str) -> tuple[str, dict]:
    ssm = e2e.boto("ssm")
    prefix = e2e.info["parameter_overrides"].get("Stage", "local")
    params = ssm.get_parameters_by_path(
        Path=f"/calbot/{prefix}/users/{user_id}/outlook", Recursive=True, WithDecryption=True
    )["Parameters"]
    mine = [p for p in params if account.lower().replace("@", "_") in p["Name"]]
    # Access tokens never go to SSM (they are cached, encrypted, in DynamoDB): one long-lived value.
    assert all(len(p["Value"].encode()) <= 4096 for p in mine), [(p["Name"], len(p["Value"])) for p in mine]
    matching = [p for p in mine if not p["Name"].endswith(".access")]
    assert len(matching) == len(mine) == 1, [p["Name"] for p in params]
    assert "access_token" not in json.loads(matching[0]["Value"])
    return matching[0]["Type"], json.loads(matching[0]["Value"])


def test_connect_two_accounts_list_and_inspect(e2e: E2EStack, user: dict) -> None:
    key = user["api_key"]
    work = new_account(
        e2e,
        "jane.work@acme.example",
        "jane.work@acme.example",
        "Jane Work",
        calendars=[
            {"name": "Calendar", "is_default": True, "can_edit": True},
            {"name": "Shared team", "can_edit": False, "owner_address": "team@acme.example"},
        ],
    )
    personal = new_account(e2e, None, "jane.personal@outlook.example", "Jane Personal")

    r1 = connect(e2e, key, work["refresh_token"])
    assert r1.status_code == 201, r1.text
    body = r1.json()
    assert body["provider"] == "outlook" and body["account_id"] == "jane.work@acme.example"
    assert body["status"] == "active" and body["user_name"] == "Jane Work"
    assert len(body["calendars"]) == 2 and body["watch_setup"]["subscriptions"] == 2
    assert body["watch_setup"]["expires_at"].endswith("Z") and body["message"]
    assert body["primary_calendar_id"] == next(c["id"] for c in body["calendars"] if c["is_primary"])
    assert body["webhook_url"].endswith(
        f"/api/v1/admin/schedule/users/{user['user_id']}/outlook/jane.work%40acme.example"
    )

    r2 = connect(e2e, key, personal["refresh_token"])
    assert r2.status_code == 201, r2.text
    assert r2.json()["account_id"] == "jane.personal@outlook.example"  # mail null -> userPrincipalName

    listed = e2e.api("GET", "/calendar/connections", key=key).json()
    assert listed["total"] == 2 and listed["limit"] == 200 and listed["connections"]["google"] == []
    assert sorted(c["account_id"] for c in listed["connections"]["outlook"]) == [
        "jane.personal@outlook.example",
        "jane.work@acme.example",
    ]

    one = e2e.api("GET", "/calendar/connections/outlook/jane.work%40acme.example", key=key)
    assert one.status_code == 200 and one.json()["account_id"] == "jane.work@acme.example"
    alias = e2e.api("GET", "/calendar/connections/microsoft/JANE.WORK%40ACME.EXAMPLE", key=key)
    assert alias.status_code == 200 and alias.json()["provider"] == "outlook"
    missing = e2e.api("GET", "/calendar/connections/outlook/nobody%40acme.example", key=key)
    assert missing.status_code == 404 and missing.json()["error"] == "connection_not_found"
    bad_provider = e2e.api("GET", "/calendar/connections/yahoo/jane.work%40acme.example", key=key)
    assert bad_provider.status_code == 400 and bad_provider.json()["error"] == "invalid_request"

    # Credentials: a SecureString at a per-account path, holding the ROTATED refresh token.
    ptype, creds = stored_credentials(e2e, user["user_id"], "jane.work@acme.example")
    assert ptype == "SecureString"
    valid = e2e.graph("GET", f"/refresh-tokens?account={work['id']}").json()
    assert creds["refresh_token"] != work["refresh_token"]
    assert creds["refresh_token"] in json.dumps(valid)

    # Subscriptions exist at the emulator, one per calendar, pointing at the per-account URL.
    subs = [s for s in e2e.graph("GET", "/subscriptions").json()["value"] if s["account_id"] == work["id"]]
    assert len(subs) == 2
    assert all(s["notification_url"] == body["webhook_url"] for s in subs)


def test_second_connect_conflicts_and_replace_rotates_in_place(e2e: E2EStack, user: dict) -> None:
    key = user["api_key"]
    acct = new_account(e2e, "rotate@acme.example", "rotate@acme.example")
    first = connect(e2e, key, acct["refresh_token"])
    assert first.status_code == 201
    subs_before = {
        s["id"] for s in e2e.graph("GET", "/subscriptions").json()["value"] if s["account_id"] == acct["id"]
    }
    _, creds_before = stored_credentials(e2e, user["user_id"], "rotate@acme.example")

    token2 = e2e.graph("POST", f"/accounts/{acct['id']}/refresh-token", json={"client_id": CLIENT_ID}).json()
    again = connect(e2e, key, token2["refresh_token"])
    assert again.status_code == 409
    assert again.json() | {"message": ""} == {
        "error": "already_connected",
        "account_id": "rotate@acme.example",
        "message": "",
    }

    replaced = connect(e2e, key, token2["refresh_token"], replace=True)
    assert replaced.status_code == 200, replaced.text
    _, creds_after = stored_credentials(e2e, user["user_id"], "rotate@acme.example")
    assert creds_after["refresh_token"] not in (creds_before["refresh_token"], token2["refresh_token"])
    subs_after = {
        s["id"] for s in e2e.graph("GET", "/subscriptions").json()["value"] if s["account_id"] == acct["id"]
    }
    assert subs_after == subs_before  # kept, not re-registered
    assert replaced.json()["created_at"] == first.json()["created_at"]


def test_needs_reauth_connection_is_replaced_without_replace_flag(e2e: E2EStack, user: dict) -> None:
    key = user["api_key"]
    acct = new_account(e2e, "expired.secret@acme.example", "expired.secret@acme.example")
    assert connect(e2e, key, acct["refresh_token"]).status_code == 201
    # The sync path marks needs_reauth on a real auth failure; here we set it as it would be stored.
    ddb = e2e.boto("dynamodb")
    table = e2e.env()["TABLE_NAME"]
    ddb.update_item(
        TableName=table,
        Key={"PK": {"S": f"USER#{user['user_id']}"}, "SK": {"S": "CONN#outlook#expired.secret@acme.example"}},
        UpdateExpression="SET #s = :s, status_reason = :r",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "needs_reauth"}, ":r": {"S": "invalid_client"}},
    )
    token2 = e2e.graph("POST", f"/accounts/{acct['id']}/refresh-token", json={"client_id": CLIENT_ID}).json()
    resp = connect(e2e, key, token2["refresh_token"])
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "active" and resp.json()["status_reason"] is None


def test_invalid_grant_and_invalid_client_are_400_invalid_credentials(e2e: E2EStack, user: dict) -> None:
    key = user["api_key"]
    acct = new_account(e2e, "revoked@acme.example", "revoked@acme.example")
    e2e.graph("POST", f"/accounts/{acct['id']}/revoke", json={"code": 50173})
    resp = connect(e2e, key, acct["refresh_token"])
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_credentials" and resp.json()["reason"] == "invalid_grant"
    assert "refresh token" in resp.json()["message"] and "AADSTS50173" in resp.json()["message"]

    acct2 = new_account(e2e, "badsecret@acme.example", "badsecret@acme.example")
    resp = e2e.api(
        "POST",
        "/calendar/create_outlook_calendar",
        key=key,
        json={
            "microsoft_client_id": CLIENT_ID,
            "microsoft_client_secret": "wrong-secret",
            "microsoft_refresh_token": acct2["refresh_token"],
        },
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_credentials" and resp.json()["reason"] == "invalid_client"
    assert "client id or client secret" in resp.json()["message"]
    listed = e2e.api("GET", "/calendar/connections", key=key).json()
    assert not any(
        c["account_id"] in ("revoked@acme.example", "badsecret@acme.example")
        for c in listed["connections"]["outlook"]
    )


def test_bad_requests_are_clear_400s(e2e: E2EStack, user: dict) -> None:
    key = user["api_key"]
    missing = e2e.api("POST", "/calendar/create_outlook_calendar", key=key, json={"microsoft_client_id": "x"})
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    assert missing.json()["details"]
    bad_json = e2e.api(
        "POST",
        "/calendar/create_outlook_calendar",
        key=key,
        data="{nope",
        headers={"Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid_json"
    wrong_type = e2e.api(
        "POST",
        "/calendar/create_outlook_calendar",
        key=key,
        data="a=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert wrong_type.status_code == 415 and wrong_type.json()["error"] == "unsupported_media_type"
    # A rejected secret is never echoed back in the validation details.
    echo = e2e.api(
        "POST",
        "/calendar/create_outlook_calendar",
        key=key,
        json={"microsoft_client_secret": "s3cr3t-never-echo", "bogus": 1},
    )
    assert echo.status_code == 400 and "s3cr3t-never-echo" not in echo.text


def test_401_without_key_wrong_key_and_revoked_key(e2e: E2EStack) -> None:
    for headers in ({}, {"Authorization": "Token cbk_not_a_real_key"}, {"Authorization": "Basic abc"}):
        resp = e2e.api("GET", "/calendar/connections", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json()["error"] == "unauthorized" and resp.json()["message"]
    created = e2e.admin("create-user", "--with-key")
    assert e2e.api("GET", "/calendar/connections", key=created["api_key"]).status_code == 200
    bearer = e2e.api(
        "GET", "/calendar/connections", headers={"Authorization": f"Bearer {created['api_key']}"}
    )
    assert bearer.status_code == 200
    e2e.admin("revoke-api-key", "--key-id", created["key_id"], "--user-id", created["user_id"])
    assert e2e.api("GET", "/calendar/connections", key=created["api_key"]).status_code == 401


def test_user_isolation(e2e: E2EStack, user: dict) -> None:
    other = e2e.admin("create-user", "--email", "b@e2e.example", "--with-key")
    acct = new_account(e2e, "only.b@acme.example", "only.b@acme.example")
    assert connect(e2e, other["api_key"], acct["refresh_token"]).status_code == 201
    a_list = e2e.api("GET", "/calendar/connections", key=user["api_key"]).json()
    assert "only.b@acme.example" not in json.dumps(a_list)
    a_get = e2e.api("GET", "/calendar/connections/outlook/only.b%40acme.example", key=user["api_key"])
    assert a_get.status_code == 404
    b_get = e2e.api("GET", "/calendar/connections/outlook/only.b%40acme.example", key=other["api_key"])
    assert b_get.status_code == 200


def test_webhook_answers_the_validation_handshake(e2e: E2EStack) -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 1+2&3"
    resp = e2e.http.post(
        f"{e2e.api_url}/admin/schedule/users/usr_x/outlook/a%40b.example",
        params={"validationToken": token},
        timeout=10,
    )
    assert resp.status_code == 200 and resp.text == token
    assert resp.headers["content-type"].startswith("text/plain")


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[E2EStack]:
    """A stack of its own: 200 connections would bloat the shared one (moto copies the whole table on
    every transaction, which slows every later test of the session)."""
    stack = start_stack(tmp_path / "limit-stack")
    stack.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    yield stack
    stop_stack(stack)


@pytest.mark.slow
def test_limit_of_200_connections(own_stack: E2EStack) -> None:
    """The 201st connection is refused with the exact limit message (default limit, no shortcut)."""
    e2e = own_stack
    owner = e2e.admin("create-user", "--email", "many@e2e.example", "--with-key")
    for i in range(200):
        acct = new_account(e2e, f"acct{i:03d}@many.example", f"acct{i:03d}@many.example")
        resp = connect(e2e, owner["api_key"], acct["refresh_token"])
        assert resp.status_code == 201, (i, resp.text)
    extra = new_account(e2e, "one.too.many@many.example", "one.too.many@many.example")
    resp = connect(e2e, owner["api_key"], extra["refresh_token"])
    assert resp.status_code == 400
    assert resp.json()["error"] == "connection_limit_reached"
    assert resp.json()["message"].startswith("Maximum of 200 outlook calendar connections per user reached")
    assert e2e.api("GET", "/calendar/connections", key=owner["api_key"]).json()["total"] == 200
    # Nothing half-made for the refused one: no subscription at the emulator.
    assert not [
        s for s in e2e.graph("GET", "/subscriptions").json()["value"] if s["account_id"] == extra["id"]
    ]


@pytest.fixture
def virtual_stack(tmp_path: Path) -> Iterator[E2EStack]:
    """A virtual-time stack of its own: 90 days pass in it, which the shared session must not see."""
    stack = start_stack(tmp_path / "ninety-days", "--virtual-time", "--no-seed")
    stack.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    yield stack
    stop_stack(stack)


def test_an_outlook_connection_outlives_the_90_days_of_its_first_refresh_token(
    virtual_stack: E2EStack,
) -> None:
    """Microsoft refresh tokens die 90 days after issue however often they are used; only rotation
    (a refresh that asks for offline_access, whose response never echoes it) keeps an account alive."""
    e2e = virtual_stack
    owner = e2e.admin("create-user", "--email", "ninety@e2e.example", "--with-key")
    acct = new_account(e2e, "ninety@acme.example", "ninety@acme.example")
    calendar = quote(acct["calendars"][0]["id"], safe="")
    assert connect(e2e, owner["api_key"], acct["refresh_token"]).status_code == 201
    connected_at = e2e.clock_now()
    _, at_connect = stored_credentials(e2e, owner["user_id"], "ninety@acme.example")

    def sync_sees(title: str) -> None:
        now = e2e.clock_now()
        e2e.graph(
            "POST",
            f"/accounts/{acct['id']}/calendars/{calendar}/events",
            json={
                "subject": title,
                "start": (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:00:00"),
                "end": (now + timedelta(days=1, hours=1)).strftime("%Y-%m-%dT%H:00:00"),
            },
        )
        resp = e2e.api(
            "GET",
            "/calendar/events",
            key=owner["api_key"],
            params={
                "time_min": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "time_max": (now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["partial_errors"] == {}, (title, resp.json()["partial_errors"])
        assert title in [r["title"] for r in resp.json()["results"]]

    # Syncs (and the daily renewal job) refresh along the way; every refresh rotates the token.
    for day in (15, 30, 45, 60, 75, 89):
        e2e.advance(connected_at + timedelta(days=day))
        sync_sees(f"Day {day}")
    # (Booleans, not token strings, in the assertions: a failure report must not print a token.)
    _, rotated = stored_credentials(e2e, owner["user_id"], "ninety@acme.example")
    has_rotated = rotated["refresh_token"] != at_connect["refresh_token"]
    assert has_rotated, "the stored refresh token never rotated"

    # Past 90 days from connect: the token stored at connect is dead, the account still syncs.
    e2e.advance(connected_at + timedelta(days=91))
    valid = e2e.graph("GET", f"/refresh-tokens?account={acct['id']}").json()["value"]
    first_still_valid = any(t["refresh_token"] == at_connect["refresh_token"] for t in valid)
    assert not first_still_valid
    sync_sees("Day 91")
    listed = e2e.api("GET", "/calendar/connections", key=owner["api_key"]).json()
    assert [c["status"] for c in listed["connections"]["outlook"]] == ["active"]
