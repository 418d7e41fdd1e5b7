"""The `dynamodb` credential backend end to end: a local stack started with CredentialBackend=dynamodb,
connect -> sync -> token refresh -> disconnect over HTTP, with nothing in SSM and no token material in
clear in the table. (Every other e2e module runs the default `ssm` backend.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.conftest import E2EStack, aws_limit_violations, start_stack, stop_stack
from tests.e2e.leaks import find_leaks, table_text

CLIENT_ID = "ddb-backend-client"
CLIENT_SECRET = "ddb-backend-secret-9d2e"


@pytest.fixture(scope="module")
def ddb_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    stack = start_stack(
        Path(tmp_path_factory.mktemp("ddb-credentials")),
        "--virtual-time",
        "--no-seed",
        "--parameter-overrides",
        "CredentialBackend=dynamodb",
    )
    stack.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})
    yield stack
    stop_stack(stack)
    assert aws_limit_violations(stack) == []  # no IAM denial (kms included), no overrun


def secret_items(stack: E2EStack, user_id: str) -> dict[str, bytes]:
    items = stack.boto("dynamodb").query(
        TableName=stack.env()["TABLE_NAME"],
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": f"USER#{user_id}"}},
    )["Items"]
    return {i["SK"]["S"].split("#", 1)[0]: i["blob"]["B"] for i in items if "blob" in i}


def user_parameters(stack: E2EStack) -> list[str]:
    params = stack.boto("ssm").get_parameters_by_path(Path="/calbot/local/users", Recursive=True)
    return [p["Name"] for p in params["Parameters"]]


def test_connect_sync_refresh_disconnect_with_the_dynamodb_backend(ddb_stack: E2EStack) -> None:
    stack = ddb_stack
    assert stack.info["parameter_overrides"]["CredentialBackend"] == "dynamodb"
    user = stack.connected_user(CLIENT_ID, CLIENT_SECRET, ["ddb.owner@contoso.example"])
    acct = user["accounts"][0]
    stored = secret_items(stack, user["user_id"])
    assert sorted(stored) == ["CRED", "TOKEN"] and user_parameters(stack) == []
    calendar = quote(acct["calendars"][0]["id"], safe="")
    started = stack.clock_now()

    def sync_sees(title: str) -> None:
        now = stack.clock_now()
        stack.graph(
            "POST",
            f"/accounts/{acct['id']}/calendars/{calendar}/events",
            json={
                "subject": title,
                "start": (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:00:00"),
                "end": (now + timedelta(days=1, hours=1)).strftime("%Y-%m-%dT%H:00:00"),
            },
        )
        resp = stack.api("GET", "/calendar/events", key=user["key"])
        assert resp.status_code == 200, resp.text
        assert resp.json()["partial_errors"] == {}, resp.json()["partial_errors"]
        assert title in [r["title"] for r in resp.json()["results"]]

    sync_sees("Cached token")
    assert secret_items(stack, user["user_id"]) == stored  # nothing refreshed, nothing rewritten

    # Past the access token's hour: the sync refreshes from the CRED# item and caches the new access
    # token; the rotated refresh token is written back only once the stored one is a day old.
    stack.advance(started + timedelta(hours=2))
    sync_sees("Refreshed token")
    refreshed = secret_items(stack, user["user_id"])
    assert refreshed["TOKEN"] != stored["TOKEN"] and refreshed["CRED"] == stored["CRED"]
    stack.advance(started + timedelta(days=1, hours=2))
    sync_sees("Rotated token kept")
    rotated = secret_items(stack, user["user_id"])
    assert rotated["CRED"] != stored["CRED"] and rotated["TOKEN"] != refreshed["TOKEN"]
    assert user_parameters(stack) == []
    issued = stack.collect_token_material()
    items = stack.boto("dynamodb").scan(TableName=stack.env()["TABLE_NAME"])["Items"]  # test-side scan
    assert find_leaks(issued | {CLIENT_SECRET}, {"table": table_text(items)}) == {}

    resp = stack.api(
        "DELETE", f"/calendar/connections/outlook/{quote(acct['mail'], safe='')}", key=user["key"]
    )
    assert resp.status_code == 200, resp.text
    assert secret_items(stack, user["user_id"]) == {} and user_parameters(stack) == []
