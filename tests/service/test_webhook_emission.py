"""Where customer webhook events are emitted (calbot.webhook_events), run through the real services on
the local moto and the Graph emulator: each transition a user cares about emits its one event, with
the bot as GET /calendar/scheduled_bots shows it (or the connection record, or the run's counts), only
once it is stored and only when it happened; an emit that fails never fails or changes the action; no
payload carries a token, secret or clientState.

Events are captured where calbot.webhook_events looks the delivery seam up:
calbot.services.webhook_delivery.enqueue_event.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import botapi, store, timeutil
from calbot.errors import DomainError
from calbot.models import (
    EnableAutoScheduleRequest,
    PatchBotRequest,
    ScheduleRequest,
    UnscheduleRequest,
    WebhookEvent,
)
from calbot.services import auto_schedule, launcher, webhook_delivery
from calbot.services import schedule as svc
from calbot.services.disconnect import disconnect
from calbot.services.sync import REAUTH_RETRY, sync_user
from local.stack import LocalStack
from tests.conftest import connect_new_account, virtual_time

CLIENT_ID = "emit-client"
CLIENT_SECRET = "emit-client-secret-7f3a"
SOON = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
_n = itertools.count()
SECRET_NAMED = re.compile(r"(?i)(token|secret|client_?state|credential|password)")


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack


class Captured(list[tuple[str, WebhookEvent]]):
    def of(self, event_type: str, **data: Any) -> list[dict[str, Any]]:
        """The `data` of the captured events of this type whose data has these values."""
        return [
            e.data
            for _, e in self
            if e.type == event_type and all(e.data.get(k) == v for k, v in data.items())
        ]

    def types(self) -> list[str]:
        return [e.type for _, e in self]

    def of_user(self, user_id: str) -> Captured:
        """Only the events told to this user (the stack is shared with other tests' users)."""
        return Captured((u, e) for u, e in self if u == user_id)


@pytest.fixture
def events(stack: LocalStack, background_off: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    # The capture is process-wide: the stack's background loop (other tests' delayed launches) stays
    # off while it is in place, so what a test counts is what its own calls emitted.
    captured = Captured()
    monkeypatch.setattr(webhook_delivery, "enqueue_event", lambda user, event: captured.append((user, event)))
    yield captured
    # No payload carries a token, secret or clientState: neither a secret-named field nor any value the
    # emulator issued or our subscriptions were given.
    text = json.dumps([json.loads(e.model_dump_json()) for _, e in captured])
    issued = stack.graph.issued_tokens()
    material = {*issued["refresh_tokens"], *issued["access_tokens"], CLIENT_SECRET}
    material |= {s["client_state"] for s in stack.graph.subscriptions() if s.get("client_state")}
    assert not [m for m in material if m and m in text]
    for _, event in captured:
        assert not [k for k in _keys(event.data) if SECRET_NAMED.search(k)], event.type


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def user_with_account(stack: LocalStack, user_id: str | None = None) -> tuple[str, dict[str, Any]]:
    return connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, user_id=user_id, prefix="emit")


def meeting(stack: LocalStack, acct: dict[str, Any], hours: float = 0, **fields: Any) -> tuple[str, str]:
    """A meeting with a link at the emulator, synced: (its provider id, our event id)."""
    start = SOON + timedelta(hours=hours)
    n = next(_n)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject=f"Emit {n}",
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        online_meeting_url=f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_emit{n}%40thread.v2/0",
        **fields,
    )
    assert sync_user(acct["user_id"]).partial_errors == {}
    (event,) = [e for e in stored_events(acct["user_id"]) if e.platform_id == ev["id"]]
    return ev["id"], event.event_id


def stored_events(user_id: str) -> list[Any]:
    start = datetime.now(UTC) - timedelta(days=3)
    return list(store.query_events(user_id, time_min=start, time_max=start + timedelta(days=400), limit=5000))


def account(stack: LocalStack) -> dict[str, Any]:
    user_id, acct = user_with_account(stack)
    return {**acct, "user_id": user_id}


def schedule(acct: dict[str, Any], event_id: str, **req: Any) -> str:
    return svc.schedule_event(acct["user_id"], event_id, ScheduleRequest.model_validate(req)).bot_id


@pytest.fixture
def clock() -> Iterator[list[datetime]]:
    """now() is whatever the test says (sleep advances it)."""
    with virtual_time() as moment:
        yield moment


# -- bots -----------------------------------------------------------------------------------------


