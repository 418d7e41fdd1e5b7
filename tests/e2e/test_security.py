"""8/8 end to end, security: per-user isolation on every route of template.yaml, forged webhook calls,
hostile bodies, hashed and revocable API keys, and per-key rate limiting (on a stack of its own)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

import pytest
import requests

from local.template import load_template
from tests.e2e.conftest import E2EStack, start_stack, stop_stack
from tests.e2e.leaks import table_text

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"
CLIENT_ID = "security-e2e-client"
CLIENT_SECRET = "security-e2e-secret-7d3e91"
TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_security_b%40thread.v2/0"
B_TITLE = "B private standup 4f2a"
B_WEBHOOK_URL = "https://93.184.215.14/b-hook-4f2a"  # a public address literal: no DNS needed here
WEBHOOK = "POST /api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}"

# Routes that take no id of anyone's data: they act on the caller's own data only. They are still
# called with user A's key (and an empty body) below, and must neither show nor change user B's data.
NO_FOREIGN_IDS = {
    "POST /api/v1/calendar/create_outlook_calendar": "connects an account to the caller",
    "POST /api/v1/calendar/create_calendar": "the same, under the Google guide's name",
    "POST /api/v1/calendar/auto-schedule/enable": "the caller's own settings",
    "POST /api/v1/calendar/auto-schedule/disable": "the caller's own settings",
    "GET /api/v1/calendar/auto-schedule/settings": "the caller's own settings",
    "PUT /api/v1/calendar/auto-schedule/rules": "the caller's own settings",
    "GET /api/v1/calendar/auto-schedule/preview": "the caller's own meetings",
    "POST /api/v1/webhooks": "registers an endpoint of the caller's",
    "GET /api/v1/webhooks": "the caller's own endpoints",
}
# Routes whose ids come in the query: user B's provider/account_id, expected to show nothing of B.
QUERY_SCOPED = {
    "GET /api/v1/calendar/connections",
    "GET /api/v1/calendar/events",
    "GET /api/v1/calendar/get_events",
    "GET /api/v1/calendar/calendars",
    "GET /api/v1/calendar",
    "GET /api/v1/calendar/scheduled_bots",
}


def body_probes(b: dict[str, Any]) -> dict[str, list[tuple[dict[str, Any], int]]]:
    """Routes whose ids come in the JSON body: (body with user B's ids, the documented status)."""
    scope = {"provider": "outlook", "account_id": b["mail"]}
    return {
        "POST /api/v1/calendar/toggle-recurrence": [
            ({"event_id": b["event_id"], "recurring_enabled": False}, 404),
            ({"event_id": b["event_id"], "recurring_enabled": True}, 404),
        ],
        "POST /api/v1/calendar/auto-reschedule": [
            ({"event_id": b["event_id"]}, 404),
            ({"event_id": b["event_id"], "user_id": b["user_id"]}, 403),  # API.md: another user is 403
        ],
        "POST /api/v1/calendar/disconnect": [(scope, 404), ({**scope, "purge_events": True}, 404)],
        "DELETE /api/v1/calendar/disconnect": [(scope, 404)],
    }


# Bodies that would be valid for the caller's own ids, so a 404 is about the id, not the body.
PATH_ROUTE_BODIES: dict[str, dict[str, Any]] = {
    "POST /api/v1/calendar/schedule/{event_id}": {"bot_config": {"bot_name": "hijack"}},
    "DELETE /api/v1/calendar/schedule/{event_id}": {"cancel_all_occurrences": True},
    "PATCH /api/v1/calendar/scheduled_bots/{bot_id}": {"bot_name": "hijack"},
    "PATCH /api/v1/webhooks/{webhook_id}": {"description": "hijack", "enabled": False},
}
PATH_ROUTE_QUERIES: dict[str, dict[str, str]] = {
    "DELETE /api/v1/calendar/connections/{provider}/{account_id}": {"purge_events": "true"},
}


def template_routes() -> dict[str, Any]:
    return {r.route_key: r for r in load_template(ROOT / "template.yaml").routes}


def no_trace(resp: requests.Response) -> None:
    assert "Traceback" not in resp.text and 'File "' not in resp.text, resp.text[:500]


def json_error(resp: requests.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    no_trace(resp)
    body = resp.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str) and body["message"]
    if error is not None:
        assert body["error"] == error, body
    return body


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


@pytest.fixture(scope="module")
def users(e2e: E2EStack) -> dict[str, dict[str, Any]]:
    """User A (the attacker, with an account of their own) and user B (with a connected account, a
    weekly Teams series, a scheduled bot and auto-scheduling on)."""
    a = e2e.connected_user(CLIENT_ID, CLIENT_SECRET, ["sec.a@acme.example"])
    b = e2e.connected_user(CLIENT_ID, CLIENT_SECRET, ["sec.b@acme.example"])
    acct = b["accounts"][0]
    now = e2e.clock_now()
    day = (now + timedelta(days=6)).date()
    e2e.graph(
        "POST",
        f"/accounts/{acct['id']}/calendars/{quote(acct['calendars'][0]['id'], safe='')}/events",
        json={
            "subject": B_TITLE,
            "start": datetime(day.year, day.month, day.day, 14, 0).isoformat(),
            "end": datetime(day.year, day.month, day.day, 14, 30).isoformat(),
            "online_meeting_url": TEAMS,
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [day.strftime("%A").lower()]},
                "range": {"type": "numbered", "startDate": str(day), "numberOfOccurrences": 4},
            },
        },
    )
    synced = e2e.api(
        "GET",
        "/calendar/events",
        key=b["key"],
        params={"time_max": (now + timedelta(days=60)).isoformat(), "limit": 100},
    )
    assert synced.status_code == 200, synced.text
    occurrences = sorted(
        (e for e in synced.json()["results"] if e["title"] == B_TITLE), key=lambda e: e["start_time"]
    )
    assert len(occurrences) == 4
    made = e2e.api(
        "POST",
        f"/calendar/schedule/{occurrences[0]['id']}",
        key=b["key"],
        json={"bot_config": {"bot_name": "B's notetaker"}, "recurring_event": True},
    )
    assert made.status_code == 201, made.text
    enabled = e2e.api(
        "POST",
        "/calendar/auto-schedule/enable",
        key=b["key"],
        json={"default_bot_config": {"bot_name": "B auto"}, "join_offset_seconds": 120},
    )
    assert enabled.status_code == 200, enabled.text
    # A customer webhook with one delivery: the webhook routes take B's ids too.
    hook = e2e.api("POST", "/webhooks", key=b["key"], json={"url": B_WEBHOOK_URL, "description": B_TITLE})
    assert hook.status_code == 201, hook.text
    tested = e2e.api("POST", f"/webhooks/{hook.json()['id']}/test", key=b["key"])
    assert tested.status_code == 202, tested.text
    return {
        "a": {**a, "mail": a["accounts"][0]["mail"]},
        "b": {
            **b,
            "mail": acct["mail"],
            "event_id": occurrences[0]["id"],
            "event_ids": [e["id"] for e in occurrences],
            "bot_id": made.json()["bot_id"],
            "webhook_id": hook.json()["id"],
            "delivery_id": tested.json()["id"],
        },
    }


