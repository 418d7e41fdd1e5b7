"""services.schedule and services.launcher against moto (Scheduler, DynamoDB) and synced emulator events."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from calbot import botapi, scheduler, store, timeutil
from calbot.config import get_settings
from calbot.errors import DomainError, Unavailable
from calbot.http import status_of
from calbot.models import Event, PatchBotRequest, ScheduleRequest, UnscheduleRequest
from calbot.services import bots as lifecycle
from calbot.services import launcher
from calbot.services import schedule as svc
from calbot.services.sync import sync_user
from local.stack import LocalStack
from tests.conftest import batch_get_consistency, connect_new_account, virtual_time

CLIENT_ID = "sched-client"
CLIENT_SECRET = "sched-client-secret-19"
_n = itertools.count()
SOON = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
TEAMS = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_sched%40thread.v2/0"


@pytest.fixture(scope="module")
def stack(inproc_stack: LocalStack) -> Iterator[LocalStack]:
    inproc_stack.graph.add_app(CLIENT_ID, CLIENT_SECRET)
    yield inproc_stack


def user_with_account(stack: LocalStack, user_id: str | None = None) -> tuple[str, dict[str, Any]]:
    return connect_new_account(stack, CLIENT_ID, CLIENT_SECRET, user_id=user_id, prefix="sched")


def synced(user_id: str, platform_id: str) -> Event:
    assert sync_user(user_id).partial_errors == {}
    found = [
        e
        for e in store.query_events(
            user_id, time_min=SOON - timedelta(days=2), time_max=SOON + timedelta(days=400), limit=5000
        )
        if e.platform_id == platform_id or e.series_platform_id == platform_id
    ]
    assert found, "event not synced"
    return sorted(found, key=lambda e: e.start_time)[0]


def schedule_of(bot_id: str) -> dict[str, Any] | None:
    """The bot's launch schedule, whatever its generation's name (`launch-<bot id>[-g<n>]`)."""
    from calbot import aws

    page = aws.scheduler().list_schedules(
        GroupName=get_settings().schedule_group, NamePrefix=f"launch-{bot_id}"
    )
    names = [x["Name"] for x in page.get("Schedules", [])]
    return scheduler.get(max(names, key=len)) if names else None


def test_schedule_creates_item_and_a_one_time_schedule_a_minute_before_joining(stack: LocalStack) -> None:
    user_id, acct = user_with_account(stack)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Teams",
        start=SOON.isoformat(),
        end=(SOON + timedelta(hours=1)).isoformat(),
        online_meeting_url=TEAMS,
    )
    event = synced(user_id, ev["id"])
    result = svc.schedule_event(
        user_id,
        event.event_id,
        ScheduleRequest.model_validate(
            {"bot_config": {"bot_name": "Notes", "custom_attributes": {"team": "x"}}}
        ),
    )
    assert result.scheduled_join_time == SOON - timedelta(seconds=60) == result.ScheduledJoinTime
    assert result.meeting_platform == "teams" and len(result.bots) == 1
    bot = store.get_bot(user_id, result.bot_id)
    assert bot is not None and bot.status == "Scheduled" and bot.bot_config["bot_name"] == "Notes"
    sched = schedule_of(bot.bot_id)
    assert sched is not None
    fire_at = SOON - timedelta(seconds=60) - scheduler.lead(bot.bot_id)  # its lead before the join time
    assert sched["ScheduleExpression"] == f"at({fire_at.strftime('%Y-%m-%dT%H:%M:%S')})"
    assert sched["ScheduleExpressionTimezone"] == "UTC" and sched["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert sched["ActionAfterCompletion"] == "DELETE" and sched["GroupName"] == get_settings().schedule_group
    target = sched["Target"]
    assert (
        target["Arn"] == get_settings().bot_launcher_arn
        and target["RoleArn"] == get_settings().scheduler_role_arn
    )
    assert target["DeadLetterConfig"]["Arn"] == get_settings().schedule_dlq_arn
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    # no delivery after the meeting is over: the event age ends when it does (an hour after it starts)
    fires = SOON - timedelta(seconds=60) - scheduler.lead(bot.bot_id)
    assert (
        target["RetryPolicy"]["MaximumEventAgeInSeconds"]
        == (SOON + timedelta(hours=1) - fires).total_seconds()
    )
    assert json.loads(target["Input"]) == {
        "action": "launch",
        "user_id": user_id,
        "bot_id": bot.bot_id,
        "join_time": (SOON - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generation": 0,
    }

    with pytest.raises(DomainError) as err:
        svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    assert (status_of(err.value), err.value.code, err.value.details["bot_id"]) == (
        409,
        "already_scheduled",
        bot.bot_id,
    )


def test_fifty_concurrent_schedules_make_one_bot(stack: LocalStack) -> None:
    user_id, acct = user_with_account(stack)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Race",
        start=SOON.isoformat(),
        end=(SOON + timedelta(hours=1)).isoformat(),
        location="https://acme.zoom.us/j/555",
    )
    event = synced(user_id, ev["id"])

    def attempt(_: int) -> tuple[int, str | None]:
        try:
            return 201, svc.schedule_event(user_id, event.event_id, ScheduleRequest()).bot_id
        except DomainError as err:
            return status_of(err), err.details.get("bot_id")

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(attempt, range(50)))
    created = [b for s, b in results if s == 201]
    assert len(created) == 1 and sorted(s for s, _ in results) == [201] + [409] * 49
    assert all(b == created[0] for s, b in results if s == 409)  # every 409 names the one bot
    bots = store.bots_of_series(user_id, event.event_id)
    assert [b.bot_id for b in bots] == created and schedule_of(created[0]) is not None


def test_the_same_meeting_on_two_accounts_gets_one_bot(stack: LocalStack) -> None:
    user_id, a = user_with_account(stack)
    _, b = user_with_account(stack, user_id)
    start, end = SOON.isoformat(), (SOON + timedelta(hours=1)).isoformat()
    ev_a = stack.graph.add_event(
        a["id"],
        a["calendars"][0]["id"],
        subject="Shared",
        start=start,
        end=end,
        online_meeting_url=TEAMS.replace("sched", "shared"),
    )
    ev_b = stack.graph.add_event(
        b["id"],
        b["calendars"][0]["id"],
        subject="Shared (invite)",
        start=start,
        end=end,
        online_meeting_url=TEAMS.replace("sched", "shared").replace("%3a", "%3A"),
    )
    event_a, event_b = synced(user_id, ev_a["id"]), synced(user_id, ev_b["id"])
    assert event_a.event_id != event_b.event_id
    first = svc.schedule_event(user_id, event_a.event_id, ScheduleRequest())
    with pytest.raises(DomainError) as err:
        svc.schedule_event(user_id, event_b.event_id, ScheduleRequest())
    assert status_of(err.value) == 409 and err.value.details["bot_id"] == first.bot_id


def test_rejections(stack: LocalStack) -> None:
    user_id, acct = user_with_account(stack)
    cal = acct["calendars"][0]["id"]
    no_link = stack.graph.add_event(
        acct["id"], cal, subject="Lunch", start=SOON.isoformat(), end=(SOON + timedelta(hours=1)).isoformat()
    )
    past = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Earlier",
        start=(datetime.now(UTC) - timedelta(hours=2)).isoformat(),
        end=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        location="https://acme.zoom.us/j/1",
    )
    for platform_id, code in ((no_link["id"], "no_meeting_link"), (past["id"], "event_in_past")):
        with pytest.raises(DomainError) as err:
            svc.schedule_event(user_id, synced(user_id, platform_id).event_id, ScheduleRequest())
        assert (status_of(err.value), err.value.code) == (400, code)
    with pytest.raises(DomainError) as err:
        svc.schedule_event(user_id, "evt_nope", ScheduleRequest())
    assert (status_of(err.value), err.value.code) == (404, "event_not_found")
    other, _ = user_with_account(stack)  # another user's event id is simply not found
    with pytest.raises(DomainError) as err:
        svc.schedule_event(other, synced(user_id, no_link["id"]).event_id, ScheduleRequest())
    assert status_of(err.value) == 404


def weekly_series(stack: LocalStack, acct: dict[str, Any], count: int = 12) -> dict[str, Any]:
    """A weekly Tuesday 09:00 New York series starting next week, spanning the 2027-03-14 DST change."""
    first = datetime(2027, 2, 2, tzinfo=UTC).date()
    return stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Weekly sync",
        start=f"{first}T09:00:00",
        end=f"{first}T09:30:00",
        time_zone="Eastern Standard Time",
        online_meeting_url=TEAMS.replace("sched", "wk"),
        recurrence={
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"]},
            "range": {"type": "numbered", "startDate": str(first), "numberOfOccurrences": count},
        },
    )


def test_a_refused_recurring_schedule_leaves_the_series_alone(stack: LocalStack) -> None:
    # Found by the fuzz suite: a 409 already_scheduled used to turn recurring_enabled on first.
    user_id, acct = user_with_account(stack)
    first = synced(user_id, weekly_series(stack, acct, count=3)["id"])
    svc.schedule_event(user_id, first.event_id, ScheduleRequest(schedule_all_occurrences=True))
    before = [e.model_dump() for e in svc._series_events(first)]
    with pytest.raises(DomainError) as err:
        svc.schedule_event(
            user_id, first.event_id, ScheduleRequest(schedule_all_occurrences=True, recurring_event=True)
        )
    assert status_of(err.value) == 409
    assert [e.model_dump() for e in svc._series_events(first)] == before
    assert not any(e.recurring_enabled for e in svc._series_events(first))


def test_all_occurrences_at_local_time_across_dst_one_occurrence_and_from_date(stack: LocalStack) -> None:
    user_id, acct = user_with_account(stack)
    master = weekly_series(stack, acct)
    first = synced(user_id, master["id"])
    made = svc.schedule_event(
        user_id,
        first.event_id,
        ScheduleRequest.model_validate({"schedule_all_occurrences": True, "occurrence_limit": 10}),
    )
    starts = [b.occurrence_start for b in made.bots]
    assert len(starts) == 10
    # 09:00 in New York: 14:00Z before 2027-03-14, 13:00Z after; Tuesdays only
    assert all(s.weekday() == 1 for s in starts)
    assert [s.hour for s in starts] == [14, 14, 14, 14, 14, 14, 13, 13, 13, 13]
    # Only an occurrence within ARM_WITHIN holds a schedule; the later ones wait in the arming index.
    for ref in made.bots:
        bot = store.get_bot(user_id, ref.bot_id)
        assert bot is not None
        near = not scheduler.defers(bot)
        assert (schedule_of(bot.bot_id) is not None, bot.arm_deferred) == (near, not near)
    assert sum(1 for ref in made.bots if schedule_of(ref.bot_id)) <= 1  # a week apart

    # from_date cancels only the later ones
    cut = starts[7]
    cancelled = svc.unschedule_event(user_id, first.event_id, UnscheduleRequest(from_date=cut))
    assert cancelled.cancelled == 3
    left = {
        b.occurrence_start for b in store.bots_of_series(user_id, first.series_id) if b.status == "Scheduled"
    }
    assert left == set(starts[:7])
    assert all(schedule_of(b) is None for b in cancelled.bot_ids)

    # occurrence_date picks exactly one, by instant or by date; a date without one is a 400
    again = svc.schedule_event(user_id, first.event_id, ScheduleRequest(occurrence_date=starts[8]))
    assert [b.occurrence_start for b in again.bots] == [starts[8]]
    by_day = svc.schedule_event(
        user_id, first.event_id, ScheduleRequest.model_validate({"occurrence_date": str(starts[9].date())})
    )
    assert [b.occurrence_start for b in by_day.bots] == [starts[9]]
    with pytest.raises(DomainError) as err:
        svc.schedule_event(
            user_id, first.event_id, ScheduleRequest.model_validate({"occurrence_date": "2027-02-03"})
        )
    assert err.value.code == "occurrence_not_found"


def test_patch_moves_the_schedule_in_place_and_delete_removes_it(stack: LocalStack) -> None:
    user_id, acct = user_with_account(stack)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Patch me",
        start=SOON.isoformat(),
        end=(SOON + timedelta(hours=1)).isoformat(),
        location="https://acme.webex.com/meet/x",
    )
    made = svc.schedule_event(user_id, synced(user_id, ev["id"]).event_id, ScheduleRequest())
    new_time = SOON + timedelta(hours=3)
    view = svc.update_bot(
        user_id,
        made.bot_id,
        PatchBotRequest.model_validate(
            {
                "scheduled_join_time": new_time.isoformat(),
                "bot_username": "Renamed",
                "custom_attributes": {"a": 1},
            }
        ),
    )
    assert view.scheduled_join_time == new_time and view.bot_config["bot_name"] == "Renamed"
    sched = schedule_of(made.bot_id)
    assert sched["ScheduleExpression"] == scheduler.at_expression(new_time - scheduler.lead(made.bot_id))
    with pytest.raises(DomainError) as err:
        svc.update_bot(
            user_id,
            made.bot_id,
            PatchBotRequest.model_validate({"scheduled_join_time": "2020-01-01T00:00:00Z"}),
        )
    assert err.value.code == "join_time_in_past"

    svc.delete_bot(user_id, made.bot_id)
    bot = store.get_bot(user_id, made.bot_id)
    assert bot.status == "Cancelled" and bot.reason == "user_cancelled" and schedule_of(made.bot_id) is None
    with pytest.raises(DomainError) as err:
        svc.update_bot(user_id, made.bot_id, PatchBotRequest(bot_name="x"))
    assert (status_of(err.value), err.value.code) == (409, "bot_not_scheduled")
    # cancelling released the guard: the occurrence can be scheduled again
    assert svc.schedule_event(user_id, made.event_id, ScheduleRequest()).bot_id != made.bot_id


@pytest.fixture
def bot_api(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake(body: dict[str, Any], *, idempotency_key: str, attempts: int = 3) -> dict[str, Any]:
        calls.append(body)
        return {"bot_id": f"remote_{len(calls)}"}

    monkeypatch.setattr(botapi, "create_bot", fake)
    return calls


@pytest.fixture
def frozen_at_join() -> Iterator[list[datetime]]:
    """Virtual time: now() is whatever the test says; sleep() advances it."""
    with virtual_time() as clock:
        yield clock


def test_launch_is_exactly_once_and_a_cancel_that_races_wins(
    stack: LocalStack, bot_api: list, frozen_at_join: list[datetime]
) -> None:
    user_id, acct = user_with_account(stack)
    cal = acct["calendars"][0]["id"]
    ev = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Launch",
        start=SOON.isoformat(),
        end=(SOON + timedelta(hours=1)).isoformat(),
        online_meeting_url=TEAMS,
    )
    made = svc.schedule_event(
        user_id,
        synced(user_id, ev["id"]).event_id,
        ScheduleRequest.model_validate({"bot_config": {"bot_name": "N"}}),
    )
    frozen_at_join[0] = SOON - timedelta(seconds=60.5)  # its message arrived (DelaySeconds rounded up)
    first = launcher.launch(user_id, made.bot_id)
    assert first["status"] == "Launched" and frozen_at_join[0] >= SOON - timedelta(seconds=60)  # it waited
    assert launcher.launch(user_id, made.bot_id)["skipped"] == "Launched"  # a duplicate delivery
    assert len(bot_api) == 1 and bot_api[0]["meeting_link"] == TEAMS and bot_api[0]["bot_name"] == "N"
    assert bot_api[0]["custom_attributes"] == {
        "calendar_event_id": made.event_id,
        "scheduled_bot_id": made.bot_id,
    }
    bot = store.get_bot(user_id, made.bot_id)
    assert bot.status == "Launched" and bot.remote_bot_id == "remote_1"

    ev2 = stack.graph.add_event(
        acct["id"],
        cal,
        subject="Cancelled late",
        start=(SOON + timedelta(hours=2)).isoformat(),
        end=(SOON + timedelta(hours=3)).isoformat(),
        location="https://acme.zoom.us/j/77",
    )
    made2 = svc.schedule_event(user_id, synced(user_id, ev2["id"]).event_id, ScheduleRequest())
    frozen_at_join[0] = SOON + timedelta(hours=2) - timedelta(seconds=60)
    svc.delete_bot(user_id, made2.bot_id)  # just before the (already firing) schedule runs
    assert launcher.launch(user_id, made2.bot_id)["skipped"] == "Cancelled"
    assert len(bot_api) == 1


def test_create_bot_api_down_retries_later_then_fails_for_good(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, frozen_at_join: list[datetime]
) -> None:
    def down(body: dict[str, Any], *, idempotency_key: str, attempts: int = 3) -> dict[str, Any]:
        raise botapi.BotApiUnavailable("HTTP 503")

    monkeypatch.setattr(botapi, "create_bot", down)
    user_id, acct = user_with_account(stack)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Down",
        start=SOON.isoformat(),
        end=(SOON + timedelta(hours=1)).isoformat(),
        online_meeting_url=TEAMS.replace("sched", "dn"),
    )
    made = svc.schedule_event(user_id, synced(user_id, ev["id"]).event_id, ScheduleRequest())
    frozen_at_join[0] = SOON - timedelta(seconds=60)
    out = launcher.launch(user_id, made.bot_id)
    assert out["status"] == "Scheduled" and out["retry_in_seconds"] == 60
    # re-armed a minute later under the next generation: a queued message (within the delay horizon),
    # the first schedule deleted
    assert store.get_bot(user_id, made.bot_id).launch_generation == 1 and schedule_of(made.bot_id) is None
    frozen_at_join[0] = SOON + timedelta(minutes=16)
    assert launcher.launch(user_id, made.bot_id)["status"] == "Failed"
    bot = store.get_bot(user_id, made.bot_id)
    assert bot.status == "Failed" and bot.reason == "create_bot_unavailable"


def _answered_503_after(monkeypatch: pytest.MonkeyPatch, name: str, after: int) -> None:
    """The request's Lambda is cut off (the client gets a 503) once `name` has run `after` times."""
    real = getattr(svc, name)
    calls = [0]

    def cut_off(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] > after:
            raise Unavailable("service_unavailable", "cut off")
        return real(*args, **kwargs)

    monkeypatch.setattr(svc, name, cut_off)


