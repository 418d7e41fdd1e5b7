"""Lambda's per-function concurrency, for the in-process stack.

On AWS a function runs at most so many invocations at once: its ``ReservedConcurrentExecutions``
when template.yaml sets one, else whatever is left of the account's unreserved pool (1,000 per
region by default, shared by every function). An invocation past that is throttled: Lambda refuses a
synchronous invoke with 429 ``TooManyRequestsException`` (API Gateway then answers its caller 500
``{"message":"Internal Server Error"}`` and does not retry), while asynchronous invokes (Scheduler)
and SQS event sources wait and try again.

One Python process cannot run a thousand handlers at once usefully (they share one interpreter), so
the local stand-in for the account's unreserved pool is a per-function cap of ``local_limit``
invocations (``LOCAL_LAMBDA_CONCURRENCY``, default ``DEFAULT_LOCAL_CONCURRENCY``): sized so a burst of
webhook calls neither stalls the process nor starves the sync worker. A function with reserved
concurrency gets exactly that. ``acquire(wait=False)`` is the synchronous path (refuse at once);
``acquire(wait=True)`` the event-source path (queue until a slot frees).

Reservations come out of the account's limit ("Concurrent executions", 1,000 per region by default;
new accounts may start at 10 or 50), and Lambda keeps 100 of it unreserved (all of it when the limit
is under 100): a template reserving more is refused when it is deployed, so the stack refuses it at
start (``reservation_refusal``; ``LOCAL_ACCOUNT_CONCURRENCY`` or ``--account-concurrency`` sets the
limit it checks against).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from local.invoke import InvocationError
from local.template import Template

LOCAL_CONCURRENCY_ENV = "LOCAL_LAMBDA_CONCURRENCY"
# Invocations of one function at once when the template reserves none: the local stand-in for the
# account's unreserved pool (1,000 on AWS), a few dozen being what one process runs without thrashing.
DEFAULT_LOCAL_CONCURRENCY = 32


ACCOUNT_CONCURRENCY_ENV = "LOCAL_ACCOUNT_CONCURRENCY"
# The account's "Concurrent executions" quota in the region (Service Quotas, Lambda, L-B99A9384).
DEFAULT_ACCOUNT_CONCURRENCY = 1000
# "You can reserve up to the Unreserved account concurrency value minus 100" (configuration-concurrency).
UNRESERVED_MINIMUM = 100


def account_limit_from_env() -> int:
    raw = os.environ.get(ACCOUNT_CONCURRENCY_ENV, "")
    return int(raw) if raw else DEFAULT_ACCOUNT_CONCURRENCY


class ReservationRefused(ValueError):
    """Lambda refused a ReservedConcurrentExecutions: the deployment fails (CloudFormation rolls back)."""


def reservations(template: Template) -> dict[str, int]:
    """Each function's ReservedConcurrentExecutions, for those the template reserves for."""
    return {
        fid: spec.reserved_concurrency
        for fid, spec in template.functions.items()
        if spec.reserved_concurrency is not None
    }


def reservation_refusal(reserved: dict[str, int], account_limit: int) -> str | None:
    """Lambda's refusal when these reservations (every function's in the account and region, from all
    its stacks) leave the unreserved pool under its minimum: 100, or the whole limit below 100."""
    minimum = min(UNRESERVED_MINIMUM, account_limit)
    total = sum(reserved.values())
    if account_limit - total >= minimum:
        return None
    return (
        "Specified ReservedConcurrentExecutions for function decreases account's "
        f"UnreservedConcurrentExecution below its minimum value of [{minimum}]. ({total} reserved "
        f"({', '.join(f'{fn} {n}' for fn, n in sorted(reserved.items()))}) of an account limit of "
        f"{account_limit}: raise the Lambda quota 'Concurrent executions' (L-B99A9384) to at least "
        f"{total + UNRESERVED_MINIMUM}, or reserve less)"
    )


def local_limit_from_env() -> int:
    raw = os.environ.get(LOCAL_CONCURRENCY_ENV, "")
    if not raw:
        return DEFAULT_LOCAL_CONCURRENCY
    value = int(raw)
    if value < 1:
        raise ValueError(f"{LOCAL_CONCURRENCY_ENV} must be at least 1, got {raw!r}")
    return value


