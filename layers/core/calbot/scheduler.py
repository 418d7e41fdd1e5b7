"""EventBridge Scheduler and the delayed launch queue: how a bot's launch is armed.

The bot item is the truth; what arms its launch is derived from it and can always be rebuilt. No
Lambda waits out the last seconds before a join time:

- A join time within SQS's delay horizon (900 s, less a margin) is armed by one message to the
  standard launch queue with DelaySeconds = the seconds left (FIFO queues take no per-message delay),
  so it becomes visible at the join time and the launcher consumes it then. This is also how a meeting
  booked minutes before it starts is armed: no schedule, so no `at()` in the past (what Scheduler does
  with one its documentation does not say; we never make one).
- A later one gets a one-time schedule at join - lead into the launcher, which only sends that message
  (Scheduler fires within the minute after `at()`: the least lead, LEAD, leaves that minute and more
  for its retries). Each bot's lead is LEAD plus a spread taken from its id (`lead`): the schedules of
  the bots joining at 09:00 fire over nine minutes, not all in the minute after 08:55, which at
  100,000 users would be ~3,500 target invocations a second against Scheduler's default quota of
  1,000 (bench/day.py). Its RetryPolicy's event age ends when the meeting does: an undelivered launch
  is never delivered after the meeting is over.

Every schedule and message carries the join time and generation it was armed for; the launcher does
nothing unless the bot is still Scheduled for exactly those (calbot.services.launcher). A re-arm takes
the next generation, whose schedule has a new name: a schedule with ActionAfterCompletion DELETE that is
re-put under its own name from inside its own invocation may be deleted after that invocation.
Schedules use UTC, flexible window off, and delete themselves after running.

A bot joining more than ARM_WITHIN ahead is not armed yet (`defers`): Scheduler's "Number of
schedules" quota (10,000,000 an account and Region by default) counts every schedule standing, and one
series scheduled with all its occurrences would hold up to 366 for a year. Such a bot's record carries
`arm_deferred` and an entry in the sparse arming index (calbot.store.bots); the hourly arming job
(calbot.services.arming) hands it to the launcher once its join time is within ARM_WITHIN, and the
launcher arms it like any re-arm. So at most ARM_WITHIN of bots hold a schedule at once.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from calbot import aws
from calbot.config import get_settings
from calbot.models import LaunchMessage, ScheduledBot
from calbot.timeutil import iso_z, now

SQS_MAX_DELAY = timedelta(seconds=900)  # SendMessage DelaySeconds: 0 to 900
HORIZON = SQS_MAX_DELAY - timedelta(seconds=60)  # within this of its launch time a bot goes to the queue
LEAD = timedelta(seconds=300)  # the least a schedule fires before its launch time
# Leads run from LEAD to LEAD + LEAD_SPREAD - 1 s, whole seconds: the longest plus Scheduler's minute
# still leaves a schedule's at() a minute in the future when it is made (only beyond HORIZON).
LEAD_SPREAD = timedelta(seconds=480)
# Bots joining further ahead wait for the arming job (see the module docstring): the day the midnight
# job schedules is armed at once, and the hourly job has half a day of runs to spare.
ARM_WITHIN = timedelta(hours=36)
MAX_RETRY_ATTEMPTS = 10
EVENT_AGE_RANGE = (60, 86400)  # Scheduler's RetryPolicy.MaximumEventAgeInSeconds


def launch_schedule_name(bot_id: str, generation: int = 0) -> str:
    """Generation 0 keeps the name schedules had before generations (`launch-<bot id>`)."""
    return f"launch-{bot_id}" if generation == 0 else f"launch-{bot_id}-g{generation}"


def current_launch_schedule(bot: ScheduledBot) -> str:
    return launch_schedule_name(bot.bot_id, bot.launch_generation)


def reschedule_schedule_name(bot_id: str) -> str:
    return f"next-{bot_id}"


def at_expression(when: datetime) -> str:
    return f"at({when.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')})"


def lead(bot_id: str) -> timedelta:
    """How long before its launch time this bot's schedule fires: LEAD plus whole seconds below
    LEAD_SPREAD from a hash of its id, so the same bot always gets the same lead (re-arming puts the
    same `at()`) and the bots of one join time spread evenly over the window."""
    digest = hashlib.sha256(bot_id.encode()).digest()
    return LEAD + timedelta(seconds=int.from_bytes(digest[:4], "big") % int(LEAD_SPREAD.total_seconds()))


def launch_time(bot: ScheduledBot) -> datetime:
    """When a launch schedule fires: its lead before joining (only made for join times beyond HORIZON)."""
    return bot.scheduled_join_time - lead(bot.bot_id)


def retry_policy(fires_at: datetime, meeting_end: datetime | None) -> dict[str, int]:
    """Scheduler retries delivery until the meeting is over (within its 60 s - 24 h range), never later."""
    low, high = EVENT_AGE_RANGE
    if meeting_end is None:  # the end-of-meeting reschedule: an hour, as before
        return {"MaximumRetryAttempts": MAX_RETRY_ATTEMPTS, "MaximumEventAgeInSeconds": 3600}
    age = int((meeting_end - fires_at).total_seconds())
    return {"MaximumRetryAttempts": MAX_RETRY_ATTEMPTS, "MaximumEventAgeInSeconds": max(low, min(high, age))}


def _definition(
    name: str,
    when: datetime,
    target_arn: str,
    payload: dict[str, Any],
    *,
    expires: datetime | None = None,
) -> dict[str, Any]:
    settings = get_settings()
    target: dict[str, Any] = {
        "Arn": target_arn,
        "RoleArn": settings.scheduler_role_arn,
        "Input": json.dumps(payload),
        "RetryPolicy": retry_policy(when, expires),
    }
    if settings.schedule_dlq_arn:
        target["DeadLetterConfig"] = {"Arn": settings.schedule_dlq_arn}
    return {
        "Name": name,
        "GroupName": settings.schedule_group,
        "ScheduleExpression": at_expression(when),
        "ScheduleExpressionTimezone": "UTC",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "ActionAfterCompletion": "DELETE",
        "State": "ENABLED",
        "Target": target,
    }


def _put(definition: dict[str, Any]) -> None:
    """Create, or update in place when it exists (only from outside the schedule's own invocation: a
    launch re-armed from inside one takes a new name, see the module docstring)."""
    client = aws.scheduler()
    try:
        client.create_schedule(**definition)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConflictException":
            raise
        client.update_schedule(**definition)


def defers(bot: ScheduledBot, *, when: datetime | None = None) -> bool:
    """Whether arming `bot` (at its join time, or at `when`) waits for the arming job: beyond ARM_WITHIN."""
    return (when or bot.scheduled_join_time) - now() > ARM_WITHIN


def put_launch(bot: ScheduledBot, *, when: datetime | None = None) -> str | None:
    """Arm the launch of `bot` (at its join time, or at `when` for a retry) under its current
    generation: a delayed queue message when that is within HORIZON, else a schedule. Returns the
    schedule's name, or None when it went to the queue."""
    launch_at = when or bot.scheduled_join_time
    if launch_at - now() <= HORIZON:
        enqueue_launch(bot, launch_at)
        return None
    name = current_launch_schedule(bot)
    payload = {
        "action": "launch",
        "user_id": bot.user_id,
        "bot_id": bot.bot_id,
        "join_time": iso_z(bot.scheduled_join_time),
        "generation": bot.launch_generation,
    }
    fires = launch_at - lead(bot.bot_id)
    _put(_definition(name, fires, get_settings().bot_launcher_arn, payload, expires=bot.meeting_end))
    return name


