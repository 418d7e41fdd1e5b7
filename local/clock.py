"""The local stand-in for AWS's time-driven machinery, over moto and the gateway's in-process handlers.

moto stores EventBridge Scheduler schedules but never fires them, and has no EventBridge rules or
Lambda event source mappings. ``LocalClock`` does their work, reading everything from template.yaml:

* **One-time schedules** in the template's ``AWS::Scheduler::ScheduleGroup``s: an ``at(...)``
  schedule (in its ``ScheduleExpressionTimezone``) fires once its time has come; the target ARN is
  resolved to a function of the template and its ``Input`` (JSON) is the event, as Scheduler
  delivers it. ``DISABLED`` schedules never fire; a schedule updated before it fires fires at its new
  time only; ``ActionAfterCompletion: DELETE`` is applied (moto ignores it). A flexible time window
  fires at its start.
* **Failures**, as AWS splits them. Scheduler invokes Lambda *asynchronously*, so with the default
  ``target_errors="lambda"`` a handler exception is a *function* error: Lambda retries it twice (after
  1 and 2 minutes, or per the function's ``EventInvokeConfig``) and then sends it to the function's
  ``EventInvokeConfig`` OnFailure SQS destination / ``DeadLetterQueue`` if it has one, else drops it;
  the schedule's own ``RetryPolicy`` and ``DeadLetterConfig`` apply to *delivery* failures (here: a
  target ARN that is no function of the template), retried every 60 s of clock time and then sent to
  the DLQ with Scheduler's ``ERROR_CODE``/``ERROR_MESSAGE``/... attributes. ``target_errors=
  "scheduler"`` treats handler exceptions as delivery failures instead (simpler, not what AWS does).
* **Cron jobs**: functions' ``Schedule`` / ``ScheduleV2`` events (``cron(...)``, ``rate(...)``,
  ``at(...)``) fire whenever the clock crosses one of their times, with EventBridge's scheduled-event
  envelope (the shape ``local.gen_events`` gives the sample events) or the event's ``Input``;
  ``run_cron`` runs one now.
* **SQS event source mappings**: functions' ``SQS`` events get batches (``BatchSize``) of their
  queue's messages like Lambda delivers them; successes are deleted, failures
  (``ReportBatchItemFailures`` or an exception) come back after the queue's visibility timeout in
  clock time. FIFO order within a message group is kept (moto never hands out a group that has
  messages in flight; a failure leaves the rest of its group in the batch undeleted).
* **Permissions** (``local.grants``, over the template as SAM's transform emits it): a schedule's
  target is invoked only if its ``RoleArn`` is a role of the template that trusts
  ``scheduler.amazonaws.com`` and allows ``lambda:InvokeFunction`` on the target, else it is a
  delivery failure (``AccessDeniedException``: retries, then the DLQ, which the role must be allowed
  to ``sqs:SendMessage`` to, else the event is dropped); a cron event's generated schedule role (or
  rule permission) likewise; a queue consumer whose execution role lacks ``sqs:ReceiveMessage``,
  ``sqs:DeleteMessage`` or ``sqs:GetQueueAttributes`` on its queue is never fed (Lambda refuses to
  create such a mapping) and the clock logs why.

Time: ``now()`` is real UTC time plus an offset that only grows. The clock installs itself as
``calbot.timeutil``'s time source. ``virtual=True``: ``sleep`` advances the offset instead of
sleeping, and time jumps only with ``advance`` (and those sleeps) on top of real time. ``advance``
and ``fire_due`` are synchronous: they return once every handler they started has finished.
``start()`` runs a background loop (every 0.5 s): in real mode it hands due work to a thread pool
(one schedule never twice at once, one batch per queue consumer at a time); in virtual mode it calls
``fire_due()``.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from botocore.exceptions import ClientError

from local.gen_events import schedule_event
from local.grants import grants
from local.invoke import InvocationError, error_payload, record_virtual_sleep
from local.template import EventSource, Template

TICK_SECONDS = 0.5
SCHEDULER_RETRY_BACKOFF = 60.0  # seconds between Scheduler delivery retries (clock time)
LAMBDA_ASYNC_BACKOFFS = (60.0, 120.0)  # Lambda async retries: 1 min, then 2 min
LAMBDA_ASYNC_MAX_RETRIES = 2
LAMBDA_ASYNC_MAX_AGE = 6 * 3600
DEFAULT_VISIBILITY_TIMEOUT = 30
MAX_ITEMS_PER_SETTLE = 100_000  # a bound on one advance, against a handler that fails forever
ESM_KEEP_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str | datetime) -> datetime:
    """An aware UTC datetime from an ISO 8601 string or a datetime (naive means UTC)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --------------------------------------------------------------------------------------------------
# Schedule expressions: AWS cron, rate and at


class ScheduleExpressionError(ValueError):
    """A schedule expression AWS would reject (or that is not supported here)."""


_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {n: i for i, n in enumerate(_MONTH_NAMES, 1)}
_WEEKDAYS = {n: i for i, n in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)}  # 1 = Sunday


def _aws_weekday(day: date) -> int:
    return (day.weekday() + 1) % 7 + 1  # Python: Monday = 0; AWS: Sunday = 1 ... Saturday = 7


def _last_day(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def _value(text: str, names: dict[str, int] | None, lo: int, hi: int, field_name: str) -> int:
    key = text.strip().upper()
    if names and key in names:
        number = names[key]
    elif key.isdigit():
        number = int(key)
    else:
        raise ScheduleExpressionError(f"{field_name}: {text!r} is not a value")
    if not lo <= number <= hi:
        raise ScheduleExpressionError(f"{field_name}: {number} is outside {lo}-{hi}")
    return number


def _values(text: str, lo: int, hi: int, field_name: str, names: dict[str, int] | None = None) -> set[int]:
    """Numbers, `*`, lists `a,b`, ranges `a-b` (wrapping when a > b), steps `*/n`, `a/n`, `a-b/n`."""
    out: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.strip().partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ScheduleExpressionError(f"{field_name}: bad step in {part!r}")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, names, lo, hi, field_name), _value(last, names, lo, hi, field_name)
        else:
            start = _value(base, names, lo, hi, field_name)
            end = hi if slash else start  # `a/n` runs from a to the end of the field
        span = list(range(start, end + 1)) if start <= end else [*range(start, hi + 1), *range(lo, end + 1)]
        out.update(span[::step])
    return out


