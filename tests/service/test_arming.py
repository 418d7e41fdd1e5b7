"""Deferred arming (calbot.scheduler.ARM_WITHIN, calbot.services.arming) on the in-process stack: a bot
joining further ahead holds no Scheduler schedule (the account's "Number of schedules" quota counts
every standing one) until the hourly arming job hands it to the launcher, which arms it; moved,
cancelled or re-delivered, it is armed once or not at all."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import aws, scheduler, store, timeutil
from calbot.config import get_settings
from calbot.models import PatchBotRequest, ScheduledBot, ScheduleRequest
from calbot.services import arming, launcher
from calbot.services import schedule as svc
from calbot.services.sync import sync_user
from local.stack import LocalStack
from tests.conftest import connect_new_account, virtual_time

CLIENT_ID = "arming-client"
CLIENT_SECRET = "arming-client-secret-7"


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack


@pytest.fixture
def clock() -> Iterator[list[datetime]]:
    """calbot's now() is whatever the test sets."""
    with virtual_time() as at:
        yield at


@pytest.fixture
def queue() -> str:
    """A queue of the test's own in place of the launch queue (the stack's launcher polls the real one)."""
    return str(aws.sqs().create_queue(QueueName=f"arming-{uuid.uuid4().hex[:12]}")["QueueUrl"])


def _far_bot(stack: LocalStack, days: int, zoom_id: int) -> ScheduledBot:
    user_id, acct = connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix="arming")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=days)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Far ahead",
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        location=f"https://acme.zoom.us/j/{zoom_id}",
    )
    assert sync_user(user_id).partial_errors == {}
    window = store.query_events(
        user_id, time_min=start - timedelta(days=1), time_max=start + timedelta(days=1), limit=50
    )
    (event,) = [e for e in window if e.platform_id == ev["id"]]
    made = svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    bot = store.get_bot(user_id, made.bot_id)
    assert bot is not None
    return bot


def _schedules(bot_id: str) -> list[dict[str, Any]]:
    page = aws.scheduler().list_schedules(
        GroupName=get_settings().schedule_group, NamePrefix=f"launch-{bot_id}"
    )
    return [scheduler.get(s["Name"]) or {} for s in page.get("Schedules", [])]


def _in_index(bot: ScheduledBot) -> list[Any]:
    later = bot.scheduled_join_time + timedelta(seconds=1)
    return [d for d in store.deferred_armings_before(later) if d.bot_id == bot.bot_id]


def _messages_for(queue_url: str, bot_id: str) -> list[dict[str, Any]]:
    mine = []
    while True:
        got = aws.sqs().receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return mine
        mine += [{"messageId": m["MessageId"], "body": m["Body"]} for m in got if bot_id in m["Body"]]


def test_a_far_bot_holds_no_schedule_until_the_arming_job_has_the_launcher_arm_it(
    stack: LocalStack, clock: list[datetime], queue: str
) -> None:
    bot = _far_bot(stack, days=10, zoom_id=901)
    assert bot.arm_deferred and bot.launch_generation == 0 and bot.status == "Scheduled"
    assert _schedules(bot.bot_id) == []
    (entry,) = _in_index(bot)
    assert (entry.user_id, entry.join_time, entry.generation) == (bot.user_id, bot.scheduled_join_time, 0)

    # Ten days ahead, the hourly job leaves it alone.
    arming.run_arming(queue)
    assert _messages_for(queue, bot.bot_id) == []

    # 30 hours before it joins (within ARM_WITHIN), the job sends it to the launcher, which arms it.
    clock[0] = bot.scheduled_join_time - timedelta(hours=30)
    sent = arming.run_arming(queue)
    assert sent["bots_enqueued"] >= 1 and sent["failed"] == 0
    (message,) = _messages_for(queue, bot.bot_id)
    assert launcher.consume({"Records": [message]}) == {"batchItemFailures": []}
    armed = store.get_bot(bot.user_id, bot.bot_id)
    assert armed is not None and not armed.arm_deferred and armed.launch_generation == 1
    assert armed.status == "Scheduled" and armed.scheduled_join_time == bot.scheduled_join_time
    (schedule,) = _schedules(bot.bot_id)
    assert schedule["Name"] == scheduler.launch_schedule_name(bot.bot_id, 1)
    fires = bot.scheduled_join_time - scheduler.lead(bot.bot_id)
    assert schedule["ScheduleExpression"] == scheduler.at_expression(fires)
    assert json.loads(schedule["Target"]["Input"])["generation"] == 1
    assert _in_index(armed) == []

    # The same message delivered again names the old generation: nothing more is armed.
    assert launcher.consume({"Records": [message]}) == {"batchItemFailures": []}
    again = store.get_bot(bot.user_id, bot.bot_id)
    assert again is not None and again.launch_generation == 1 and len(_schedules(bot.bot_id)) == 1
    arming.run_arming(queue)
    assert _messages_for(queue, bot.bot_id) == []


def test_a_deferred_bot_moved_near_is_armed_at_once_moved_far_stays_deferred_and_cancelled_leaves(
    stack: LocalStack,
) -> None:
    bot = _far_bot(stack, days=9, zoom_id=902)
    later = bot.scheduled_join_time + timedelta(days=2)
    svc.update_bot(bot.user_id, bot.bot_id, PatchBotRequest.model_validate({"scheduled_join_time": later}))
    moved = store.get_bot(bot.user_id, bot.bot_id)
    assert moved is not None and moved.arm_deferred and _schedules(bot.bot_id) == []
    (entry,) = _in_index(moved)  # its entry moved with it: one, at the new join time
    assert (entry.join_time, entry.generation) == (later, 1)

    near = timeutil.now().replace(microsecond=0) + timedelta(hours=5)
    svc.update_bot(bot.user_id, bot.bot_id, PatchBotRequest.model_validate({"scheduled_join_time": near}))
    armed = store.get_bot(bot.user_id, bot.bot_id)
    assert armed is not None and not armed.arm_deferred and _in_index(moved) == []
    (schedule,) = _schedules(bot.bot_id)
    assert schedule["Name"] == scheduler.launch_schedule_name(bot.bot_id, 2)

    other = _far_bot(stack, days=12, zoom_id=903)
    assert _in_index(other)
    svc.delete_bot(other.user_id, other.bot_id)
    cancelled = store.get_bot(other.user_id, other.bot_id)
    assert cancelled is not None and cancelled.status == "Cancelled" and _in_index(other) == []
