"""calbot.scheduler's arming arithmetic (issue 18): the Scheduler event age ends with the meeting, in
Scheduler's range, and a launch message's delay never makes it visible before its time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from calbot import scheduler
from tests.conftest import virtual_time

NOW = datetime(2026, 12, 7, 8, 0, 0, 250_000, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with virtual_time(NOW):
        yield


def test_the_event_age_ends_when_the_meeting_does_within_schedulers_range() -> None:
    fires = NOW + timedelta(hours=1)
    age = scheduler.retry_policy(fires, fires + timedelta(minutes=65))["MaximumEventAgeInSeconds"]
    assert age == 65 * 60  # the old fixed hour let a 30-minute meeting be joined after it ended
    assert scheduler.retry_policy(fires, fires + timedelta(seconds=20))["MaximumEventAgeInSeconds"] == 60
    assert scheduler.retry_policy(fires, fires + timedelta(days=3))["MaximumEventAgeInSeconds"] == 86400


def test_a_launch_message_is_never_visible_before_its_time_and_never_asks_sqs_for_more_than_900_s() -> None:
    assert scheduler.delay_seconds(NOW + timedelta(seconds=179.75)) == 180  # rounded up, not down
    assert scheduler.delay_seconds(NOW - timedelta(seconds=5)) == 0
    assert scheduler.delay_seconds(NOW + timedelta(hours=2)) == 900
    assert scheduler.LEAD < scheduler.HORIZON < timedelta(seconds=900)


def test_generations_name_new_schedules_and_generation_zero_keeps_the_legacy_name() -> None:
    assert (
        scheduler.launch_schedule_name("sb_1") == scheduler.launch_schedule_name("sb_1", 0) == "launch-sb_1"
    )
    assert len({scheduler.launch_schedule_name("sb_1", g) for g in range(5)}) == 5


def test_each_bot_has_its_own_lead_in_the_window_and_always_the_same() -> None:
    leads = [scheduler.lead(f"sb_{n:08x}{n:016x}") for n in range(2000)]
    assert min(leads) >= scheduler.LEAD
    assert max(leads) < scheduler.LEAD + scheduler.LEAD_SPREAD
    assert all(lead.microseconds == 0 for lead in leads)  # whole seconds: at() has no fractions
    assert len(set(leads)) > 400  # spread over the window, not a handful of values
    assert scheduler.lead("sb_same") == scheduler.lead("sb_same")  # a re-arm puts the same at()
    # The longest lead plus Scheduler's minute stays inside what a schedule is made for (beyond
    # HORIZON): its at() is still a minute ahead when it is made, and the launch message it sends
    # needs no more delay than SQS allows.
    assert scheduler.LEAD + scheduler.LEAD_SPREAD + timedelta(seconds=60) <= scheduler.HORIZON
    assert scheduler.HORIZON <= scheduler.SQS_MAX_DELAY


def test_bots_joining_at_the_same_minute_fire_their_schedules_below_schedulers_invocation_quota() -> None:
    """210,000 bots joining at 09:00 (bench/day.py's 09:00 share at 100,000 users): with one fixed
    lead their schedules would all fire in the minute after 08:55, ~3,500 a second against Scheduler's
    default 'Invocations throttle limit' of 1,000 a second. Each fires at its at() plus up to 59 s
    (Scheduler's precision); the busiest second stays well under the quota."""
    import random
    from collections import Counter

    rng = random.Random(18)
    join = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    per_second: Counter[int] = Counter()
    for _ in range(210_000):
        bot_id = f"sb_{rng.getrandbits(32):08x}{rng.getrandbits(64):016x}"
        fires = join - scheduler.lead(bot_id) + timedelta(seconds=rng.randrange(60))
        per_second[int(fires.timestamp())] += 1
    assert max(per_second.values()) < 600, max(per_second.values())
    assert min(per_second) >= int((join - scheduler.LEAD - scheduler.LEAD_SPREAD).timestamp())
