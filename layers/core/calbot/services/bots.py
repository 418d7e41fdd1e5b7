"""A scheduled bot's whole life, and how bots are de-duplicated: the one module to change for either.

A bot is one record (calbot.store.bots) plus what arms its launch (calbot.scheduler: a one-time
schedule, or a delayed launch-queue message when the join time is near; beyond scheduler.ARM_WITHIN
nothing yet, the record marked `arm_deferred` until the arming job has it armed). Its life:

    make_bot -> place -> Scheduled -> claim_launch -> Launching -> finish_launch -> Launched | Failed
                         |  ^  ^                          |
                         |  |  +------ launch_later -------+   (the Create Bot API was down)
                         |  +-- change, move               (its config, join time, or its meeting moved)
                         +-- cancel -> Cancelled

De-duplication: one live bot per occurrence of one meeting of one user, whatever races (double clicks,
client retries, the midnight job, the same meeting seen through two calendars). `dedup_key` says
what "the same occurrence of the same meeting" is. A guard record (DEDUP#<user>#<dedup key>) names
the bot that holds it:
- `place` takes it, then writes the bot: two plain conditional puts, not a transaction (which bills
  each item twice). A creator cut off between them leaves a guard naming a missing bot: nobody takes
  it while its creator may still be writing (store.bots.GUARD_GRACE after it was taken); after that
  the next `place` takes it over, conditionally on the old bot id, so of two only one wins;
- `move` moves it with the bot when the meeting moves: takes the new guard, saves the bot, releases
  the old guard (three plain conditional writes, not a transaction);
- `cancel` releases it after saving the bot, and so does `finish_launch` for a Failed bot: the
  occurrence may get a bot again;
- a Launched bot keeps it: a meeting it has joined never gets a second bot.
A guard left behind by a writer cut off between its writes holds nothing once past its grace: it names
a bot that does not exist, that was Cancelled or Failed, or that has moved to another occurrence
(store.bots._orphaned), and the next writer takes it over.

The rules below are race guards: each is a condition on the write named, checked by DynamoDB in the
same request (store.bots writes them), never a read followed by a write.
- ONE_LIVE_BOT_PER_OCCURRENCE: the guard is written only where none exists (place, and move to a new
  key), or over one past its grace that holds nothing, while it still names the same bot; refused
  -> store.AlreadyScheduled.
- ONLY_SCHEDULED_CHANGES: a bot is changed, moved, cancelled or claimed only while it is still
  Scheduled (EXPECT_SCHEDULED); a bot launching or launched is never touched -> store.BotChanged.
- LAUNCH_CLAIMED_ONCE: Scheduled -> Launching carries a fresh claim; only the invocation holding it
  may end the launch (finish_launch, launch_later), so Scheduler's duplicate deliveries do nothing.
- ONE_CURRENT_ARMING: every re-arm (change of join time, move, launch_later, rearm) takes the next
  `launch_generation`, armed BEFORE the record that names it is written (a cut-off leaves the old
  arming current, never a record whose arming does not exist), under a new schedule name; the old
  schedule is deleted after. A schedule or message of another generation is stale: the launcher drops
  it.
- GUARD_RELEASED_BY_ITS_BOT: a release or a move deletes the guard only while this bot holds it (or
  it is already gone), never another bot's.

`records` and `launches` are the two seams: the store's bot records and the scheduler. A test may
replace them with in-memory fakes (tests/service/test_bot_lifecycle.py).

Customer webhook events (calbot.webhook_events) are emitted here, once for every caller, and only
after the transition is stored and only when it happened (a refused write emits nothing):
place -> bot.scheduled; change, move -> bot.updated; cancel -> bot.cancelled; finish_launch ->
bot.launched or bot.failed; expire -> bot.failed. Claiming, re-arming and launch_later are internal
(the bot stays Scheduled as the user sees it) and emit nothing. Emitting never raises.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from calbot import ids, scheduler, webhook_events
from calbot.errors import Unavailable
from calbot.log import logger
from calbot.models import BotSource, Event, ScheduledBot
from calbot.store import bots as bot_records
from calbot.store.bots import AlreadyScheduled, BotChanged, BotRecords
from calbot.timeutil import iso_z, now

EXPECT_SCHEDULED = "Scheduled"  # ONLY_SCHEDULED_CHANGES
EXPECT_LAUNCHING = "Launching"  # LAUNCH_CLAIMED_ONCE (with the claim)


class LaunchSchedules(Protocol):
    """What the lifecycle needs of calbot.scheduler (which is the real one)."""

    def defers(self, bot: ScheduledBot, *, when: datetime | None = None) -> bool: ...

    def put_launch(self, bot: ScheduledBot, *, when: datetime | None = None) -> str | None: ...

    def delete(self, name: str) -> bool: ...

    def launch_schedule_name(self, bot_id: str, generation: int = 0) -> str: ...

    def reschedule_schedule_name(self, bot_id: str) -> str: ...


records: BotRecords = bot_records
launches: LaunchSchedules = scheduler

# A launch message armed this close to its time may be consumed before the new bot's item exists.
ARM_RACE = timedelta(seconds=10)


# --------------------------------------------------------------------------------------------------
# what a bot is, and which bots are the same


def new_bot_id(user_id: str, series_key: str) -> str:
    """`sb_` + its series' prefix + random: the store lists a series' bots as a range of ids
    (calbot.ids), so every bot is minted here, with the series it belongs to for good."""
    return ids.bot_id(user_id, series_key)


def normalize_meeting_url(url: str) -> str:
    """One meeting seen through two calendars may differ in case or escaping: compare a canonical form."""
    parts = urlsplit(url.strip())
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return f"https://{parts.netloc.lower()}{unquote(parts.path).rstrip('/')}?{query}"


def dedup_key(meeting_url: str, occurrence_start: datetime) -> str:
    """The same meeting link at the same start is the same occurrence (of one user's; the guard is kept
    per user)."""
    raw = f"{normalize_meeting_url(meeting_url)}|{iso_z(occurrence_start)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def series_key(event: Event) -> str:
    return event.series_id or event.event_id


def make_bot(
    event: Event, config: dict[str, Any], *, offset_seconds: int, source: BotSource, recurring: bool
) -> ScheduledBot:
    at = now()
    return ScheduledBot(
        bot_id=new_bot_id(event.user_id, series_key(event)),
        user_id=event.user_id,
        event_id=event.event_id,
        series_key=series_key(event),
        provider=event.provider,
        account_id=event.account_id,
        title=event.title,
        meeting_url=event.meeting_url or "",
        meeting_platform=event.meeting_platform,
        occurrence_start=event.start_time,
        meeting_end=event.end_time,
        scheduled_join_time=event.start_time - timedelta(seconds=offset_seconds),
        join_offset_seconds=offset_seconds,
        bot_config=config,
        source=source,
        recurring_event=recurring,
        dedup_key=dedup_key(event.meeting_url or "", event.start_time),
        created_at=at,
        updated_at=at,
    )


# --------------------------------------------------------------------------------------------------
# creation


def place(bot: ScheduledBot) -> ScheduledBot:
    """The launch arming first, then the item and its guard; a schedule goes again if the item is
    refused or fails. Raises AlreadyScheduled (ONE_LIVE_BOT_PER_OCCURRENCE).

    Lambda kills an invocation at its Timeout with no rollback, so the order is what a kill between
    the writes leaves: here at most a schedule or message whose bot does not exist, which the
    launcher skips (a schedule deletes itself once it has run), and a guard naming that missing bot,
    taken over after its grace; never a bot item nobody will launch.
    The schedule is named by the bot id and generation, so writing it again is idempotent. A meeting
    that already has a bot is refused before anything is written (one read), so reruns of the midnight
    job touch no schedule."""
    owner = records.dedup_owner(bot.user_id, bot.dedup_key)
    if owner is not None:
        raise AlreadyScheduled(owner)
    try:
        bot = _armed(bot)
    except Exception:
        logger.exception("schedule creation failed; nothing was written")
        raise Unavailable(
            "service_unavailable", "The bot could not be scheduled right now; try again."
        ) from None
    try:
        records.create_bot(bot)
    except Exception:
        # Refused (a racing request made the bot first) or failed: its schedule must not outlive it.
        _drop_launch_schedule(bot)
        raise
    webhook_events.emit_bot(bot, webhook_events.BOT_SCHEDULED)  # stored: it is scheduled
    if bot.scheduled_join_time - now() <= ARM_RACE:
        # Due at once: its message may have been consumed before the item existed (the launcher
        # skipped it). Arming it again makes sure one is there; a launch is claimed once, so a second
        # delivery does nothing.
        launches.put_launch(bot)
    return bot


def _armed(bot: ScheduledBot, *, when: datetime | None = None) -> ScheduledBot:
    """`bot` with its launch armed (a schedule, or a delayed message when near), or marked `arm_deferred`
    when it joins beyond scheduler.ARM_WITHIN (no schedule yet: the arming job arms it later). The
    record written next must be the one returned."""
    if launches.defers(bot, when=when):
        return bot if bot.arm_deferred else bot.model_copy(update={"arm_deferred": True})
    launches.put_launch(bot, when=when)
    return bot.model_copy(update={"arm_deferred": False}) if bot.arm_deferred else bot


def _drop_launch_schedule(bot: ScheduledBot) -> None:
    try:
        launches.delete(launches.launch_schedule_name(bot.bot_id, bot.launch_generation))
    except Exception:  # left behind, it fires once, finds no bot (or a stale one) and deletes itself
        logger.exception("could not delete the schedule of an arming that was not kept")


def _next_arming(bot: ScheduledBot) -> ScheduledBot:
    return bot.model_copy(update={"launch_generation": bot.launch_generation + 1})


def _retire(old: ScheduledBot) -> None:
    """The previous arming's schedule, once the record names the next one (ONE_CURRENT_ARMING)."""
    try:
        launches.delete(launches.launch_schedule_name(old.bot_id, old.launch_generation))
    except Exception:  # left behind, it fires once and the launcher drops it as stale
        logger.exception("could not delete a replaced launch schedule")