def snapshot(e2e: E2EStack, b: dict[str, Any]) -> dict[str, Any]:
    """Everything of user B's that another user's request could change, as B sees it."""
    key = b["key"]
    now = e2e.clock_now()
    return {
        "connection": e2e.api(
            "GET", f"/calendar/connections/outlook/{quote(b['mail'], safe='')}", key=key
        ).json(),
        "connections": e2e.api("GET", "/calendar/connections", key=key).json(),
        "events": e2e.api(
            "GET",
            "/calendar/get_events",
            key=key,
            params={"time_max": (now + timedelta(days=60)).isoformat(), "limit": 100},
        ).json(),
        "bots": e2e.api("GET", "/calendar/scheduled_bots", key=key).json(),
        "settings": e2e.api("GET", "/calendar/auto-schedule/settings", key=key).json(),
        # What B set (the test delivery's attempts go on in the background: not compared).
        "webhooks": [
            {k: w[k] for k in ("id", "url", "event_types", "description", "enabled")}
            for w in e2e.api("GET", "/webhooks", key=key).json()["webhooks"]
        ],
        "schedule": [s for s in e2e.control("GET", "/schedules")["value"] if b["bot_id"] in s["name"]],
        # Six days ahead the bot holds no schedule yet (deferred arming): its arming is its record's.
        "arming": {
            k: v
            for k, v in e2e.boto("dynamodb")
            .get_item(
                TableName=e2e.env()["TABLE_NAME"],
                Key={"PK": {"S": f"USER#{b['user_id']}"}, "SK": {"S": f"BOT#{b['bot_id']}"}},
            )["Item"]
            .items()
            if k in ("arm_deferred", "launch_generation", "GSI2PK", "GSI2SK", "scheduled_join_time")
        },
        "subscriptions": sorted(
            (s["id"], s["expiration_date_time"], s["notification_url"])
            for s in e2e.graph("GET", "/subscriptions").json()["value"]
            if s["account_id"] == b["accounts"][0]["id"]
        ),
    }


def markers(b: dict[str, Any]) -> list[str]:
    """Strings that only user B's data contains: none may reach user A."""
    return [b["mail"], B_TITLE, b["bot_id"], b["user_id"], b["webhook_id"], b["delivery_id"], *b["event_ids"]]


def test_every_route_refuses_another_users_ids_and_changes_nothing(
    e2e: E2EStack, users: dict[str, dict[str, Any]]
) -> None:
    a, b = users["a"], users["b"]
    routes = template_routes()
    assert len(routes) >= 15
    before = snapshot(e2e, b)
    assert before["bots"]["results"][0]["bot_id"] == b["bot_id"] and before["settings"]["enabled"] is True
    # the snapshot sees real things: B's bot is armed, by a schedule or (deferred) in the arming index
    assert (before["schedule"] or before["arming"].get("GSI2SK")) and before["subscriptions"]
    path_ids = {
        "provider": "outlook",
        "account_id": quote(b["mail"], safe=""),
        "event_id": b["event_id"],
        "bot_id": b["bot_id"],
        "user_id": b["user_id"],
        "webhook_id": b["webhook_id"],
        "delivery_id": b["delivery_id"],
    }
    # Ids of the same shapes that belong to nobody: another user's id must get the very same answer.
    nobody_ids = {
        **path_ids,
        "account_id": quote("nobody@acme.example", safe=""),
        "event_id": "evt_" + "0" * 24,
        "bot_id": "bot_" + "0" * 24,
        "user_id": "usr_nobody0000",
        "webhook_id": "wh_" + "0" * 24,
        "delivery_id": "whd_" + "0" * 24,
    }
    probes = body_probes(b)
    uncovered, exercised = [], []
    for route_key, route in routes.items():
        if route_key == WEBHOOK:
            assert route.authorizer is None  # no API key: forged calls are tested below
            continue
        if route_key == "GET /api/v1/openapi.json":
            assert route.authorizer is None  # the public API document: nothing user-owned in it
            continue
        assert route.authorizer is not None, f"{route_key} is not behind the API-key authorizer"
        method, path = route.method, route.path
        calls: list[tuple[str, dict[str, str], Any, tuple[int, ...]]] = []
        params = re.findall(r"{(\w+)\+?}", path)
        if params:
            unknown = [p for p in params if p not in path_ids]
            assert not unknown, f"{route_key}: add user B's value for {unknown} to path_ids"
            filled, nobodys = path, path
            for p in params:
                filled = re.sub(r"{" + p + r"\+?}", path_ids[p], filled)
                nobodys = re.sub(r"{" + p + r"\+?}", nobody_ids[p], nobodys)
            body = PATH_ROUTE_BODIES.get(route_key, {})
            query = PATH_ROUTE_QUERIES.get(route_key, {})
            calls.append((filled, query, body, (404,)))
            unknown_resp = e2e.api(method, nobodys.removeprefix(API), key=a["key"], params=query, json=body)
            foreign_resp = e2e.api(method, filled.removeprefix(API), key=a["key"], params=query, json=body)
            assert foreign_resp.status_code == unknown_resp.status_code, route_key
            assert foreign_resp.json()["error"] == unknown_resp.json()["error"], route_key
        elif route_key in probes:
            calls += [(path, {}, body, (status,)) for body, status in probes[route_key]]
        elif route_key in QUERY_SCOPED:
            for query in ({"provider": "outlook", "account_id": b["mail"]}, {"provider": "outlook"}, {}):
                calls.append((path, query, None, (200, 404)))
        elif route_key in NO_FOREIGN_IDS:
            calls.append((path, {}, {} if method != "GET" else None, (200, 201, 400, 404)))
        else:
            uncovered.append(route_key)
            continue
        for url_path, query, body, expected in calls:
            resp = e2e.api(method, url_path.removeprefix(API), key=a["key"], params=query, json=body)
            assert resp.status_code in expected, (route_key, query, body, resp.status_code, resp.text)
            no_trace(resp)
            if resp.status_code >= 400:
                json_error(resp, resp.status_code)
            # Echoing what the caller sent is no leak (the same 404 names a nonexistent id too).
            sent = f"{unquote(url_path)} {json.dumps(query)} {json.dumps(body)}"
            leaked = [m for m in markers(b) if m in resp.text and m not in sent]
            assert leaked == [], (route_key, query, leaked)
            exercised.append(route_key)
    assert uncovered == [], (
        f"routes with no isolation probe: {uncovered}; add one (or, if the route takes no user-owned "
        "id, add it to NO_FOREIGN_IDS with the reason)"
    )
    assert set(exercised) == set(routes) - {WEBHOOK, "GET /api/v1/openapi.json"}
    # A's own data is still visible to A (the probes did not simply break the routes).
    mine = e2e.api("GET", "/calendar/connections", key=a["key"]).json()
    assert [c["account_id"] for c in mine["connections"]["outlook"]] == [a["mail"]]
    assert snapshot(e2e, b) == before


