"""How long the current invocation may still run, as a value the services carry.

Lambda kills an invocation at its `Timeout` (no rollback runs), and API Gateway gives up on a route
after 30 s. A handler turns its Lambda context into a `Deadline` (`Deadline.from_context`) and hands
it to its service; the service passes it on, and whoever would wait (a provider's Retry-After, a
backoff) asks it first: a wait that would end past the deadline is not started, the work ends with
what it has.

The deadline is read against `timeutil.now()`, the core's one clock, so the local stack's virtual
clock (where a Retry-After sleep moves time at once) counts against it exactly like real time.

`active(deadline)` makes a deadline the one the provider HTTP layer sees in this thread (a
`ContextVar`: every thread and every invocation has its own; nothing leaks between them). Code that
hands work to other threads passes the deadline explicitly and activates it there.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from calbot import timeutil

API_GATEWAY_LIMIT_SECONDS = 30.0  # HTTP API integration timeout: the caller gets 503 after this
# Kept free at the end of an invocation to write what was done and answer.
RESPONSE_RESERVE_SECONDS = 1.5


@dataclass(frozen=True)
class Deadline:
    """A moment work must be done by (``expires_at``), or none at all (unbounded)."""

    expires_at: datetime | None = None

    @classmethod
    def unbounded(cls) -> Deadline:
        return cls(None)

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(timeutil.now() + timedelta(seconds=max(0.0, seconds)))

    @classmethod
    def from_context(
        cls,
        context: Any,
        *,
        cap_seconds: float | None = None,
        reserve_seconds: float = RESPONSE_RESERVE_SECONDS,
    ) -> Deadline:
        """The invocation's deadline: what the Lambda context says is left (capped at
        ``cap_seconds``, e.g. the API Gateway limit), less ``reserve_seconds`` to answer in.
        A context without ``get_remaining_time_in_millis`` (a direct call) gives the cap or none."""
        getter = getattr(context, "get_remaining_time_in_millis", None)
        seconds: float | None = getter() / 1000.0 if callable(getter) else None
        if cap_seconds is not None:
            seconds = cap_seconds if seconds is None else min(seconds, cap_seconds)
        if seconds is None:
            return cls.unbounded()
        return cls.after(seconds - reserve_seconds)

    def remaining(self) -> float:
        """Seconds left (``math.inf`` when unbounded, never negative)."""
        if self.expires_at is None:
            return math.inf
        return max(0.0, (self.expires_at - timeutil.now()).total_seconds())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def allows(self, seconds: float) -> bool:
        """Whether a wait of ``seconds`` would still end before the deadline."""
        return seconds < self.remaining()

    def within(self, seconds: float) -> Deadline:
        """This deadline or ``seconds`` from now, whichever comes first."""
        other = Deadline.after(seconds)
        if self.expires_at is None or (other.expires_at is not None and other.expires_at < self.expires_at):
            return other
        return self


_current: ContextVar[Deadline | None] = ContextVar("calbot_deadline", default=None)
_UNBOUNDED = Deadline()


def current() -> Deadline:
    """The deadline active in this thread (unbounded when none was activated)."""
    return _current.get() or _UNBOUNDED


@contextlib.contextmanager
def active(deadline: Deadline | None) -> Iterator[Deadline]:
    """Make ``deadline`` the current one for the duration of the block (None keeps the current)."""
    chosen = deadline if deadline is not None else current()
    token = _current.set(chosen)
    try:
        yield chosen
    finally:
        _current.reset(token)