# --------------------------------------------------------------------------------------------------
# while Scheduled


def change(updated: ScheduledBot, *, join_time_changed: bool = False) -> bool:
    """Save a Scheduled bot's new config, source or join time (never its meeting: see `move`), and its
    launch arming when the join time changed (ONE_CURRENT_ARMING). False when it left Scheduled
    meanwhile."""
    if not join_time_changed:
        try:
            records.save_bot(updated, expect_status=EXPECT_SCHEDULED)
        except BotChanged:
            return False
        webhook_events.emit_bot(updated, webhook_events.BOT_UPDATED)
        return True
    rearmed = _rearmed(updated, previous=updated)
    if rearmed is None:
        return False
    webhook_events.emit_bot(rearmed, webhook_events.BOT_UPDATED)
    return True


def move(bot: ScheduledBot, event: Event) -> ScheduledBot:
    """The bot follows its meeting to a new start, end or link: its record, its guard (the dedup key
    changes with them) and its launch schedule. Raises AlreadyScheduled when another live bot holds
    the new slot (ONE_LIVE_BOT_PER_OCCURRENCE), BotChanged when this one left Scheduled."""
    moved = bot.model_copy(
        update={
            "occurrence_start": event.start_time,
            "meeting_end": event.end_time,
            "scheduled_join_time": event.start_time - timedelta(seconds=bot.join_offset_seconds),
            "meeting_url": event.meeting_url or "",
            "meeting_platform": event.meeting_platform,
            "title": event.title,
            "dedup_key": dedup_key(event.meeting_url or "", event.start_time),
            "launch_generation": bot.launch_generation + 1,
            "updated_at": now(),
        }
    )
    moved = _armed(moved)  # ONE_CURRENT_ARMING: the new arming first
    try:
        records.move_bot(moved, bot.dedup_key, expect_status=EXPECT_SCHEDULED)
    except (BotChanged, AlreadyScheduled):
        _drop_launch_schedule(moved)
        raise
    _retire(bot)
    webhook_events.emit_bot(moved, webhook_events.BOT_UPDATED)
    return moved