def test_forged_webhook_calls_get_202_and_nothing_is_enqueued(
    e2e: E2EStack, users: dict[str, dict[str, Any]]
) -> None:
    a, b = users["a"], users["b"]
    sqs = e2e.boto("sqs")
    (queue_url,) = [u for u in sqs.list_queues()["QueueUrls"] if u.endswith("-SyncQueue.fifo")]

    # Messages other modules left on the shared queue (an account that keeps failing waits out its
    # retries there) are not this test's business: count only messages that were not there before.
    def message_ids() -> set[str]:
        return {m["message_id"] for m in e2e.control("GET", "/queues/SyncQueue/messages")["value"]}

    already = message_ids()

    def queued() -> int:
        return len(message_ids() - already)

    (sub, *_) = [
        s
        for s in e2e.graph("GET", "/subscriptions").json()["value"]
        if s["account_id"] == b["accounts"][0]["id"]
    ]
    b_url = f"{e2e.api_url}/admin/schedule/users/{b['user_id']}/outlook/{quote(b['mail'], safe='')}"
    a_url = f"{e2e.api_url}/admin/schedule/users/{a['user_id']}/outlook/{quote(a['mail'], safe='')}"
    b_path_a_account = (
        f"{e2e.api_url}/admin/schedule/users/{b['user_id']}/outlook/{quote(a['mail'], safe='')}"
    )
    item = {
        "subscriptionId": sub["id"],
        "changeType": "updated",
        "resource": "Users/x/Events/y",
        "resourceData": {"id": "y"},
        "clientState": sub["client_state"],
    }
    forgeries: list[tuple[str, dict[str, Any]]] = [
        (b_url, {"json": {"value": [{**item, "clientState": "forged-client-state"}]}}),
        (b_url, {"json": {"value": [{k: v for k, v in item.items() if k != "clientState"}]}}),
        (a_url, {"json": {"value": [item]}}),  # right secret, another user in the path
        (b_path_a_account, {"json": {"value": [item]}}),  # right user, another account in the path
        (b_url, {"json": {"value": [{**item, "subscriptionId": "00000000-unknown"}]}}),
        (f"{e2e.api_url}/admin/schedule/users/usr_nobody/outlook/x%40y.example", {"json": {"value": [item]}}),
        (b_url, {"json": {"value": [{**item, "lifecycleEvent": "subscriptionRemoved", "clientState": "x"}]}}),
        (b_url, {"data": "{not json", "headers": {"Content-Type": "application/json"}}),
        (b_url, {"data": json.dumps({"value": [item]}), "headers": {"Content-Type": "text/plain"}}),
        (b_url, {"data": "x" * (300 * 1024), "headers": {"Content-Type": "application/json"}}),
        (b_url, {"json": ["not", "an", "object"]}),
        (
            f"{e2e.api_url}/admin/schedule/users/{b['user_id']}/google/{quote(b['mail'], safe='')}",
            {
                "headers": {
                    "X-Goog-Channel-ID": "unknown",
                    "X-Goog-Channel-Token": "x",
                    "X-Goog-Resource-State": "exists",
                }
            },
        ),
    ]
    e2e.settle()
    e2e.graph("POST", "/notifications/pause")  # only the requests below reach the webhook
    try:
        before = snapshot(e2e, b)
        assert queued() == 0
        for url, kwargs in forgeries:
            resp = e2e.http.post(url, timeout=30, **kwargs)
            e2e.responses.append(resp.text)
            # The same empty 202 whatever was wrong: never an oracle for ids or secrets.
            assert (resp.status_code, resp.text) == (202, ""), (url, kwargs.get("json"), resp.status_code)
        assert queued() == 0
        e2e.control("POST", "/queues/drain")
        assert snapshot(e2e, b) == before
        # The control: the genuine notification is accepted and enqueued, so the checks above can see it.
        genuine = e2e.http.post(b_url, json={"value": [item]}, timeout=30)
        assert genuine.status_code == 202 and queued() == 1
        e2e.control("POST", "/queues/drain")
        assert queued() == 0
    finally:
        e2e.graph("POST", "/notifications/resume")