class Cron:
    """An AWS cron expression: ``minutes hours day-of-month month day-of-week year``.

    Supports numbers, ``*``, ``?``, lists, ranges, steps, month and weekday names, ``L`` (last day of
    the month; ``nL`` in day-of-week: the last weekday n of the month), ``W`` (``nW``, ``LW``) and
    ``#`` (``n#k``: the k-th weekday n). Exactly one of day-of-month and day-of-week must be ``?``.
    """

    def __init__(self, fields: str) -> None:
        parts = fields.split()
        if len(parts) != 6:
            raise ScheduleExpressionError(f"cron needs 6 fields, got {len(parts)}: {fields!r}")
        minute, hour, dom, month, dow, year = parts
        self.text = fields
        self.minutes = sorted(_values(minute, 0, 59, "minutes"))
        self.hours = sorted(_values(hour, 0, 23, "hours"))
        self.months = _values(month, 1, 12, "month", _MONTHS)
        self.years = None if year == "*" else _values(year, 1970, 2199, "year")
        if (dom == "?") == (dow == "?"):
            raise ScheduleExpressionError("exactly one of day-of-month and day-of-week must be '?'")
        self._day = self._dom_matcher(dom) if dow == "?" else self._dow_matcher(dow)

    @staticmethod
    def _dom_matcher(text: str) -> Callable[[date], bool]:
        spec = text.upper()
        if spec == "L":
            return lambda d: d.day == _last_day(d.year, d.month)
        if spec.endswith("W"):
            anchor = spec[:-1]

            def nearest_weekday(d: date) -> bool:
                last = _last_day(d.year, d.month)
                target = last if anchor == "L" else _value(anchor, None, 1, 31, "day-of-month")
                if target > last:
                    return False
                wanted = date(d.year, d.month, target)
                if wanted.weekday() == 5:  # Saturday -> Friday, unless that leaves the month
                    wanted = wanted - timedelta(days=1) if target > 1 else wanted + timedelta(days=2)
                elif wanted.weekday() == 6:  # Sunday -> Monday, unless that leaves the month
                    wanted = wanted + timedelta(days=1) if target < last else wanted - timedelta(days=2)
                return d == wanted

            return nearest_weekday
        days = _values(text, 1, 31, "day-of-month")
        return lambda d: d.day in days

    @staticmethod
    def _dow_matcher(text: str) -> Callable[[date], bool]:
        spec = text.upper()
        if spec == "L":
            return lambda d: _aws_weekday(d) == 7
        if spec.endswith("L"):
            weekday = _value(spec[:-1], _WEEKDAYS, 1, 7, "day-of-week")
            return lambda d: _aws_weekday(d) == weekday and d.day + 7 > _last_day(d.year, d.month)
        if "#" in spec:
            day_text, _, nth_text = spec.partition("#")
            weekday = _value(day_text, _WEEKDAYS, 1, 7, "day-of-week")
            nth = _value(nth_text, None, 1, 5, "day-of-week #")
            return lambda d: _aws_weekday(d) == weekday and (d.day - 1) // 7 + 1 == nth
        days = _values(text, 1, 7, "day-of-week", _WEEKDAYS)
        return lambda d: _aws_weekday(d) in days

    def matches_day(self, day: date) -> bool:
        return (self.years is None or day.year in self.years) and day.month in self.months and self._day(day)

    def matches(self, wall: datetime) -> bool:
        """Whether the wall-clock time (in the expression's zone) is one of its times."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.matches_day(wall.date())

    def times(self, after: datetime, until: datetime, tz: ZoneInfo) -> Iterator[datetime]:
        """Its times t (aware UTC, ascending) with after < t <= until, evaluated in zone `tz`."""
        day, last = after.astimezone(tz).date(), until.astimezone(tz).date()
        while day <= last:
            if self.years is not None and day.year > max(self.years):
                return
            if self.matches_day(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).astimezone(
                            UTC
                        )
                        if after < moment <= until:
                            yield moment
            day += timedelta(days=1)


@dataclass(frozen=True)
class ScheduleExpression:
    """``cron(...)``, ``rate(n unit)`` or ``at(yyyy-mm-ddThh:mm:ss)`` in a time zone."""

    text: str
    timezone: str = "UTC"
    anchor: datetime | None = None  # where rate() counts from (AWS: the rule's creation)

    def __post_init__(self) -> None:
        self.kind  # noqa: B018 - parse now so a bad expression fails at construction

    @property
    def kind(self) -> str:
        match = re.fullmatch(r"\s*(cron|rate|at)\((.*)\)\s*", self.text)
        if not match:
            raise ScheduleExpressionError(f"not a schedule expression: {self.text!r}")
        kind, inner = match.groups()
        if kind == "cron":
            Cron(inner)
        elif kind == "rate":
            self._period(inner)
        else:
            self._at(inner)
        return kind

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone or "UTC")
        except Exception as exc:
            raise ScheduleExpressionError(f"unknown time zone {self.timezone!r}") from exc

    @property
    def inner(self) -> str:
        return self.text.strip()[self.text.strip().index("(") + 1 : -1]

    @staticmethod
    def _period(inner: str) -> timedelta:
        match = re.fullmatch(r"\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*", inner)
        if not match or int(match.group(1)) < 1:
            raise ScheduleExpressionError(f"rate({inner}): expected 'n minute(s)|hour(s)|day(s)'")
        unit = match.group(2).rstrip("s")
        return timedelta(**{f"{unit}s": int(match.group(1))})

    def _at(self, inner: str) -> datetime:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", inner.strip()):
            raise ScheduleExpressionError(f"at({inner}): expected yyyy-mm-ddThh:mm:ss")
        return datetime.fromisoformat(inner.strip()).replace(tzinfo=self.zone).astimezone(UTC)

    @property
    def at(self) -> datetime | None:
        """The UTC moment of an ``at(...)`` expression, else None."""
        return self._at(self.inner) if self.kind == "at" else None

    def times(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Its times t (aware UTC, ascending) with after < t <= until."""
        kind = self.kind
        if kind == "at":
            moment = self._at(self.inner)
            if after < moment <= until:
                yield moment
        elif kind == "rate":
            period, anchor = self._period(self.inner), self.anchor or after
            count = max(0, int((after - anchor) / period))
            moment = anchor + period * count
            while moment <= until:
                if moment > after:
                    yield moment
                moment += period
        else:
            yield from Cron(self.inner).times(after, until, self.zone)

    def next_after(self, moment: datetime, horizon_days: int = 366 * 5) -> datetime | None:
        return next(self.times(moment, moment + timedelta(days=horizon_days)), None)


# --------------------------------------------------------------------------------------------------
# What the clock knows and reports


@dataclass
class ScheduleInfo:
    """One schedule of a template group, as get_schedule describes it."""

    group: str
    name: str
    arn: str
    expression: str
    timezone: str
    at: datetime | None  # UTC; None for cron/rate schedules (not fired locally) or bad expressions
    state: str
    target_arn: str
    target_function: str | None
    input_text: str | None
    action_after_completion: str
    flexible_time_window: dict[str, Any]
    retry_policy: dict[str, Any]
    dead_letter_arn: str | None
    modified: str  # LastModificationDate, to notice updates
    role_arn: str | None = None  # the role Scheduler assumes to invoke the target
    cron: tuple[str, str] | None = None  # (function, event) when this is a cron event's schedule

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.name)

    @property
    def input(self) -> Any:
        if self.input_text is None:
            return None
        try:
            return json.loads(self.input_text)
        except json.JSONDecodeError:
            return self.input_text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "at": iso_z(self.at) if self.at else None,
            "expression": self.expression,
            "timezone": self.timezone,
            "target_function": self.target_function,
            "target_arn": self.target_arn,
            "input": self.input,
            "state": self.state,
            "action_after_completion": self.action_after_completion,
            "flexible_time_window": self.flexible_time_window,
            "retry_policy": self.retry_policy,
            "dead_letter_arn": self.dead_letter_arn,
        }


@dataclass
class CronJob:
    """A function's Schedule/ScheduleV2 event source."""

    id: str  # "<FunctionLogicalId>.<EventName>"
    function: str
    source: EventSource
    expression: ScheduleExpression
    enabled: bool
    start: datetime | None
    end: datetime | None
    cursor: datetime  # every time up to here has been fired (or predates the clock)

    def to_dict(self, now: datetime) -> dict[str, Any]:
        upcoming = self.expression.next_after(max(self.cursor, now))
        return {
            "id": self.id,
            "function": self.function,
            "event": self.source.name,
            "type": self.source.type,
            "expression": self.expression.text,
            "timezone": self.expression.timezone,
            "enabled": self.enabled,
            "next": iso_z(upcoming) if upcoming and self.enabled else None,
        }