@pytest.mark.parametrize(
    ("cut", "after", "body"),
    [
        # every bot placed, cut off before the series' flag was set
        ("_set_recurring", 0, {"recurring_event": True}),
        ("_set_recurring", 0, {"recurring_event": True, "schedule_all_occurrences": True}),
        # cut off after two of four occurrences' bots were placed
        ("place", 2, {"recurring_event": True, "schedule_all_occurrences": True, "occurrence_limit": 4}),
    ],
)
def test_a_schedule_retried_after_a_503_ends_in_the_requested_state(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, cut: str, after: int, body: dict[str, Any]
) -> None:
    user_id, acct = user_with_account(stack)
    first = synced(user_id, weekly_series(stack, acct, count=4)["id"])
    request = ScheduleRequest.model_validate({"bot_config": {"bot_name": "Scribe"}, **body})
    with monkeypatch.context() as patch:
        _answered_503_after(patch, cut, after)
        with pytest.raises(DomainError) as err:
            svc.schedule_event(user_id, first.event_id, request)
        assert status_of(err.value) == 503
    try:  # the client retries the very same request
        svc.schedule_event(user_id, first.event_id, request)
    except DomainError as again:
        assert again.code == "already_scheduled"  # everything was made by the first try
    series = svc._series_events(first)
    assert all(e.recurring_enabled for e in series)  # on, for good
    live = [b for b in store.bots_of_series(user_id, first.series_id) if b.status == "Scheduled"]
    wanted = 4 if body.get("schedule_all_occurrences") else 1
    assert sorted(b.occurrence_start for b in live) == [e.start_time for e in series][:wanted]
    assert all(b.recurring_event and b.bot_config == {"bot_name": "Scribe"} for b in live)
    # a different request that is refused still leaves the series alone (it is not a retry)
    svc.toggle_recurrence(user_id, first.event_id, False)
    with pytest.raises(DomainError):
        svc.schedule_event(user_id, first.event_id, request.model_copy(update={"join_offset_seconds": 120}))
    assert not any(e.recurring_enabled for e in svc._series_events(first))


