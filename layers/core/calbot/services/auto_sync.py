"""Auto-schedule rules at every sync: what a sync changed gets its auto bot at once, or loses it.

With auto-schedule on, every sync reconciliation (services.reconcile.reconcile_accounts, whoever
synced: the notification worker, GET /calendar/events, the auto-schedule run) looks at the events the
sync changed, with the one evaluator (calbot.rules.evaluate):
- an auto bot (source `auto`, still Scheduled) whose meeting no longer matches the user's rules
  (declined later, retitled, its account left out of `accounts`, ...) is Cancelled with reason
  `rule_mismatch` through the lifecycle, before its bots follow the change (so the customer's
  bot.cancelled says why);
- a new or changed meeting of the next 24 h that matches and has no live bot gets its auto bot at once,
  with the user's default config and join offset, placed by services.bots.place: the same dedup guard
  as the midnight job, so the job and a sync never make two.
A cancelled meeting, one that lost its link or one already started is the reconciliation's (the bot
follows its meeting), not a rule's. Manual and recurrence bots are never touched by rules.

Cost: a sync that changed nothing of the next 24 h and no auto bot's meeting reads nothing more; else
the settings are read once and the rule context built once (one query of the user's connections) per
sync, and only the changed events are evaluated (the whole window is the midnight job's).

A rules change alters no event, so `drop_unmatched` applies it to the user's upcoming auto bots at
once (PUT rules) and at every auto-schedule run (enable, the midnight job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from calbot import store
from calbot.log import logger
from calbot.models import AutoScheduleSettings, Event, ScheduledBot, account_key
from calbot.rules import RuleContext, Verdict, evaluate, rule_context
from calbot.services import bots as lifecycle
from calbot.timeutil import now

WINDOW = timedelta(hours=24)  # a changed meeting starting within this gets its bot at the sync
RULE_MISMATCH = "rule_mismatch"
# Verdicts that are not the user's rules: the reconciliation makes the bot follow its meeting instead.
NOT_A_RULE = frozenset({"matched", "has_bot", "no_link", "cancelled", "started"})


@dataclass
class RuleSync:
    """One sync's view of the user's auto-schedule: settings and context, read once."""

    settings: AutoScheduleSettings
    at: datetime
    ctx: RuleContext
    verdicts: dict[str, tuple[Event, Verdict]] = field(default_factory=dict)

    @classmethod
    def load(cls, user_id: str, changed: list[Event], bots: list[ScheduledBot]) -> RuleSync | None:
        """None (and nothing read) when the sync changed nothing rules act on, or auto-schedule is off."""
        at = now()
        with_auto_bot = {b.event_id for b in bots if b.source == "auto"}
        events = [e for e in changed if e.event_id in with_auto_bot or _upcoming(e, at)]
        if not events:
            return None
        settings = store.get_auto_settings(user_id)
        if settings is None or not settings.enabled:
            return None
        return cls.judging(user_id, settings, events, at)

    @classmethod
    def judging(
        cls, user_id: str, settings: AutoScheduleSettings, events: list[Event], at: datetime
    ) -> RuleSync:
        """The verdicts on these events, with the rule context built once."""
        ctx = rule_context(user_id, now=at, join_offset_seconds=settings.join_offset_seconds)
        verdicts = {e.event_id: (e, evaluate(e, settings.rules, ctx)) for e in events}
        return cls(settings=settings, at=at, ctx=ctx, verdicts=verdicts)

    def drop_mismatches(self, bots: list[ScheduledBot]) -> tuple[list[ScheduledBot], int]:
        """Cancel (rule_mismatch) the auto bots whose changed meeting no longer matches; returns the
        bots left to follow their meetings, and how many were cancelled."""
        kept: list[ScheduledBot] = []
        cancelled = 0
        for bot in bots:
            judged = self.verdicts.get(bot.event_id)
            if (
                bot.source != "auto"
                or judged is None
                or judged[1].reason in NOT_A_RULE
                or (bot.provider, account_key(bot.account_id)) not in self.ctx.accounts  # a disconnect's
            ):
                kept.append(bot)
            elif lifecycle.cancel(bot, RULE_MISMATCH):  # False: it left Scheduled meanwhile
                cancelled += 1
        return kept, cancelled

    def place_matching(self, live: set[str]) -> int:
        """Give each matching changed meeting of the next 24 h without a live bot its auto bot."""
        made = 0
        for event, verdict in self.verdicts.values():
            if event.event_id in live or not verdict.would_schedule or not _upcoming(event, self.at):
                continue
            try:
                lifecycle.place(
                    lifecycle.make_bot(
                        event,
                        self.settings.default_bot_config,
                        offset_seconds=self.settings.join_offset_seconds,
                        source="auto",
                        recurring=False,
                    )
                )
            except store.AlreadyScheduled:
                continue  # a live bot holds it (manual, the job's, another calendar's): one is enough
            except Exception:  # the events are stored; the midnight job (its window overlaps) places it
                logger.exception("could not give a changed meeting its auto bot")
                continue
            made += 1
        return made


def drop_unmatched(user_id: str, settings: AutoScheduleSettings | None = None) -> int:
    """After the rules changed (PUT rules, enable with rules) and at every run: the user's upcoming auto
    bots whose meeting the rules now leave out (say its account was taken out of `accounts`) are
    Cancelled rule_mismatch; returns how many. One query for the user's Scheduled bots and one read of
    their events; nothing when auto-schedule is off (then bots already scheduled stay)."""
    settings = settings if settings is not None else store.get_auto_settings(user_id)
    if settings is None or not settings.enabled:
        return 0
    at = now()
    bots = [
        b
        for b in store.upcoming_bots(user_id, after=at, limit=100_000, status="Scheduled")
        if b.source == "auto"
    ]
    if not bots:
        return 0
    events = list(store.get_events(user_id, {b.event_id for b in bots}).values())
    return RuleSync.judging(user_id, settings, events, at).drop_mismatches(bots)[1]


def _upcoming(event: Event, at: datetime) -> bool:
    return not event.is_deleted and bool(event.meeting_url) and at < event.start_time <= at + WINDOW
