"""EventBridge Scheduler: one one-time schedule per bot, in the template's group.

The bot item is the truth; a schedule is derived from it (its name from the bot id, its time from the
join time) and can always be rebuilt. Scheduler fires within the minute after the `at()` time
(60 s precision), so a launch schedule is set one minute before the join time and the launcher waits
the remaining seconds. Schedules use UTC, flexible window off, and delete themselves after running.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from calbot import aws
from calbot.config import get_settings
from calbot.models import ScheduledBot
from calbot.timeutil import now

LEAD = timedelta(seconds=60)  # Scheduler's precision: fire a minute early, the launcher waits the rest
RETRY_POLICY = {"MaximumRetryAttempts": 10, "MaximumEventAgeInSeconds": 3600}


def launch_schedule_name(bot_id: str) -> str:
    return f"launch-{bot_id}"


def reschedule_schedule_name(bot_id: str) -> str:
    return f"next-{bot_id}"


def at_expression(when: datetime) -> str:
    return f"at({when.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S')})"


def launch_time(bot: ScheduledBot) -> datetime:
    """When the launch schedule fires: a minute before joining, never in the past."""
    return max(bot.scheduled_join_time - LEAD, now().replace(microsecond=0))


def _definition(name: str, when: datetime, target_arn: str, payload: dict[str, Any]) -> dict[str, Any]:
    settings = get_settings()
    target: dict[str, Any] = {
        "Arn": target_arn,
        "RoleArn": settings.scheduler_role_arn,
        "Input": json.dumps(payload),
        "RetryPolicy": RETRY_POLICY,
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
    """Create, or update in place when it exists (an update keeps the name: the bot id)."""
    client = aws.scheduler()
    try:
        client.create_schedule(**definition)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ConflictException":
            raise
        client.update_schedule(**definition)


def put_launch(bot: ScheduledBot, *, when: datetime | None = None) -> None:
    _put(
        _definition(
            launch_schedule_name(bot.bot_id),
            when or launch_time(bot),
            get_settings().bot_launcher_arn,
            {"action": "launch", "user_id": bot.user_id, "bot_id": bot.bot_id},
        )
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