@dataclass
class SqsConsumer:
    """A function's SQS event source mapping."""

    id: str  # "<FunctionLogicalId>.<EventName>"
    function: str
    queue_name: str
    queue_logical_id: str | None
    batch_size: int
    report_failures: bool
    enabled: bool
    url: str | None = None
    arn: str | None = None
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT
    refused: str | None = None  # why Lambda would not create this mapping (the role lacks rights)

    @property
    def fifo(self) -> bool:
        return self.queue_name.endswith(".fifo")


@dataclass
class Fired:
    """One invocation the clock made (or one it skipped with a reason)."""

    kind: str  # "schedule" | "cron" | "sqs"
    id: str  # schedule "<group>/<name>", cron job id, consumer id
    function: str | None
    fired_at: str
    due: str | None = None
    attempt: int = 1
    ok: bool = True
    result: Any = None
    error: dict[str, Any] | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "function": self.function,
            "due": self.due,
            "fired_at": self.fired_at,
            "attempt": self.attempt,
            "ok": self.ok,
            "result": self.result,
            "error": self.error,
            **self.detail,
        }


@dataclass
class FireReport:
    """What an advance / fire_due / drain did, in order. ``to_dict()`` is JSON-serialisable."""

    started: str
    now: str = ""
    fired: list[Fired] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def schedules(self) -> list[str]:
        """Names of the schedules fired (first attempts), in order."""
        return [f.id.split("/", 1)[1] for f in self.fired if f.kind == "schedule" and f.attempt == 1]

    @property
    def crons(self) -> list[str]:
        return [f.id for f in self.fired if f.kind == "cron" and f.attempt == 1]

    @property
    def batches(self) -> list[Fired]:
        return [f for f in self.fired if f.kind == "sqs"]

    @property
    def errors(self) -> list[Fired]:
        return [f for f in self.fired if not f.ok]

    @property
    def delivered(self) -> int:
        return sum(len(f.detail.get("messages", [])) for f in self.batches)

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "now": self.now,
            "schedules": self.schedules,
            "crons": self.crons,
            "delivered": self.delivered,
            "errors": [
                {"kind": f.kind, "id": f.id, "function": f.function, "attempt": f.attempt, "error": f.error}
                for f in self.errors
            ],
            "dead_letters": self.dead_letters,
            "fired": [f.to_dict() for f in self.fired],
        }


@dataclass
class _Retry:
    """A failed invocation waiting for its next attempt."""

    id: int
    due: datetime
    mode: str  # "lambda" (async invoke retry) | "scheduler" (delivery retry)
    kind: str  # origin: "schedule" | "cron"
    origin: str  # schedule "<group>/<name>" or cron job id
    function: str | None
    event: Any
    attempts: int  # made so far
    first_at: datetime
    max_retries: int
    max_age: float
    schedule: ScheduleInfo | None = None
    last_error: dict[str, Any] | None = None


@dataclass(order=True)
class _Item:
    due: datetime
    seq: int
    kind: str = field(compare=False)  # "schedule" | "cron" | "retry" | "redelivery"
    key: Any = field(compare=False)
    payload: Any = field(compare=False, default=None)


# --------------------------------------------------------------------------------------------------
# The clock


