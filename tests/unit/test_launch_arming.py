"""calbot.scheduler's arming arithmetic (issue 18): the Scheduler event age ends with the meeting, in
Scheduler's range, and a launch message's delay never makes it visible before its time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from calbot import scheduler, timeutil

NOW = datetime(2026, 12, 7, 8, 0, 0, 250_000, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    timeutil.set_clock(lambda: NOW)
    yield
    timeutil.set_clock(None)


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
