"""How long the current invocation may still run, as a value the services carry.

Lambda kills an invocation at its `Timeout` (no rollback runs), and API Gateway gives up on a route
after 30 s. A handler turns its Lambda context into a `Deadline` (`Deadline.from_context`) and hands
it to its service; the service passes it on, and whoever would wait (a provider's Retry-After, a
backoff) asks it first: a wait that would end past the deadline is not started, the work ends with
what it has.

A deadline from the context asks the context each time, so it runs on the invocation's own clock
(on the local stack: real time plus its virtual sleeps plus clock advances); `Deadline.after` reads
`timeutil.now()`, the core's one clock, so virtual time counts against it too.

`active(deadline)` makes a deadline the one the provider HTTP layer sees in this thread (a
`ContextVar`: every thread and every invocation has its own; nothing leaks between them). Code that
hands work to other threads passes the deadline explicitly and activates it there.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from calbot import timeutil

API_GATEWAY_LIMIT_SECONDS = 30.0  # HTTP API integration timeout: the caller gets 503 after this
# Kept free at the end of an invocation to write what was done and answer.
RESPONSE_RESERVE_SECONDS = 1.5


@dataclass(frozen=True)
class Deadline:
    """The time left to work in: ``left()`` gives seconds (None: unbounded)."""

    left: Callable[[], float] | None = field(default=None, compare=False)

    @classmethod
    def unbounded(cls) -> Deadline:
        return cls(None)

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """``seconds`` from now on the core's clock."""
        expires = timeutil.now() + timedelta(seconds=seconds)
        return cls(lambda: (expires - timeutil.now()).total_seconds())

    @classmethod
    def from_context(
        cls,
        context: Any,
        *,
        cap_seconds: float | None = None,
        reserve_seconds: float = RESPONSE_RESERVE_SECONDS,
    ) -> Deadline:
        """The invocation's deadline: what the Lambda context says is left, never more than
        ``cap_seconds`` after now (e.g. the API Gateway limit), less ``reserve_seconds`` to answer in.
        The context is asked each time, so the deadline runs on the same clock as the invocation.
        A context without ``get_remaining_time_in_millis`` (a direct call) gives the cap or none."""
        getter = getattr(context, "get_remaining_time_in_millis", None)
        if not callable(getter):
            return cls.after(cap_seconds - reserve_seconds) if cap_seconds is not None else cls.unbounded()
        first = getter() / 1000.0

        def left() -> float:
            now_left = getter() / 1000.0
            if cap_seconds is not None:
                now_left = min(now_left, cap_seconds - (first - now_left))
            return now_left - reserve_seconds

        return cls(left)

    def remaining(self) -> float:
        """Seconds left (``math.inf`` when unbounded, never negative)."""
        if self.left is None:
            return math.inf
        return max(0.0, self.left())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def allows(self, seconds: float) -> bool:
        """Whether a wait of ``seconds`` would still end before the deadline."""
        return seconds < self.remaining()

    def within(self, seconds: float) -> Deadline:
        """This deadline or ``seconds`` from now, whichever comes first."""
        other = Deadline.after(seconds)
        if self.left is None:
            return other
        return Deadline(lambda: min(self.remaining(), other.remaining()))

    def shortened(self, seconds: float) -> Deadline:
        """This deadline ``seconds`` earlier."""
        if self.left is None:
            return self
        return Deadline(lambda: self.remaining() - seconds)


_current: ContextVar[Deadline | None] = ContextVar("calbot_deadline", default=None)
_UNBOUNDED = Deadline()


def current() -> Deadline:
    """The deadline active in this thread (unbounded when none was activated)."""
    return _current.get() or _UNBOUNDED


def carried[T, R](fn: Callable[[T], R]) -> Callable[[T], R]:
    """``fn`` for a thread pool: every call runs in a copy of the context of the thread that made this
    wrapper (its active deadline and any other context variable), as if it ran there."""
    snapshot = contextvars.copy_context()

    def run(item: T) -> R:
        return snapshot.copy().run(fn, item)

    return run


@contextlib.contextmanager
def active(deadline: Deadline | None) -> Iterator[Deadline]:
    """Make ``deadline`` the current one for the duration of the block (None keeps the current)."""
    chosen = deadline if deadline is not None else current()
    token = _current.set(chosen)
    try:
        yield chosen
    finally:
        _current.reset(token)
