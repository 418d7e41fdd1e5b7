"""What the clock's jobs share, handed to each of them explicitly: the report of what fired, the log,
the invoker, the description of a schedule and a few small helpers.

Every job (``schedules``, ``retries``, ``cron``, ``sqs``) takes a ``now`` callable (the clock's time),
an ``Invoke`` (how to run a function of the template: ``gateway_invoker`` in a stack, any function in
a test) and a ``ClockLog``; none of them reaches into another through the ``LocalClock``.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from botocore.exceptions import ClientError

from local.grants import Grants
from local.invoke import InvocationError, error_payload
from local.template import Template

Now = Callable[[], datetime]
# (ok, the function's result, Lambda's error payload with its requestId)
Outcome = tuple[bool, Any, dict[str, Any] | None]
# Run the template function `logical_id` with `event`; `origin` says who asked, for the log.
Invoke = Callable[[str, Any, str], Outcome]


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str | datetime) -> datetime:
    """An aware UTC datetime from an ISO 8601 string or a datetime (naive means UTC)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def is_enabled(props: Mapping[str, Any]) -> bool:
    """An event source's ``Enabled`` property (true unless it says false)."""
    return props.get("Enabled", True) not in (False, "false", "False")


def queue_name(arn_or_url: str) -> str:
    """A queue's name from its ARN (``arn:...:name``) or its URL (``https://.../name``)."""
    if arn_or_url.startswith("arn:"):
        return arn_or_url.rsplit(":", 1)[-1]
    return arn_or_url.rstrip("/").rsplit("/", 1)[-1]


def is_not_found(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException")


def access_denied(refusal: str) -> dict[str, Any]:
    """The error of an invocation a missing permission stopped."""
    return {"errorType": "AccessDeniedException", "errorMessage": refusal}


class ClockLog:
    """The clock's log lines (to `stream`, else stderr at the time of writing), some only once."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._warned: set[Any] = set()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()

    def warn_once(self, key: Any, text: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        self(text)


@dataclass(frozen=True)
class Shared:
    """What the clock hands each of its jobs: the template and what its roles allow, the time, the
    invoker and the log. A test builds one with its own `now` and `invoke` to drive a job alone."""

    template: Template
    grants: Grants
    now: Now
    invoke: Invoke
    log: ClockLog


class Job:
    """A job of the clock (schedules, retries, cron, SQS), given what they share."""

    def __init__(self, shared: Shared) -> None:
        self._template = shared.template
        self._grants = shared.grants
        self._now = shared.now
        self._invoke = shared.invoke
        self._log = shared.log


def gateway_invoker(gateway: Any, log: ClockLog) -> Invoke:
    """An ``Invoke`` over the gateway's in-process handlers: an exception is Lambda's error payload."""

    def invoke(function: str, event: Any, origin: str) -> Outcome:
        request_id = str(uuid.uuid4())
        try:
            return True, gateway.invoke_function(function, event, request_id=request_id), None
        except InvocationError as exc:
            log(f"[clock] {function} failed ({origin}): {json.dumps(exc.payload)}")
            return False, None, {**exc.payload, "requestId": request_id}
        except Exception as exc:
            log(f"[clock] {function} failed ({origin}):\n{''.join(traceback.format_exception(exc))}")
            payload = error_payload(exc, request_id)
            payload.pop("stackTrace", None)
            return False, None, payload

    return invoke


# --------------------------------------------------------------------------------------------------
# What the clock reports


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
        shown = ("kind", "id", "function", "due", "fired_at", "attempt", "ok", "result", "error")
        return {**{name: getattr(self, name) for name in shown}, **self.detail}


@dataclass
class FireReport:
    """What an advance / fire_due / drain did, in order. ``to_dict()`` is JSON-serialisable."""

    started: str
    now: str = ""
    fired: list[Fired] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def record(
        self,
        now: datetime,
        kind: str,
        item_id: str,
        function: str | None,
        due: datetime | None,
        attempt: int,
        outcome: Outcome,
    ) -> Fired:
        """Add one invocation (made at `now`) and return it, for the caller to add details."""
        ok, result, error = outcome
        fired = Fired(
            kind=kind,
            id=item_id,
            function=function,
            fired_at=iso_z(now),
            due=iso_z(due) if due else None,
            attempt=attempt,
            ok=ok,
            result=result,
            error=error,
        )
        with self._lock:
            self.fired.append(fired)
        return fired

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


@dataclass(frozen=True)
class Due:
    """A piece of work a job has due at `due`; `key` is what may not run twice at once."""

    due: datetime
    key: Any
    run: Callable[[FireReport], None]


# --------------------------------------------------------------------------------------------------
# A schedule, as Scheduler describes it (one-time schedules) or as a cron event's rule stands for it


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


def delivery_refusal(grants: Grants, info: ScheduleInfo) -> str | None:
    """Why Scheduler (or EventBridge, for a cron rule) may not invoke the target, or None."""
    if info.cron is not None:
        return grants.cron_refusal(*info.cron)
    if not info.role_arn:
        return f"schedule {info.group}/{info.name} has no RoleArn"
    return grants.scheduler_refusal(info.role_arn, info.target_arn, info.arn)