class LocalClock:
    """See the module docstring. Thread-safe; one per stack (it installs itself in calbot.timeutil)."""

    def __init__(
        self,
        template: Template,
        gateway: Any,
        session: Any,
        *,
        virtual: bool,
        target_errors: str = "lambda",
        tick_seconds: float = TICK_SECONDS,
        workers: int = 16,
        log: TextIO | None = None,
        install: bool = True,
    ) -> None:
        if target_errors not in ("lambda", "scheduler"):
            raise ValueError("target_errors must be 'lambda' or 'scheduler'")
        self.template = template
        self.gateway = gateway
        self.virtual = virtual
        self.target_errors = target_errors
        self.tick_seconds = tick_seconds
        self._log_stream = log
        self._scheduler = session.client("scheduler")
        self._sqs = session.client("sqs")
        self._offset = timedelta(0)
        self._offset_lock = threading.Lock()
        self._listeners: list[Callable[[float], object]] = []
        # _sync: one advance/fire_due/drain at a time; _state guards the bookkeeping below.
        self._sync = threading.RLock()
        self._state = threading.RLock()
        self._seq = itertools.count()
        self._schedule_cache: dict[tuple[str, str], ScheduleInfo] = {}
        self._completed: dict[tuple[str, str], str] = {}  # fired and kept (no DELETE): modified stamp
        self._in_flight: set[Any] = set()
        self._retrying: set[tuple[str, str]] = set()  # schedules whose delivery is being retried
        self._retries: dict[int, _Retry] = {}
        self._redeliveries: dict[str, list[tuple[datetime, list[str]]]] = {}
        self._warned: set[Any] = set()
        self._busy = 0
        self._idle = threading.Condition(self._state)
        self._arn_cache: dict[str, str | None] = {}
        self._functions_by_name = {fn.function_name: lid for lid, fn in template.functions.items()}
        self._grants = grants(template)
        self.groups = [
            str(template.ref(lid)) for lid in template.resources_of_type("AWS::Scheduler::ScheduleGroup")
        ]
        start = self.now()
        self.crons = self._read_crons(start)
        self.consumers = self._read_consumers()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._workers = workers
        self._previous_clock: tuple[Any, Any] | None = None
        self._advanced_total = 0.0  # seconds the clock jumped other than by virtual sleeps
        if gateway is not None and hasattr(gateway, "use_clock"):
            # Lambda Timeouts count this clock's advances (and each invocation its own virtual sleeps).
            gateway.use_clock(self)
        if install:
            self.install()

    # -- time ----------------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    @property
    def offset_seconds(self) -> float:
        return self._offset.total_seconds()

    def sleep(self, seconds: float) -> None:
        """Virtual: move the clock on by `seconds` at once. Real: sleep."""
        if seconds <= 0:
            return
        if self.virtual:
            delta = timedelta(seconds=seconds)
            with self._offset_lock:
                self._offset += delta
            record_virtual_sleep(seconds)  # time passed for the invocation that slept, and for the world
            self._moved(delta)
        else:
            time.sleep(seconds)

    def _jump_to(self, moment: datetime) -> None:
        with self._offset_lock:
            delta = moment - (datetime.now(UTC) + self._offset)
            if delta <= timedelta(0):
                return  # never backwards
            self._offset += delta
            self._advanced_total += delta.total_seconds()
        self._moved(delta)

    def advanced_seconds(self) -> float:
        """How far the clock has jumped by advances (not by virtual sleeps): time that passed for every
        invocation running meanwhile."""
        return self._advanced_total

    def _moved(self, delta: timedelta) -> None:
        for listener in list(self._listeners):
            try:
                listener(delta.total_seconds())
            except Exception as exc:
                self._log(f"[clock] a clock listener failed: {exc!r}")

    def on_move(self, listener: Callable[[float], object]) -> None:
        """Call `listener(seconds)` whenever the clock jumps forward (advance, virtual sleep), so other
        clocks of the stack (the Graph emulator's) can move with it."""
        self._listeners.append(listener)

    def install(self) -> None:
        """Become calbot.timeutil's time source (the previous one comes back on ``close``)."""
        from calbot import timeutil

        self._previous_clock = (getattr(timeutil, "_clock", None), getattr(timeutil, "_sleeper", None))
        timeutil.set_clock(self.now, self.sleep)

    def uninstall(self) -> None:
        if self._previous_clock is None:
            return
        from calbot import timeutil

        if getattr(timeutil, "_clock", None) == self.now:
            timeutil.set_clock(*self._previous_clock)
        self._previous_clock = None

    # -- public operations ---------------------------------------------------------------------------

    def advance(self, to: datetime | str | None = None, seconds: float | None = None) -> FireReport:
        """Move the clock forward to `to` (or by `seconds`) and fire, in due order, everything due
        on the way; returns once all of it ran. Retries of work fired on the way are settled too, each
        after its backoff, so the clock may end past `to`. A target in the past raises ValueError."""
        if (to is None) == (seconds is None):
            raise ValueError("give exactly one of `to` and `seconds`")
        with self._sync:
            self._wait_idle()
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
        with self._sync:
            self._wait_idle()
            return self._settle(self.now(), settle_retries=False)

    def drain(self, max_rounds: int = 100) -> int:
        """Deliver queue messages until the queues are empty or only failing (invisible) messages
        remain, at most `max_rounds` batches per consumer; returns how many were handed to handlers."""
        with self._sync:
            self._wait_idle()
            self._redeliver_due()
            return self._drain(FireReport(started=iso_z(self.now())), max_rounds)

    def run_cron(self, job_id: str) -> dict[str, Any]:
        """Run one cron job now (on demand: a direct invoke, no retries). `job_id` is the function's
        logical id (when it has one schedule event) or "<LogicalId>.<EventName>"."""
        job = self.cron_job(job_id)
        now = self.now()
        event = self._cron_event(job, now.replace(microsecond=0))
        ok, result, error = self._invoke(job.function, event, f"cron {job.id} (on demand)")
        return {
            "job": job.id,
            "function": job.function,
            "fired_at": iso_z(now),
            "event": event,
            "ok": ok,
            "result": result,
            "error": error,
        }

    def cron_job(self, job_id: str) -> CronJob:
        for job in self.crons:
            if job.id == job_id:
                return job
        matching = [job for job in self.crons if job.function == job_id]
        if len(matching) == 1:
            return matching[0]
        known = ", ".join(job.id for job in self.crons) or "none"
        if matching:
            raise KeyError(f"{job_id} has several schedule events; name one of: {known}")
        raise KeyError(f"no cron job {job_id!r} (cron jobs: {known})")

    def cron_list(self) -> list[dict[str, Any]]:
        now = self.now()
        return [job.to_dict(now) for job in self.crons]

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule in the template's schedule groups, soonest first."""
        infos = self._list_schedules()
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(infos, key=lambda s: (s.at or far, s.group, s.name))

    def queue_messages(self, logical_id: str) -> list[dict[str, Any]]:
        """The messages in a template queue right now, in flight or not, without receiving them
        (read from moto's in-process backend, so receive counts and visibility are untouched)."""
        resource = self.template.resources.get(logical_id)
        if resource is None or resource["Type"] != "AWS::SQS::Queue":
            raise KeyError(f"no queue {logical_id!r} in the template")
        from moto.sqs.models import sqs_backends

        name = self.template.physical_name(logical_id)
        backend = sqs_backends[self.template.account_id][self.template.region]
        try:
            queue = backend.get_queue(name)
        except Exception as exc:  # moto's QueueDoesNotExist
            raise KeyError(f"queue {name} does not exist in the local AWS") from exc
        out = []
        for message in list(queue._messages):
            attributes = {
                "ApproximateReceiveCount": str(message.approximate_receive_count),
                "SentTimestamp": str(message.sent_timestamp),
            }
            if message.group_id:
                attributes["MessageGroupId"] = message.group_id
            if message.deduplication_id:
                attributes["MessageDeduplicationId"] = message.deduplication_id
            out.append(
                {
                    "message_id": message.id,
                    "body": message.body,
                    "attributes": attributes,
                    "message_attributes": {
                        k: {
                            key: (base64.b64encode(val).decode() if isinstance(val, bytes) else val)
                            for key, val in v.items()
                        }
                        for k, v in message.message_attributes.items()
                    },
                    "in_flight": not message.visible,
                }
            )
        return out

    # -- background loop -----------------------------------------------------------------------------

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
                self._log(f"[clock] tick failed: {''.join(traceback.format_exception(exc))}")

    def tick(self) -> None:
        """One pass of the background loop."""
        if self.virtual:
            if self._sync.acquire(blocking=False):  # an advance in progress does the work itself
                try:
                    self._settle(self.now(), settle_retries=False)
                finally:
                    self._sync.release()
            return
        if not self._sync.acquire(blocking=False):
            return
        try:
            now = self.now()
            for item in self._collect(now, settle_retries=False):
                self._submit(item.key, self._run_item, item, None)
            for consumer in self.consumers:
                if consumer.enabled:
                    self._submit(("sqs", consumer.id), self._consume, consumer)
        finally:
            self._sync.release()

    def _submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        with self._state:
            if key in self._in_flight or self._pool is None:
                return
            self._in_flight.add(key)
            self._busy += 1

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:
                self._log(f"[clock] {key} failed: {''.join(traceback.format_exception(exc))}")
            finally:
                with self._state:
                    self._in_flight.discard(key)
                    self._busy -= 1
                    self._idle.notify_all()

        try:
            self._pool.submit(run)
        except RuntimeError:  # shutting down
            with self._state:
                self._in_flight.discard(key)
                self._busy -= 1

    def _consume(self, consumer: SqsConsumer, report: FireReport | None = None) -> None:
        report = report or FireReport(started=iso_z(self.now()))
        self._redeliver_due(consumer)
        for _ in range(100):  # keep up with a burst without hogging a worker forever
            if not self._poll(consumer, report):
                break

    def _wait_idle(self, timeout: float = 120.0) -> None:
        """Let work the background pool already started finish, so a synchronous call sees it done."""
        deadline = time.monotonic() + timeout
        with self._state:
            while self._busy and time.monotonic() < deadline:
                self._idle.wait(0.1)

    # -- the synchronous engine ----------------------------------------------------------------------

    def _settle(self, target: datetime, *, settle_retries: bool) -> FireReport:
        report = FireReport(started=iso_z(self.now()))
        self._drain(report)
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
                self._jump_to(item.due)
                with self._state:
                    if item.key in self._in_flight:
                        continue
                    self._in_flight.add(item.key)
                try:
                    self._run_item(item, report)
                finally:
                    with self._state:
                        self._in_flight.discard(item.key)
                self._drain(report)
        else:
            self._log(f"[clock] stopped after {MAX_ITEMS_PER_SETTLE} firings in one go (runaway retries?)")
        self._jump_to(target)
        self._drain(report)
        report.now = iso_z(self.now())
        return report

    def _collect(self, horizon: datetime, *, settle_retries: bool) -> list[_Item]:
        """Everything due by `horizon` that is not running (all pending retries when settling)."""
        items: list[_Item] = []
        for info in self._list_schedules():
            if self._schedule_due(info, horizon):
                items.append(_Item(info.at, next(self._seq), "schedule", ("schedule", *info.key), info))  # type: ignore[arg-type]
        for job in self.crons:
            if not job.enabled:
                continue
            upper = min(horizon, job.end) if job.end else horizon
            lower = max(job.cursor, job.start - timedelta(microseconds=1)) if job.start else job.cursor
            moment = next(job.expression.times(lower, upper), None) if upper > lower else None
            if moment is not None:
                items.append(_Item(moment, next(self._seq), "cron", ("cron", job.id), (job, moment)))
        with self._state:
            retries = list(self._retries.values())
            redeliveries = [(cid, entry) for cid, entries in self._redeliveries.items() for entry in entries]
        for retry in retries:
            if settle_retries or retry.due <= horizon:
                items.append(_Item(retry.due, next(self._seq), "retry", ("retry", retry.id), retry))
        for consumer_id, (due, _) in redeliveries:
            if due <= horizon:
                items.append(_Item(due, next(self._seq), "redelivery", ("sqs", consumer_id), None))
        with self._state:
            items = [i for i in items if i.key not in self._in_flight]
        return sorted(items)

    def _run_item(self, item: _Item, report: FireReport | None) -> None:
        report = report or FireReport(started=iso_z(self.now()))
        if item.kind == "schedule":
            self._fire_schedule(item.payload, report)
        elif item.kind == "cron":
            job, moment = item.payload
            self._fire_cron(job, moment, report)
        elif item.kind == "retry":
            self._run_retry(item.payload, report)
        elif item.kind == "redelivery":
            self._consume(next(c for c in self.consumers if c.id == item.key[1]), report)

    # -- one-time schedules --------------------------------------------------------------------------

    def _list_schedules(self) -> list[ScheduleInfo]:
        out: list[ScheduleInfo] = []
        seen: set[tuple[str, str]] = set()
        for group in self.groups:
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"GroupName": group}
                if token:
                    kwargs["NextToken"] = token
                try:
                    page = self._scheduler.list_schedules(**kwargs)
                except ClientError as exc:
                    self._warn_once(("group", group), f"[clock] cannot list schedule group {group}: {exc}")
                    break
                for summary in page.get("Schedules", []):
                    key = (group, summary["Name"])
                    seen.add(key)
                    stamp = str(summary.get("LastModificationDate") or "")
                    with self._state:
                        cached = self._schedule_cache.get(key)
                    if cached is None or not stamp or cached.modified != stamp:
                        cached = self._describe(group, summary["Name"], stamp)
                        if cached is None:
                            continue
                    out.append(cached)
                token = page.get("NextToken")
                if not token:
                    break
        with self._state:
            for key in list(self._schedule_cache):
                if key not in seen:
                    del self._schedule_cache[key]
                    self._completed.pop(key, None)
        return out

    def _describe(self, group: str, name: str, stamp: str | None = None) -> ScheduleInfo | None:
        try:
            detail = self._scheduler.get_schedule(GroupName=group, Name=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                with self._state:
                    self._schedule_cache.pop((group, name), None)
                return None
            raise
        target = detail.get("Target") or {}
        expression = str(detail.get("ScheduleExpression", ""))
        timezone = str(detail.get("ScheduleExpressionTimezone") or "UTC")
        at: datetime | None = None
        try:
            at = ScheduleExpression(expression, timezone).at
        except ScheduleExpressionError as exc:
            self._warn_once(("expr", group, name, expression), f"[clock] schedule {group}/{name}: {exc}")
        if at is None and expression.startswith(("cron(", "rate(")):
            self._warn_once(
                ("recurring", group, name),
                f"[clock] schedule {group}/{name}: only one-time at(...) schedules are fired locally",
            )
        info = ScheduleInfo(
            group=group,
            name=name,
            arn=str(detail.get("Arn", "")),
            expression=expression,
            timezone=timezone,
            at=at,
            state=str(detail.get("State") or "ENABLED"),
            target_arn=str(target.get("Arn", "")),
            target_function=self._function_for_arn(str(target.get("Arn", ""))),
            input_text=target.get("Input"),
            action_after_completion=str(detail.get("ActionAfterCompletion") or "NONE"),
            flexible_time_window=dict(detail.get("FlexibleTimeWindow") or {"Mode": "OFF"}),
            retry_policy=dict(target.get("RetryPolicy") or {}),
            dead_letter_arn=(target.get("DeadLetterConfig") or {}).get("Arn"),
            modified=str(detail.get("LastModificationDate") or stamp or ""),
            role_arn=target.get("RoleArn"),
        )
        with self._state:
            self._schedule_cache[info.key] = info
        return info

    def _schedule_due(self, info: ScheduleInfo, horizon: datetime) -> bool:
        if info.at is None or info.state == "DISABLED" or info.at > horizon:
            return False
        with self._state:
            return info.key not in self._retrying and self._completed.get(info.key) != info.modified

    def _function_for_arn(self, arn: str) -> str | None:
        if arn in self._arn_cache:
            return self._arn_cache[arn]
        logical_id = self.template.resource_for_arn(arn)
        if logical_id not in self.template.functions:
            # A qualified ARN (…:function:name:alias) or another spelling of the same name.
            match = re.fullmatch(r"arn:[^:]+:lambda:[^:]*:[^:]*:function:([^:]+)(?::[^:]+)?", arn)
            logical_id = self._functions_by_name.get(match.group(1)) if match else None
        self._arn_cache[arn] = logical_id
        return logical_id

    def _fire_schedule(self, listed: ScheduleInfo, report: FireReport) -> None:
        info = self._describe(listed.group, listed.name)  # fresh: it may have changed since listing
        if info is None or not self._schedule_due(info, self.now()):
            return
        schedule_id = f"{info.group}/{info.name}"
        event = info.input if info.input_text is not None else self._scheduler_envelope(info)
        refusal = self._delivery_refusal(info)
        if refusal is not None:
            self._log(f"[clock] schedule {schedule_id}: not invoked: {refusal}")
            error: dict[str, Any] | None = {"errorType": "AccessDeniedException", "errorMessage": refusal}
            fired = self._record(
                report, "schedule", schedule_id, info.target_function, info.at, 1, False, None, error
            )
            self._after_delivery_failure(info, event, 1, self.now(), error, fired, report)
            return
        if info.target_function is None:
            error = {
                "errorType": "ResourceNotFoundException",
                "errorMessage": f"Function not found: {info.target_arn}",
            }
            self._log(
                f"[clock] schedule {schedule_id}: target {info.target_arn} is no function of the template"
            )
            fired = self._record(report, "schedule", schedule_id, None, info.at, 1, False, None, error)
            self._after_delivery_failure(info, event, 1, self.now(), error, fired, report)
            return
        ok, result, error = self._invoke(info.target_function, event, f"schedule {schedule_id}")
        fired = self._record(
            report, "schedule", schedule_id, info.target_function, info.at, 1, ok, result, error
        )
        if ok:
            self._complete_schedule(info)
        elif self.target_errors == "scheduler":
            self._after_delivery_failure(info, event, 1, self.now(), error, fired, report)
        else:
            self._complete_schedule(info)  # Scheduler handed the event to Lambda: its part is done
            self._after_function_error(
                "schedule", schedule_id, info.target_function, event, 1, self.now(), error, fired, report
            )

    def _delivery_refusal(self, info: ScheduleInfo) -> str | None:
        """Why Scheduler (or EventBridge, for a cron rule) may not invoke the target, or None."""
        if info.cron is not None:
            return self._grants.cron_refusal(*info.cron)
        if not info.role_arn:
            return f"schedule {info.group}/{info.name} has no RoleArn"
        return self._grants.scheduler_refusal(info.role_arn, info.target_arn, info.arn)

    def _scheduler_envelope(self, info: ScheduleInfo) -> dict[str, Any]:
        # What Scheduler sends a templated target when the schedule has no Input.
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.scheduler",
            "account": self.template.account_id,
            "time": iso_z(info.at or self.now()),
            "region": self.template.region,
            "resources": [info.arn],
            "detail": "{}",
        }

    def _complete_schedule(self, info: ScheduleInfo) -> None:
        if info.action_after_completion == "DELETE":
            # Scheduler deletes a one-time schedule when it hands the event to Lambda (an async invoke),
            # before the function runs; here the function ran first. If it re-armed its own schedule
            # (the launcher's "retry later"), that is a new schedule the deletion must not take.
            current = self._describe(info.group, info.name)
            if current is not None and (current.modified, current.expression) != (
                info.modified,
                info.expression,
            ):
                with self._state:
                    self._completed.pop(info.key, None)
                return
            try:
                self._scheduler.delete_schedule(GroupName=info.group, Name=info.name)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
            with self._state:
                self._schedule_cache.pop(info.key, None)
                self._completed.pop(info.key, None)
            return
        with self._state:
            self._completed[info.key] = info.modified  # kept, but a one-time schedule fires once

    def _after_delivery_failure(
        self,
        info: ScheduleInfo,
        event: Any,
        attempts: int,
        first_at: datetime,
        error: dict[str, Any] | None,
        fired: Fired,
        report: FireReport,
        *,
        kind: str = "schedule",
        origin: str | None = None,
    ) -> None:
        policy = info.retry_policy
        retry = _Retry(
            id=next(self._seq),
            due=self.now() + timedelta(seconds=SCHEDULER_RETRY_BACKOFF),
            mode="scheduler",
            kind=kind,
            origin=origin or f"{info.group}/{info.name}",
            function=info.target_function,
            event=event,
            attempts=attempts,
            first_at=first_at,
            max_retries=int(policy.get("MaximumRetryAttempts", 185)),
            max_age=float(policy.get("MaximumEventAgeInSeconds", 86400)),
            schedule=info,
            last_error=error,
        )
        self._retry_or_give_up(retry, fired, report)

    def _after_function_error(
        self,
        kind: str,
        origin: str,
        function: str,
        event: Any,
        attempts: int,
        first_at: datetime,
        error: dict[str, Any] | None,
        fired: Fired,
        report: FireReport,
    ) -> None:
        config = self._async_config(function)
        backoff = LAMBDA_ASYNC_BACKOFFS[min(attempts - 1, len(LAMBDA_ASYNC_BACKOFFS) - 1)]
        retry = _Retry(
            id=next(self._seq),
            due=self.now() + timedelta(seconds=backoff),
            mode="lambda",
            kind=kind,
            origin=origin,
            function=function,
            event=event,
            attempts=attempts,
            first_at=first_at,
            max_retries=config["max_retries"],
            max_age=config["max_age"],
            last_error=error,
        )
        self._retry_or_give_up(retry, fired, report)

    def _retry_or_give_up(self, retry: _Retry, fired: Fired, report: FireReport) -> None:
        retries_made = retry.attempts - 1
        too_old = (retry.due - retry.first_at).total_seconds() > retry.max_age
        if retries_made < retry.max_retries and not too_old:
            with self._state:
                self._retries[retry.id] = retry
            fired.detail["retry_at"] = iso_z(retry.due)
            if retry.schedule is not None:
                with self._state:
                    self._retrying.add(retry.schedule.key)  # never fire it anew while retrying
            return
        condition = "MaximumEventAgeInSeconds" if too_old else "MaximumRetryAttempts"
        fired.detail["gave_up"] = condition
        if retry.mode == "scheduler":
            self._scheduler_dead_letter(retry, condition, report)
            if retry.schedule is not None:
                with self._state:
                    self._retrying.discard(retry.schedule.key)
                self._complete_schedule(retry.schedule)
        else:
            self._lambda_dead_letter(retry, condition, report)

    def _run_retry(self, retry: _Retry, report: FireReport) -> None:
        with self._state:
            if self._retries.pop(retry.id, None) is None:
                return
        attempt = retry.attempts + 1
        due = retry.due
        refusal = (
            self._delivery_refusal(retry.schedule)
            if retry.mode == "scheduler" and retry.schedule is not None
            else None
        )
        error: dict[str, Any] | None
        if refusal is not None:
            ok, result, error = False, None, {"errorType": "AccessDeniedException", "errorMessage": refusal}
        elif retry.function is None:  # a delivery that cannot succeed until the template changes
            ok, result, error = False, None, retry.last_error
        else:
            ok, result, error = self._invoke(retry.function, retry.event, f"{retry.kind} {retry.origin}")
        fired = self._record(
            report, retry.kind, retry.origin, retry.function, due, attempt, ok, result, error
        )
        fired.detail["retry"] = retry.mode
        if ok:
            if retry.schedule is not None:
                with self._state:
                    self._retrying.discard(retry.schedule.key)
                self._complete_schedule(retry.schedule)
            return
        if retry.mode == "scheduler":
            assert retry.schedule is not None
            self._after_delivery_failure(
                retry.schedule,
                retry.event,
                attempt,
                retry.first_at,
                error,
                fired,
                report,
                kind=retry.kind,
                origin=retry.origin,
            )
        else:
            assert retry.function is not None
            self._after_function_error(
                retry.kind,
                retry.origin,
                retry.function,
                retry.event,
                attempt,
                retry.first_at,
                error,
                fired,
                report,
            )

    def _scheduler_dead_letter(self, retry: _Retry, condition: str, report: FireReport) -> None:
        info = retry.schedule
        assert info is not None
        error = retry.last_error or {}
        if not info.dead_letter_arn:
            self._log(
                f"[clock] schedule {retry.origin}: retries exhausted, no DeadLetterConfig: event dropped"
            )
            report.dead_letters.append({"origin": retry.origin, "queue": None, "dropped": True})
            return
        refusal = (
            self._grants.scheduler_dead_letter_refusal(info.role_arn, info.dead_letter_arn, info.arn)
            if info.role_arn
            else None
        )
        if refusal is not None:
            # Scheduler sends dead letters with the schedule's role: without the right, the event is lost.
            self._log(f"[clock] schedule {retry.origin}: retries exhausted, dead letter not sent: {refusal}")
            report.dead_letters.append(
                {"origin": retry.origin, "queue": info.dead_letter_arn, "dropped": True, "error": refusal}
            )
            return
        attributes = {
            "ERROR_CODE": str(error.get("errorType") or "Error"),
            "ERROR_MESSAGE": str(error.get("errorMessage") or "")[:2000],
            "EXHAUSTED_RETRY_CONDITION": condition,
            "RETRY_ATTEMPTS": str(retry.attempts - 1),
            "SCHEDULE_ARN": info.arn,
            "TARGET_ARN": info.target_arn,
        }
        body = info.input_text if info.input_text is not None else json.dumps(retry.event)
        self._send(info.dead_letter_arn, body, attributes)
        report.dead_letters.append(
            {"origin": retry.origin, "queue": info.dead_letter_arn, "attributes": attributes}
        )

    def _lambda_dead_letter(self, retry: _Retry, condition: str, report: FireReport) -> None:
        assert retry.function is not None
        config = self._async_config(retry.function)
        error = retry.last_error or {}
        sent = False
        if config["on_failure"]:
            record = {
                "version": "1.0",
                "timestamp": iso_z(self.now()),
                "requestContext": {
                    "requestId": error.get("requestId", ""),
                    "functionArn": f"{self.template.functions[retry.function].arn}:$LATEST",
                    "condition": "RetriesExhausted"
                    if condition == "MaximumRetryAttempts"
                    else "EventAgeExceeded",
                    "approximateInvokeCount": retry.attempts,
                },
                "requestPayload": retry.event,
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled",
                },
                "responsePayload": {k: v for k, v in error.items() if k != "requestId"},
            }
            self._send(config["on_failure"], json.dumps(record), {})
            report.dead_letters.append(
                {"origin": retry.origin, "queue": config["on_failure"], "destination": True}
            )
            sent = True
        if config["dlq"]:
            attributes = {
                "RequestID": str(error.get("requestId", "")),
                "ErrorCode": "200",
                "ErrorMessage": str(error.get("errorMessage") or "")[:2000],
            }
            self._send(config["dlq"], json.dumps(retry.event), attributes)
            report.dead_letters.append(
                {"origin": retry.origin, "queue": config["dlq"], "attributes": attributes}
            )
            sent = True
        if not sent:
            self._log(
                f"[clock] {retry.function} ({retry.kind} {retry.origin}): failed {retry.attempts} times; "
                "the function has no OnFailure destination or DeadLetterQueue, so Lambda drops the event"
            )
            report.dead_letters.append({"origin": retry.origin, "queue": None, "dropped": True})

    def _async_config(self, function: str) -> dict[str, Any]:
        props = self.template.resources_of_type(self.template.resources[function]["Type"]).get(function, {})
        invoke_config = props.get("EventInvokeConfig") or {}
        on_failure = ((invoke_config.get("DestinationConfig") or {}).get("OnFailure")) or {}
        destination = on_failure.get("Destination") if on_failure.get("Type", "SQS") == "SQS" else None
        if on_failure and not destination:
            self._warn_once(
                ("destination", function),
                f"[clock] {function}: only SQS OnFailure destinations with a Destination ARN are emulated",
            )
        dlq = props.get("DeadLetterQueue") or {}
        return {
            "max_retries": int(invoke_config.get("MaximumRetryAttempts", LAMBDA_ASYNC_MAX_RETRIES)),
            "max_age": float(invoke_config.get("MaximumEventAgeInSeconds", LAMBDA_ASYNC_MAX_AGE)),
            "on_failure": destination
            if isinstance(destination, str) and destination.startswith("arn:")
            else None,
            "dlq": dlq.get("TargetArn") if dlq.get("Type") == "SQS" else None,
        }

    def _send(self, queue_arn: str, body: str, attributes: dict[str, str]) -> None:
        name = queue_arn.rsplit(":", 1)[-1]
        url = self._sqs.get_queue_url(QueueName=name)["QueueUrl"]
        kwargs: dict[str, Any] = {}
        if name.endswith(".fifo"):
            kwargs = {"MessageGroupId": "clock", "MessageDeduplicationId": uuid.uuid4().hex}
        self._sqs.send_message(
            QueueUrl=url,
            MessageBody=body,
            MessageAttributes={
                k: {"DataType": "String", "StringValue": v} for k, v in attributes.items() if v
            },
            **kwargs,
        )

    # -- cron jobs -----------------------------------------------------------------------------------

    def _read_crons(self, start: datetime) -> list[CronJob]:
        jobs: list[CronJob] = []
        for event_type, key in (("Schedule", "Schedule"), ("ScheduleV2", "ScheduleExpression")):
            for fn, source in self.template.functions_by_event_type(event_type):
                props = source.properties
                expression = ScheduleExpression(
                    str(props[key]), str(props.get("ScheduleExpressionTimezone") or "UTC"), anchor=start
                )
                enabled = props.get("Enabled", True) not in (False, "false", "False") and str(
                    props.get("State", "ENABLED")
                ).upper() not in ("DISABLED",)
                jobs.append(
                    CronJob(
                        id=f"{fn.logical_id}.{source.name}",
                        function=fn.logical_id,
                        source=source,
                        expression=expression,
                        enabled=enabled,
                        start=parse_time(props["StartDate"]) if props.get("StartDate") else None,
                        end=parse_time(props["EndDate"]) if props.get("EndDate") else None,
                        cursor=start,
                    )
                )
        return jobs

    def _cron_event(self, job: CronJob, moment: datetime) -> Any:
        event = schedule_event(self.template, self.template.functions[job.function], job.source)
        if job.source.properties.get("Input") is not None:
            return event  # the configured Input, delivered as is
        return {**event, "id": str(uuid.uuid4()), "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def _fire_cron(self, job: CronJob, moment: datetime, report: FireReport) -> None:
        if moment <= job.cursor:
            return
        job.cursor = moment
        event = self._cron_event(job, moment)
        refusal = self._grants.cron_refusal(job.function, job.source.name)
        if refusal is not None:
            self._log(f"[clock] cron {job.id}: {job.function} not invoked: {refusal}")
            error: dict[str, Any] | None = {"errorType": "AccessDeniedException", "errorMessage": refusal}
            fired = self._record(report, "cron", job.id, job.function, moment, 1, False, None, error)
            info = self._cron_schedule(job)
            if info is not None:  # the schedule's (or rule's) retry policy and DLQ apply
                self._after_delivery_failure(
                    info, event, 1, self.now(), error, fired, report, kind="cron", origin=job.id
                )
            return
        ok, result, error = self._invoke(job.function, event, f"cron {job.id}")
        fired = self._record(report, "cron", job.id, job.function, moment, 1, ok, result, error)
        if not ok:  # EventBridge invokes asynchronously too: Lambda's retries apply
            self._after_function_error(
                "cron", job.id, job.function, event, 1, self.now(), error, fired, report
            )

    def _cron_schedule(self, job: CronJob) -> ScheduleInfo | None:
        """The translated schedule (or EventBridge rule) behind a cron event, as a ScheduleInfo."""
        target = self._grants.cron_target(job.function, job.source.name)
        if target is None:
            return None
        return ScheduleInfo(
            group=target["group"],
            name=target["name"],
            arn=target["arn"],
            expression=job.expression.text,
            timezone=job.expression.timezone,
            at=None,
            state="ENABLED",
            target_arn=str(target["target_arn"]),
            target_function=job.function,
            input_text=None,
            action_after_completion="NONE",
            flexible_time_window={"Mode": "OFF"},
            retry_policy=target["retry_policy"],
            dead_letter_arn=target["dead_letter_arn"],
            modified="template",
            role_arn=target["role_arn"],
            cron=(job.function, job.source.name),
        )

    # -- SQS event source mappings -------------------------------------------------------------------

    def _read_consumers(self) -> list[SqsConsumer]:
        consumers = []
        for fn, source in self.template.functions_by_event_type("SQS"):
            props = source.properties
            queue = str(props.get("Queue", ""))
            name = (
                queue.rsplit(":", 1)[-1] if queue.startswith("arn:") else queue.rstrip("/").rsplit("/", 1)[-1]
            )
            logical_id = self.template.resource_for_arn(queue) if queue.startswith("arn:") else None
            if logical_id is None:
                logical_id = next(
                    (
                        lid
                        for lid in self.template.resources_of_type("AWS::SQS::Queue")
                        if self.template.physical_name(lid) == name
                    ),
                    None,
                )
            if props.get("FilterCriteria"):
                self._warn_once(
                    ("filter", fn.logical_id), f"[clock] {fn.logical_id}: FilterCriteria is ignored"
                )
            queue_arn = (
                queue
                if queue.startswith("arn:")
                else f"arn:aws:sqs:{self.template.region}:{self.template.account_id}:{name}"
            )
            refused = self._grants.event_source_mapping_refusal(fn.logical_id, queue_arn)
            consumer_id = f"{fn.logical_id}.{source.name}"
            if refused is not None:
                self._log(f"[clock] {consumer_id}: queue {name} is not polled: {refused}")
            consumers.append(
                SqsConsumer(
                    id=consumer_id,
                    function=fn.logical_id,
                    queue_name=name,
                    queue_logical_id=logical_id,
                    batch_size=int(props.get("BatchSize", 10)),
                    report_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                    enabled=props.get("Enabled", True) not in (False, "false", "False") and refused is None,
                    refused=refused,
                )
            )
        return consumers

    def _ensure_queue(self, consumer: SqsConsumer) -> bool:
        if consumer.url:
            return True
        try:
            consumer.url = self._sqs.get_queue_url(QueueName=consumer.queue_name)["QueueUrl"]
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=consumer.url, AttributeNames=["QueueArn", "VisibilityTimeout"]
            )["Attributes"]
        except ClientError as exc:
            consumer.url = None
            self._warn_once(
                ("queue", consumer.id), f"[clock] {consumer.id}: queue {consumer.queue_name}: {exc}"
            )
            return False
        consumer.arn = attributes.get("QueueArn")
        consumer.visibility_timeout = int(attributes.get("VisibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT))
        return True

    def _drain(self, report: FireReport, max_rounds: int = 100) -> int:
        total = 0
        for _ in range(max_rounds):
            delivered = sum(self._poll(c, report) for c in self.consumers if c.enabled)
            total += delivered
            if not delivered:
                break
        return total

    def _poll(self, consumer: SqsConsumer, report: FireReport) -> int:
        """Receive one batch and hand it to the function; returns how many messages it held."""
        if not self._ensure_queue(consumer):
            return 0
        received_at = self.now()
        messages: list[dict[str, Any]] = []
        while len(messages) < consumer.batch_size:
            page = self._sqs.receive_message(
                QueueUrl=consumer.url,
                MaxNumberOfMessages=min(10, consumer.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not page:
                break
            messages.extend(page)
        if not messages:
            return 0
        event = {"Records": [self._record_for(consumer, m) for m in messages]}
        ok, result, error = self._invoke(consumer.function, event, f"queue {consumer.queue_name}")
        ids = [m["MessageId"] for m in messages]
        failed: set[str] | None = None if not ok else set()
        if ok and consumer.report_failures:
            failed = self._batch_failures(result, ids)
            if failed is None:
                self._log(
                    f"[clock] {consumer.function}: malformed batchItemFailures {result!r}: whole batch failed"
                )
        left = self._left_in_queue(consumer, messages, failed)
        done = [m for m in messages if m["MessageId"] not in left]
        for chunk in range(0, len(done), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[chunk : chunk + 10])
            ]
            self._sqs.delete_message_batch(QueueUrl=consumer.url, Entries=entries)
        if left:
            # At least a second, so that a zero visibility timeout cannot spin an advance in place.
            due = received_at + timedelta(seconds=max(1, consumer.visibility_timeout))
            handles = [m["ReceiptHandle"] for m in messages if m["MessageId"] in left]
            with self._state:
                self._redeliveries.setdefault(consumer.id, []).append((due, handles))
        fired = self._record(
            report, "sqs", consumer.id, consumer.function, None, 1, ok and not left, result, error
        )
        fired.detail.update(
            {
                "queue": consumer.queue_logical_id or consumer.queue_name,
                "messages": ids,
                "failed": [i for i in ids if i in left],
            }
        )
        return len(messages)

    @staticmethod
    def _batch_failures(result: Any, ids: list[str]) -> set[str] | None:
        """The ids a ReportBatchItemFailures response names; None when Lambda would fail the batch."""
        if result is None:
            return set()
        if not isinstance(result, dict):
            return None
        failures = result.get("batchItemFailures")
        if failures is None:
            return set()
        if not isinstance(failures, list):
            return None
        named: set[str] = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not isinstance(identifier, str) or identifier not in ids:
                return None
            named.add(identifier)
        return named

    @staticmethod
    def _left_in_queue(
        consumer: SqsConsumer, messages: list[dict[str, Any]], failed: set[str] | None
    ) -> set[str]:
        """What goes back to the queue: the whole batch when the invocation failed, else exactly the
        messages batchItemFailures names. FIFO queues too: Lambda deletes every message the response
        does not name, so keeping a group's later messages behind its failure is the function's job
        ("return all failed and unprocessed messages", as Powertools' SqsFifoPartialProcessor does)."""
        if failed is None:
            return {m["MessageId"] for m in messages}
        return set(failed)

    def _record_for(self, consumer: SqsConsumer, message: dict[str, Any]) -> dict[str, Any]:
        body = message.get("Body", "")
        attributes = message.get("Attributes") or {}
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": body,
            "attributes": {k: str(attributes[k]) for k in ESM_KEEP_ATTRIBUTES if k in attributes},
            "messageAttributes": {
                name: self._esm_attribute(value)
                for name, value in (message.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": consumer.arn,
            "awsRegion": self.template.region,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record

    @staticmethod
    def _esm_attribute(value: dict[str, Any]) -> dict[str, Any]:
        # Lambda's spelling of a message attribute (camelCase, binary as base64).
        out: dict[str, Any] = {
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType"),
        }
        if "StringValue" in value:
            out["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            raw = value["BinaryValue"]
            out["binaryValue"] = base64.b64encode(
                raw if isinstance(raw, bytes) else str(raw).encode()
            ).decode()
        return out

    def _redeliver_due(self, only: SqsConsumer | None = None) -> None:
        """Make failed messages whose visibility timeout has passed on the clock visible again, all of a
        batch at once and in order (moto on its own can hand out a FIFO group's later message first)."""
        now = self.now()
        reset = False
        for consumer in self.consumers:
            if only is not None and consumer is not only:
                continue
            with self._state:
                entries = self._redeliveries.get(consumer.id, [])
                due = [e for e in entries if e[0] <= now]
                self._redeliveries[consumer.id] = [e for e in entries if e[0] > now]
            for _, handles in due:
                for handle in handles:
                    if consumer.url is None:
                        break
                    try:
                        self._sqs.change_message_visibility(
                            QueueUrl=consumer.url, ReceiptHandle=handle, VisibilityTimeout=0
                        )
                        reset = True
                    except ClientError:
                        pass  # already gone (deleted, moved to the DLQ) or received again since
                self._release_in_moto(consumer, handles)
        if reset:
            time.sleep(0.002)  # moto counts visibility in milliseconds: let "now" pass visible_at

    def _release_in_moto(self, consumer: SqsConsumer, handles: list[str]) -> None:
        """Work around moto: a message made visible again stays in its queue's "pending" set until a
        receive walks past it, and a receive that meets a FIFO group's first message while a later
        one is still "pending" skips the first and hands out the later one. Real SQS keeps the order,
        so drop the batch's messages from that set ourselves (moto runs in this process)."""
        try:
            from moto.sqs.models import sqs_backends

            queue = sqs_backends[self.template.account_id][self.template.region].get_queue(
                consumer.queue_name
            )
            wanted = set(handles)
            for message in list(queue.pending_messages):
                if wanted & set(getattr(message, "all_receipt_handles", ())):
                    queue.pending_messages.discard(message)
        except Exception:
            pass  # not an in-process moto: nothing to work around

    # -- plumbing ------------------------------------------------------------------------------------

    def _invoke(self, function: str, event: Any, origin: str) -> tuple[bool, Any, dict[str, Any] | None]:
        request_id = str(uuid.uuid4())
        try:
            return True, self.gateway.invoke_function(function, event, request_id=request_id), None
        except InvocationError as exc:
            self._log(f"[clock] {function} failed ({origin}): {json.dumps(exc.payload)}")
            return False, None, {**exc.payload, "requestId": request_id}
        except Exception as exc:
            self._log(f"[clock] {function} failed ({origin}):\n{''.join(traceback.format_exception(exc))}")
            payload = error_payload(exc, request_id)
            payload.pop("stackTrace", None)
            return False, None, payload

    def _record(
        self,
        report: FireReport,
        kind: str,
        item_id: str,
        function: str | None,
        due: datetime | None,
        attempt: int,
        ok: bool,
        result: Any,
        error: dict[str, Any] | None,
    ) -> Fired:
        fired = Fired(
            kind=kind,
            id=item_id,
            function=function,
            fired_at=iso_z(self.now()),
            due=iso_z(due) if due else None,
            attempt=attempt,
            ok=ok,
            result=result,
            error=error,
        )
        with self._state:
            report.fired.append(fired)
        return fired

    def _warn_once(self, key: Any, text: str) -> None:
        with self._state:
            if key in self._warned:
                return
            self._warned.add(key)
        self._log(text)

    def _log(self, text: str) -> None:
        stream = self._log_stream or sys.stderr
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
