"""tests.conftest.virtual_time: a test's own time for calbot, with the in-process stack's background
loop (which runs at real time) paused meanwhile, so that nothing it runs sees the test's time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from calbot import timeutil
from local.stack import LocalStack
from tests.conftest import virtual_time

AT = datetime(2031, 1, 1, tzinfo=UTC)


def test_the_background_pauses_and_both_come_back(inproc_stack: LocalStack) -> None:
    assert inproc_stack.clock.running
    with virtual_time(AT) as moment:
        assert not inproc_stack.clock.running
        assert timeutil.now() == AT
        timeutil.sleep(5)
        assert moment[0] == timeutil.now() == AT + timedelta(seconds=5)
        moment[0] += timedelta(days=1)
        assert timeutil.now() == AT + timedelta(days=1, seconds=5)
    assert inproc_stack.clock.running
    assert abs(timeutil.now() - datetime.now(UTC)) < timedelta(minutes=1)  # the real time is back


def test_a_standing_clock_and_a_failing_block(inproc_stack: LocalStack) -> None:
    slept: list[float] = []
    try:
        with virtual_time(AT, sleep_advances=False, on_sleep=slept.append):
            timeutil.sleep(3)
            assert timeutil.now() == AT and slept == [3]
            raise RuntimeError("the test failed")
    except RuntimeError:
        pass
    assert inproc_stack.clock.running
    assert abs(timeutil.now() - datetime.now(UTC)) < timedelta(minutes=1)  # the real time is back
