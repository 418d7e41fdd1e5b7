"""8/8 proof under fire, the faults an HTTP test cannot place exactly: a DynamoDB conditional-check
race, Lambdas retried after a partial write (the bot launcher, the sync worker), and responses that
stay slower than our HTTP timeout. The end-to-end matrix is tests/e2e/test_faults.py."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import botapi, scheduler, store, timeutil
from calbot.errors import DomainError
from calbot.models import AutoScheduleSettings, ChangeMessage, Event, ScheduledBot, ScheduleRequest
from calbot.providers import get_provider
from calbot.services import auto_schedule, launcher, reconcile
from calbot.services import bots as lifecycle
from calbot.services import schedule as svc
from calbot.services.notifications import consume
from calbot.services.sync import sync_user
from local.stack import LocalStack
from tests.conftest import connect_new_account, renewal_night, virtual_time

CLIENT_ID = "faults-client"
CLIENT_SECRET = "faults-client-secret-31"
_links = itertools.count(1)


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack
    inproc_stack.graph.clear_faults()


def account(stack: LocalStack) -> tuple[str, dict[str, Any]]:
    return connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, prefix="faults")


def meeting(stack: LocalStack, acct: dict[str, Any], start: datetime) -> str:
    return stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Under fire",
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        location=f"https://acme.zoom.us/j/99{next(_links):05d}",
    )["id"]


def stored(user_id: str, platform_id: str) -> Event:
    now = timeutil.now()
    for e in store.query_events(
        user_id, time_min=now - timedelta(days=2), time_max=now + timedelta(days=60), limit=10_000
    ):
        if e.platform_id == platform_id:
            return e
    raise AssertionError(f"{platform_id} not stored")


def bots_of(user_id: str, event_id: str) -> list[ScheduledBot]:
    return store.bots_of_series(user_id, event_id)


def live(bots: list[ScheduledBot]) -> list[ScheduledBot]:
    return [b for b in bots if b.status in ("Scheduled", "Launching", "Launched")]


def test_manual_schedules_racing_the_auto_schedule_run_make_one_bot(stack: LocalStack) -> None:
    user_id, acct = account(stack)
    start = (datetime.now(UTC) + timedelta(hours=3)).replace(second=0, microsecond=0)
    pid = meeting(stack, acct, start)
    assert sync_user(user_id).partial_errors == {}
    event = stored(user_id, pid)
    store.put_auto_settings(AutoScheduleSettings(user_id=user_id, enabled=True, updated_at=timeutil.now()))

    def manual(_: int) -> str | None:
        try:
            return svc.schedule_event(user_id, event.event_id, ScheduleRequest()).bot_id
        except DomainError as err:
            assert err.code == "already_scheduled", err
            return err.details.get("bot_id")

    def auto(_: int) -> str | None:
        run = auto_schedule.run_for_user(user_id)
        assert run is not None and run.scheduled + run.skipped_existing == 1
        return None

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(manual if i % 3 else auto, i) for i in range(24)]
        named = {f.result() for f in futures} - {None}
    bots = live(bots_of(user_id, event.event_id))
    assert len(bots) == 1 and named == {bots[0].bot_id}  # every conflict names the one bot
    assert scheduler.get(scheduler.launch_schedule_name(bots[0].bot_id)) is not None
    assert len(bots_of(user_id, event.event_id)) == 1  # no half-made loser left behind either


@pytest.fixture
def virtual_clock() -> Iterator[list[datetime]]:
    """now() is whatever the test says; sleep() advances it (shared by every thread)."""
    with virtual_time() as clock:
        yield clock


@pytest.fixture
def create_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The Create Bot API: records the scheduled bot id of every bot it creates."""
    calls: list[str] = []
    lock = threading.Lock()

    def create(body: dict[str, Any], *, idempotency_key: str, attempts: int = 3) -> dict[str, Any]:
        with lock:
            calls.append(body["custom_attributes"]["scheduled_bot_id"])
            return {"bot_id": f"remote_{len(calls)}"}

    monkeypatch.setattr(botapi, "create_bot", create)
    return calls


def scheduled_bot(stack: LocalStack, start: datetime) -> ScheduledBot:
    user_id, acct = account(stack)
    pid = meeting(stack, acct, start)
    assert sync_user(user_id).partial_errors == {}
    made = svc.schedule_event(user_id, stored(user_id, pid).event_id, ScheduleRequest())
    bot = store.get_bot(user_id, made.bot_id)
    assert bot is not None
    return bot


def test_two_concurrent_invocations_of_one_launch_schedule_create_one_bot(
    stack: LocalStack, virtual_clock: list[datetime], create_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    bot = scheduled_bot(stack, start)
    virtual_clock[0] = bot.scheduled_join_time - timedelta(seconds=0.5)  # its message arrived
    both_waiting = threading.Barrier(2, timeout=30)

    def wait_together(seconds: float) -> None:
        both_waiting.wait()  # both invocations have read the bot as Scheduled before either claims it
        timeutil.sleep(seconds)

    monkeypatch.setattr(launcher, "sleep", wait_together)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: launcher.launch(bot.user_id, bot.bot_id), range(2)))
    assert sorted(r.get("status") or r["skipped"] for r in results) == ["Launched", "claimed"]
    assert create_calls == [bot.bot_id]
    assert store.get_bot(bot.user_id, bot.bot_id).status == "Launched"