def test_connect_schedule_patch_and_the_users_cancels(stack: LocalStack, events: Captured) -> None:
    acct = account(stack)
    (created,) = events.of("connection.created")
    assert created["account_id"] == acct["mail"] and created["status"] == "active"
    assert events[0][0] == acct["user_id"]
    _, event_id = meeting(stack, acct)
    bot_id = schedule(acct, event_id, bot_config={"bot_name": "Notes"})
    (scheduled,) = events.of("bot.scheduled", bot_id=bot_id)
    assert scheduled["status"] == "Scheduled" and scheduled["source"] == "manual"
    assert scheduled["event_id"] == event_id and scheduled["bot_config"] == {"bot_name": "Notes"}
    # the data is the bot as GET /calendar/scheduled_bots shows it
    rows = svc.list_bots(acct["user_id"], _query(), raw_params={}).page.results
    (row,) = [r for r in rows if r.bot_id == bot_id]
    assert scheduled == json.loads(row.model_dump_json())

    new_time = SOON - timedelta(minutes=5)
    svc.update_bot(
        acct["user_id"], bot_id, PatchBotRequest.model_validate({"scheduled_join_time": new_time.isoformat()})
    )
    svc.update_bot(acct["user_id"], bot_id, PatchBotRequest(bot_name="Renamed"))
    first, second = events.of("bot.updated", bot_id=bot_id)
    assert first["scheduled_join_time"] == timeutil.iso_z(new_time)
    assert (
        second["bot_config"]["bot_name"] == "Renamed"
        and second["scheduled_join_time"] == first["scheduled_join_time"]
    )

    svc.delete_bot(acct["user_id"], bot_id)
    (cancelled,) = events.of("bot.cancelled", bot_id=bot_id)
    assert cancelled["status"] == "Cancelled" and cancelled["reason"] == "user_cancelled"
    before = len(events)
    with pytest.raises(DomainError):  # 409 bot_not_scheduled: nothing happened, nothing is told
        svc.update_bot(acct["user_id"], bot_id, PatchBotRequest(bot_name="Late"))
    with pytest.raises(DomainError):
        svc.delete_bot(acct["user_id"], bot_id)
    assert len(events) == before

    other = schedule(acct, event_id)  # DELETE /calendar/schedule/{event_id}: the user's cancel too
    svc.unschedule_event(acct["user_id"], event_id, UnscheduleRequest())
    assert events.of("bot.cancelled", bot_id=other, reason="user_cancelled")


def _query() -> Any:
    from calbot.models import ScheduledBotsQuery

    return ScheduledBotsQuery(status="Scheduled")


def test_the_sync_moves_cancels_and_moves_bots_into_the_past(stack: LocalStack, events: Captured) -> None:
    acct = account(stack)
    moved_id, moved_event = meeting(stack, acct, hours=1)
    cancelled_id, cancelled_event = meeting(stack, acct, hours=3)
    past_id, past_event = meeting(stack, acct, hours=5)
    bots = {
        name: schedule(acct, e)
        for name, e in (("moved", moved_event), ("cancelled", cancelled_event), ("past", past_event))
    }
    events.clear()

    later = SOON + timedelta(hours=10)
    stack.graph.update_event(moved_id, start=later.isoformat(), end=(later + timedelta(hours=1)).isoformat())
    stack.graph.cancel_event(cancelled_id)
    earlier = datetime.now(UTC) - timedelta(hours=2)
    stack.graph.update_event(
        past_id, start=earlier.isoformat(), end=(earlier + timedelta(hours=3)).isoformat()
    )
    sync_user(acct["user_id"])

    (updated,) = events.of("bot.updated")
    assert updated["bot_id"] == bots["moved"] and updated["status"] == "Scheduled"
    assert updated["occurrence_start"] == timeutil.iso_z(later)
    assert updated["scheduled_join_time"] == timeutil.iso_z(later - timedelta(seconds=60))
    assert events.of("bot.cancelled", bot_id=bots["cancelled"], reason="event_cancelled")
    assert events.of("bot.cancelled", bot_id=bots["past"], reason="event_moved_to_past")
    assert sorted(events.of_user(acct["user_id"]).types()) == [
        "bot.cancelled",
        "bot.cancelled",
        "bot.updated",
    ]
    sync_user(acct["user_id"])  # nothing changed since: nothing is told again
    assert len(events) == 3