class Throttled(InvocationError):
    """Lambda refused the invocation: the function already runs as many as its concurrency allows."""

    def __init__(self, logical_id: str, limit: int, reserved: bool) -> None:
        reason = (
            "ReservedFunctionConcurrentInvocationLimitExceeded"
            if reserved
            else "ConcurrentInvocationLimitExceeded"
        )
        super().__init__(
            {
                "errorType": "TooManyRequestsException",
                "errorMessage": f"Rate Exceeded. {logical_id} already runs {limit} invocation(s) at once",
                "Reason": reason,
            }
        )
        self.logical_id = logical_id
        self.limit = limit


class FunctionConcurrency:
    """Per-function slots: at most ``limit(fn)`` invocations of ``fn`` hold one at once. Thread-safe."""

    def __init__(
        self, template: Template, local_limit: int | None = None, *, account_limit: int | None = None
    ) -> None:
        self.local_limit = local_limit if local_limit is not None else local_limit_from_env()
        if self.local_limit < 1:
            raise ValueError(f"the local concurrency limit must be at least 1, got {self.local_limit}")
        self._reserved = reservations(template)
        self.account_limit = account_limit if account_limit is not None else account_limit_from_env()
        refusal = reservation_refusal(self._reserved, self.account_limit)
        if refusal:
            raise ReservationRefused(refusal)
        self._changed = threading.Condition()
        self._running: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._throttles: dict[str, int] = {}
        self._waits: dict[str, int] = {}
        self._held: dict[str, int] = {}  # slots taken by hold() (tests: a function kept busy)

    def limit(self, logical_id: str) -> int:
        return self._reserved.get(logical_id, self.local_limit)

    def acquire(self, logical_id: str, *, wait: bool) -> int:
        """Take one of the function's slots; returns how many times the caller waited for one.

        ``wait=False`` (a synchronous invoke): raise ``Throttled`` when none is free. ``wait=True`` (an
        event source): block until one frees; a function reserved at 0 is throttled all the same.
        """
        limit = self.limit(logical_id)
        waited = 0
        with self._changed:
            while self._running.get(logical_id, 0) >= limit:
                if not wait or limit == 0:
                    self._throttles[logical_id] = self._throttles.get(logical_id, 0) + 1
                    raise Throttled(logical_id, limit, logical_id in self._reserved)
                if not waited:
                    self._waits[logical_id] = self._waits.get(logical_id, 0) + 1
                waited += 1
                self._changed.wait()
            running = self._running.get(logical_id, 0) + 1
            self._running[logical_id] = running
            self._peak[logical_id] = max(self._peak.get(logical_id, 0), running)
        return waited

    def release(self, logical_id: str) -> None:
        with self._changed:
            running = self._running.get(logical_id, 0)
            if running <= 0:
                raise RuntimeError(f"{logical_id}: released a concurrency slot it did not hold")
            self._running[logical_id] = running - 1
            self._changed.notify_all()

    def hold(self, logical_id: str, slots: int | None = None) -> int:
        """Occupy up to ``slots`` free slots of the function (all free ones by default), as if that
        many invocations were running, until ``unhold``; returns how many it took. For tests: a
        function kept at its limit, without a handler to block."""
        with self._changed:
            free = max(0, self.limit(logical_id) - self._running.get(logical_id, 0))
            taken = free if slots is None else min(free, max(0, slots))
            self._running[logical_id] = self._running.get(logical_id, 0) + taken
            self._held[logical_id] = self._held.get(logical_id, 0) + taken
            return taken

    def unhold(self, logical_id: str) -> int:
        """Give back the slots ``hold`` took; returns how many."""
        with self._changed:
            taken = self._held.pop(logical_id, 0)
            self._running[logical_id] = self._running.get(logical_id, 0) - taken
            self._changed.notify_all()
            return taken

    def throttles(self, logical_id: str) -> int:
        with self._changed:
            return self._throttles.get(logical_id, 0)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per function invoked so far: its limit, invocations running now, the most at once, the
        synchronous invokes refused (throttles) and the event-source invokes that queued (waits)."""
        with self._changed:
            names = set(self._peak) | set(self._throttles) | set(self._held)
            return {
                fn: {
                    "limit": self.limit(fn),
                    "reserved": fn in self._reserved,
                    "running": self._running.get(fn, 0),
                    "peak": self._peak.get(fn, 0),
                    "throttles": self._throttles.get(fn, 0),
                    "waits": self._waits.get(fn, 0),
                    "held": self._held.get(fn, 0),
                }
                for fn in sorted(names)
            }

    def reset_stats(self) -> None:
        """Forget peaks, throttles and waits (not the invocations running now)."""
        with self._changed:
            self._peak = {fn: n for fn, n in self._running.items() if n}
            self._throttles.clear()
            self._waits.clear()