@pytest.mark.parametrize("named", ["its_own", "one_without_a_bot"])
def test_an_unschedule_retried_after_a_503_cancels_nothing_more(stack: LocalStack, named: str) -> None:
    """DELETE /calendar/schedule/{occurrence} cancels that occurrence's bot (else the series' next one);
    its retry must not go on to cancel the following occurrence's bot."""
    user_id, acct = user_with_account(stack)
    first = synced(user_id, weekly_series(stack, acct, count=4)["id"])
    occurrences = svc._series_events(first)
    scheduled = occurrences if named == "its_own" else occurrences[1:]
    for occurrence in scheduled:
        svc.schedule_event(user_id, occurrence.event_id, ScheduleRequest())
    target = occurrences[0]
    done = svc.unschedule_event(user_id, target.event_id, UnscheduleRequest())
    assert done.cancelled == 1
    with pytest.raises(DomainError) as err:  # the retry: its work is already done
        svc.unschedule_event(user_id, target.event_id, UnscheduleRequest())
    assert (status_of(err.value), err.value.code) == (404, "not_scheduled")
    live = [b for b in store.bots_of_series(user_id, first.series_id) if b.status == "Scheduled"]
    assert len(live) == len(scheduled) - 1 and done.bot_ids[0] not in {b.bot_id for b in live}


