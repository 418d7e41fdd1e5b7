"""services.auto_sync: with auto-schedule on, every sync applies the rules to what it changed.

A new or changed matching meeting of the next 24 h gets its auto bot at that sync (the worker's sync
of one account, or a user's GET that syncs them all), with the user's default config and join offset,
under the midnight job's dedup guard; an auto bot whose meeting stops matching is Cancelled
`rule_mismatch` (and bot.cancelled says so); manual bots are never touched; the settings are read and
the rule context built once per sync, and only the changed events are evaluated.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import rules as rules_module
from calbot import store, webhook_events
from calbot.models import AutoScheduleRules, AutoScheduleSettings, ScheduledBot, ScheduleRequest
from calbot.services import auto_schedule, auto_sync, schedule
from calbot.services.sync import sync_connection, sync_user
from local.stack import LocalStack
from tests.conftest import connect_new_account

CLIENT_ID = "autosync-client"
CLIENT_SECRET = "autosync-secret-20b"
CONFIG = {"bot_name": "Rules Notetaker"}
OFFSET = 90
_n = itertools.count()


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> LocalStack:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    return inproc_stack


class User:
    """A user with connected Outlook accounts (synced once, before any meeting) and auto-schedule on."""

    def __init__(self, stack: LocalStack, accounts: int = 1, enabled: bool = True, **rules: Any) -> None:
        self.stack = stack
        self.user_id, first = connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix="asy")
        self.accounts = [first]
        for _ in range(accounts - 1):
            self.accounts.append(
                connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, user_id=self.user_id, prefix="asy")[1]
            )
        assert sync_user(self.user_id).partial_errors == {}
        self.set_rules(enabled=enabled, **rules)

    def set_rules(self, enabled: bool = True, **rules: Any) -> None:
        store.put_auto_settings(
            AutoScheduleSettings(
                user_id=self.user_id,
                enabled=enabled,
                updated_at=datetime.now(UTC),
                default_bot_config=CONFIG,
                join_offset_seconds=OFFSET,
                rules=AutoScheduleRules.model_validate(rules),
            )
        )

    def conn(self, account: int = 0) -> Any:
        mail = self.accounts[account]["mail"]
        (conn,) = [c for c in store.list_connections(self.user_id) if c.key == mail.lower()]
        return conn

    def meeting(
        self, subject: str, hours: float = 3, account: int = 0, minutes: int = 30, **extra: Any
    ) -> str:
        """A meeting at the emulator (its platform id), with a link of its own unless given."""
        acct = self.accounts[account]
        start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=hours)
        if extra.get("is_all_day"):  # tomorrow (UTC): within the next 24 h
            start, minutes = start.replace(hour=0, minute=0) + timedelta(days=1), 24 * 60
        extra.setdefault("location", f"https://acme.zoom.us/j/{700000 + next(_n)}")
        return str(
            self.stack.graph.add_event(
                acct["id"],
                acct["calendars"][0]["id"],
                subject=subject,
                start=start.isoformat(),
                end=(start + timedelta(minutes=minutes)).isoformat(),
                **extra,
            )["id"]
        )

    def sync(self, account: int = 0) -> dict[str, int]:
        """What the sync worker does for one account's change notification."""
        result = sync_connection(self.conn(account))
        assert result.error is None, result.error
        return result.reconciled

    def bots(self) -> dict[str, ScheduledBot]:
        """Every bot of the user (any status) by title (the meeting's when the bot was made)."""
        found = store.upcoming_bots(self.user_id, after=datetime.now(UTC) - timedelta(days=1), limit=100)
        return {b.title or "": b for b in found}

    def event_id(self, title: str) -> str:
        events = store.query_events(
            self.user_id,
            time_min=datetime.now(UTC) - timedelta(days=1),
            time_max=datetime.now(UTC) + timedelta(days=3),
            limit=100,
        )
        (event,) = [e for e in events if e.title == title]
        return event.event_id


def invite(user: User, response: str = "accepted", account: int = 0, **extra: Any) -> dict[str, Any]:
    """Fields of a meeting someone else organized, where the user's row has `response`."""
    return {
        "organizer": "host@customer.example",
        "attendees": [
            {"address": user.accounts[account]["mail"], "response": response},
            "host@customer.example",
        ],
        **extra,
    }


def respond(stack: LocalStack, platform_id: str, mail: str, response: str) -> None:
    """The user answers a meeting invitation in their calendar client (the emulator sends the change)."""
    stack.graph.respond_event(platform_id, mail, response)


