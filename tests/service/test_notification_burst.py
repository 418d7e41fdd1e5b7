"""A burst of change notifications on the local stack's real path (emulator -> webhook -> FIFO queue ->
the clock's pollers -> sync worker -> bots): every bot ends up right, none is doubled. How fast is a
bench figure (bench/notify_latency.py --burst), not asserted here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import scheduler, store
from calbot.models import EnableAutoScheduleRequest
from calbot.services import auto_schedule
from local.stack import LocalStack
from tests.conftest import connect_new_account

CLIENT_ID = "burst-client"
CLIENT_SECRET = "burst-secret-42"
USERS, ACCOUNTS_PER_USER, MEETINGS = 4, 5, 2  # 20 accounts, 40 meetings moved at once


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack


def _right(user_id: str, moved: dict[str, datetime]) -> list[str]:
    """What is wrong with the user's bots for the moved meetings (empty: all right)."""
    wrong = []
    bots: dict[str, list[Any]] = {}
    for bot in store.upcoming_bots(user_id, after=datetime.now(UTC), limit=1000):
        if bot.status == "Scheduled":
            bots.setdefault(bot.event_id, []).append(bot)
    for event_id, start in moved.items():
        found = bots.get(event_id, [])
        join = start - timedelta(seconds=60)
        if len(found) != 1 or found[0].scheduled_join_time != join:
            wrong.append(f"{event_id}: {[b.scheduled_join_time for b in found]} != {join}")
            continue
        sched = scheduler.get(scheduler.current_launch_schedule(found[0]))  # each move: a new name
        if not sched or sched["ScheduleExpression"] != scheduler.at_expression(
            join - scheduler.lead(found[0].bot_id)
        ):
            wrong.append(f"{event_id}: schedule {sched and sched['ScheduleExpression']}")
    return wrong


def test_every_bot_follows_a_burst_of_moves(stack: LocalStack) -> None:
    graph = stack.graph
    base = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=3)
    plan: list[tuple[str, list[dict[str, Any]]]] = []
    for _ in range(USERS):
        user_id = None
        meetings: list[dict[str, Any]] = []
        for a in range(ACCOUNTS_PER_USER):
            user_id, acct = connect_new_account(
                stack, CLIENT_ID, CLIENT_SECRET, user_id=user_id, prefix="burst"
            )
            for m in range(MEETINGS):
                start = base + timedelta(minutes=30 * m + a)
                ev = graph.add_event(
                    acct["id"],
                    acct["calendars"][0]["id"],
                    subject=f"B{a}.{m}",
                    start=start.isoformat(),
                    end=(start + timedelta(minutes=20)).isoformat(),
                    location=f"https://acme.zoom.us/j/{a}{m}{len(plan)}",
                )
                meetings.append({"platform_id": ev["id"], "start": start})
        assert user_id is not None
        auto_schedule.enable(user_id, EnableAutoScheduleRequest())  # syncs, and gives each meeting a bot
        plan.append((user_id, meetings))

    moved: dict[str, dict[str, datetime]] = {}
    for user_id, meetings in plan:
        ids = {
            e.platform_id: e.event_id
            for e in store.query_events(
                user_id, time_min=base - timedelta(hours=1), time_max=base + timedelta(days=1), limit=1000
            )
        }
        moved[user_id] = {ids[m["platform_id"]]: m["start"] + timedelta(minutes=7) for m in meetings}
        assert _right(user_id, {ids[m["platform_id"]]: m["start"] for m in meetings}) == []

    graph.resume_notifications()
    try:
        for _, meetings in plan:  # the burst: every meeting moves, notifications flow at once
            for m in meetings:
                new = m["start"] + timedelta(minutes=7)
                graph.update_event(
                    m["platform_id"], start=new.isoformat(), end=(new + timedelta(minutes=20)).isoformat()
                )
        give_up = time.monotonic() + 120
        while time.monotonic() < give_up and any(_right(u, moved[u]) for u, _ in plan):
            time.sleep(0.5)
        graph.flush_notifications(timeout=30)
    finally:
        graph.pause_notifications()
    time.sleep(2)  # a late duplicate notification's sync would show now
    assert {u: _right(u, moved[u]) for u, _ in plan} == {u: [] for u, _ in plan}