def test_occurrences_a_series_gains_later_keep_its_recurrence_flag(stack: LocalStack) -> None:
    """recurring_enabled lives on each occurrence: the ones the series gains after the user turned it
    on (the series extended, the sync window moving on) must carry it, or the chain stops there."""
    user_id, acct = user_with_account(stack)
    master = weekly_series(stack, acct, count=3)
    first = synced(user_id, master["id"])
    svc.schedule_event(user_id, first.event_id, ScheduleRequest(recurring_event=True))
    assert all(e.recurring_enabled for e in svc._series_events(first))
    recurrence = {
        **master["recurrence"],
        "range": {**master["recurrence"]["range"], "numberOfOccurrences": 5},
    }
    stack.graph.update_event(master["id"], recurrence=recurrence)
    assert sync_user(user_id).partial_errors == {}
    series = [e for e in svc._series_events(first) if not e.is_deleted]
    assert len(series) == 5 and all(e.recurring_enabled for e in series)


def test_what_is_stored_is_what_is_launched(stack: LocalStack, frozen_at_join: list[datetime]) -> None:
    """Issue 16: the Create Bot call carries exactly the stored record's link and our ids, even for a
    record whose bot_config holds service-owned fields (written before they were refused)."""
    user_id, acct = user_with_account(stack)
    start = SOON + timedelta(hours=5)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Stored is launched",
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        online_meeting_url=TEAMS,
    )
    made = svc.schedule_event(user_id, synced(user_id, ev["id"]).event_id, ScheduleRequest())
    bot = store.get_bot(user_id, made.bot_id)
    legacy = {
        "bot_name": "N",
        "meeting_link": "https://evil.example/j/elsewhere",
        "meeting_url": "https://evil.example/j/2",
        "custom_attributes": {"scheduled_bot_id": "sb_forged", "calendar_event_id": "evt_forged", "k": 1},
    }
    store.save_bot(bot.model_copy(update={"bot_config": legacy}), expect_status="Scheduled")
    frozen_at_join[0] = start - timedelta(seconds=60)
    assert launcher.launch(user_id, made.bot_id)["status"] == "Launched"
    stored = store.get_bot(user_id, made.bot_id)
    (call,) = [
        c
        for c in stack.bots.calls()
        # the sink is shared by the whole session: other tests' calls need not carry custom_attributes
        if (c["body"].get("custom_attributes") or {}).get("scheduled_bot_id") == made.bot_id
    ]
    assert call["body"]["meeting_link"] == stored.meeting_url == TEAMS
    assert "meeting_url" not in call["body"]
    assert call["body"]["custom_attributes"] == {
        "k": 1,
        "calendar_event_id": stored.event_id,
        "scheduled_bot_id": stored.bot_id,
    }
    assert call["body"]["bot_name"] == "N"