def body_routes() -> list[str]:
    """Keyed routes whose handler reads a JSON body (found in the handler's source)."""
    template = load_template(ROOT / "template.yaml")
    out = []
    for route in template.routes:
        if route.authorizer is None:
            continue
        source = template.functions[route.function].module_path.read_text()
        if "body_as(" in source or ".json()" in source:
            out.append(route.route_key)
    return out


def test_hostile_bodies_are_clear_json_errors(e2e: E2EStack, users: dict[str, dict[str, Any]]) -> None:
    key = users["a"]["key"]
    routes = body_routes()
    assert len(routes) >= 6 and "POST /api/v1/calendar/create_outlook_calendar" in routes
    oversize = json.dumps({"bot_config": {"bot_name": "x" * (300 * 1024)}})
    for route_key in routes:
        method, path = route_key.split(" ", 1)
        path = re.sub(r"{\w+\+?}", "nope", path).removeprefix(API)
        cases = [
            (oversize.encode(), "application/json", 413, "payload_too_large"),
            (b"{nope", "application/json", 400, "invalid_json"),
            (b'["a list"]', "application/json", 400, "invalid_json"),
            (b"\xc3\x28{}", "application/json", 400, "invalid_json"),  # not UTF-8
            (b'{"a": 1}', "text/plain", 415, "unsupported_media_type"),
            (b"a=b", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ]
        for data, ctype, status, error in cases:
            resp = e2e.api(method, path, key=key, data=data, headers={"Content-Type": ctype})
            json_error(resp, status, error)
            assert "x" * 100 not in resp.text  # the rejected body is never echoed
    # Every keyed route, body or not, answers a hostile body without a 5xx or a trace.
    for route_key, route in template_routes().items():
        if route.authorizer is None:
            continue
        path = re.sub(r"{\w+\+?}", "nope", route.path).removeprefix(API)
        for data, ctype in ((oversize, "application/json"), ("{nope", "application/json"), ("a", "text/csv")):
            resp = e2e.api(route.method, path, key=key, data=data, headers={"Content-Type": ctype})
            assert resp.status_code < 500, (route_key, resp.status_code, resp.text[:300])
            no_trace(resp)


def scan_table(e2e: E2EStack) -> str:
    ddb = e2e.boto("dynamodb")
    table = e2e.env()["TABLE_NAME"]
    items, kwargs = [], {"TableName": table}
    while True:
        page = ddb.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return table_text(items)  # binary attributes too (the encrypted TOKEN#/CRED# blobs)
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_api_keys_are_stored_hashed_and_revocation_is_immediate(
    e2e: E2EStack, users: dict[str, dict[str, Any]]
) -> None:
    made = e2e.admin("create-user", "--email", "revoke@e2e.example", "--with-key")
    second = e2e.admin("create-api-key", "--user-id", made["user_id"])
    keys = [users["a"]["key"], users["b"]["key"], made["api_key"], second["api_key"], e2e.demo_key]
    dump = scan_table(e2e)
    for key in keys:
        assert key not in dump and key.removeprefix("cbk_") not in dump
        assert f"APIKEY#{hashlib.sha256(key.encode()).hexdigest()}" in dump
    ssm = e2e.boto("ssm")
    params = ssm.get_parameters_by_path(Path="/", Recursive=True, WithDecryption=True)["Parameters"]
    assert not [p["Name"] for p in params if any(k in p["Value"] for k in keys)]

    for key in (made["api_key"], second["api_key"]):
        assert e2e.api("GET", "/calendar/connections", key=key).status_code == 200
    e2e.admin("revoke-api-key", "--key", made["api_key"])
    for path in ("/calendar/connections", "/calendar/auto-schedule/settings", "/calendar/scheduled_bots"):
        json_error(e2e.api("GET", path, key=made["api_key"]), 401, "unauthorized")
    json_error(
        e2e.api("POST", "/calendar/auto-schedule/enable", key=made["api_key"], json={}), 401, "unauthorized"
    )
    assert e2e.api("GET", "/calendar/connections", key=second["api_key"]).status_code == 200  # the other key
    assert f"APIKEY#{hashlib.sha256(made['api_key'].encode()).hexdigest()}" not in scan_table(e2e)


# --------------------------------------------------------------------------------------------------
# rate limiting, on a stack of its own with a small limit (the session stack keeps the default 600)

LIMIT = 5


@pytest.fixture
def limited_stack(tmp_path: Path) -> Iterator[E2EStack]:
    stack = start_stack(
        tmp_path / "ratelimit-stack",
        "--virtual-time",
        "--no-seed",
        "--parameter-overrides",
        f"RateLimitPerMinute={LIMIT}",
        "RateLimitBurst=1000",
    )
    yield stack
    stop_stack(stack)


def test_rate_limit_per_key_with_retry_after_and_a_fresh_window(limited_stack: E2EStack) -> None:
    e2e = limited_stack
    assert e2e.info["parameter_overrides"]["RateLimitPerMinute"] == str(LIMIT)
    owner = e2e.admin("create-user", "--with-key")
    owners_other_key = e2e.admin("create-api-key", "--user-id", owner["user_id"])["api_key"]
    stranger = e2e.admin("create-user", "--with-key")["api_key"]
    key = owner["api_key"]
    # Start at the top of a fresh minute, so the burst below sits in one window.
    now = e2e.clock_now()
    e2e.advance(now.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1))
    window = e2e.clock_now().replace(second=0, microsecond=0)

    statuses = [e2e.api("GET", "/calendar/connections", key=key).status_code for _ in range(LIMIT)]
    assert statuses == [200] * LIMIT
    refused = e2e.api("GET", "/calendar/connections", key=key)
    body = json_error(refused, 429, "rate_limited")
    assert f"{LIMIT} requests a minute" in body["message"]
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    # Every keyed route is limited, not just the one that was hammered.
    json_error(e2e.api("GET", "/calendar/auto-schedule/settings", key=key), 429, "rate_limited")
    json_error(
        e2e.api("POST", "/calendar/schedule/evt_x", key=key, json={"bot_config": {}}), 429, "rate_limited"
    )
    assert e2e.clock_now().replace(second=0, microsecond=0) == window, "the burst straddled two windows"

    # Another key of the same user, and another user, are unaffected; so are requests without a key.
    assert e2e.api("GET", "/calendar/connections", key=owners_other_key).status_code == 200
    assert e2e.api("GET", "/calendar/connections", key=stranger).status_code == 200
    for _ in range(LIMIT + 2):
        json_error(e2e.api("GET", "/calendar/connections", key="cbk_not_a_key"), 401, "unauthorized")
        handshake = e2e.http.post(
            f"{e2e.api_url}/admin/schedule/users/usr_x/outlook/a%40b.example",
            params={"validationToken": "hello"},
            timeout=30,
        )
        assert handshake.status_code == 200 and handshake.text == "hello"  # the webhook is not key-limited

    e2e.advance(e2e.clock_now() + timedelta(seconds=retry_after))
    assert e2e.api("GET", "/calendar/connections", key=key).status_code == 200
    log = e2e.log_text()
    assert "rate limited" in log  # the refusals were logged (by key id) ...
    assert key not in log and owners_other_key not in log and stranger not in log  # ... never by key


