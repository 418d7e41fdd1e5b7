"""calbot.retry: tenacity's policies, sleeping on the core's clock and stopping before the deadline."""

from __future__ import annotations

import pytest
from tenacity import retry_if_exception_type, wait_fixed

from calbot import deadline
from calbot.deadline import Deadline
from calbot.retry import retrying


class Flaky(Exception):
    pass


def _run(policy_attempts: int, fail_times: int, **kwargs: object) -> tuple[int, str]:
    calls = 0
    for attempt in retrying(retry=retry_if_exception_type(Flaky), attempts=policy_attempts, **kwargs):  # type: ignore[arg-type]
        with attempt:
            calls += 1
            if calls <= fail_times:
                raise Flaky(f"failure {calls}")
            return calls, "done"
    raise AssertionError("unreachable")


def test_waits_are_on_the_core_clock_and_back_off(slept: list[float]) -> None:
    assert _run(6, 3) == (4, "done")
    assert len(slept) == 3  # virtual: the test took no real time to wait
    assert 0.05 <= slept[0] <= 0.1 and slept[1] > slept[0] and slept[2] > slept[1]


def test_gives_up_at_the_attempt_cap_with_the_last_error(slept: list[float]) -> None:
    with pytest.raises(Flaky, match="failure 3"):
        _run(3, 10)
    assert len(slept) == 2


def test_never_starts_a_wait_that_ends_past_the_deadline(slept: list[float]) -> None:
    with deadline.active(Deadline.after(2.5)), pytest.raises(Flaky, match="failure 3"):
        _run(10, 10, wait=wait_fixed(1.0))
    assert slept == [1.0, 1.0]  # a third wait would have ended at 3 s, past the 2.5 s deadline


def test_other_errors_are_not_retried(slept: list[float]) -> None:
    calls = 0
    with pytest.raises(KeyError):
        for attempt in retrying(retry=retry_if_exception_type(Flaky), attempts=5):
            with attempt:
                calls += 1
                raise KeyError("not retried")
    assert calls == 1 and slept == []
