"""The one auto-schedule rule evaluator (API.md "Auto-schedule rules").

Enabling, the midnight job, the preview and every sync ask `evaluate` whether a meeting gets an
automatic bot, so they can never disagree. `evaluate` is pure: what it needs of the user (their
own domains, their accounts in service, the time) is gathered once by `rule_context`.
Whether a live bot already exists (`has_bot`) is the caller's to say: only it knows the bots.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from calbot.models import AutoScheduleRules, Event, account_key
from calbot.providers.base import email_domain

Reason = Literal[
    "matched",
    "has_bot",
    "no_link",
    "declined",
    "tentative",
    "all_day",
    "not_organizer",
    "internal",
    "external",
    "platform",
    "title",
    "duration",
    "account",
    "no_attendees",
    "cancelled",
    "started",
]


@dataclass(frozen=True)
class Verdict:
    would_schedule: bool
    reason: Reason


MATCHED = Verdict(True, "matched")


@dataclass(frozen=True)
class RuleContext:
    """What the rules need of the user besides the meeting.

    `domains`: the email domains of every connected account of the user (an attendee outside them
    makes a meeting external); `accounts`: (provider, account key) of the accounts in service (a
    meeting of any other account gets no bot); `join_offset_seconds`: a meeting whose join time
    (start - offset) is not after `now` has `started`."""

    now: datetime
    domains: frozenset[str] = frozenset()
    accounts: frozenset[tuple[str, str]] = frozenset()
    join_offset_seconds: int = 0


def rule_context(user_id: str, *, now: datetime, join_offset_seconds: int = 0) -> RuleContext:
    """The user's context, from their connections (one query)."""
    from calbot import store

    connections = store.list_connections(user_id)
    domains = {email_domain(c.account_id) for c in connections}
    return RuleContext(
        now=now,
        domains=frozenset(d for d in domains if d),
        accounts=frozenset((c.provider, c.key) for c in connections if c.live),
        join_offset_seconds=join_offset_seconds,
    )


def is_external(event: Event, domains: frozenset[str]) -> bool:
    """At least one attendee (or the organizer) whose domain is none of the user's own."""
    return any(d not in domains for d in event.attendee_domains)


def _in_accounts(event: Event, rules: AutoScheduleRules) -> bool:
    if rules.accounts is None:
        return True
    key = (event.provider, account_key(event.account_id))
    return any((a.provider, account_key(a.account_id)) == key for a in rules.accounts)


def _title_ok(event: Event, rules: AutoScheduleRules) -> bool:
    title = (event.title or "").casefold()
    if rules.title_include and not any(t.casefold() in title for t in rules.title_include):
        return False
    return not any(t.casefold() in title for t in rules.title_exclude)


def _duration_ok(event: Event, rules: AutoScheduleRules) -> bool:
    minutes = (event.end_time - event.start_time).total_seconds() / 60
    if rules.min_duration_minutes is not None and minutes < rules.min_duration_minutes:
        return False
    return rules.max_duration_minutes is None or minutes <= rules.max_duration_minutes


def _meetings(event: Event, rules: AutoScheduleRules, ctx: RuleContext) -> Reason | None:
    if rules.meetings == "organized_by_me":
        return None if event.is_organizer else "not_organizer"
    if rules.meetings == "all":
        return None
    external = is_external(event, ctx.domains)
    if rules.meetings == "external":
        return None if external else "internal"
    return "external" if external else None  # internal


def evaluate(event: Event, rules: AutoScheduleRules, ctx: RuleContext) -> Verdict:
    """Whether `event` gets an automatic bot under `rules`, and if not the first reason why.

    The order keeps the job's counts: a cancelled meeting, one without a link and one already started
    are what they were before rules existed; the rules come after."""
    if (event.provider, account_key(event.account_id)) not in ctx.accounts:
        return Verdict(False, "account")  # disconnected, or being disconnected
    if event.is_deleted:
        return Verdict(False, "cancelled")
    if not event.meeting_url:
        return Verdict(False, "no_link")
    if event.start_time - timedelta(seconds=ctx.join_offset_seconds) <= ctx.now:
        return Verdict(False, "started")
    if not _in_accounts(event, rules):
        return Verdict(False, "account")
    if rules.skip_all_day and event.is_all_day:
        return Verdict(False, "all_day")
    if rules.skip_declined and event.response_status == "declined":
        return Verdict(False, "declined")
    if rules.skip_tentative and event.response_status == "tentative":
        return Verdict(False, "tentative")
    if rules.skip_without_attendees and event.attendees_count == 0:
        return Verdict(False, "no_attendees")
    reason = _meetings(event, rules, ctx)
    if reason:
        return Verdict(False, reason)
    if rules.platforms is not None and event.meeting_platform not in rules.platforms:
        return Verdict(False, "platform")
    if not _title_ok(event, rules):
        return Verdict(False, "title")
    if not _duration_ok(event, rules):
        return Verdict(False, "duration")
    return MATCHED