def test_a_launch_retried_after_it_died_past_the_create_call_creates_no_second_bot(
    stack: LocalStack, virtual_clock: list[datetime], create_calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    start = (datetime.now(UTC) + timedelta(hours=30)).replace(second=0, microsecond=0)
    bot = scheduled_bot(stack, start)
    virtual_clock[0] = bot.scheduled_join_time

    def killed(*_: Any, **__: Any) -> None:
        raise SystemExit("Lambda timed out after the remote bot was created")

    with monkeypatch.context() as patch:
        patch.setattr(lifecycle, "finish_launch", killed)
        with pytest.raises(SystemExit):
            launcher.launch(bot.user_id, bot.bot_id)
    assert create_calls == [bot.bot_id]
    # Scheduler's retry of the same event: the bot is claimed (Launching), so nothing is created again.
    assert launcher.launch(bot.user_id, bot.bot_id) == {"bot_id": bot.bot_id, "skipped": "Launching"}
    assert create_calls == [bot.bot_id]


def test_a_sync_worker_killed_between_writing_events_and_moving_bots_is_made_whole_by_redelivery(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, acct = account(stack)
    start = (datetime.now(UTC) + timedelta(hours=28)).replace(second=0, microsecond=0)
    moving, going = meeting(stack, acct, start), meeting(stack, acct, start + timedelta(hours=3))
    assert sync_user(user_id).partial_errors == {}
    bot_ids = {
        pid: svc.schedule_event(user_id, stored(user_id, pid).event_id, ScheduleRequest()).bot_id
        for pid in (moving, going)
    }
    new_start = start + timedelta(hours=1)
    stack.graph.update_event(
        moving, start=new_start.isoformat(), end=(new_start + timedelta(hours=1)).isoformat()
    )
    stack.graph.cancel_event(going)
    conn = store.list_connections(user_id)[0]
    message = ChangeMessage(user_id=user_id, provider="outlook", account_id=conn.account_id)
    record = {"messageId": "m-1", "body": message.model_dump_json()}

    def killed(*_: Any, **__: Any) -> None:
        raise SystemExit("the worker's Lambda died here")

    with monkeypatch.context() as patch:
        patch.setattr(reconcile, "reconcile", killed)
        with pytest.raises(SystemExit):
            consume({"Records": [record]})
    # the partial write: the events are stored, the bots have not followed
    assert stored(user_id, going).is_deleted and stored(user_id, moving).start_time == new_start
    assert store.get_bot(user_id, bot_ids[going]).status == "Scheduled"

    # SQS redelivers the same message; this sync finds nothing new at Graph, yet the bots follow.
    assert consume({"Records": [record]}) == {"batchItemFailures": []}
    moved, gone = store.get_bot(user_id, bot_ids[moving]), store.get_bot(user_id, bot_ids[going])
    assert moved.status == "Scheduled" and moved.scheduled_join_time == new_start - timedelta(seconds=60)
    # re-armed under its next generation's name, its lead before the new join time
    current = scheduler.launch_schedule_name(moved.bot_id, moved.launch_generation)
    launch_at = scheduler.get(current)["ScheduleExpression"]
    assert moved.launch_generation == 1
    assert launch_at == scheduler.at_expression(
        new_start - timedelta(seconds=60) - scheduler.lead(moved.bot_id)
    )
    assert (gone.status, gone.reason) == ("Cancelled", "event_cancelled")
    assert scheduler.get(scheduler.launch_schedule_name(gone.bot_id)) is None


def test_responses_that_stay_slower_than_our_timeout_are_provider_unavailable_not_needs_reauth(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, acct = account(stack)
    pid = meeting(stack, acct, datetime.now(UTC) + timedelta(days=1))
    monkeypatch.setattr(get_provider("outlook").http, "timeout", 0.3)  # real seconds: keep the test short
    stack.graph.add_fault(path="calendarView/delta", account=acct["id"], delay=0.8, times=-1)
    try:
        errors = sync_user(user_id).partial_errors
    finally:
        stack.graph.clear_faults()
    assert [e["error"] for e in errors.values()] == ["provider_unavailable"]
    assert store.list_connections(user_id)[0].status == "active"
    assert sync_user(user_id).partial_errors == {}
    assert not stored(user_id, pid).is_deleted


def test_a_refused_cached_token_during_renewal_is_refreshed_not_taken_for_a_revoked_grant(
    stack: LocalStack,
) -> None:
    user_id, acct = account(stack)
    conn = store.list_connections(user_id)[0]
    sub = store.get_subscription(conn.subscriptions[0].id)
    store.put_subscriptions([sub.model_copy(update={"expires_at": timeutil.now() + timedelta(hours=20)})])
    stack.graph.expire_access_tokens(acct["id"])  # our cached token still looks valid to us: Graph says 401
    counts = renewal_night()
    assert counts["needs_reauth"] == 0
    assert store.get_connection(user_id, "outlook", conn.account_id).status == "active"
    assert store.get_subscription(sub.id).expires_at > timeutil.now() + timedelta(days=6)  # renewed
