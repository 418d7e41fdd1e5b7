"""The schedule targets and the launch queue's consumer: launching a bot at its join time, and
scheduling a series' next occurrence after a recurring meeting ends.

Nothing here waits out a join time (calbot.scheduler): a launch schedule fires its lead before it and
`arm` only sends the delayed launch-queue message; the queue hands it to `consume` at the join time,
which launches the batch's bots in parallel. Either step does nothing unless the bot is still Scheduled
for the join time and generation it was armed for (a moved or re-armed bot has a newer arming; an
older message is stale), and a meeting that is already over is never joined (the bot fails with
`meeting_ended`).

Launching is idempotent: the bot is claimed with a conditional Scheduled -> Launching write
(calbot.services.bots.claim_launch), so a duplicate delivery (Scheduler and SQS deliver at least once)
finds it claimed and does nothing, and a cancel that raced the launch wins because only a bot still
Scheduled is claimed.
"""

from __future__ import annotations

import contextvars
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from calbot import botapi, scheduler, store
from calbot.log import logger
from calbot.models import RESERVED_BOT_CONFIG_FIELDS, LaunchMessage, ScheduledBot, ScheduleInput
from calbot.services import bots as lifecycle
from calbot.services.connections import is_live
from calbot.services.schedule import auto_reschedule
from calbot.timeutil import iso_z, now, sleep

EARLY_TOLERANCE = timedelta(seconds=1)  # a delivery this early waits it out: the longest a launch sleeps
GIVE_UP_AFTER = timedelta(minutes=15)  # past the join time, a bot that still cannot launch has failed
RETRY_BACKOFF = (60, 120, 240, 300)
ENDED = "meeting_ended"


def _body(bot: ScheduledBot) -> dict[str, Any]:
    """The Create Bot call: the user's config, then what the service owns, last, so nothing in a stored
    config (one written before such fields were refused included) can override it. What the record
    shows as `meeting_url` is what the bot joins."""
    config = {k: v for k, v in bot.bot_config.items() if k not in RESERVED_BOT_CONFIG_FIELDS}
    custom = {
        **(config.pop("custom_attributes", None) or {}),
        "calendar_event_id": bot.event_id,
        "scheduled_bot_id": bot.bot_id,
    }
    return {**config, "meeting_link": bot.meeting_url, "custom_attributes": custom}


def _current(
    user_id: str, bot_id: str, join_time: datetime | None, generation: int | None
) -> tuple[ScheduledBot | None, str | None]:
    """The bot, if this arming is still the one to act on; else why not. None for join_time or
    generation (a schedule made before they were carried, a direct call) means "whatever it is now"."""
    bot = store.get_bot(user_id, bot_id)
    if bot is None or bot.status != "Scheduled":
        return None, bot.status if bot else "missing"
    if (join_time is not None and join_time != bot.scheduled_join_time) or (
        generation is not None and generation != bot.launch_generation
    ):
        return None, "stale"  # moved or re-armed since: its current arming launches it
    return bot, None


def _not_joinable(bot: ScheduledBot) -> str | None:
    """Why a Scheduled bot must not join now (and is settled so), or None."""
    if now() >= bot.meeting_end:
        lifecycle.expire(bot, ENDED)  # an ended meeting is never joined
        return ENDED
    if not is_live(bot.user_id, bot.provider, bot.account_id):
        # Its account is disconnected or being disconnected: the disconnect cancels its bots, and one
        # whose launch fires first (or that a race made afterwards) never joins.
        lifecycle.cancel(bot, "calendar_disconnected")
        return "calendar_disconnected"
    return None


def arm(payload: ScheduleInput) -> dict[str, Any]:
    """A launch schedule fired (its lead, 5 to 13 minutes, before the join time): send the delayed
    launch message, no more."""
    bot, skipped = _current(payload.user_id, payload.bot_id, payload.join_time, payload.generation)
    if bot is None:
        return {"bot_id": payload.bot_id, "skipped": skipped}
    why = _not_joinable(bot)
    if why:
        return {"bot_id": bot.bot_id, "skipped": why}
    if bot.scheduled_join_time - now() > scheduler.HORIZON:
        # Fired far too early (beyond what a message can wait): armed again, under a new name.
        lifecycle.rearm(bot)
        return {"bot_id": bot.bot_id, "skipped": "too_early"}
    scheduler.enqueue_launch(bot, bot.scheduled_join_time)
    return {"bot_id": bot.bot_id, "armed": iso_z(bot.scheduled_join_time)}


def consume(event: dict[str, Any]) -> dict[str, Any]:
    """The launch queue's batch: every message launched in parallel (each within its second); a message
    whose launch raised goes back to the queue alone (ReportBatchItemFailures)."""
    records = event.get("Records", [])
    if not records:
        return {"batchItemFailures": []}
    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        futures = [(r["messageId"], pool.submit(contextvars.copy_context().run, _one, r)) for r in records]
        failed = [{"itemIdentifier": mid} for mid, future in futures if not future.result()]
    return {"batchItemFailures": failed}