class Killed(BaseException):
    """Lambda killing the invocation at its Timeout: nothing after it runs, no except, no rollback."""


def test_a_kill_between_the_bot_item_and_its_schedule_leaves_no_bot_nobody_launches(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, acct = user_with_account(stack)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Killed",
        start=(SOON + timedelta(hours=5)).isoformat(),
        end=(SOON + timedelta(hours=6)).isoformat(),
        location="https://acme.zoom.us/j/777",
    )
    event = synced(user_id, ev["id"])
    writes: list[str] = []
    placed: list[str] = []
    real_create, real_put = store.create_bot, scheduler.put_launch

    def create_bot(bot: Any) -> None:
        writes.append("item")
        if len(writes) == 2:
            raise Killed
        real_create(bot)

    def put_launch(bot: Any, **kwargs: Any) -> None:
        writes.append("schedule")
        placed.append(bot.bot_id)
        if len(writes) == 2:
            raise Killed
        real_put(bot, **kwargs)

    # Killed at the second of the two writes, whichever order they come in.
    monkeypatch.setattr(store.bots, "create_bot", create_bot)
    monkeypatch.setattr(scheduler, "put_launch", put_launch)
    with pytest.raises(Killed):
        svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    monkeypatch.undo()

    # No Scheduled bot is left without the schedule that would launch it.
    for bot in store.bots_of_series(user_id, event.event_id):
        assert bot.status != "Scheduled" or schedule_of(bot.bot_id) is not None, "a bot nobody launches"
    # What the kill left (a schedule without its bot) fires once and does nothing.
    (orphan,) = placed
    assert store.get_bot(user_id, orphan) is None
    assert launcher.launch(user_id, orphan) == {"bot_id": orphan, "skipped": "missing"}
    # The client's retry makes the bot, with its schedule.
    made = svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    bot = store.get_bot(user_id, made.bot_id)
    assert bot is not None and bot.status == "Scheduled" and schedule_of(bot.bot_id) is not None


def test_a_bot_refused_as_already_scheduled_leaves_no_schedule_behind(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, acct = user_with_account(stack)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Twice",
        start=(SOON + timedelta(hours=7)).isoformat(),
        end=(SOON + timedelta(hours=8)).isoformat(),
        location="https://acme.zoom.us/j/778",
    )
    event = synced(user_id, ev["id"])
    first = svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    twin = lifecycle.make_bot(event, {}, offset_seconds=60, source="auto", recurring=False)
    # The guard is already held: refused before a schedule is written.
    with pytest.raises(store.AlreadyScheduled):
        lifecycle.place(twin)
    assert schedule_of(twin.bot_id) is None and schedule_of(first.bot_id) is not None
    # A race the read cannot see (the guard taken between the read and the write): the schedule goes.
    monkeypatch.setattr(store.bots, "dedup_owner", lambda *_: None)
    with pytest.raises(store.AlreadyScheduled):
        lifecycle.place(twin)
    assert schedule_of(twin.bot_id) is None


def test_a_bot_due_at_once_keeps_a_schedule_even_if_it_fired_before_the_item_was_written(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id, acct = user_with_account(stack)
    start = timeutil.now().replace(microsecond=0) + timedelta(seconds=65)  # joins in 5 s
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Imminent",
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        location="https://acme.zoom.us/j/779",
    )
    event = synced(user_id, ev["id"])
    fired: list[Any] = []
    real_create = store.create_bot

    def create_bot(bot: Any) -> None:
        # Its at() time has come: Scheduler fires it now, the launcher finds no bot yet, and the
        # schedule deletes itself after running.
        fired.append(launcher.launch(bot.user_id, bot.bot_id))
        scheduler.delete(scheduler.launch_schedule_name(bot.bot_id))
        real_create(bot)

    armed: list[str] = []
    real_enqueue = scheduler.enqueue_launch

    def enqueue(bot: Any, launch_at: datetime) -> None:
        armed.append("item" if store.get_bot(bot.user_id, bot.bot_id) else "none")
        real_enqueue(bot, launch_at)

    monkeypatch.setattr(store.bots, "create_bot", create_bot)
    monkeypatch.setattr(scheduler, "enqueue_launch", enqueue)
    made = svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    assert fired == [{"bot_id": made.bot_id, "skipped": "missing"}]
    assert armed == ["none", "item"]  # armed again once the item exists: the bot still gets launched


def _meeting_in(stack: LocalStack, hours: int, subject: str, zoom_id: int) -> tuple[str, Event]:
    """A new user's synced one-hour Zoom meeting starting `hours` after SOON."""
    return _meeting_at(stack, SOON + timedelta(hours=hours), subject, zoom_id)


def _meeting_at(stack: LocalStack, start: datetime, subject: str, zoom_id: int) -> tuple[str, Event]:
    """A new user's synced one-hour Zoom meeting starting at `start`."""
    user_id, acct = user_with_account(stack)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject=subject,
        start=start.isoformat(),
        end=(start + timedelta(hours=1)).isoformat(),
        location=f"https://acme.zoom.us/j/{zoom_id}",
    )
    return user_id, synced(user_id, ev["id"])


