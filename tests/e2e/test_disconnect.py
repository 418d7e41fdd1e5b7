"""7/8 end to end: disconnecting one account over HTTP (per-account DELETE and the legacy endpoint),
checked at moto (DynamoDB items, Scheduler schedules, SSM parameters) and at the Graph emulator."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import E2EStack

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "disc-e2e-client"
CLIENT_SECRET = "disc-e2e-secret-4a7e"
ZOOM = "https://acme.zoom.us/j/{n}"


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


class Aws:
    """Direct reads of what the stack stored at moto."""

    def __init__(self, e2e: E2EStack) -> None:
        env = e2e.env()
        self.table, self.group = env["TABLE_NAME"], env["SCHEDULE_GROUP"]
        self.ddb, self.scheduler, self.ssm = e2e.boto("dynamodb"), e2e.boto("scheduler"), e2e.boto("ssm")

    def user_items(self, user_id: str) -> list[dict[str, Any]]:
        items, kwargs = [], {}
        while True:
            resp = self.ddb.query(
                TableName=self.table,
                KeyConditionExpression="PK = :pk",
                ExpressionAttributeValues={":pk": {"S": f"USER#{user_id}"}},
                ConsistentRead=True,
                **kwargs,
            )
            items += resp["Items"]
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs = {"ExclusiveStartKey": resp["LastEvaluatedKey"]}

    def account_items(self, user_id: str, mail: str) -> list[dict[str, Any]]:
        """The account's connection, events, sync states and bots, as raw DynamoDB items."""
        return sorted(
            (
                i
                for i in self.user_items(user_id)
                if i.get("account_id", {}).get("S", "").lower() == mail.lower()
            ),
            key=lambda i: i["SK"]["S"],
        )

    def item(self, pk: str, sk: str) -> dict[str, Any] | None:
        return self.ddb.get_item(
            TableName=self.table, Key={"PK": {"S": pk}, "SK": {"S": sk}}, ConsistentRead=True
        ).get("Item")

    def schedule(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.scheduler.get_schedule(Name=name, GroupName=self.group)
        except self.scheduler.exceptions.ResourceNotFoundException:
            return None
        return {k: v for k, v in found.items() if k != "ResponseMetadata"}

    def parameter(self, name: str) -> str | None:
        try:
            return self.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            return None


class User:
    def __init__(self, e2e: E2EStack, n_accounts: int, meetings: int = 2) -> None:
        self.e2e = e2e
        tag = len(e2e.responses)
        made = e2e.connected_user(
            CLIENT_ID, CLIENT_SECRET, [f"disc.{tag}.{i}@acme.example" for i in range(n_accounts)]
        )
        self.key, self.user_id, self.accounts = made["key"], made["user_id"], made["accounts"]
        start = (e2e.clock_now() + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
        for a, acct in enumerate(self.accounts):
            cal = quote(acct["calendars"][0]["id"], safe="")
            for m in range(meetings):
                begin = start + timedelta(hours=m)
                e2e.graph(
                    "POST",
                    f"/accounts/{acct['id']}/calendars/{cal}/events",
                    json={
                        "subject": f"Meeting {m}",
                        "start": begin.isoformat(),
                        "end": (begin + timedelta(minutes=30)).isoformat(),
                        "location": ZOOM.format(n=f"{tag}{a}{m}"),
                    },
                )
        self.start = start
        for event in self.events(sync=True):
            resp = e2e.api("POST", f"/calendar/schedule/{event['id']}", key=self.key, json={})
            assert resp.status_code == 201, resp.text

    def events(self, *, sync: bool = False, mail: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 100, "sync": str(sync).lower()}
        if mail:
            params |= {"provider": "outlook", "account_id": mail}
        resp = self.e2e.api("GET", "/calendar/events", key=self.key, params=params)
        assert resp.status_code == 200 and resp.json()["partial_errors"] == {}, resp.text
        return resp.json()["results"]

    def delete(self, mail: str, **params: Any) -> Any:
        return self.e2e.api(
            "DELETE", f"/calendar/connections/outlook/{quote(mail, safe='')}", key=self.key, params=params
        )

    def emulator_subscriptions(self, acct: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            s
            for s in self.e2e.graph("GET", "/subscriptions").json()["value"]
            if s["account_id"] == acct["id"]
        ]


def snapshot(aws: Aws, user: User, acct: dict[str, Any]) -> dict[str, Any]:
    """Everything of one account, raw: its items, its bots' schedules, its subscription items and
    parameter at moto, and its subscriptions at the emulator."""
    items = aws.account_items(user.user_id, acct["mail"])
    conn = next(i for i in items if i["SK"]["S"].startswith("CONN#"))
    bots = [i["bot_id"]["S"] for i in items if i["SK"]["S"].startswith("BOT#")]
    subs = [s["M"]["id"]["S"] for s in conn["subscriptions"]["L"]]
    return {
        "items": items,
        "schedules": {f"{p}-{b}": aws.schedule(f"{p}-{b}") for b in bots for p in ("launch", "next")},
        "subscription_items": [aws.item(f"SUB#{s}", "SUB") for s in subs],
        "parameter": aws.parameter(conn["credential_path"]["S"]),
        "emulator_subscriptions": user.emulator_subscriptions(acct),
    }


def gone(aws: Aws, user: User, acct: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """What is left of a disconnected account, independent of ids and timing."""
    items = aws.account_items(user.user_id, acct["mail"])
    bots = [i for i in items if i["SK"]["S"].startswith("BOT#")]
    return {
        "kinds": sorted({i["kind"]["S"] for i in items}),
        "bots": sorted((b["status"]["S"], b.get("reason", {}).get("S")) for b in bots),
        "schedules": [n for n in before["schedules"] if aws.schedule(n)],
        "subscription_items": [s for s in before["subscription_items"] if aws.item(s["PK"]["S"], "SUB")],
        "parameter": aws.parameter(conn_item(before)["credential_path"]["S"]),
        "emulator_subscriptions": user.emulator_subscriptions(acct),
    }


def launch(e2e: E2EStack, user_id: str, bot_id: str) -> dict[str, Any]:
    """Invoke the bot launcher with a launch schedule's input, as EventBridge Scheduler does."""
    event_file = e2e.state_dir / f"launch-{bot_id}.json"
    event_file.write_text(json.dumps({"action": "launch", "user_id": user_id, "bot_id": bot_id}))
    proc = subprocess.run(
        [sys.executable, "-m", "local.invoke", "BotLauncherFunction", "-e", str(event_file)]
        + ["--state-dir", str(e2e.state_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def conn_item(before: dict[str, Any]) -> dict[str, Any]:
    return next(i for i in before["items"] if i["SK"]["S"].startswith("CONN#"))


def test_disconnect_one_of_three_accounts_leaves_the_other_two_byte_for_byte(e2e: E2EStack) -> None:
    aws = Aws(e2e)
    user = User(e2e, n_accounts=3)
    target, others = user.accounts[1], [user.accounts[0], user.accounts[2]]
    before = snapshot(aws, user, target)
    kept = [snapshot(aws, user, a) for a in others]
    assert all(
        len([s for s in k["schedules"].values() if s]) == 2 and k["emulator_subscriptions"] for k in kept
    )
    assert before["parameter"] is not None and len(before["emulator_subscriptions"]) == 1
    bot_ids = [i["bot_id"]["S"] for i in before["items"] if i["SK"]["S"].startswith("BOT#")]

    resp = user.delete(target["mail"])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "disconnected": {"provider": "outlook", "account_id": target["mail"]},
        "events_deleted": 2,
        "bots_cancelled": 2,
        "subscriptions_stopped": 1,
        "warnings": [],
    }
    items = aws.account_items(user.user_id, target["mail"])
    assert sorted(i["kind"]["S"] for i in items) == ["bot", "bot"]  # no record, event or sync state left
    assert {(i["status"]["S"], i["reason"]["S"]) for i in items} == {("Cancelled", "calendar_disconnected")}
    assert [b for b in bot_ids if aws.schedule(f"launch-{b}") or aws.schedule(f"next-{b}")] == []
    assert [s for s in before["subscription_items"] if aws.item(s["PK"]["S"], "SUB")] == []
    assert user.emulator_subscriptions(target) == []
    assert aws.parameter(conn_item(before)["credential_path"]["S"]) is None
    assert [snapshot(aws, user, a) for a in others] == kept

    listed = e2e.api("GET", "/calendar/connections", key=user.key).json()
    assert listed["total"] == 2 and target["mail"] not in json.dumps(listed)
    assert aws.item(f"USER#{user.user_id}", "PROFILE")["connection_count"]["N"] == "2"
    again = user.delete(target["mail"])
    assert (again.status_code, again.json()["error"]) == (404, "connection_not_found")
    one = e2e.api("GET", f"/calendar/connections/outlook/{quote(target['mail'], safe='')}", key=user.key)
    assert one.status_code == 404
    assert [snapshot(aws, user, a) for a in others] == kept


def test_purge_events_false_keeps_the_events(e2e: E2EStack) -> None:
    user = User(e2e, n_accounts=2)
    target = user.accounts[0]
    events = user.events(mail=target["mail"])
    resp = user.delete(target["mail"], purge_events="false")
    assert (
        resp.status_code == 200 and resp.json()["events_deleted"] == 0 and resp.json()["bots_cancelled"] == 2
    )
    kept = e2e.api(
        "GET",
        "/calendar/get_events",
        key=user.key,
        params={"provider": "outlook", "account_id": target["mail"]},
    ).json()["results"]
    assert [e["id"] for e in kept] == [e["id"] for e in events]
    assert {b["status"] for e in kept for b in e["bots"]} == {"Cancelled"}
    refused = e2e.api("POST", f"/calendar/schedule/{kept[0]['id']}", key=user.key, json={})
    assert (refused.status_code, refused.json()["error"]) == (400, "calendar_disconnected")
    bad = user.delete(user.accounts[1]["mail"], purge_events="maybe")
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")


def test_legacy_endpoint_refuses_several_works_with_one_and_with_a_named_account(e2e: E2EStack) -> None:
    user = User(e2e, n_accounts=2, meetings=1)
    first, second = user.accounts
    refused = e2e.api("POST", "/calendar/disconnect", key=user.key, json={})
    body = refused.json()
    assert (refused.status_code, body["error"], body["connection_count"]) == (400, "ambiguous_disconnect", 2)
    assert sorted(c["account_id"] for c in body["connections"]) == sorted([first["mail"], second["mail"]])
    assert body["next_steps"]["per_account_example"].startswith(
        "DELETE /api/v1/calendar/connections/outlook/"
    )
    assert set(body["next_steps"]["legacy_body"]) >= {"provider", "account_id"}
    refused_delete = e2e.api("DELETE", "/calendar/disconnect", key=user.key)  # no body at all
    assert refused_delete.status_code == 400 and refused_delete.json()["error"] == "ambiguous_disconnect"
    assert e2e.api("GET", "/calendar/connections", key=user.key).json()["total"] == 2

    named = e2e.api(
        "DELETE",
        "/calendar/disconnect",
        key=user.key,
        json={"provider": "microsoft", "account_id": second["mail"]},
    )
    assert named.status_code == 200 and named.json()["disconnected"]["account_id"] == second["mail"]
    only = e2e.api("POST", "/calendar/disconnect", key=user.key, json={"purge_events": False})
    assert only.status_code == 200, only.text
    assert only.json()["disconnected"]["account_id"] == first["mail"] and only.json()["events_deleted"] == 0
    none = e2e.api("DELETE", "/calendar/disconnect", key=user.key)
    assert (none.status_code, none.json()["error"]) == (404, "connection_not_found")
    invalid = e2e.api("POST", "/calendar/disconnect", key=user.key, json={"account_id": first["mail"]})
    assert (invalid.status_code, invalid.json()["error"]) == (400, "invalid_request")


def test_a_disconnect_cut_off_halfway_is_finished_by_a_retry_and_no_bot_joins_meanwhile(
    e2e: E2EStack,
) -> None:
    """The state a cut-off attempt leaves (marked, one bot's schedule deleted before its status write) is
    made by hand; the retry must end where an uninterrupted disconnect of a twin account ends."""
    aws = Aws(e2e)
    twin, user = User(e2e, n_accounts=1), User(e2e, n_accounts=1)
    twin_before, before = snapshot(aws, twin, twin.accounts[0]), snapshot(aws, user, user.accounts[0])
    assert twin.delete(twin.accounts[0]["mail"]).status_code == 200
    expected = gone(aws, twin, twin.accounts[0], twin_before)

    conn = conn_item(before)
    # `local.invoke` runs the launcher below on the wall clock, while the stack's virtual clock may be
    # ahead after other suites: the cut-off attempt must have started before either clock's "now".
    started = min(e2e.clock_now(), datetime.now(UTC)) - timedelta(minutes=1)
    now = started.strftime("%Y-%m-%dT%H:%M:%SZ")
    aws.ddb.update_item(
        TableName=aws.table,
        Key={"PK": conn["PK"], "SK": conn["SK"]},
        UpdateExpression="SET #d = :d",
        ExpressionAttributeNames={"#d": "disconnect"},
        ExpressionAttributeValues={
            ":d": {
                "M": {
                    "started_at": {"S": now},
                    "purge_events": {"BOOL": True},
                    "events_total": {"N": "2"},
                    "subscriptions_stopped": {"N": "0"},
                    "warnings": {"L": []},
                }
            }
        },
    )
    bots = sorted(
        (i for i in before["items"] if i["SK"]["S"].startswith("BOT#")),
        key=lambda b: b["occurrence_start"]["S"],
    )
    aws.scheduler.delete_schedule(Name=f"launch-{bots[0]['bot_id']['S']}", GroupName=aws.group)

    shown = e2e.api(
        "GET", f"/calendar/connections/outlook/{quote(user.accounts[0]['mail'], safe='')}", key=user.key
    )
    assert shown.status_code == 200 and shown.json()["status"] == "error"
    assert shown.json()["status_reason"].startswith("disconnect_in_progress")
    # Meanwhile the second meeting's launch schedule fires (its input handed to the launcher as
    # Scheduler would; the shared virtual clock is left alone): the launcher cancels instead of joining.
    second = bots[1]["bot_id"]["S"]
    fired = launch(e2e, user.user_id, second)
    assert fired == {"bot_id": second, "skipped": "calendar_disconnected"}
    calls = e2e.http.get(f"{e2e.info['bots_url']}/_control/calls", timeout=30).json()["value"]
    assert [c for c in calls if c["body"]["custom_attributes"].get("scheduled_bot_id") == second] == []
    item = aws.item(conn["PK"]["S"], f"BOT#{second}")
    assert (item["status"]["S"], item["reason"]["S"]) == ("Cancelled", "calendar_disconnected")

    resp = user.delete(user.accounts[0]["mail"])
    assert resp.status_code == 200, resp.text
    assert (resp.json()["bots_cancelled"], resp.json()["events_deleted"]) == (2, 2)
    assert gone(aws, user, user.accounts[0], before) == expected


def test_a_provider_error_stopping_subscriptions_is_a_warning_and_the_account_is_fully_gone(
    e2e: E2EStack,
) -> None:
    aws = Aws(e2e)
    user = User(e2e, n_accounts=1, meetings=1)
    acct = user.accounts[0]
    before = snapshot(aws, user, acct)
    e2e.graph(
        "POST",
        "/faults",
        json={"path": "^/v1\\.0/subscriptions/", "method": "DELETE", "status": 503, "times": -1},
    )
    try:
        resp = user.delete(acct["mail"])
    finally:
        e2e.graph("DELETE", "/faults")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["subscriptions_stopped"] == 0 and body["bots_cancelled"] == 1 and body["events_deleted"] == 1
    assert [w["error"] for w in body["warnings"]] == ["subscriptions_not_stopped"]
    assert len(user.emulator_subscriptions(acct)) == 1  # still at the provider (it expires on its own)
    left = gone(aws, user, acct, before)
    assert left["kinds"] == ["bot"] and left["schedules"] == [] and left["subscription_items"] == []
    assert left["parameter"] is None


def test_reconnecting_starts_clean_and_old_notifications_are_dropped(e2e: E2EStack) -> None:
    user = User(e2e, n_accounts=1, meetings=1)
    acct = user.accounts[0]
    old_sub = user.emulator_subscriptions(acct)[0]
    event = user.events()[0]
    assert user.delete(acct["mail"]).status_code == 200

    token = e2e.graph("POST", f"/accounts/{acct['id']}/refresh-token", json={"client_id": CLIENT_ID}).json()
    again = e2e.api(
        "POST",
        "/calendar/create_outlook_calendar",
        key=user.key,
        json={
            "microsoft_client_id": CLIENT_ID,
            "microsoft_client_secret": CLIENT_SECRET,
            "microsoft_refresh_token": token["refresh_token"],
        },
    )
    assert again.status_code == 201, again.text
    assert again.json()["watch_setup"]["subscriptions"] == 1
    synced = user.events(sync=True)
    assert [e["id"] for e in synced] == [event["id"]]  # a full sync: no stale delta link survived
    assert {b["status"] for b in synced[0]["bots"]} == {"Cancelled"}  # only the old, cancelled bot
    made = e2e.api("POST", f"/calendar/schedule/{event['id']}", key=user.key, json={})
    assert made.status_code == 201, made.text

    # A notification on the old subscription (with its real secret) arrives after all: it is dropped.
    # Settle first: a sync message the first connection's own notifications queued may still be waiting
    # for the worker (CI saw one drained after the move below); it would rightly sync the reconnected
    # account, and this test is about the old subscription's notification alone.
    e2e.settle()
    e2e.graph("POST", "/notifications/pause")
    try:
        moved = (user.start + timedelta(hours=5)).isoformat()
        e2e.graph(
            "PATCH",
            f"/events/{event['platform_id']}",
            json={"start": moved, "end": (user.start + timedelta(hours=6)).isoformat()},
        )
        url = f"{e2e.api_url}/admin/schedule/users/{user.user_id}/outlook/{quote(acct['mail'], safe='')}"
        item = {
            "subscriptionId": old_sub["id"],
            "changeType": "updated",
            "clientState": old_sub["client_state"],
            "resource": f"Users/{acct['id']}/Events/{event['platform_id']}",
            "resourceData": {"id": event["platform_id"]},
        }
        assert e2e.http.post(url, json={"value": [item]}, timeout=10).status_code == 202
        e2e.control("POST", "/queues/drain")
        assert [e["start_time"] for e in user.events()] == [event["start_time"]]  # nothing was synced
    finally:
        e2e.graph("POST", "/notifications/resume")