def _one(record: dict[str, Any]) -> bool:
    try:
        message = LaunchMessage.model_validate(json.loads(record["body"]))
    except (ValueError, ValidationError):
        logger.exception("launch message rejected")  # malformed: retrying cannot help
        return True
    try:
        launch(
            message.user_id,
            message.bot_id,
            join_time=message.join_time,
            generation=message.generation,
            launch_at=message.launch_at,
        )
    except Exception:
        logger.exception("launch failed", extra={"bot_id": message.bot_id})
        return False
    return True


def launch(
    user_id: str,
    bot_id: str,
    *,
    join_time: datetime | None = None,
    generation: int | None = None,
    launch_at: datetime | None = None,
) -> dict[str, Any]:
    bot, skipped = _current(user_id, bot_id, join_time, generation)
    if bot is None:
        return {"bot_id": bot_id, "skipped": skipped}
    why = _not_joinable(bot)
    if why:
        return {"bot_id": bot_id, "skipped": why}
    if bot.arm_deferred:
        # The arming job's message (calbot.services.arming): its join time is within ARM_WITHIN now,
        # so it is armed for it (a schedule, or a message when near) under the next generation.
        armed = lifecycle.rearm(bot)
        return {"bot_id": bot_id, "armed": armed is not None}
    wait = (launch_at or bot.scheduled_join_time) - now()
    if wait > EARLY_TOLERANCE:
        # Delivered early (SQS never delivers before the delay; a stray or direct call): armed again
        # for its time, the same generation when a message can wait that long, else a new one.
        if wait <= scheduler.HORIZON:
            scheduler.enqueue_launch(bot, launch_at or bot.scheduled_join_time)
        else:
            lifecycle.rearm(bot)
        return {"bot_id": bot_id, "skipped": "too_early"}
    sleep(wait.total_seconds())  # at most EARLY_TOLERANCE: the message's whole-second delay rounding
    launching = lifecycle.claim_launch(bot)
    if launching is None:
        return {"bot_id": bot_id, "skipped": "claimed"}  # a duplicate delivery, a cancel or a move won

    try:
        created = botapi.create_bot(_body(bot), idempotency_key=bot.bot_id)
    except botapi.BotApiRejected as err:
        lifecycle.finish_launch(launching, "Failed", reason=f"create_bot_rejected_{err.status}")
        return {"bot_id": bot_id, "status": "Failed"}
    except botapi.BotApiUnavailable as err:
        return _retry_later(launching, str(err))

    at = now()
    lifecycle.finish_launch(launching, "Launched", remote_bot_id=str(created["bot_id"]), launched_at=at)
    if bot.recurring_event:
        # Every occurrence keeps getting a bot: once this meeting is over, arrange the next one.
        scheduler.put_reschedule(launching, launching.meeting_end)
    return {"bot_id": bot_id, "status": "Launched", "remote_bot_id": created["bot_id"]}


def _retry_later(bot: ScheduledBot, why: str) -> dict[str, Any]:
    """The Create Bot API is down: back to Scheduled, re-armed a little later under a new generation,
    until the meeting has been running too long to be worth joining (or is over)."""
    if now() - bot.scheduled_join_time > GIVE_UP_AFTER or now() >= bot.meeting_end:
        lifecycle.finish_launch(bot, "Failed", reason="create_bot_unavailable")
        logger.warning("bot launch failed for good", extra={"bot_id": bot.bot_id, "why": why})
        return {"bot_id": bot.bot_id, "status": "Failed"}
    delay = RETRY_BACKOFF[min(bot.launch_attempts - 1, len(RETRY_BACKOFF) - 1)]
    lifecycle.launch_later(bot, now() + timedelta(seconds=delay))
    logger.warning(
        "create bot unavailable; retrying later",
        extra={"bot_id": bot.bot_id, "why": why, "retry_in_s": delay},
    )
    return {"bot_id": bot.bot_id, "status": "Scheduled", "retry_in_seconds": delay}


def reschedule_after_meeting(user_id: str, bot_id: str) -> dict[str, Any]:
    """The end-of-meeting schedule of a recurring bot: the next occurrence gets its bot, unless the
    user turned auto-rescheduling off for the series meanwhile."""
    bot = store.get_bot(user_id, bot_id)
    if bot is None:
        return {"bot_id": bot_id, "skipped": "missing"}
    if not is_live(user_id, bot.provider, bot.account_id):
        return {"bot_id": bot_id, "skipped": "calendar_disconnected"}
    event = store.get_event(user_id, bot.event_id)
    if event is None or not event.recurring_enabled:
        return {"bot_id": bot_id, "skipped": "recurrence_disabled"}
    result = auto_reschedule(user_id, event.event_id)
    return {"bot_id": bot_id, "next_bot_id": result.bot_id if result else None}