def _killed_after_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill between the two writes of a new bot: its guard is written, its bot item never is."""
    from calbot.store import base

    real_write = base._write

    def write(operation: str, **kwargs: Any) -> dict[str, Any]:
        if operation == "put_item" and kwargs["Item"]["SK"]["S"].startswith("BOT#"):
            raise Killed
        return real_write(operation, **kwargs)

    monkeypatch.setattr(base, "_write", write)


def test_an_orphan_guard_is_taken_over_only_after_its_grace(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, frozen_at_join: list[datetime]
) -> None:
    user_id, event = _meeting_in(stack, 9, "Orphan", 780)
    _killed_after_the_guard(monkeypatch)
    with pytest.raises(Killed):
        svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    monkeypatch.undo()
    key = lifecycle.dedup_key(event.meeting_url or "", event.start_time)
    orphan = store.bots.dedup_owner(user_id, key)
    assert orphan is not None and store.get_bot(user_id, orphan) is None

    # Its creator may still be writing: the occurrence is refused as it would be with the bot there.
    frozen_at_join[0] += store.bots.GUARD_GRACE - timedelta(seconds=1)
    with pytest.raises(DomainError) as refused:
        svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    assert (status_of(refused.value), refused.value.code, refused.value.details["bot_id"]) == (
        409,
        "already_scheduled",
        orphan,
    )
    # Past its grace the guard is taken over, and the occurrence gets its one bot.
    frozen_at_join[0] += timedelta(seconds=2)
    assert store.bots.dedup_owner(user_id, key) is None
    made = svc.schedule_event(user_id, event.event_id, ScheduleRequest())
    assert made.bot_id != orphan and store.bots.dedup_owner(user_id, key) == made.bot_id
    assert [b.bot_id for b in store.bots_of_series(user_id, event.event_id)] == [made.bot_id]
    assert schedule_of(made.bot_id) is not None


def test_of_two_that_take_over_one_orphan_guard_one_wins(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, frozen_at_join: list[datetime]
) -> None:
    user_id, event = _meeting_in(stack, 11, "Orphan race", 781)
    orphan, first, second = (
        lifecycle.make_bot(event, {}, offset_seconds=60, source="auto", recurring=False) for _ in range(3)
    )
    _killed_after_the_guard(monkeypatch)
    with pytest.raises(Killed):
        store.create_bot(orphan)
    monkeypatch.undo()
    frozen_at_join[0] += store.bots.GUARD_GRACE + timedelta(seconds=1)

    # Both find the orphan; the second takes it over while the first is between its read and its write.
    real_orphaned = store.bots._orphaned

    def orphaned(user: str, guard: dict[str, Any]) -> bool:
        found = real_orphaned(user, guard)
        if guard["bot_id"] == orphan.bot_id and not taken:
            taken.append(second.bot_id)
            store.create_bot(second)
        return found

    taken: list[str] = []
    monkeypatch.setattr(store.bots, "_orphaned", orphaned)
    with pytest.raises(store.AlreadyScheduled) as lost:
        store.create_bot(first)
    assert lost.value.bot_id == second.bot_id
    assert store.bots.dedup_owner(user_id, first.dedup_key) == second.bot_id
    assert store.get_bot(user_id, first.bot_id) is None and store.get_bot(user_id, second.bot_id) is not None


def test_a_creator_past_its_window_writes_no_bot_and_gives_its_guard_back(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, frozen_at_join: list[datetime]
) -> None:
    user_id, event = _meeting_in(stack, 13, "Paused", 782)
    bot = lifecycle.make_bot(event, {}, offset_seconds=60, source="auto", recurring=False)
    from calbot.store import base

    real_write = base._write

    def paused(operation: str, **kwargs: Any) -> dict[str, Any]:
        done = real_write(operation, **kwargs)
        if kwargs.get("Item", {}).get("SK", {}).get("S") == "DEDUP":
            frozen_at_join[0] += store.bots.CREATOR_WINDOW  # paused right after taking the guard
        return done

    monkeypatch.setattr(base, "_write", paused)
    with pytest.raises(Unavailable):
        store.create_bot(bot)
    monkeypatch.undo()
    assert store.get_bot(user_id, bot.bot_id) is None
    assert store.bots.dedup_owner(user_id, bot.dedup_key) is None  # free at once, no grace to wait


# Moves, cancels and failed launches write the bot and its guards as plain conditional writes, not a
# transaction (which bills each item twice). A writer cut off between them leaves a guard that holds
# nothing, which the next writer takes over once past its grace.


def _killed_at(monkeypatch: pytest.MonkeyPatch, operation: str, sk_prefix: str, *, nth: int = 1) -> None:
    """A kill at the `nth` `operation` (put_item, delete_item) on an item whose SK starts with
    `sk_prefix`: it and everything after it never run."""
    from calbot.store import base

    real_write = base._write
    seen = [0]

    def write(op: str, **kwargs: Any) -> dict[str, Any]:
        key = kwargs.get("Item") or kwargs.get("Key") or {}
        if op == operation and key.get("SK", {}).get("S", "").startswith(sk_prefix):
            seen[0] += 1
            if seen[0] == nth:
                raise Killed
        return real_write(op, **kwargs)

    monkeypatch.setattr(base, "_write", write)


def _created(stack: LocalStack, hours: int, subject: str, zoom_id: int) -> tuple[str, Any]:
    """A new user's meeting (`_meeting_in`) and the bot created for it (its guard, then its item)."""
    user_id, event = _meeting_in(stack, hours, subject, zoom_id)
    bot = lifecycle.make_bot(event, {}, offset_seconds=60, source="auto", recurring=False)
    store.create_bot(bot)
    return user_id, bot


def _moved(bot: Any, hours: int) -> Any:
    start = bot.occurrence_start + timedelta(hours=hours)
    return bot.model_copy(
        update={
            "occurrence_start": start,
            "meeting_end": start + timedelta(hours=1),
            "scheduled_join_time": start - timedelta(seconds=bot.join_offset_seconds),
            "dedup_key": lifecycle.dedup_key(bot.meeting_url, start),
            "launch_generation": bot.launch_generation + 1,
        }
    )


def _twin(bot: Any) -> Any:
    """Another bot for the same occurrence (another calendar's copy of the meeting, the midnight job)."""
    return bot.model_copy(update={"bot_id": f"sb_twin{next(_n)}"})


def test_a_move_is_three_plain_writes_and_frees_its_old_slot(
    stack: LocalStack, frozen_at_join: list[datetime], ddb_writes: Any
) -> None:
    user_id, bot = _created(stack, 15, "Moved", 783)
    frozen_at_join[0] += timedelta(seconds=1)
    moved = _moved(bot, 2)
    ddb_writes.reset()
    store.move_bot(moved, bot.dedup_key, expect_status="Scheduled")
    # the new guard, the bot, the old guard's delete: each billed once, where one transaction billed the
    # three items twice (6 units). The bot's GSI1 entry moves with its join time: 2 units either way.
    assert ddb_writes.calls == ["PutItem", "PutItem", "DeleteItem"]
    assert (sum(ddb_writes.table_units.values()), ddb_writes.units) == (3, 5)
    assert store.bots.dedup_owner(user_id, moved.dedup_key) == bot.bot_id
    assert store.bots.dedup_owner(user_id, bot.dedup_key) is None
    store.create_bot(_twin(bot))  # the old slot takes a new bot at once


