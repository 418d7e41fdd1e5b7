"""Retries through tenacity, on the core's clock and never past the invocation's deadline.

Every retry loop of the core is a `retrying(...)`: tenacity decides when to try again and how long to
wait; we add two things it cannot know. It sleeps with `timeutil.sleep`, so the local stack's virtual
clock and the tests move time instead of waiting; and it stops before a wait that would end past the
deadline active in this thread (`calbot.deadline.current()`), since Lambda kills an invocation at its
timeout and nothing after the kill runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import WaitBaseT

from calbot import deadline, timeutil


class stop_before_deadline(stop_base):
    """Stop when the coming wait would not end before the deadline active in this thread."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not deadline.current().allows(retry_state.upcoming_sleep)


def _sleep(seconds: float) -> None:
    timeutil.sleep(seconds)  # looked up per call: tests and the local stack replace the clock


def retrying(
    *,
    retry: retry_base,
    attempts: int,
    wait: WaitBaseT | None = None,
    reraise: bool = True,
    sleep: Callable[[float], None] | None = None,
    **kwargs: Any,
) -> Retrying:
    """A tenacity `Retrying` that sleeps on our clock and gives up at `attempts` or the deadline.

    `wait` defaults to jittered exponential backoff from 50 ms up to 1 s; with `reraise` (the
    default) the last attempt's own exception is raised, never tenacity's RetryError. `sleep`
    replaces our clock's sleep for a caller that was handed its own (still a virtual one in tests).
    """
    return Retrying(
        retry=retry,
        stop=stop_after_attempt(attempts) | stop_before_deadline(),
        wait=wait if wait is not None else wait_exponential_jitter(initial=0.05, max=1.0, jitter=0.05),
        sleep=sleep if sleep is not None else _sleep,
        reraise=reraise,
        **kwargs,
    )