def test_a_new_matching_meeting_gets_its_auto_bot_at_the_workers_sync(stack: LocalStack) -> None:
    user = User(stack)
    user.meeting("Customer call", 3, **invite(user))
    user.meeting("Tomorrow evening", 30)  # past the next 24 h: the midnight job's
    user.meeting("No link", 2, location=None)
    assert user.sync()["auto_scheduled"] == 1
    bots = user.bots()
    assert set(bots) == {"Customer call"}
    bot = bots["Customer call"]
    assert (bot.source, bot.status, bot.bot_config, bot.join_offset_seconds) == (
        "auto",
        "Scheduled",
        CONFIG,
        OFFSET,
    )
    assert bot.scheduled_join_time == bot.occurrence_start - timedelta(seconds=OFFSET)
    # The midnight job finds it under the same guard: never a second bot.
    run = auto_schedule.run_for_user(user.user_id)
    assert run is not None and (run.scheduled, run.skipped_existing) == (0, 1)
    assert len(store.upcoming_bots(user.user_id, after=datetime.now(UTC), limit=100, status="Scheduled")) == 1


def test_a_users_own_sync_of_every_account_gives_the_bots_too(stack: LocalStack) -> None:
    user = User(stack, accounts=2)
    user.meeting("On the first", 2)
    user.meeting("On the second", 5, account=1)
    assert sync_user(user.user_id).partial_errors == {}  # GET /calendar/events
    assert {t: b.source for t, b in user.bots().items()} == {"On the first": "auto", "On the second": "auto"}


def test_only_meetings_that_match_the_rules_get_a_bot(stack: LocalStack) -> None:
    user = User(stack, title_exclude=["stand-up"], skip_tentative=True)
    user.meeting("Daily stand-up", 2)
    user.meeting("Maybe", 3, **invite(user, "tentativelyAccepted"))
    user.meeting("Declined", 4, **invite(user, "declined"))
    user.meeting("All day", 0, is_all_day=True)
    user.meeting("Roadmap", 5)
    user.sync()
    assert set(user.bots()) == {"Roadmap"}