def cancel(bot: ScheduledBot, reason: str, *, schedules_first: bool = False) -> bool:
    """Scheduled -> Cancelled with its guard released, then its schedules deleted. False if it had left
    Scheduled meanwhile (launching or launched: a running bot is never touched).

    schedules_first deletes the schedules before the status write, for work that is resumed after being
    cut off (a disconnect): a retry finds the bot still Scheduled and completes the cancel, where the
    other order could leave a Cancelled bot whose schedule is never deleted. (A schedule that fires for a
    bot that just launched is gone either way: it has fired.)"""
    return _end_unlaunched(bot, "Cancelled", reason, schedules_first=schedules_first)


def _end_unlaunched(
    bot: ScheduledBot, status: Literal["Cancelled", "Failed"], reason: str, *, schedules_first: bool = False
) -> bool:
    """Scheduled -> `status` with its guard released, and its schedules deleted (first, or after)."""
    if schedules_first:
        _delete_schedules(bot)
    ended = bot.model_copy(update={"status": status, "reason": reason, "updated_at": now()})
    try:
        records.save_bot(ended, expect_status=EXPECT_SCHEDULED, release_guard=True)
    except BotChanged:
        return False
    webhook_events.emit_bot(
        ended, webhook_events.BOT_CANCELLED if status == "Cancelled" else webhook_events.BOT_FAILED
    )
    if not schedules_first:
        _delete_schedules(bot)
    return True


