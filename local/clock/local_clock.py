"""``LocalClock``: the stack's clock, composing its jobs and running their work in due order.

It builds the time source and the four jobs from template.yaml, hands each the shared pieces (the
time, the invoker, the log) and runs what they have due: ``advance``/``fire_due``/``drain``
synchronously (returning once every handler they started has finished), or in the background
(``start``: every 0.5 s; in real mode due work goes to a thread pool, one schedule never twice at
once and one batch per queue consumer at a time; in virtual mode it calls ``fire_due``).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TextIO

from local.clock.common import (
    ClockLog,
    Due,
    FireReport,
    ScheduleInfo,
    Shared,
    gateway_invoker,
    iso_z,
    parse_time,
)
from local.clock.cron import CronJob, CronJobs
from local.clock.retries import AsyncRetries
from local.clock.schedules import PRECISION_SECONDS, ChangeFeed, OneTimeSchedules
from local.clock.sqs import SqsConsumer, SqsDelivery
from local.clock.timesource import TimeSource
from local.grants import grants
from local.template import Template

TICK_SECONDS = 0.5
MAX_ITEMS_PER_SETTLE = 100_000  # a bound on one advance, against a handler that fails forever


@dataclass(order=True)
class _Item:
    due: datetime
    seq: int  # the order the jobs listed it in: schedules, cron jobs, retries, redeliveries
    work: Due = field(compare=False)

    @property
    def key(self) -> Any:
        return self.work.key


class LocalClock:
    """See the package docstring. Thread-safe; one per stack (it installs itself in calbot.timeutil)."""

    def __init__(
        self,
        template: Template,
        gateway: Any,
        session: Any,
        *,
        virtual: bool,
        target_errors: str = "lambda",
        tick_seconds: float = TICK_SECONDS,
        workers: int = 32,
        log: TextIO | None = None,
        install: bool = True,
        schedule_precision_seconds: float = PRECISION_SECONDS,
        scheduler_changes: ChangeFeed | None = None,
    ) -> None:
        self.template = template
        self.gateway = gateway
        self.tick_seconds = tick_seconds
        self.log = ClockLog(log)
        self.timesource = TimeSource(virtual=virtual, log=self.log)
        # What every job shares, handed to each explicitly.
        shared = Shared(
            template, grants(template), self.timesource.now, gateway_invoker(gateway, self.log), self.log
        )
        sqs = session.client("sqs")
        self.retries = AsyncRetries(shared, sqs)
        self.one_time = OneTimeSchedules(
            shared,
            session.client("scheduler"),
            self.retries,
            target_errors=target_errors,
            precision_seconds=schedule_precision_seconds,
            changes=scheduler_changes,
        )
        self.cron = CronJobs(shared, self.retries, start=self.timesource.now())
        self.sqs = SqsDelivery(shared, sqs)
        # _sync: one advance/fire_due/drain at a time; _state guards the bookkeeping below.
        self._sync = threading.RLock()
        self._state = threading.RLock()
        self._in_flight: set[Any] = set()
        self._busy = 0
        self._idle = threading.Condition(self._state)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._workers = workers
        if gateway is not None and hasattr(gateway, "use_clock"):
            # Lambda Timeouts count this clock's advances (and each invocation its own virtual sleeps).
            gateway.use_clock(self)
        if install:
            self.install()

    # -- the jobs' state, as the clock has always shown it ---------------------------------------------

    @property
    def virtual(self) -> bool:
        return self.timesource.virtual

    @property
    def target_errors(self) -> str:
        return self.one_time.target_errors

    @property
    def groups(self) -> list[str]:
        return self.one_time.groups

    @property
    def crons(self) -> list[CronJob]:
        return self.cron.jobs

    @property
    def consumers(self) -> list[SqsConsumer]:
        return self.sqs.consumers

    # -- time ------------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.timesource.now()

    @property
    def offset_seconds(self) -> float:
        return self.timesource.offset_seconds

    def sleep(self, seconds: float) -> None:
        """Virtual: move the clock on by `seconds` at once. Real: sleep."""
        self.timesource.sleep(seconds)

    def advanced_seconds(self) -> float:
        """How far the clock has jumped by advances (not by virtual sleeps)."""
        return self.timesource.advanced_seconds()

    def on_move(self, listener: Callable[[float], object]) -> None:
        """Call `listener(seconds)` whenever the clock jumps forward (advance, virtual sleep)."""
        self.timesource.on_move(listener)

    def install(self) -> None:
        """Become calbot.timeutil's time source (the previous one comes back on ``close``)."""
        self.timesource.install()

    def uninstall(self) -> None:
        self.timesource.uninstall()

    # -- public operations -----------------------------------------------------------------------------

    def advance(self, to: datetime | str | None = None, seconds: float | None = None) -> FireReport:
        """Move the clock forward to `to` (or by `seconds`) and fire, in due order, everything due
        on the way; returns once all of it ran. Retries of work fired on the way are settled too, each
        after its backoff, so the clock may end past `to`. A target in the past raises ValueError."""
        if (to is None) == (seconds is None):
            raise ValueError("give exactly one of `to` and `seconds`")
        with self._exclusive():
            now = self.now()
            if seconds is not None:
                if float(seconds) < 0:
                    raise ValueError("seconds must be >= 0")
                target = now + timedelta(seconds=float(seconds))
            else:
                assert to is not None
                target = parse_time(to)
                # A second of slack: real time runs on between computing `to` and calling this.
                if target < now - timedelta(seconds=1):
                    raise ValueError(
                        f"cannot move the clock backwards (now {iso_z(now)}, asked {iso_z(target)})"
                    )
            return self._settle(target, settle_retries=True)

    def fire_due(self) -> FireReport:
        """Fire everything due at the current time (and deliver queued messages); synchronous."""
        with self._exclusive():
            return self._settle(self.now(), settle_retries=False)

    def drain(self, max_rounds: int = 100) -> int:
        """Deliver queue messages until the queues are empty or only failing (invisible) messages
        remain, at most `max_rounds` batches per consumer; returns how many were handed to handlers."""
        with self._exclusive():
            self.sqs.redeliver_due()
            return self.sqs.drain(self._report(), max_rounds)

    def run_cron(self, job_id: str) -> dict[str, Any]:
        """Run one cron job now (on demand: a direct invoke, no retries). `job_id` is the function's
        logical id (when it has one schedule event) or "<LogicalId>.<EventName>"."""
        return self.cron.run(job_id)

    def cron_job(self, job_id: str) -> CronJob:
        return self.cron.job(job_id)

    def cron_list(self) -> list[dict[str, Any]]:
        return self.cron.listing()

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the template's schedule groups, soonest first."""
        return self.one_time.sorted()

    def queue_messages(self, logical_id: str) -> list[dict[str, Any]]:
        """The messages in a template queue right now, in flight or not, without receiving them."""
        return self.sqs.queue_messages(logical_id)

    # -- background loop -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the background loop (due schedules, cron jobs, queue consumers) is on."""
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        if not self.virtual:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="clock-work")
        self._thread = threading.Thread(target=self._loop, name="local-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self.stop()
        self.uninstall()

    def _loop(self) -> None:
        while not self._stopping.wait(self.tick_seconds):
            try:
                self.tick()
            except Exception as exc:  # the loop must survive anything
                self.log(f"[clock] tick failed: {''.join(traceback.format_exception(exc))}")

    def tick(self) -> None:
        """One pass of the background loop."""
        if not self._sync.acquire(blocking=False):  # an advance in progress does the work itself
            return
        try:
            if self.virtual:
                self._settle(self.now(), settle_retries=False)
                return
            for item in self._collect(self.now(), settle_retries=False):
                self._submit(item.key, partial(self._run_alone, item.work))
            for consumer in self.consumers:
                for poller in range(consumer.pollers if consumer.enabled else 0):
                    # several batches of a queue at once, as Lambda's pollers (a burst is not served
                    # one batch at a time)
                    self._submit(("sqs", consumer.id, poller), partial(self.sqs.consume, consumer))
        finally:
            self._sync.release()

    def _run_alone(self, work: Due) -> None:
        work.run(self._report())

    def _submit(self, key: Any, fn: Callable[[], None]) -> None:
        with self._state:
            if key in self._in_flight or self._pool is None:
                return
            self._in_flight.add(key)
            self._busy += 1

        def release() -> None:
            with self._state:
                self._in_flight.discard(key)
                self._busy -= 1
                self._idle.notify_all()

        def run() -> None:
            try:
                fn()
            except Exception as exc:
                self.log(f"[clock] {key} failed: {''.join(traceback.format_exception(exc))}")
            finally:
                release()

        try:
            future = self._pool.submit(run)
        except RuntimeError:  # shutting down
            release()
            return
        # Work still queued when stop() shuts the pool down is cancelled and never runs: its key is let
        # go too, else a stopped and restarted clock would never run that consumer or job again.
        future.add_done_callback(lambda done: release() if done.cancelled() else None)

    @contextmanager
    def _exclusive(self, timeout: float = 120.0) -> Iterator[None]:
        """One synchronous operation at a time, after the work the background pool already started
        has finished, so that it sees that work done."""
        with self._sync:
            deadline = time.monotonic() + timeout
            with self._state:
                while self._busy and time.monotonic() < deadline:
                    self._idle.wait(0.1)
            yield

    # -- the synchronous engine ------------------------------------------------------------------------

    def _report(self) -> FireReport:
        return FireReport(started=iso_z(self.now()))

    def _settle(self, target: datetime, *, settle_retries: bool) -> FireReport:
        report = self._report()
        self.sqs.drain(report)
        budget = MAX_ITEMS_PER_SETTLE
        while budget > 0:
            horizon = max(target, self.now())
            items = self._collect(horizon, settle_retries=settle_retries)
            if not items:
                break
            # Scheduler's precision is a minute: run the next minute's work, then look again, so work
            # created by handlers on the way is fired in order too.
            window_end = items[0].due + timedelta(seconds=60)
            for item in items:
                if item.due > window_end:
                    break
                budget -= 1
                self.timesource.jump_to(item.due)
                with self._state:
                    if item.key in self._in_flight:
                        continue
                    self._in_flight.add(item.key)
                try:
                    item.work.run(report)
                finally:
                    with self._state:
                        self._in_flight.discard(item.key)
                self.sqs.drain(report)
        else:
            self.log(f"[clock] stopped after {MAX_ITEMS_PER_SETTLE} firings in one go (runaway retries?)")
        self.timesource.jump_to(target)
        self.sqs.drain(report)
        report.now = iso_z(self.now())
        return report

    def _collect(self, horizon: datetime, *, settle_retries: bool) -> list[_Item]:
        """Everything due by `horizon` that is not running (all pending retries when settling)."""
        due = [
            *self.one_time.due(horizon),
            *self.cron.due(horizon),
            *self.retries.due(horizon, all_pending=settle_retries),
            *self.sqs.due(horizon),
        ]
        with self._state:
            return sorted(
                _Item(work.due, seq, work) for seq, work in enumerate(due) if work.key not in self._in_flight
            )
