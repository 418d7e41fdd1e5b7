"""Bots follow their meetings: after a sync, every changed event with live bots is looked at.

- moved -> the bot's join time and its schedule are updated in place (same bot id, same schedule name);
- moved into the past -> schedule deleted, bot Cancelled with event_moved_to_past;
- cancelled or deleted -> schedule deleted, bot Cancelled with event_cancelled;
- a different meeting link -> the bot uses the new link (never silently the old one);
- a series whose recurrence changed -> its removed occurrences' bots are cancelled (above) and the
  series' new upcoming occurrences get bots again, as many as were lost, with the same config.

`reconcile_accounts` runs after every sync of an account, whoever synced it (the notification worker,
GET /calendar/events, the auto-schedule run): besides what this sync changed, it re-checks every live
bot of the account against its stored event. A sync that wrote events and then died before its bots
followed (a killed worker, or a read that synced them) leaves nothing for the next sync to "change",
so bots must follow the stored truth, not only the latest diff. With auto-schedule on, the rules act
on what the sync changed there too (services.auto_sync): an auto bot whose meeting stopped matching is
cancelled (rule_mismatch), a matching meeting of the next 24 h without a bot gets its auto bot.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from calbot import store, webhook_events
from calbot.log import logger
from calbot.models import Event, ScheduledBot
from calbot.services import auto_sync
from calbot.services import bots as lifecycle
from calbot.services.bots import make_bot, place, series_key
from calbot.timeutil import now


def reconcile(events: list[Event]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    lost: dict[str, list[ScheduledBot]] = defaultdict(list)  # series -> bots cancelled with an occurrence
    by_series: dict[tuple[str, str], list[ScheduledBot]] = {}
    for event in events:
        key = (event.user_id, series_key(event))
        if key not in by_series:
            by_series[key] = [
                b for b in store.bots_of_series(event.user_id, key[1]) if b.status == "Scheduled"
            ]
        for bot in [b for b in by_series[key] if b.event_id == event.event_id]:
            outcome = _follow(bot, event)
            counts[outcome] += 1
            if outcome == "cancelled" and event.is_recurring:
                lost[key[1]].append(bot)
    for series, bots in lost.items():
        counts["recreated"] += _refill(bots[0].user_id, series, bots, events)
    return dict(counts)


def _stale(bot: ScheduledBot, event: Event) -> bool:
    return (
        event.is_deleted
        or not event.meeting_url
        or event.start_time != bot.occurrence_start
        or event.meeting_url != bot.meeting_url
        or event.end_time != bot.meeting_end
    )


LOOKBACK = timedelta(days=1)  # a bot still Scheduled whose join time just passed may yet launch


@webhook_events.endpoints_read_once()  # one read of the endpoints for all its events
def reconcile_accounts(
    user_id: str, accounts: list[tuple[str, str]], changed: list[Event], *, schedule_auto: bool = True
) -> dict[str, int]:
    """Bots follow what a sync of these (provider, account_id) changed, and any stored event a live bot
    of theirs disagrees with. One query for the user's live bots bounds the work by the bots, not by the
    events written (a first sync writes them all, and most have no bot).

    With auto-schedule on, the rules act on what the sync changed (services.auto_sync): auto bots whose
    meeting stopped matching are cancelled first, and, unless `schedule_auto` is off (the auto-schedule
    run places and counts its bots itself), matching meetings of the next 24 h get their auto bot."""
    if not accounts:
        return {}
    wanted = set(accounts)
    provider, account_id = accounts[0] if len(accounts) == 1 else (None, None)
    bots = [
        b
        for b in store.upcoming_bots(
            user_id,
            after=now() - LOOKBACK,
            limit=100_000,
            status="Scheduled",
            provider=provider,
            account_id=account_id,
        )
        if (b.provider, b.account_id) in wanted
    ]
    counts: dict[str, int] = {}
    rules = auto_sync.RuleSync.load(user_id, changed, bots)
    if rules is not None:
        live = {b.event_id for b in bots}
        bots, counts["rule_mismatch"] = rules.drop_mismatches(bots)
    if bots:
        counts.update(_follow_bots(user_id, bots, changed))
    if rules is not None and schedule_auto:
        counts["auto_scheduled"] = rules.place_matching(live)
    return counts


def _follow_bots(user_id: str, bots: list[ScheduledBot], changed: list[Event]) -> dict[str, int]:
    series = {b.series_key for b in bots}
    events = {e.event_id: e for e in changed if series_key(e) in series}
    unseen = [b for b in bots if b.event_id not in events]
    if unseen:
        stored = store.get_events(user_id, {b.event_id for b in unseen})
        for bot in unseen:
            event = stored.get(bot.event_id)
            if event is not None and _stale(bot, event):
                events[event.event_id] = event
    return reconcile(list(events.values())) if events else {}


def _follow(bot: ScheduledBot, event: Event) -> str:
    if event.is_deleted:
        return "cancelled" if lifecycle.cancel(bot, "event_cancelled") else "unchanged"
    if not event.meeting_url:  # no link: nothing to join
        return "cancelled" if lifecycle.cancel(bot, "event_cancelled") else "unchanged"
    join = event.start_time - timedelta(seconds=bot.join_offset_seconds)
    if (
        event.start_time == bot.occurrence_start
        and event.meeting_url == bot.meeting_url
        and event.end_time == bot.meeting_end
    ):
        return "unchanged"
    if join <= now():
        return "moved_to_past" if lifecycle.cancel(bot, "event_moved_to_past") else "unchanged"
    try:
        lifecycle.move(bot, event)
    except lifecycle.AlreadyScheduled:
        # The same meeting's new slot already has a bot (seen through another calendar): one is enough.
        return "cancelled" if lifecycle.cancel(bot, "event_cancelled") else "unchanged"
    except lifecycle.BotChanged:
        return "unchanged"  # launched or cancelled meanwhile: a running bot is never touched
    return "moved"


def _refill(user_id: str, series: str, lost: list[ScheduledBot], changed: list[Event]) -> int:
    """A recurrence change removed occurrences that had bots: give the new upcoming ones bots again."""
    template: dict[str, Any] = {
        "config": lost[0].bot_config,
        "offset": lost[0].join_offset_seconds,
        "source": lost[0].source,
        "recurring": lost[0].recurring_event,
    }
    candidates = sorted(
        (
            e
            for e in changed
            if series_key(e) == series
            and not e.is_deleted
            and e.meeting_url
            and e.start_time - timedelta(seconds=template["offset"]) > now()
        ),
        key=lambda e: e.start_time,
    )
    made = 0
    for event in candidates:
        if made >= len(lost):
            break
        bot = make_bot(
            event,
            template["config"],
            offset_seconds=template["offset"],
            source=template["source"],
            recurring=template["recurring"],
        )
        try:
            place(bot)
            made += 1
        except lifecycle.AlreadyScheduled:
            continue
        except Exception:
            logger.exception("could not recreate a bot for a changed series")
    return made
