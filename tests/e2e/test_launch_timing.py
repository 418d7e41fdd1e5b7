"""Issue 18: bots launch at their join time without sleeping Lambdas (the whole stack, virtual time).

A launch schedule fires its lead (5 to 13 min) before the join time (within the minute after its at(),
as Scheduler does) into the launcher, which only sends a delayed launch-queue message; the clock
delivers it when its DelaySeconds are over, on the stack's clock, and the launcher calls the Create
Bot sink. Each test fails on the old design, where the launcher slept out the last 60-120 s of every launch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import E2EStack

CLIENT_ID = "launch-e2e-client"
CLIENT_SECRET = "launch-e2e-secret-51aa"
ON_TIME = timedelta(seconds=2)  # Create Bot within 2 s of scheduled_join_time


@pytest.fixture(scope="module", autouse=True)
def app_registration(e2e: E2EStack) -> None:
    e2e.graph("POST", "/apps", json={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class User:
    def __init__(self, e2e: E2EStack) -> None:
        self.e2e = e2e
        e2e.control("DELETE", "/sleeps")  # each test judges its own launcher invocations
        made = e2e.connected_user(CLIENT_ID, CLIENT_SECRET, [f"launch.{len(e2e.responses)}@acme.example"])
        self.key, self.user_id, (self.account,) = made["key"], made["user_id"], made["accounts"]

    def bot_for_meeting(self, start: datetime, minutes: int = 60, n: int = 0) -> tuple[str, datetime]:
        """A meeting at the emulator, synced, with a bot scheduled for it: (bot id, join time)."""
        cal = quote(self.account["calendars"][0]["id"], safe="")
        body = {
            "subject": "Launch",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=minutes)).isoformat(),
            "location": f"https://acme.zoom.us/j/{9000 + n}{len(self.e2e.responses)}",
        }
        made = self.e2e.graph("POST", f"/accounts/{self.account['id']}/calendars/{cal}/events", json=body)
        now = self.e2e.clock_now()
        events = self.e2e.api(
            "GET",
            "/calendar/events",
            key=self.key,
            params={"time_min": (now - timedelta(days=1)).isoformat(), "limit": 100},
        ).json()["results"]
        (event,) = [e for e in events if e["platform_id"] == made.json()["id"]]
        resp = self.e2e.api("POST", f"/calendar/schedule/{event['id']}", key=self.key, json={})
        assert resp.status_code == 201, resp.text
        return resp.json()["bot_id"], utc(resp.json()["scheduled_join_time"])

    def status(self, bot_id: str) -> dict[str, Any]:
        rows = self.e2e.api("GET", "/calendar/scheduled_bots", key=self.key, params={"status": "all"}).json()[
            "results"
        ]
        (row,) = [r for r in rows if r["bot_id"] == bot_id]
        return row


def calls_at(e2e: E2EStack, bot_id: str) -> list[datetime]:
    """When the Create Bot sink answered 2xx for this bot (the sink's clock is the stack's)."""
    calls = e2e.http.get(f"{e2e.info['bots_url']}/_control/calls", timeout=30).json()["value"]
    return [utc(c["time"]) for c in calls if c["body"]["custom_attributes"].get("scheduled_bot_id") == bot_id]


def launch_schedules(e2e: E2EStack, bot_id: str) -> list[str]:
    return [
        s["name"]
        for s in e2e.control("GET", "/schedules")["value"]
        if s["name"].startswith(f"launch-{bot_id}")
    ]


def launcher_slept(e2e: E2EStack) -> float:
    """The longest virtual sleep of any launcher invocation so far."""
    return float(
        e2e.control("GET", "/sleeps")["value"].get("BotLauncherFunction", {}).get("max_slept_s", 0.0)
    )


def assert_on_time(at: datetime, join: datetime) -> None:
    assert join <= at <= join + ON_TIME, (at, join)


def test_a_bot_joins_within_two_seconds_and_no_launcher_invocation_sleeps(e2e: E2EStack) -> None:
    user = User(e2e)
    start = (e2e.clock_now() + timedelta(days=1)).replace(second=0, microsecond=0)
    bot_id, join = user.bot_for_meeting(start)
    assert launch_schedules(e2e, bot_id) == [f"launch-{bot_id}"]
    e2e.advance(join + timedelta(seconds=10))
    (at,) = calls_at(e2e, bot_id)
    assert_on_time(at, join)
    assert user.status(bot_id)["status"] == "Launched"
    assert launcher_slept(e2e) <= 1.0  # the old launcher slept 60-120 s of every launch
    assert launch_schedules(e2e, bot_id) == []  # fired, then deleted itself


def test_a_meeting_booked_three_minutes_before_it_starts_gets_its_bot_on_time(e2e: E2EStack) -> None:
    user = User(e2e)
    start = e2e.clock_now().replace(microsecond=0) + timedelta(minutes=3)
    bot_id, join = user.bot_for_meeting(start, n=1)
    assert launch_schedules(e2e, bot_id) == []  # within the queue's delay horizon: no schedule, no past at()
    e2e.advance(join + timedelta(seconds=10))
    (at,) = calls_at(e2e, bot_id)
    assert_on_time(at, join)
    assert launcher_slept(e2e) <= 1.0


def test_a_bot_moved_after_its_launch_was_armed_joins_at_the_new_time_only_once(e2e: E2EStack) -> None:
    user = User(e2e)
    start = (e2e.clock_now() + timedelta(days=2)).replace(second=0, microsecond=0)
    bot_id, join = user.bot_for_meeting(start, n=2)
    e2e.advance(join - timedelta(seconds=30))  # the schedule fired: its message waits for `join`
    assert launch_schedules(e2e, bot_id) == [] and calls_at(e2e, bot_id) == []
    new_join = join + timedelta(minutes=20)
    moved = e2e.api(
        "PATCH",
        f"/calendar/scheduled_bots/{bot_id}",
        key=user.key,
        json={"scheduled_join_time": new_join.isoformat()},
    )
    assert moved.status_code == 200, moved.text
    # re-armed under a new name (g1 was the arming job's: two days ahead, the bot was deferred)
    assert launch_schedules(e2e, bot_id) == [f"launch-{bot_id}-g2"]
    e2e.advance(join + timedelta(minutes=2))
    assert calls_at(e2e, bot_id) == []  # the armed message came at the old time and was dropped
    e2e.advance(new_join + timedelta(seconds=10))
    (at,) = calls_at(e2e, bot_id)
    assert_on_time(at, new_join)
    assert launcher_slept(e2e) <= 1.0


def test_an_ended_meeting_is_never_joined(e2e: E2EStack) -> None:
    user = User(e2e)
    start = (e2e.clock_now() + timedelta(days=3)).replace(second=0, microsecond=0)
    bot_id, join = user.bot_for_meeting(start, minutes=10, n=3)
    end = start + timedelta(minutes=10)
    # The Create Bot API is down until just after the meeting: the old launcher's retry at join + 12 min
    # (after 1 + 2 + 4 + 5 minutes of backoff) joined the meeting two minutes after it ended.
    down = e2e.http.post(
        f"{e2e.info['bots_url']}/_control/faults",
        json={"down_until": (end + timedelta(minutes=1)).isoformat()},
        timeout=30,
    )
    assert down.status_code == 200, down.text
    try:
        e2e.advance(end + timedelta(minutes=30))
    finally:
        e2e.http.delete(f"{e2e.info['bots_url']}/_control/faults", timeout=30)
    assert calls_at(e2e, bot_id) == []
    row = user.status(bot_id)
    assert row["status"] == "Failed", row


def test_a_retried_launch_rearms_under_a_new_generation_and_launches_once(e2e: E2EStack) -> None:
    user = User(e2e)
    start = (e2e.clock_now() + timedelta(days=4)).replace(second=0, microsecond=0)
    bot_id, join = user.bot_for_meeting(start, n=4)
    # Four days ahead it holds no schedule (deferred arming): the hourly arming job has it armed on the
    # way, as generation 1, and it still launches on time.
    assert launch_schedules(e2e, bot_id) == []
    down = e2e.http.post(
        f"{e2e.info['bots_url']}/_control/faults",
        json={"down_until": (join + timedelta(seconds=30)).isoformat()},
        timeout=30,
    )
    assert down.status_code == 200, down.text
    try:
        e2e.advance(join + timedelta(minutes=5))
    finally:
        e2e.http.delete(f"{e2e.info['bots_url']}/_control/faults", timeout=30)
    (at,) = calls_at(e2e, bot_id)  # one bot, by the first retry a minute after the failed attempt
    # (the failed attempt itself retried the call twice, 1 s and 2 s apart: calbot.botapi's policy)
    assert join + timedelta(seconds=60) <= at <= join + timedelta(seconds=60 + 3) + ON_TIME
    item = e2e.boto("dynamodb").get_item(
        TableName=e2e.env()["TABLE_NAME"],
        Key={"PK": {"S": f"USER#{user.user_id}"}, "SK": {"S": f"BOT#{bot_id}"}},
    )["Item"]
    # generation 1: armed by the arming job; 2: the retry
    assert item["status"]["S"] == "Launched" and item["launch_generation"]["N"] == "2"
    assert launcher_slept(e2e) <= 3.0  # the Create Bot call's own backoff while it was down, nothing more
