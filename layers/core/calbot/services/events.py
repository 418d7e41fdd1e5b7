"""GET /calendar/events (sync then read) and GET /calendar/get_events (read only)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from calbot import cursor, store
from calbot import deadline as deadlines
from calbot.deadline import Deadline
from calbot.models import BotSummary, Event, EventPage, EventsQuery, EventView
from calbot.pages import Paged
from calbot.timeutil import iso_z, now, parse_iso

DEFAULT_PAST = timedelta(days=1)
DEFAULT_FUTURE = timedelta(days=28)
AFTER_SYNC_SECONDS = 5.0  # of the request's budget, kept for deferral, bots following and the read


def _key(event: Event) -> str:
    return f"{iso_z(event.start_time)}#{event.event_id}"


def _bots_by_event(user_id: str, events: list[Event], *, consistent: bool) -> dict[str, list[BotSummary]]:
    """The page's bots in one range query on join time (a bot joins at most a day before its meeting)."""
    if not events:
        return {}
    wanted = {e.event_id for e in events}
    first, last = min(e.start_time for e in events), max(e.start_time for e in events)
    out: dict[str, list[BotSummary]] = {}
    for bot in store.bots_between(user_id, first - timedelta(days=1), last, consistent=consistent):
        if bot.event_id in wanted:
            out.setdefault(bot.event_id, []).append(
                BotSummary(
                    id=bot.bot_id,
                    status=bot.status,
                    scheduled_join_time=bot.scheduled_join_time,
                    bot_name=bot.bot_config.get("bot_name"),
                    platform=bot.meeting_platform,
                    is_scheduled=bot.status == "Scheduled",
                )
            )
    return out


def list_events(
    user_id: str,
    query: EventsQuery,
    *,
    raw_params: dict[str, str],
    sync: bool,
    deadline: Deadline | None = None,
) -> Paged[EventPage]:
    """One page of stored events; the first page syncs the accounts in scope first, within `deadline`:
    an account that cannot finish in time answers under `partial_errors` and is handed to the sync
    worker, and the page shows what is stored. `raw_params` are the query's filters as the caller sent
    them (the cursors are bound to them); the page's links are left to the caller, built from the
    cursors returned beside it."""
    scope = cursor.scope_of(
        "events",
        {
            k: raw_params.get(k)
            for k in ("time_min", "time_max", "calendar_id", "provider", "account_id", "include_raw")
        },
    )
    state: dict[str, Any] = cursor.decode(user_id, scope, query.cursor) if query.cursor else {}
    if state:
        # The window is frozen by the first page, so "now"-relative defaults cannot shift under paging.
        time_min, time_max = parse_iso(state["w"][0]), parse_iso(state["w"][1])
    else:
        at = now()
        time_min, time_max = query.time_min or at - DEFAULT_PAST, query.time_max or at + DEFAULT_FUTURE

    partial_errors: dict[str, dict[str, str]] = {}
    report_written = 0
    if sync and not state:  # only the first page syncs; later pages read what it stored
        from calbot.services.sync import defer_unfinished, sync_user  # get_events never syncs

        # The sync stops early enough to leave time for what follows it: deferring the unfinished
        # accounts, their bots following, and reading the page.
        budget = (deadline if deadline is not None else deadlines.current()).shortened(AFTER_SYNC_SECONDS)
        report = sync_user(user_id, provider=query.provider, account_id=query.account_id, deadline=budget)
        defer_unfinished(user_id, report)
        partial_errors = report.partial_errors
        report_written = report.written

    filters: dict[str, Any] = {
        "provider": query.provider,
        "account_id": query.account_id,
        "calendar_id": query.calendar_id,
        # Eventually consistent reads of the page's events (half the read units), unless this request
        # synced something: then the page shows what it just wrote.
        "consistent": bool(report_written),
    }
    window = [iso_z(time_min), iso_z(time_max)]
    if "b" in state:  # paging backwards: one extra tells whether there is a page before this one
        rows = store.query_events(
            user_id, time_min=time_min, time_max=time_max, limit=query.limit + 1, before=state["b"], **filters
        )
        has_previous = len(rows) > query.limit
        rows = rows[-query.limit :]
        has_more = True
    else:
        rows = store.query_events(
            user_id,
            time_min=time_min,
            time_max=time_max,
            limit=query.limit + 1,
            after=state.get("a"),
            **filters,
        )
        has_more = len(rows) > query.limit
        rows = rows[: query.limit]
        has_previous = "a" in state

    def token(data: dict[str, Any]) -> str:
        return cursor.encode(user_id, scope, {**data, "w": window})

    bots = _bots_by_event(user_id, rows, consistent=filters["consistent"])
    page = EventPage(
        next=None,
        previous=None,
        has_more=bool(has_more and rows),
        results=[EventView.of(e, include_raw=query.include_raw, bots=bots.get(e.event_id, [])) for e in rows],
        partial_errors=partial_errors,
    )
    return Paged(
        page,
        next_cursor=token({"a": _key(rows[-1])}) if has_more and rows else None,
        previous_cursor=token({"b": _key(rows[0])}) if has_previous and rows else None,
    )