def test_a_move_into_a_held_slot_writes_nothing(stack: LocalStack, frozen_at_join: list[datetime]) -> None:
    user_id, bot = _created(stack, 17, "Taken", 784)
    holder = _moved(_twin(bot), 2)
    store.create_bot(holder)
    with pytest.raises(store.AlreadyScheduled) as refused:
        store.move_bot(_moved(bot, 2), bot.dedup_key, expect_status="Scheduled")
    assert refused.value.bot_id == holder.bot_id
    assert store.get_bot(user_id, bot.bot_id) == bot
    assert store.bots.dedup_owner(user_id, bot.dedup_key) == bot.bot_id


def test_a_move_of_a_bot_that_left_scheduled_gives_the_new_guard_back(
    stack: LocalStack, frozen_at_join: list[datetime]
) -> None:
    user_id, bot = _created(stack, 19, "Launching", 785)
    launching = bot.model_copy(update={"status": "Launching", "launch_claim": "c1"})
    store.save_bot(launching, expect_status="Scheduled")
    moved = _moved(bot, 2)
    with pytest.raises(store.BotChanged):
        store.move_bot(moved, bot.dedup_key, expect_status="Scheduled")
    assert store.get_bot(user_id, bot.bot_id) == launching
    assert store.bots._guard(user_id, moved.dedup_key) is None  # given back, no grace to wait
    assert store.bots.dedup_owner(user_id, bot.dedup_key) == bot.bot_id


def test_a_move_cut_off_after_the_new_guard_keeps_the_bot_where_it_was(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, frozen_at_join: list[datetime]
) -> None:
    user_id, bot = _created(stack, 21, "Cut after guard", 786)
    moved = _moved(bot, 2)
    _killed_at(monkeypatch, "put_item", "BOT#")
    with pytest.raises(Killed):
        store.move_bot(moved, bot.dedup_key, expect_status="Scheduled")
    monkeypatch.undo()
    assert store.get_bot(user_id, bot.bot_id) == bot  # never saved: it still holds its slot
    assert store.bots.dedup_owner(user_id, bot.dedup_key) == bot.bot_id
    with pytest.raises(store.AlreadyScheduled):
        store.create_bot(_twin(bot))
    # The new guard names a bot of another occurrence: its mover may still be writing until its grace
    # has passed; then the slot takes another bot.
    rival = _twin(moved)
    with pytest.raises(store.AlreadyScheduled):
        store.create_bot(rival)
    frozen_at_join[0] += store.bots.GUARD_GRACE + timedelta(seconds=1)
    assert store.bots.dedup_owner(user_id, moved.dedup_key) is None
    store.create_bot(rival)
    assert store.bots.dedup_owner(user_id, moved.dedup_key) == rival.bot_id


def test_a_move_cut_off_before_releasing_the_old_guard_frees_the_old_slot(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, frozen_at_join: list[datetime]
) -> None:
    user_id, bot = _created(stack, 23, "Cut before release", 787)
    frozen_at_join[0] += store.bots.GUARD_GRACE + timedelta(seconds=1)  # the guard was taken long ago
    moved = _moved(bot, 2)
    _killed_at(monkeypatch, "delete_item", "DEDUP")
    with pytest.raises(Killed):
        store.move_bot(moved, bot.dedup_key, expect_status="Scheduled")
    monkeypatch.undo()
    assert store.get_bot(user_id, bot.bot_id) == moved
    assert store.bots._owner(store.bots._guard(user_id, bot.dedup_key)) == bot.bot_id  # left behind
    assert store.bots.dedup_owner(user_id, bot.dedup_key) is None  # ... and holding nothing
    assert store.bots.dedup_owner(user_id, moved.dedup_key) == bot.bot_id
    old_slot = _twin(bot)
    store.create_bot(old_slot)
    assert store.bots.dedup_owner(user_id, bot.dedup_key) == old_slot.bot_id


def test_a_bot_moved_back_keeps_its_slot_against_a_late_release(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, frozen_at_join: list[datetime]
) -> None:
    user_id, bot = _created(stack, 25, "Back and forth", 788)
    frozen_at_join[0] += timedelta(seconds=1)
    away = _moved(bot, 2)
    first_move_began = timeutil.now()
    # The first move stalls before releasing the old guard ...
    _killed_at(monkeypatch, "delete_item", "DEDUP")
    with pytest.raises(Killed):
        store.move_bot(away, bot.dedup_key, expect_status="Scheduled")
    monkeypatch.undo()
    # ... while the meeting moves back: the bot retakes the guard it still names.
    frozen_at_join[0] += timedelta(seconds=1)
    back = _moved(away, -2)
    assert back.dedup_key == bot.dedup_key
    store.move_bot(back, away.dedup_key, expect_status="Scheduled")
    assert store.bots.dedup_owner(user_id, bot.dedup_key) == bot.bot_id
    assert store.bots._guard(user_id, away.dedup_key) is None
    # The stalled move resumes with its release: the guard was taken again after it began, so it stays.
    store.bots._write_if(
        "delete_item", **store.bots._guard_release(away, bot.dedup_key, taken_before=first_move_began)
    )
    assert store.bots.dedup_owner(user_id, bot.dedup_key) == bot.bot_id
    with pytest.raises(store.AlreadyScheduled):
        store.create_bot(_twin(bot))


