"""Customer webhook endpoints over HTTP on the local stack, as an integrator's curl drives them:
register (secret shown once), list, get without the secret, patch, rotate, delete, the 10-per-user
limit, another user's ids answering 404, and forged URLs refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import E2EStack

PUBLIC = "https://93.184.215.14/calbot-hook"  # a public address literal: no DNS needed here


@pytest.fixture(scope="module")
def made_users(e2e: E2EStack) -> list[dict[str, str]]:
    return [e2e.admin("create-user", "--with-key"), e2e.admin("create-user", "--with-key")]


@pytest.fixture(scope="module")
def users(made_users: list[dict[str, str]]) -> tuple[str, str]:
    return made_users[0]["api_key"], made_users[1]["api_key"]


def secret_type(e2e: E2EStack, user_id: str, webhook_id: str) -> str | None:
    """The type of the endpoint's secret parameter (calbot.webhook_secrets.secret_path), None if absent."""
    ssm = e2e.boto("ssm")
    try:
        found = ssm.get_parameter(Name=f"/calbot/local/webhooks/{user_id}/{webhook_id}")
    except ssm.exceptions.ParameterNotFound:
        return None
    return str(found["Parameter"]["Type"])


def register(e2e: E2EStack, key: str, **body: Any) -> Any:
    return e2e.api("POST", "/webhooks", key=key, json={"url": PUBLIC, **body})


def test_register_list_get_patch_rotate_delete(e2e: E2EStack, made_users: list[dict[str, str]]) -> None:
    key, user_id = made_users[0]["api_key"], made_users[0]["user_id"]
    resp = register(e2e, key, event_types=["bot.updated", "bot.cancelled"], description="prod receiver")
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made["id"].startswith("wh_") and made["secret"].startswith("whsec_")
    assert made["enabled"] is True and made["created_at"].endswith("Z")
    assert made["event_types"] == ["bot.updated", "bot.cancelled"]
    path = f"/webhooks/{made['id']}"

    got = e2e.api("GET", path, key=key)
    assert got.status_code == 200 and "secret" not in got.json() and made["secret"] not in got.text
    listed = e2e.api("GET", "/webhooks", key=key).json()
    assert [w["id"] for w in listed["webhooks"]] == [made["id"]] and listed["limit"] == 10
    assert made["secret"] not in str(listed)

    patched = e2e.api("PATCH", path, key=key, json={"event_types": ["*"], "enabled": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == ["*"] and patched.json()["enabled"] is False
    bad = e2e.api("PATCH", path, key=key, json={"event_types": ["bot.exploded"]})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"

    rotated = e2e.api("POST", f"{path}/rotate-secret", key=key)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != made["secret"]
    assert rotated.json()["previous_secret_expires_at"].endswith("Z")
    assert rotated.json()["secret"] not in e2e.api("GET", path, key=key).text

    assert secret_type(e2e, user_id, made["id"]) == "SecureString"
    assert e2e.api("DELETE", path, key=key).json() == {"deleted": True, "id": made["id"]}
    gone = e2e.api("GET", path, key=key)
    assert gone.status_code == 404 and gone.json()["error"] == "webhook_not_found"
    assert e2e.api("DELETE", path, key=key).status_code == 404
    assert secret_type(e2e, user_id, made["id"]) is None  # its secrets went with it


def test_another_users_ids_are_404_and_unauthenticated_is_401(e2e: E2EStack, users: tuple[str, str]) -> None:
    owner, other = users
    made = register(e2e, owner).json()
    path = f"/webhooks/{made['id']}"
    for method, suffix, body in (
        ("GET", "", None),
        ("PATCH", "", {"enabled": False}),
        ("DELETE", "", None),
        ("POST", "/rotate-secret", None),
    ):
        resp = e2e.api(method, path + suffix, key=other, json=body)
        assert resp.status_code == 404 and resp.json()["error"] == "webhook_not_found", (method, suffix)
    assert made["id"] not in e2e.api("GET", "/webhooks", key=other).text
    assert e2e.api("GET", path, key=owner).json()["enabled"] is True  # untouched
    assert e2e.api("GET", "/webhooks").status_code == 401
    assert e2e.api("POST", "/webhooks", json={"url": PUBLIC}).status_code == 401


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",  # not https
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",  # a name resolving to the loopback
        "https://user:pass@93.184.215.14/hook",
        "http://127.0.0.1:8000/hook",  # the local stack allows no origin unless told to
    ],
)
def test_forged_urls_are_refused(e2e: E2EStack, users: tuple[str, str], url: str) -> None:
    key, _ = users
    resp = e2e.api("POST", "/webhooks", key=key, json={"url": url})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_webhook_url" and resp.json()["message"]


def test_ten_endpoints_per_user(e2e: E2EStack) -> None:
    key = e2e.admin("create-user", "--with-key")["api_key"]
    for _ in range(10):
        assert register(e2e, key).status_code == 201
    refused = register(e2e, key)
    assert refused.status_code == 400 and refused.json()["error"] == "webhook_limit_reached"
    assert refused.json()["limit"] == 10
    first = e2e.api("GET", "/webhooks", key=key).json()["webhooks"][0]["id"]
    assert e2e.api("DELETE", f"/webhooks/{first}", key=key).status_code == 200
    assert register(e2e, key).status_code == 201


def test_secrets_never_reach_the_log_or_the_table_in_clear(
    e2e: E2EStack, made_users: list[dict[str, str]]
) -> None:
    key = made_users[0]["api_key"]
    made = register(e2e, key).json()
    rotated = e2e.api("POST", f"/webhooks/{made['id']}/rotate-secret", key=key).json()
    shown = [made["secret"], rotated["secret"]]
    shown_raw = [s.removeprefix("whsec_") for s in shown]  # the HMAC key's base64, on its own
    log = e2e.log_text()
    assert not [s for s in shown + shown_raw if s in log]
    pages = e2e.boto("dynamodb").get_paginator("scan").paginate(TableName=e2e.env()["TABLE_NAME"])
    table = str([item for page in pages for item in page["Items"]])  # a test-side scan
    assert made["id"] in table and not [s for s in shown_raw if s in table]
    # where they are kept: a SecureString of the stage's webhooks/ prefix
    assert secret_type(e2e, made_users[0]["user_id"], made["id"]) == "SecureString"