# --------------------------------------------------------------------------------------------------
# issue 16


def test_bot_config_cannot_send_the_bot_elsewhere(e2e: E2EStack, users: dict[str, dict[str, Any]]) -> None:
    b = users["b"]
    before = snapshot(e2e, b)
    evil = "https://evil.example/j/123"
    attempts = [
        ("POST", f"/calendar/schedule/{b['event_ids'][1]}", {"bot_config": {"meeting_link": evil}}),
        ("POST", f"/calendar/schedule/{b['event_ids'][1]}", {"bot_config": {"meeting_url": evil}}),
        (
            "POST",
            f"/calendar/schedule/{b['event_ids'][1]}",
            {"bot_config": {"custom_attributes": {"scheduled_bot_id": "sb_other"}}},
        ),
        ("PATCH", f"/calendar/scheduled_bots/{b['bot_id']}", {"bot_config": {"meeting_link": evil}}),
        (
            "PATCH",
            f"/calendar/scheduled_bots/{b['bot_id']}",
            {"custom_attributes": {"calendar_event_id": "x"}},
        ),
        ("POST", "/calendar/auto-schedule/enable", {"default_bot_config": {"meeting_link": evil}}),
    ]
    for method, path, body in attempts:
        resp = e2e.api(method, path, key=b["key"], json=body)
        error = json_error(resp, 400, "invalid_request")
        assert "cannot be set" in error["details"][0]["message"], error
    assert snapshot(e2e, b) == before  # nothing stored: the record can never differ from the launch