@pytest.mark.parametrize("status", ["Cancelled", "Failed"])
def test_an_ended_bot_cut_off_before_its_guard_release_holds_nothing_past_the_grace(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, frozen_at_join: list[datetime], status: str
) -> None:
    user_id, bot = _created(stack, 27, f"Ended {status}", 789 if status == "Cancelled" else 790)
    before = "Scheduled"
    if status == "Failed":
        bot = bot.model_copy(update={"status": "Launching", "launch_claim": "c1"})
        store.save_bot(bot, expect_status="Scheduled")
        before = "Launching"
    ended = bot.model_copy(update={"status": status, "reason": "test"})
    _killed_at(monkeypatch, "delete_item", "DEDUP")
    with pytest.raises(Killed):
        store.save_bot(ended, expect_status=before, expect_claim=bot.launch_claim, release_guard=True)
    monkeypatch.undo()
    assert store.get_bot(user_id, bot.bot_id) == ended
    frozen_at_join[0] += store.bots.GUARD_GRACE + timedelta(seconds=1)
    assert store.bots.dedup_owner(user_id, bot.dedup_key) is None
    again = _twin(bot).model_copy(update={"status": "Scheduled", "launch_claim": None})
    store.create_bot(again)
    assert store.bots.dedup_owner(user_id, bot.dedup_key) == again.bot_id


def test_a_launched_bot_keeps_its_guard(stack: LocalStack, frozen_at_join: list[datetime]) -> None:
    user_id, bot = _created(stack, 29, "Launched", 791)
    launching = bot.model_copy(update={"status": "Launching", "launch_claim": "c1"})
    store.save_bot(launching, expect_status="Scheduled")
    store.save_bot(
        launching.model_copy(update={"status": "Launched"}), expect_status="Launching", expect_claim="c1"
    )
    frozen_at_join[0] += store.bots.GUARD_GRACE + timedelta(days=1)
    assert store.bots.dedup_owner(user_id, bot.dedup_key) == bot.bot_id
    with pytest.raises(store.AlreadyScheduled):
        store.create_bot(_twin(bot))


def _handler_answer(function: str, module: str, user_id: str, path: dict[str, str], body: Any) -> Any:
    """`functions/<function>/app.py` answering its sample event (events/) as `user_id`, with these path
    parameters and body: (status, JSON body)."""
    from tests.function_apps import ROOT, load_app

    sample = {"schedule_event": "ScheduleEventFunction", "update_scheduled_bot": "UpdateScheduledBotFunction"}
    event = json.loads((ROOT / "events" / f"{sample[function]}.json").read_text())
    event["requestContext"]["authorizer"]["lambda"]["user_id"] = user_id
    event["pathParameters"] = path
    event["body"] = json.dumps(body)
    answer = load_app(function, module).handler(event, None)
    return answer["statusCode"], json.loads(answer["body"])


def test_past_the_number_of_schedules_quota_nothing_half_made_and_a_near_bot_needs_no_schedule(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scheduler refuses CreateSchedule past the account's "Number of schedules" quota
    (ServiceQuotaExceededException, HTTP 402; the local stack's is LOCAL_SCHEDULER_MAX_SCHEDULES, here
    used up). The API answers the contract's 503 (it was a 500 for a PATCH of the join time), a far bot
    leaves no bot or guard behind, a bot whose join time the PATCH would move keeps its old time and
    schedule, and a bot due within the queue's horizon, armed by a delayed message, is still made."""
    user_id, far = _meeting_in(stack, 10, "Past the quota", 781)
    kept_user, kept_event = _meeting_in(stack, 11, "Scheduled before", 782)
    kept = svc.schedule_event(kept_user, kept_event.event_id, ScheduleRequest())
    kept_schedule = schedule_of(kept.bot_id)
    assert kept_schedule is not None
    kept_schedule.pop("ResponseMetadata")

    monkeypatch.setenv("LOCAL_SCHEDULER_MAX_SCHEDULES", "0")
    status, body = _handler_answer(
        "schedule_event", "schedule_event_quota", user_id, {"event_id": far.event_id}, {}
    )
    assert (status, body["error"]) == (503, "service_unavailable") and body["message"]
    assert store.upcoming_bots(user_id, after=timeutil.now(), limit=10) == []
    assert store.dedup_owner(user_id, lifecycle.dedup_key(far.meeting_url or "", far.start_time)) is None

    later = (SOON + timedelta(hours=12)).isoformat()
    status, body = _handler_answer(
        "update_scheduled_bot",
        "update_scheduled_bot_quota",
        kept_user,
        {"bot_id": kept.bot_id},
        {"scheduled_join_time": later},
    )
    assert (status, body["error"]) == (503, "service_unavailable")
    still = store.get_bot(kept_user, kept.bot_id)
    assert still is not None and still.status == "Scheduled"
    assert still.scheduled_join_time == kept.scheduled_join_time
    after = {k: v for k, v in (schedule_of(kept.bot_id) or {}).items() if k != "ResponseMetadata"}
    assert after == kept_schedule

    soon = timeutil.now().replace(microsecond=0) + timedelta(minutes=10)
    near_user, near_event = _meeting_at(stack, soon, "Soon", 783)
    near = svc.schedule_event(near_user, near_event.event_id, ScheduleRequest())
    bot = store.get_bot(near_user, near.bot_id)
    assert bot is not None and bot.status == "Scheduled" and schedule_of(near.bot_id) is None


def test_the_bots_listing_reads_its_records_eventually_at_half_the_units(stack: LocalStack) -> None:
    # GET /calendar/scheduled_bots: the index entries are eventually consistent anyway; the records
    # behind them are read the same way (half the read units). What schedules and cancels reads
    # consistently (store.upcoming_bots, bots_between) is unchanged.
    from calbot.models import ScheduledBotsQuery

    user_id, acct = user_with_account(stack)
    ev = stack.graph.add_event(
        acct["id"],
        acct["calendars"][0]["id"],
        subject="Listed",
        start=SOON.isoformat(),
        end=(SOON + timedelta(hours=1)).isoformat(),
        online_meeting_url=TEAMS,
    )
    bot_id = svc.schedule_event(user_id, synced(user_id, ev["id"]).event_id, ScheduleRequest()).bot_id
    with batch_get_consistency() as seen:
        for status in (None, "Scheduled", "all"):
            query = ScheduledBotsQuery.model_validate({"status": status} if status else {})
            rows = svc.list_bots(user_id, query, raw_params={}).page.results
            assert [r.bot_id for r in rows] == [bot_id]
        assert seen and not any(seen)
        seen.clear()
        assert [b.bot_id for b in store.upcoming_bots(user_id, after=timeutil.now(), limit=5)] == [bot_id]
        assert seen == [True]