def test_a_meeting_declined_later_loses_its_auto_bot_with_rule_mismatch(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = User(stack)
    platform_id = user.meeting("Will decline", 4, **invite(user))
    user.sync()
    bot = user.bots()["Will decline"]
    emitted: list[tuple[str, str | None]] = []
    real_emit = webhook_events.emit_bot
    monkeypatch.setattr(
        webhook_events, "emit_bot", lambda b, kind: (emitted.append((kind, b.reason)), real_emit(b, kind))[1]
    )
    respond(stack, platform_id, user.accounts[0]["mail"], "declined")
    assert user.sync()["rule_mismatch"] == 1
    cancelled = user.bots()["Will decline"]
    assert (cancelled.bot_id, cancelled.status, cancelled.reason) == (
        bot.bot_id,
        "Cancelled",
        "rule_mismatch",
    )
    assert emitted == [(webhook_events.BOT_CANCELLED, "rule_mismatch")]
    # Accepted again: it matches again and gets a bot at that same sync.
    respond(stack, platform_id, user.accounts[0]["mail"], "accepted")
    assert user.sync()["auto_scheduled"] == 1
    live = store.upcoming_bots(user.user_id, after=datetime.now(UTC), limit=100, status="Scheduled")
    assert [b.title for b in live] == ["Will decline"] and live[0].bot_id != bot.bot_id


def test_a_retitled_meeting_and_one_of_an_excluded_account_lose_their_auto_bots(stack: LocalStack) -> None:
    user = User(stack, accounts=2, title_exclude=["internal"])
    retitled = user.meeting("Planning", 3)
    moved = user.meeting("On the second account", 4, account=1)
    assert sync_user(user.user_id).partial_errors == {}
    assert {b.status for b in user.bots().values()} == {"Scheduled"} and len(user.bots()) == 2
    stack.graph.update_event(retitled, subject="Planning (internal)")
    user.sync()
    assert (user.bots()["Planning"].status, user.bots()["Planning"].reason) == (
        "Cancelled",
        "rule_mismatch",
    )
    first = user.conn(0)
    user.set_rules(
        title_exclude=["internal"], accounts=[{"provider": "outlook", "account_id": first.account_id}]
    )
    stack.graph.update_event(moved, location="https://acme.zoom.us/j/7999999")  # any change: evaluated
    user.sync(account=1)
    bot = user.bots()["On the second account"]
    assert (bot.status, bot.reason) == ("Cancelled", "rule_mismatch")


def test_a_manual_bot_on_an_excluded_meeting_stays_and_no_auto_bot_is_added(stack: LocalStack) -> None:
    user = User(stack, title_exclude=["1:1"])
    platform_id = user.meeting("1:1 with Sam", 3, **invite(user))
    user.sync()
    assert user.bots() == {}
    manual = schedule.schedule_event(
        user.user_id,
        user.event_id("1:1 with Sam"),
        ScheduleRequest.model_validate({"bot_config": {"bot_name": "Mine"}}),
    )
    respond(stack, platform_id, user.accounts[0]["mail"], "declined")  # and declined: still the user's
    counts = user.sync()
    assert counts.get("rule_mismatch", 0) == 0 and counts.get("auto_scheduled", 0) == 0
    bot = user.bots()["1:1 with Sam"]
    assert (bot.bot_id, bot.source, bot.status) == (manual.bot_id, "manual", "Scheduled")


def test_a_manual_bot_keeps_its_meeting_from_an_auto_bot(stack: LocalStack) -> None:
    user = User(stack, enabled=False)
    platform_id = user.meeting("Hand picked", 3)
    user.sync()
    manual = schedule.schedule_event(user.user_id, user.event_id("Hand picked"), ScheduleRequest())
    user.set_rules()
    stack.graph.update_event(platform_id, subject="Hand picked, renamed")
    assert user.sync().get("auto_scheduled", 0) == 0
    assert [(b.bot_id, b.source) for b in user.bots().values()] == [(manual.bot_id, "manual")]


def test_with_auto_schedule_off_a_sync_neither_adds_nor_cancels(stack: LocalStack) -> None:
    user = User(stack, title_exclude=["secret"])
    platform_id = user.meeting("Open", 3)
    user.sync()
    user.set_rules(enabled=False, title_exclude=["secret"])
    stack.graph.update_event(platform_id, subject="Open secret")
    user.meeting("New while off", 4)
    counts = user.sync()
    assert "rule_mismatch" not in counts and "auto_scheduled" not in counts
    assert {t: b.status for t, b in user.bots().items()} == {"Open": "Scheduled"}


def test_settings_and_context_are_read_once_a_sync_and_only_changed_events_evaluated(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = User(stack, accounts=2)
    for i in range(3):
        user.meeting(f"Old {i}", 2 + i)
    sync_user(user.user_id)
    calls: dict[str, int] = {"settings": 0, "context": 0, "evaluate": 0}

    def counted(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(store, "get_auto_settings", counted("settings", store.get_auto_settings))
    monkeypatch.setattr(auto_sync, "rule_context", counted("context", rules_module.rule_context))
    monkeypatch.setattr(auto_sync, "evaluate", counted("evaluate", rules_module.evaluate))
    assert sync_user(user.user_id).partial_errors == {}  # nothing changed: nothing read
    assert calls == {"settings": 0, "context": 0, "evaluate": 0}
    user.meeting("New A", 3)
    user.meeting("New B", 6, account=1)
    user.meeting("Far", 40, account=1)  # changed, but past the next 24 h and without a bot
    assert sync_user(user.user_id).partial_errors == {}
    assert calls == {"settings": 1, "context": 1, "evaluate": 2}
    assert len(store.upcoming_bots(user.user_id, after=datetime.now(UTC), limit=100, status="Scheduled")) == 5


def test_a_rules_change_cancels_the_auto_bots_it_leaves_out_at_once_and_never_a_manual_one(
    stack: LocalStack,
) -> None:
    user = User(stack, accounts=2)
    user.meeting("Kept", 2)
    user.meeting("Second account", 3, account=1)
    user.meeting("Second, by hand", 4, account=1)
    assert sync_user(user.user_id).partial_errors == {}
    manual = schedule.schedule_event(user.user_id, user.event_id("Second, by hand"), ScheduleRequest())
    first = {"provider": "outlook", "account_id": user.conn(0).account_id}
    auto_schedule.set_rules(user.user_id, AutoScheduleRules.model_validate({"accounts": [first]}))  # PUT
    bots = user.bots()
    assert (bots["Second account"].status, bots["Second account"].reason) == ("Cancelled", "rule_mismatch")
    assert bots["Kept"].status == "Scheduled"
    assert (bots["Second, by hand"].bot_id, bots["Second, by hand"].status) == (manual.bot_id, "Scheduled")


def test_rules_changed_behind_the_run_are_applied_by_the_run_and_not_while_off(stack: LocalStack) -> None:
    user = User(stack)
    user.meeting("Weekly sync", 2)
    user.sync()
    user.set_rules(enabled=False, title_exclude=["weekly"])
    assert auto_sync.drop_unmatched(user.user_id) == 0  # off: bots already scheduled stay
    user.set_rules(title_exclude=["weekly"])
    run = auto_schedule.run_for_user(user.user_id)
    assert run is not None and run.scheduled == 0
    assert (user.bots()["Weekly sync"].status, user.bots()["Weekly sync"].reason) == (
        "Cancelled",
        "rule_mismatch",
    )