def test_a_cursor_is_refused_by_another_listing(e2e: E2EStack, users: dict[str, dict[str, Any]]) -> None:
    b = users["b"]
    page = e2e.api("GET", "/calendar/get_events", key=b["key"], params={"limit": 1}).json()
    assert page["has_more"] and page["next"]
    events_cursor = parse_qs(urlparse(page["next"]).query)["cursor"][0]
    refused = e2e.api("GET", "/calendar/scheduled_bots", key=b["key"], params={"cursor": events_cursor})
    json_error(refused, 400, "invalid_cursor")
    # ... while it still pages the listing that issued it, and its twin (the same rows).
    for path in ("/calendar/get_events", "/calendar/events"):
        again = e2e.api("GET", path, key=b["key"], params={"limit": 1, "cursor": events_cursor})
        assert again.status_code == 200, again.text


def test_every_answer_carries_nosniff(e2e: E2EStack, users: dict[str, dict[str, Any]]) -> None:
    b = users["b"]
    webhook = f"{e2e.api_url}/admin/schedule/users/{b['user_id']}/outlook/{quote(b['mail'], safe='')}"
    answers = [
        e2e.api("GET", "/calendar/connections", key=b["key"]),  # 200 JSON
        e2e.api("GET", "/calendar/connections"),  # 401
        e2e.api("GET", "/calendar/connections/outlook/nobody%40x.example", key=b["key"]),  # 404
        e2e.api("POST", "/calendar/toggle-recurrence", key=b["key"], data="{nope"),  # 400
        e2e.api("GET", "/openapi.json"),
        e2e.http.post(webhook, params={"validationToken": "<b>bold</b>"}, timeout=30),  # the echo
        e2e.http.post(webhook, json={"value": []}, timeout=30),  # empty 202
    ]
    for resp in answers:
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", (resp.url, resp.status_code)
    echo = answers[5]
    assert echo.status_code == 200 and echo.text == "<b>bold</b>"
    assert echo.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "sandbox" in echo.headers["Content-Security-Policy"]