def _delete_schedules(bot: ScheduledBot) -> None:
    """The current launch schedule, the first one (`launch-<bot id>`: what records made before
    generations have) when that is another, and the end-of-meeting one. A queued launch message cannot
    be deleted: the launcher drops it, the bot being no longer Scheduled."""
    launches.delete(launches.launch_schedule_name(bot.bot_id, bot.launch_generation))
    if bot.launch_generation:
        launches.delete(launches.launch_schedule_name(bot.bot_id))
    launches.delete(launches.reschedule_schedule_name(bot.bot_id))


# --------------------------------------------------------------------------------------------------
# launch


def claim_launch(bot: ScheduledBot) -> ScheduledBot | None:
    """Scheduled -> Launching under a fresh claim (LAUNCH_CLAIMED_ONCE). None when a duplicate
    invocation or a cancel won."""
    launching = bot.model_copy(
        update={
            "status": "Launching",
            "launch_claim": secrets.token_hex(8),
            "launch_attempts": bot.launch_attempts + 1,
            "updated_at": now(),
        }
    )
    try:
        # and still armed as read: a move or re-arm meanwhile is not overwritten (ONE_CURRENT_ARMING)
        records.save_bot(launching, expect_status=EXPECT_SCHEDULED, expect_generation=bot.launch_generation)
    except BotChanged:
        return None
    return launching


def finish_launch(
    launching: ScheduledBot, status: Literal["Launched", "Failed"], **changes: Any
) -> ScheduledBot:
    """The end of a claimed launch. A Failed bot gives its occurrence back (its guard is released); a
    Launched one keeps it."""
    final = launching.model_copy(update={"status": status, "updated_at": now(), **changes})
    records.save_bot(
        final,
        expect_status=EXPECT_LAUNCHING,
        expect_claim=launching.launch_claim,
        release_guard=status == "Failed",
    )
    webhook_events.emit_bot(
        final, webhook_events.BOT_LAUNCHED if status == "Launched" else webhook_events.BOT_FAILED
    )
    return final


def launch_later(launching: ScheduledBot, when: datetime) -> ScheduledBot:
    """A claimed launch that could not be made now: back to Scheduled (claim dropped, guard kept),
    re-armed for `when` under the next generation (ONE_CURRENT_ARMING: a re-put of the schedule that is
    running this very invocation could be deleted once it completes)."""
    retry = _next_arming(
        launching.model_copy(update={"status": "Scheduled", "launch_claim": None, "updated_at": now()})
    )
    retry = _armed(retry, when=when)
    records.save_bot(retry, expect_status=EXPECT_LAUNCHING, expect_claim=launching.launch_claim)
    _retire(launching)
    return retry


def rearm(bot: ScheduledBot) -> ScheduledBot | None:
    """A Scheduled bot whose arming fired too early (far from its join time): armed again for its join
    time under the next generation (ONE_CURRENT_ARMING). None when it left Scheduled meanwhile."""
    return _rearmed(bot.model_copy(update={"updated_at": now()}), previous=bot)


def _rearmed(bot: ScheduledBot, *, previous: ScheduledBot) -> ScheduledBot | None:
    """`bot` (still Scheduled) saved under the next generation, armed first (ONE_CURRENT_ARMING);
    None, and its new arming dropped, when it left Scheduled meanwhile."""
    rearmed = _armed(_next_arming(bot))
    try:
        records.save_bot(rearmed, expect_status=EXPECT_SCHEDULED)
    except BotChanged:
        _drop_launch_schedule(rearmed)
        return None
    _retire(previous)
    return rearmed


def expire(bot: ScheduledBot, reason: str) -> bool:
    """Scheduled -> Failed without a launch (its meeting is over): the occurrence is given back (its
    guard released) and its schedules go. False when it left Scheduled meanwhile."""
    return _end_unlaunched(bot, "Failed", reason)