def delay_seconds(launch_at: datetime) -> int:
    """The whole seconds until `launch_at` (rounded up: never visible before it), within SQS's range."""
    left = (launch_at - now()).total_seconds()
    return max(0, min(int(SQS_MAX_DELAY.total_seconds()), math.ceil(left)))


def enqueue_launch(bot: ScheduledBot, launch_at: datetime) -> None:
    """One message to the launch queue, visible at `launch_at` (capped at SQS's 900 s)."""
    queue_url = get_settings().require("launch_queue_url")
    message = LaunchMessage(
        user_id=bot.user_id,
        bot_id=bot.bot_id,
        join_time=bot.scheduled_join_time,
        generation=bot.launch_generation,
        launch_at=launch_at,
    )
    aws.sqs().send_message(
        QueueUrl=queue_url, MessageBody=message.model_dump_json(), DelaySeconds=delay_seconds(launch_at)
    )


def put_reschedule(bot: ScheduledBot, when: datetime) -> None:
    """After a recurring meeting ends: schedule the next occurrence's bot."""
    _put(
        _definition(
            reschedule_schedule_name(bot.bot_id),
            max(when, now().replace(microsecond=0)),
            get_settings().reschedule_arn,
            {"action": "reschedule", "user_id": bot.user_id, "bot_id": bot.bot_id},
        )
    )


def delete(name: str) -> bool:
    try:
        aws.scheduler().delete_schedule(Name=name, GroupName=get_settings().schedule_group)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return False
        raise
    return True


def get(name: str) -> dict[str, Any] | None:
    try:
        return aws.scheduler().get_schedule(Name=name, GroupName=get_settings().schedule_group)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise
