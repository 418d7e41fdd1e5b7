"""Auto-scheduling: every meeting with a link in the next 24 hours that the user's rules let through
(calbot.rules, the one evaluator the preview and every sync use too) gets a bot with the user's default
config, unless it already has one (the same dedup guard as manual scheduling, so reruns, retries and a
concurrent manual schedule never make a second bot; a manual bot is never replaced).

The midnight job only fans out: it reads the enabled users from a sparse index and enqueues them,
several users a message (calbot.fanout); a worker runs each user on its own and puts a failing user
back on the queue alone, so one user's failure or throttled provider never stops the others.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from calbot import fanout, rules, store, webhook_events
from calbot.log import logger
from calbot.models import (
    AutoScheduleMessage,
    AutoScheduleRules,
    AutoScheduleSettingsView,
    EnableAutoScheduleRequest,
    Event,
    LastRun,
    PreviewItem,
    PreviewQuery,
    PreviewResult,
    account_key,
)
from calbot.services.bots import dedup_key, make_bot, place
from calbot.timeutil import now

WINDOW = timedelta(hours=24)
USER_SECONDS = 60.0  # what one user's sync and scheduling may take; not started with less left
# Users per fan-out message: 100,000 users are 5,000 messages, 500 SendMessageBatch calls (bench/
# auto_schedule.py measures the fan-out); the worker's BatchSize 1 makes an invocation 20 users.
USERS_PER_MESSAGE = 20
RETRY_DELAY_SECONDS = 60  # a user put back after a failure waits this long (a throttled provider)
# Each run also covers the first hours of the next day: a meeting at 00:15 UTC must not depend on the
# midnight fan-out reaching its user within 15 minutes. Dedup makes the overlap free of duplicates.
OVERLAP = timedelta(hours=2)


def get_settings_view(user_id: str) -> AutoScheduleSettingsView:
    return AutoScheduleSettingsView.of(store.get_auto_settings(user_id))


def enable(user_id: str, req: EnableAutoScheduleRequest) -> AutoScheduleSettingsView:
    store.update_auto_settings(
        user_id,
        enabled=True,
        updated_at=now(),
        default_bot_config=req.default_bot_config.model_dump(mode="json", exclude_unset=True),
        join_offset_seconds=req.join_offset_seconds,
        rules=req.rules.model_dump(mode="json") if req.rules is not None else None,
    )
    run_for_user(user_id)  # the next 24 hours are covered at once, not from the next midnight
    return get_settings_view(user_id)


def set_rules(user_id: str, new: AutoScheduleRules) -> AutoScheduleSettingsView:
    """PUT /calendar/auto-schedule/rules: the whole rules object (omitted fields take their defaults).
    The next run, and every sync, applies them; `enabled` stays as it is. Auto bots whose meeting the
    new rules leave out are cancelled at once (rule_mismatch)."""
    from calbot.services.auto_sync import drop_unmatched  # the lifecycle: only when rules change

    store.set_auto_rules(user_id, new.model_dump(mode="json"), now())
    drop_unmatched(user_id)
    return get_settings_view(user_id)


def _window(user_id: str, at: datetime, ahead: timedelta) -> list[Event]:
    """The events not over by `at` that start before `at + ahead` (ongoing ones included)."""
    events = store.query_events(user_id, time_min=at - WINDOW, time_max=at + ahead, limit=100_000)
    return [e for e in events if e.end_time > at]


_PREVIEWED = {"event_id", "title", "start_time", "provider", "account_id"}


def preview(user_id: str, query: PreviewQuery) -> PreviewResult:
    """For each meeting of the next `hours`, whether the job would give it a bot and why not: the same
    evaluator over the stored events (kept current by change notifications); `has_bot` where a live
    bot already holds the meeting (the job's skipped_existing). Reads only, never a provider."""
    settings = store.get_auto_settings(user_id)
    offset = settings.join_offset_seconds if settings else 60
    the_rules = settings.rules if settings else AutoScheduleRules()
    at = now()
    ctx = rules.rule_context(user_id, now=at, join_offset_seconds=offset)
    events = _window(user_id, at, timedelta(hours=query.hours))
    held: set[str] = set()
    if events:
        first = min(e.start_time for e in events)
        last = max(e.start_time for e in events)
        held = {
            b.dedup_key
            for b in store.bots_between(user_id, first - WINDOW, last)
            if b.live  # a bot joins at most a day before its meeting
        }
    results = []
    for event in events:
        verdict = rules.evaluate(event, the_rules, ctx)
        reason: str = verdict.reason
        if event.meeting_url and dedup_key(event.meeting_url, event.start_time) in held:
            reason = "has_bot"
        shown = event.model_dump(include=_PREVIEWED)
        results.append(PreviewItem(**shown, would_schedule=reason == "matched", reason=reason))
    return PreviewResult(results=results)


_COUNTED = {"cancelled": "skipped_cancelled", "no_link": "skipped_no_link", "started": "skipped_started"}


def disable(user_id: str) -> AutoScheduleSettingsView:
    # Only the flag (and its index entry) changes; a user who never enabled gets no settings item.
    store.update_auto_settings(user_id, enabled=False, updated_at=now(), create=False)
    return get_settings_view(user_id)  # bots already scheduled stay


@webhook_events.endpoints_read_once()  # one read of the endpoints for all its events
def run_for_user(user_id: str) -> LastRun | None:
    """Sync the user's accounts, then give every linked meeting of the next 24 h a bot."""
    # Only the worker syncs: the settings endpoints and the job need no provider code (its import).
    from calbot.services.auto_sync import drop_unmatched
    from calbot.services.sync import sync_user

    settings = store.get_auto_settings(user_id)
    if settings is None or not settings.enabled:
        return None
    report = sync_user(user_id, schedule_auto=False)  # this run places (and counts) the bots
    drop_unmatched(user_id, settings)  # auto bots the rules (changed since) now leave out
    # Only accounts in service: events kept after a disconnect, or of one in progress, get no bot.
    live = {(c.provider, c.key) for c in store.list_connections(user_id) if c.live}
    at = now()
    ctx = rules.rule_context(user_id, now=at, join_offset_seconds=settings.join_offset_seconds)
    run = LastRun(partial_errors=report.partial_errors)
    for event in _window(user_id, at, WINDOW + OVERLAP):
        if (event.provider, account_key(event.account_id)) not in live:
            continue  # its account is disconnected: not counted
        verdict = rules.evaluate(event, settings.rules, ctx)
        if not verdict.would_schedule:
            counter = _COUNTED.get(verdict.reason, "skipped_rules")
            setattr(run, counter, getattr(run, counter) + 1)
            continue
        bot = make_bot(
            event,
            settings.default_bot_config,
            offset_seconds=settings.join_offset_seconds,
            source="auto",
            recurring=False,
        )
        try:
            place(bot)
            run.scheduled += 1
        except store.AlreadyScheduled:
            run.skipped_existing += 1
    store.record_auto_run(user_id, at, run)  # a field update: a concurrent enable/disable stays as set
    webhook_events.emit(
        user_id, webhook_events.AUTO_SCHEDULE_COMPLETED, webhook_events.auto_schedule_payload(at, run)
    )
    return run


def fan_out(queue_url: str) -> dict[str, Any]:
    """The midnight job: the enabled users, USERS_PER_MESSAGE a message, ten messages a call."""
    counted: list[int] = []
    bodies = fanout.pack(AutoScheduleMessage, store.enabled_auto_users(), USERS_PER_MESSAGE, counted)
    sent, lost = fanout.send_all(queue_url, bodies)
    failed = sum(len(AutoScheduleMessage.model_validate_json(body).users()) for body in lost)
    if failed:
        logger.error("auto-schedule fan-out could not enqueue some users", extra={"failed": failed})
    return {"users_enqueued": sum(counted) - failed, "messages": sent, "failed": failed}


def _run(user_id: str) -> str:
    return "ran" if run_for_user(user_id) is not None else "disabled"


def consume(event: dict[str, Any]) -> dict[str, Any]:
    """The worker: each user of each message on its own; a failing user is put back on the queue
    alone (or, alone in its message, reported and retried by SQS), never holding back the others."""
    failures, outcomes = fanout.consume_items(
        event, AutoScheduleMessage, _run, "auto_schedule_queue_url", USER_SECONDS, RETRY_DELAY_SECONDS
    )
    logger.info("auto-schedule batch", extra=outcomes)
    return {"batchItemFailures": failures}