def test_disabling_a_recurrence_cancels_its_bots(stack: LocalStack, events: Captured) -> None:
    acct = account(stack)
    first = datetime(2027, 2, 2, tzinfo=UTC).date()
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Weekly emit",
        start=f"{first}T09:00:00",
        end=f"{first}T09:30:00",
        online_meeting_url="https://acme.zoom.us/j/5550101",
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
            "range": {"type": "numbered", "startDate": str(first), "numberOfOccurrences": 3},
        },
    )
    sync_user(acct["user_id"])
    series = sorted(
        (e for e in stored_events(acct["user_id"]) if e.series_platform_id == ev["id"]),
        key=lambda e: e.start_time,
    )
    svc.toggle_recurrence(acct["user_id"], series[0].event_id, True)
    made = svc.auto_reschedule(acct["user_id"], series[0].event_id)
    assert made is not None
    assert events.of("bot.scheduled", bot_id=made.bot_id, source="recurrence")
    svc.toggle_recurrence(acct["user_id"], series[0].event_id, False)
    (cancelled,) = events.of("bot.cancelled", bot_id=made.bot_id)
    assert cancelled["reason"] == "recurrence_disabled" and cancelled["recurring_event"] is True


def test_disconnect_cancels_its_bots_and_says_the_account_is_gone(
    stack: LocalStack, events: Captured
) -> None:
    acct = account(stack)
    _, event_id = meeting(stack, acct)
    bot_id = schedule(acct, event_id)
    disconnect(acct["user_id"], "outlook", acct["mail"])
    assert events.of("bot.cancelled", bot_id=bot_id, reason="calendar_disconnected")
    (gone,) = events.of("connection.disconnected")
    assert gone["account_id"] == acct["mail"] and gone["provider"] == "outlook"
    assert events.types()[-1] == "connection.disconnected"  # told after its bots


