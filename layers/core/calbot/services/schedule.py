"""Scheduling bots: POST/DELETE /calendar/schedule/{event_id}, the scheduled_bots endpoints,
toggle-recurrence and auto-reschedule.

Which bots a request makes, changes or cancels is decided here; a bot's life itself (creation with its
dedup guard, changes, cancel, launch) and how bots are de-duplicated are calbot.services.bots'.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any

from calbot import cursor, scheduler, store
from calbot.errors import Conflict, Invalid, NotFound
from calbot.models import (
    LIVE_STATUSES,
    BotPage,
    BotRef,
    BotView,
    CancelResult,
    Event,
    PatchBotRequest,
    ScheduledBot,
    ScheduledBotsQuery,
    ScheduleRequest,
    ScheduleResult,
    ToggleRecurrenceResult,
    UnscheduleRequest,
)
from calbot.pages import Paged
from calbot.providers import registry
from calbot.services import bots as lifecycle
from calbot.services.bots import make_bot, place, series_key
from calbot.services.connections import is_live
from calbot.timeutil import iso_z, now


def _event(user_id: str, event_id: str) -> Event:
    """The event with this id, or, when the id is a series id (an event row's `series_id`), the
    occurrence that stands for the series: its next upcoming one (else its last)."""
    event = store.get_event(user_id, event_id) or _series_event(user_id, event_id)
    if event is None:
        raise NotFound("event_not_found", f"No event {event_id}.", event_id=event_id)
    return event


def _series_event(user_id: str, series_id: str) -> Event | None:
    occurrences = store.series_occurrences(user_id, series_id)
    if not occurrences:
        return None
    at = now()
    live = [e for e in occurrences if not e.is_deleted] or occurrences
    return next((e for e in live if e.start_time > at), live[-1])


def _require_connected(event: Event) -> None:
    """Events kept after a disconnect (purge_events=false) are history: no new bot joins them."""
    if not is_live(event.user_id, event.provider, event.account_id):
        raise Invalid(
            "calendar_disconnected",
            f"The {event.provider} account {event.account_id} this event came from is disconnected; "
            "connect it again to schedule bots for its meetings.",
            provider=event.provider,
            account_id=event.account_id,
        )


def _series_events(event: Event) -> list[Event]:
    if not event.series_id:
        return [event]
    return store.events_of_series(event.user_id, event.provider, event.account_id, event.series_id)


def _occurrences(event: Event, req: ScheduleRequest, at: datetime) -> list[Event]:
    """Which occurrences this request schedules (the rules of API.md)."""
    offset = timedelta(seconds=req.join_offset_seconds)
    if not event.is_recurring:
        if req.occurrence_date or req.schedule_all_occurrences:
            raise Invalid(
                "not_recurring", "occurrence_date and schedule_all_occurrences need a recurring event."
            )
        if event.start_time - offset <= at:
            raise Invalid("event_in_past", "The event has started or starts too soon for a bot to join.")
        return [event]
    upcoming = [e for e in _series_events(event) if not e.is_deleted and e.start_time - offset > at]
    if req.occurrence_date is not None:
        wanted = req.occurrence_date
        match = [e for e in upcoming if wanted in (e.start_time, e.occurrence_start)]
        if not match and (wanted.hour, wanted.minute, wanted.second) == (0, 0, 0):  # a date: that day's one
            match = [e for e in upcoming if e.start_time.date() == wanted.date()]
        if not match:
            raise Invalid(
                "occurrence_not_found", f"The series has no upcoming occurrence at {iso_z(wanted)}."
            )
        return match[:1]
    if req.schedule_all_occurrences:
        if not upcoming:
            raise Invalid("event_in_past", "The series has no upcoming occurrence.")
        return upcoming[: req.occurrence_limit]
    # Neither flag: this occurrence if it is still ahead, else the series' next one.
    if not event.is_deleted and event.start_time - offset > at:
        return [event]
    if not upcoming:
        raise Invalid("event_in_past", "The series has no upcoming occurrence.")
    return upcoming[:1]


def schedule_event(user_id: str, event_id: str, req: ScheduleRequest) -> ScheduleResult:
    event = _event(user_id, event_id)
    if event.is_deleted:
        raise Invalid("event_cancelled", "The event was cancelled.")
    _require_connected(event)
    if not event.meeting_url:
        raise Invalid(
            "no_meeting_link",
            "No meeting link (Meet, Zoom, Teams, Webex, GoToMeeting, BlueJeans or "
            "Whereby) was found in this event.",
        )
    targets = _occurrences(event, req, now())
    config = req.bot_config.model_dump(mode="json", exclude_unset=True)
    made: list[ScheduledBot] = []
    existing: list[str] = []
    replayed = 0  # existing bots that are exactly what this request makes: an earlier try of it
    for occurrence in targets:
        if not occurrence.meeting_url:
            continue
        bot = make_bot(
            occurrence,
            config,
            offset_seconds=req.join_offset_seconds,
            source="manual",
            recurring=req.recurring_event,
        )
        try:
            made.append(place(bot))
        except lifecycle.AlreadyScheduled as err:
            current = store.get_bot(user_id, err.bot_id) if err.bot_id else None
            taken = _take_over_auto_bot(current, bot)
            if taken is not None:
                made.append(taken)
            else:
                existing.append(err.bot_id or "")
                replayed += int(current is not None and _same_request(current, bot))
    if not made:  # refused before anything else changes: a rejected request leaves the series alone
        if existing and replayed == len(existing) and req.recurring_event and event.is_recurring:
            # ...unless this request already made every one of these bots: a retry of a request that
            # was answered 503 after its bots were placed. It still ends where the client asked.
            _set_recurring(event, True)
        raise Conflict(
            "already_scheduled",
            "A bot is already scheduled for this meeting; update it with "
            "PATCH /calendar/scheduled_bots/{bot_id}.",
            bot_id=existing[0] if existing else None,
            bot_ids=existing,
        )
    if req.recurring_event and event.is_recurring:
        _set_recurring(event, True)
    return _result(event.event_id, made, recurring=req.recurring_event)


def _same_request(current: ScheduledBot, wanted: ScheduledBot) -> bool:
    """Whether a live bot is the one this request would make (an earlier try of the same request)."""
    return (
        current.status in ("Scheduled", "Launching", "Launched")
        and current.source == "manual"
        and current.event_id == wanted.event_id
        and current.bot_config == wanted.bot_config
        and current.join_offset_seconds == wanted.join_offset_seconds
        and current.recurring_event == wanted.recurring_event
    )


def _take_over_auto_bot(current: ScheduledBot | None, wanted: ScheduledBot) -> ScheduledBot | None:
    """A manual schedule always wins over the auto-schedule default: an auto bot still Scheduled for
    the same occurrence is turned into the manual one (same id and schedule, the manual config)."""
    if current is None or current.source != "auto" or current.status != "Scheduled":
        return None
    manual = current.model_copy(
        update={
            "bot_config": wanted.bot_config,
            "source": "manual",
            "recurring_event": wanted.recurring_event,
            "join_offset_seconds": wanted.join_offset_seconds,
            "scheduled_join_time": wanted.scheduled_join_time,
            "updated_at": now(),
        }
    )
    return manual if lifecycle.change(manual, join_time_changed=True) else None


def _result(event_id: str, made: list[ScheduledBot], *, recurring: bool) -> ScheduleResult:
    """The 201 body: the first bot's fields (both spellings of the join time) plus every bot made."""
    first = made[0]
    return ScheduleResult(
        bot_id=first.bot_id,
        event_id=event_id,
        status="Scheduled",
        scheduled_join_time=first.scheduled_join_time,
        ScheduledJoinTime=first.scheduled_join_time,
        meeting_url=first.meeting_url,
        meeting_platform=first.meeting_platform,
        recurring_event=recurring,
        bots=[
            BotRef(
                bot_id=b.bot_id,
                occurrence_start=b.occurrence_start,
                scheduled_join_time=b.scheduled_join_time,
            )
            for b in made
        ],
    )


def _user_cancelled_or_live(bot: ScheduledBot) -> bool:
    return bot.status == "Scheduled" or (bot.status == "Cancelled" and bot.reason == "user_cancelled")


def unschedule_event(user_id: str, event_id: str, req: UnscheduleRequest) -> CancelResult:
    event = _event(user_id, event_id)
    every = store.bots_of_series(user_id, series_key(event))
    bots = [b for b in every if b.status == "Scheduled"]
    if event.is_recurring:
        if req.from_date is not None:
            bots = [b for b in bots if b.occurrence_start >= req.from_date]
        elif not req.cancel_all_occurrences:
            # This occurrence's bot, else the series' next one. A bot the user already cancelled still
            # counts as the target, so a retry (the first try cancelled it, then answered 503) ends
            # where the client asked instead of cancelling the occurrence after it too.
            mine = [b for b in every if b.event_id == event.event_id and _user_cancelled_or_live(b)]
            if not mine:
                at = now()
                mine = [b for b in every if _user_cancelled_or_live(b) and b.scheduled_join_time > at][:1]
            bots = [b for b in mine if b.status == "Scheduled"]
    cancelled = [b.bot_id for b in bots if lifecycle.cancel(b, "user_cancelled")]
    if not cancelled:
        raise NotFound("not_scheduled", "No scheduled bot for this event.", event_id=event_id)
    return CancelResult(cancelled=len(cancelled), bot_ids=cancelled)


def _join_key(bot: ScheduledBot) -> str:
    return f"{iso_z(bot.scheduled_join_time)}#{bot.bot_id}"


def list_bots(user_id: str, query: ScheduledBotsQuery, *, raw_params: dict[str, str]) -> Paged[BotPage]:
    """What API.md says: without `status`, the live bots whose join time is ahead, soonest first; with
    one status (or `all`), those bots whatever their join time: the ones ahead soonest first, then the
    past ones newest first. The moment that splits ahead from past is fixed by the first page and kept
    in the cursor, so paging never skips or repeats a bot as time moves. The next page is returned as a
    cursor (bound to `raw_params`, the filters as sent); the caller makes it a link."""
    scope = cursor.scope_of(
        "scheduled_bots", {k: raw_params.get(k) for k in ("provider", "account_id", "status")}
    )
    state = cursor.decode(user_id, scope, query.cursor) if query.cursor else {}
    if query.status is None:
        statuses: tuple[str, ...] | None = LIVE_STATUSES
    elif query.status == "all":
        statuses = None
    else:
        statuses = (query.status,)
    with_past = query.status is not None
    try:
        pivot = str(state["t"]) if state else iso_z(now().replace(microsecond=0))
    except KeyError:
        raise Invalid("invalid_cursor", "The cursor is not valid for this request.") from None
    by_join_time = partial(
        store.bots_by_join_time,
        user_id,
        statuses=statuses,
        provider=query.provider,
        account_id=_account(user_id, query),
        consistent=False,  # a listing: half the read units, its index eventually consistent anyway
    )
    limit = query.limit
    rows: list[ScheduledBot] = []
    more: dict[str, Any] | None = None
    if "b" not in state and "p" not in state:  # the bots ahead (first pages)
        after = str(state["a"]) + "\x00" if "a" in state else pivot
        ahead = by_join_time(ascending=True, bound=after, limit=limit + 1)
        rows = ahead[:limit]
        if len(ahead) > limit:
            more = {"a": _join_key(rows[-1])}
    if more is None and with_past:  # then the past ones, newest first
        need = limit - len(rows)
        before = str(state["b"]) if "b" in state else pivot
        past = by_join_time(ascending=False, bound=before, limit=need + 1)
        rows += past[:need]
        if len(past) > need:
            more = {"b": _join_key(rows[-1])} if need else {"p": 1}
    token = cursor.encode(user_id, scope, {"t": pivot, **more}) if more is not None else None
    page = BotPage(results=[BotView.of(b) for b in rows], next=None, has_more=token is not None)
    return Paged(page, next_cursor=token)


def _account(user_id: str, query: ScheduledBotsQuery) -> str | None:
    if not query.account_id:
        return None
    conn = store.get_connection(user_id, query.provider or registry.default_name(), query.account_id)
    return conn.account_id if conn else query.account_id


def _bot_or_404(user_id: str, bot_id: str) -> ScheduledBot:
    bot = store.get_bot(user_id, bot_id)
    if bot is None:
        raise NotFound("bot_not_found", f"No scheduled bot {bot_id}.", bot_id=bot_id)
    return bot


def update_bot(user_id: str, bot_id: str, req: PatchBotRequest) -> BotView:
    bot = _bot_or_404(user_id, bot_id)
    if bot.status != "Scheduled":
        raise Conflict(
            "bot_not_scheduled",
            f"The bot is {bot.status}; only a Scheduled bot can be changed.",
            bot_id=bot_id,
            bot_status=bot.status,
        )
    config = dict(bot.bot_config)
    if req.bot_config is not None:
        config.update(req.bot_config.model_dump(mode="json", exclude_none=True, exclude_unset=True))
    name = req.bot_name or req.bot_username
    if name:
        config["bot_name"] = name
    if req.custom_attributes is not None:
        config["custom_attributes"] = {**config.get("custom_attributes", {}), **req.custom_attributes}
    changes: dict[str, Any] = {"bot_config": config, "updated_at": now()}
    if req.scheduled_join_time is not None:
        if req.scheduled_join_time <= now():
            raise Invalid("join_time_in_past", "scheduled_join_time must be in the future.")
        changes["scheduled_join_time"] = req.scheduled_join_time
    updated = bot.model_copy(update=changes)
    if not lifecycle.change(updated, join_time_changed=req.scheduled_join_time is not None):
        raise Conflict("bot_not_scheduled", "The bot left Scheduled while being updated.", bot_id=bot_id)
    return BotView.of(updated)


def delete_bot(user_id: str, bot_id: str) -> BotView:
    bot = _bot_or_404(user_id, bot_id)
    if bot.status != "Scheduled" or not lifecycle.cancel(bot, "user_cancelled"):
        current = store.get_bot(user_id, bot_id) or bot
        raise Conflict(
            "bot_not_scheduled",
            f"The bot is {current.status}; it cannot be cancelled.",
            bot_id=bot_id,
            bot_status=current.status,
        )
    return BotView.of(store.get_bot(user_id, bot_id) or bot)


def _set_recurring(event: Event, enabled: bool) -> None:
    """recurring_enabled is a property of the whole series, stored on each of its occurrences."""
    # Only the flag is written (never a whole event read a moment ago): a sync writing the series'
    # content at the same time keeps its content, and the flag set here stays set.
    store.set_recurring_enabled(
        event.user_id,
        [e.event_id for e in _series_events(event) if e.recurring_enabled != enabled],
        enabled,
        now(),
    )


def next_occurrence(event: Event, after: datetime) -> Event | None:
    for occurrence in _series_events(event):
        if not occurrence.is_deleted and occurrence.start_time > after:
            return occurrence
    return None


def toggle_recurrence(user_id: str, event_id: str, enabled: bool) -> ToggleRecurrenceResult:
    event = _event(user_id, event_id)
    if not event.is_recurring:
        raise Invalid("not_recurring", "This event is not recurring (it has no recurrence rule).")
    _set_recurring(event, enabled)
    if not enabled:
        # Stop the chain: bots the recurrence made and that have not run yet are cancelled.
        for bot in store.bots_of_series(user_id, series_key(event)):
            if bot.status == "Scheduled" and bot.source == "recurrence":
                lifecycle.cancel(bot, "recurrence_disabled")
            if bot.status == "Scheduled":
                scheduler.delete(scheduler.reschedule_schedule_name(bot.bot_id))
    upcoming = next_occurrence(event, now())
    return ToggleRecurrenceResult(
        event_id=event_id,
        recurring_enabled=enabled,
        next_occurrence=upcoming.start_time if upcoming else None,
    )


def auto_reschedule(user_id: str, event_id: str) -> ScheduleResult | None:
    """Schedule the series' next occurrence after now with the series' last bot config.

    Returns None when there is nothing to do (no next occurrence, or it already has a bot).
    """
    event = _event(user_id, event_id)
    if not event.is_recurring:
        raise Invalid("not_recurring", "This event is not recurring (it has no recurrence rule).")
    _require_connected(event)
    previous = sorted(store.bots_of_series(user_id, series_key(event)), key=lambda b: b.created_at)
    config = previous[-1].bot_config if previous else {}
    offset = previous[-1].join_offset_seconds if previous else 60
    at = now()
    for occurrence in _series_events(event):
        if (
            occurrence.is_deleted
            or not occurrence.meeting_url
            or occurrence.start_time - timedelta(seconds=offset) <= at
        ):
            continue
        bot = make_bot(occurrence, config, offset_seconds=offset, source="recurrence", recurring=True)
        try:
            placed = place(bot)
        except lifecycle.AlreadyScheduled:
            return None
        return _result(occurrence.event_id, [placed], recurring=True)
    return None
