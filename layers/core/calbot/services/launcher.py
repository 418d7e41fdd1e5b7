"""The schedule targets: launching a bot at its join time, and scheduling a series' next occurrence
after a recurring meeting ends.

Launching is idempotent: the bot is claimed with a conditional Scheduled -> Launching write
(calbot.services.bots.claim_launch), so a duplicate invocation (Scheduler delivers at least once)
finds it claimed and does nothing, and a cancel that raced the schedule wins because only a bot still
Scheduled is claimed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from calbot import botapi, scheduler, store
from calbot.log import logger
from calbot.models import RESERVED_BOT_CONFIG_FIELDS, ScheduledBot
from calbot.services import bots as lifecycle
from calbot.services.connections import is_live
from calbot.services.schedule import auto_reschedule
from calbot.timeutil import now, sleep

MAX_WAIT = timedelta(seconds=150)  # Scheduler fires up to ~2 minutes early (lead + precision)
GIVE_UP_AFTER = timedelta(minutes=15)  # past the join time, a bot that still cannot launch has failed
RETRY_BACKOFF = (60, 120, 240, 300)


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


def launch(user_id: str, bot_id: str) -> dict[str, Any]:
    bot = store.get_bot(user_id, bot_id)
    if bot is None or bot.status != "Scheduled":
        return {"bot_id": bot_id, "skipped": bot.status if bot else "missing"}
    if not is_live(user_id, bot.provider, bot.account_id):
        # Its account is disconnected or being disconnected: the disconnect cancels its bots, and one
        # whose schedule fires first (or that a race made afterwards) never joins.
        lifecycle.cancel(bot, "calendar_disconnected")
        return {"bot_id": bot_id, "skipped": "calendar_disconnected"}
    wait = bot.scheduled_join_time - now()
    if wait > MAX_WAIT:
        # Fired far too early (the join time moved and this schedule was stale): put it right, do nothing.
        scheduler.put_launch(bot)
        return {"bot_id": bot_id, "skipped": "too_early"}
    sleep(wait.total_seconds())
    bot = store.get_bot(user_id, bot_id)  # re-read after waiting: a cancel or a move may have happened
    if bot is None or bot.status != "Scheduled":
        return {"bot_id": bot_id, "skipped": bot.status if bot else "missing"}
    if bot.scheduled_join_time - now() > MAX_WAIT:
        scheduler.put_launch(bot)
        return {"bot_id": bot_id, "skipped": "moved"}
    launching = lifecycle.claim_launch(bot)
    if launching is None:
        return {"bot_id": bot_id, "skipped": "claimed"}  # a duplicate invocation, or a cancel, won

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
    """The Create Bot API is down: back to Scheduled with a launch schedule a little later, until the
    meeting has been running too long to be worth joining."""
    if now() - bot.scheduled_join_time > GIVE_UP_AFTER:
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