@pytest.fixture
def bot_api(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    answers: list[str] = []  # "ok", "rejected" or "down", one per call

    def fake(body: dict[str, Any], *, idempotency_key: str, attempts: int = 3) -> dict[str, Any]:
        answer = answers.pop(0) if answers else "ok"
        if answer == "rejected":
            raise botapi.BotApiRejected(400, "bad meeting link")
        if answer == "down":
            raise botapi.BotApiUnavailable("HTTP 503")
        return {"bot_id": f"remote_{idempotency_key}"}

    monkeypatch.setattr(botapi, "create_bot", fake)
    return answers


def test_launches_and_failures(
    stack: LocalStack, clock: list[datetime], events: Captured, bot_api: list[str]
) -> None:
    acct = account(stack)
    bots = {}
    for n, name in enumerate(("launched", "rejected", "down", "ended")):
        _, event_id = meeting(stack, acct, hours=2 * n)
        bots[name] = (schedule(acct, event_id), SOON + timedelta(hours=2 * n))
    events.clear()

    bot_id, start = bots["launched"]
    clock[0] = start - timedelta(seconds=60)
    assert launcher.launch(acct["user_id"], bot_id)["status"] == "Launched"
    (launched,) = events.of_user(acct["user_id"]).of("bot.launched")
    assert launched["bot_id"] == bot_id and launched["remote_bot_id"] == f"remote_{bot_id}"
    assert launched["status"] == "Launched"
    launcher.launch(acct["user_id"], bot_id)  # a duplicate delivery: nothing happens, nothing told
    assert len(events.of("bot.launched")) == 1

    bot_id, start = bots["rejected"]
    clock[0] = start - timedelta(seconds=60)
    bot_api.append("rejected")
    assert launcher.launch(acct["user_id"], bot_id)["status"] == "Failed"
    assert events.of("bot.failed", bot_id=bot_id, reason="create_bot_rejected_400", status="Failed")

    bot_id, start = bots["down"]
    clock[0] = start - timedelta(seconds=60)
    bot_api.append("down")
    assert launcher.launch(acct["user_id"], bot_id)["status"] == "Scheduled"  # retried later: no event
    assert not events.of("bot.failed", bot_id=bot_id) and not events.of("bot.updated", bot_id=bot_id)
    clock[0] = start + timedelta(minutes=16)
    bot_api.append("down")
    assert launcher.launch(acct["user_id"], bot_id)["status"] == "Failed"
    assert events.of("bot.failed", bot_id=bot_id, reason="create_bot_unavailable")

    bot_id, start = bots["ended"]
    clock[0] = start + timedelta(hours=2)  # its meeting is over before its launch ran
    launcher.launch(acct["user_id"], bot_id)
    assert events.of("bot.failed", bot_id=bot_id, reason="meeting_ended")
    assert sorted(events.of_user(acct["user_id"]).types()) == ["bot.failed"] * 3 + ["bot.launched"]


# -- connections ----------------------------------------------------------------------------------


def test_needs_reauth_is_told_on_the_transition_only(
    stack: LocalStack, events: Captured, clock: list[datetime]
) -> None:
    acct = account(stack)
    events.clear()
    stack.graph.revoke(acct["id"], code=50173)
    stack.graph.expire_access_tokens(acct["id"])
    assert sync_user(acct["user_id"]).partial_errors[f"outlook::{acct['mail']}"]["error"] == "needs_reauth"
    (reauth,) = events.of("connection.needs_reauth")
    assert reauth["account_id"] == acct["mail"] and reauth["status"] == "needs_reauth"
    assert "AADSTS50173" in reauth["status_reason"]
    # later syncs fail again (reported, then a refresh retried after REAUTH_RETRY): no second event
    sync_user(acct["user_id"])
    clock[0] += REAUTH_RETRY + timedelta(minutes=1)
    sync_user(acct["user_id"])
    assert len(events.of("connection.needs_reauth")) == 1
    conn = store.get_connection(acct["user_id"], "outlook", acct["mail"])
    assert conn is not None and conn.updated_at > timeutil.parse_iso(reauth["updated_at"])  # still recorded


# -- auto-schedule --------------------------------------------------------------------------------


def test_auto_schedule_tells_each_bot_and_the_runs_counts(stack: LocalStack, events: Captured) -> None:
    acct = account(stack)
    _, first = meeting(stack, acct, hours=-20)
    _, second = meeting(stack, acct, hours=-18)
    schedule(acct, second)  # already has a bot
    events.clear()
    auto_schedule.enable(acct["user_id"], EnableAutoScheduleRequest())
    (made,) = events.of("bot.scheduled", source="auto")
    assert made["event_id"] == first
    (run,) = events.of("auto_schedule.completed")
    last = store.get_auto_settings(acct["user_id"]).last_run  # type: ignore[union-attr]
    assert last is not None
    assert run["scheduled"] == last.scheduled == 1 and run["skipped_existing"] == last.skipped_existing == 1
    assert run["skipped_no_link"] == last.skipped_no_link and run["run_at"].endswith("Z")
    assert events.types()[-1] == "auto_schedule.completed"


# -- emitting never fails the action ------------------------------------------------------------


def test_an_enqueue_that_raises_does_not_fail_or_change_the_action(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def broken(user_id: str, event: WebhookEvent) -> None:
        calls.append(event.type)
        raise RuntimeError("the delivery queue is down")

    monkeypatch.setattr(webhook_delivery, "enqueue_event", broken)
    acct = account(stack)  # connected all the same
    assert store.get_connection(acct["user_id"], "outlook", acct["mail"]) is not None
    _, event_id = meeting(stack, acct)
    result = svc.schedule_event(acct["user_id"], event_id, ScheduleRequest())
    assert (
        result.status == "Scheduled" and store.get_bot(acct["user_id"], result.bot_id).status == "Scheduled"
    )  # type: ignore[union-attr]
    view = svc.update_bot(acct["user_id"], result.bot_id, PatchBotRequest(bot_name="Still"))
    assert view.bot_config["bot_name"] == "Still"
    cancelled = svc.delete_bot(acct["user_id"], result.bot_id)
    assert cancelled.status == "Cancelled" and cancelled.reason == "user_cancelled"
    assert disconnect(acct["user_id"], "outlook", acct["mail"]).disconnected.account_id == acct["mail"]
    assert calls == [
        "connection.created",
        "bot.scheduled",
        "bot.updated",
        "bot.cancelled",
        "connection.disconnected",
    ]


# -- a bulk action reads the endpoints once ---------------------------------------------------------


def test_a_bulk_action_reads_the_users_endpoints_once_for_all_its_events(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = account(stack)
    for h in range(3):
        meeting(stack, acct, hours=-20 + h)
    reads: list[str] = []
    real = store.list_webhooks
    monkeypatch.setattr(store, "list_webhooks", lambda user_id: reads.append(user_id) or real(user_id))
    emitted: list[str] = []
    real_enqueue = webhook_delivery.enqueue_event
    monkeypatch.setattr(
        webhook_delivery,
        "enqueue_event",
        lambda user, event: emitted.append(event.type) or real_enqueue(user, event),
    )
    auto_schedule.enable(acct["user_id"], EnableAutoScheduleRequest())  # places three bots, tells the run
    assert emitted.count("bot.scheduled") == 3 and "auto_schedule.completed" in emitted
    assert reads == [acct["user_id"]]  # one read for the four events (was one per event)
    reads.clear()
    emitted.clear()
    disconnect(acct["user_id"], "outlook", acct["mail"])  # cancels the three, tells the disconnect
    assert emitted.count("bot.cancelled") == 3 and emitted[-1] == "connection.disconnected"
    assert reads == [acct["user_id"]]
