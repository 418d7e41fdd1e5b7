"""Failed invocations, as AWS splits them: Lambda's async retries and EventBridge Scheduler's.

* A *function* error (the handler raised or timed out) of an asynchronous invoke (Scheduler's, a cron
  rule's) is Lambda's to retry: twice, after 1 and 2 minutes (or per the function's
  ``EventInvokeConfig``), then the event goes to the function's ``EventInvokeConfig`` OnFailure SQS
  destination and/or its ``DeadLetterQueue``, else it is dropped (``after_function_error``).
* A *delivery* failure (a target that is no function of the template, a role that may not invoke it)
  is Scheduler's: retried every 60 s of clock time per the schedule's ``RetryPolicy``, then sent to
  its ``DeadLetterConfig`` queue with Scheduler's ``ERROR_CODE``/``ERROR_MESSAGE``/... attributes,
  if the schedule's role may send there (``after_delivery_failure``). While a schedule's delivery is
  being retried it ``holds`` the schedule, so that it is not fired anew; its ``on_settled`` callback
  runs once the delivery succeeded or was given up.

Retries wait in this object until they are due (``due`` lists them as work for the clock to run).
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from local.clock.common import (
    Due,
    Fired,
    FireReport,
    Job,
    ScheduleInfo,
    Shared,
    access_denied,
    delivery_refusal,
    iso_z,
    queue_name,
)

SCHEDULER_RETRY_BACKOFF = 60.0  # seconds between Scheduler delivery retries (clock time)
LAMBDA_ASYNC_BACKOFFS = (60.0, 120.0)  # Lambda async retries: 1 min, then 2 min
LAMBDA_ASYNC_MAX_RETRIES = 2
LAMBDA_ASYNC_MAX_AGE = 6 * 3600


@dataclass(frozen=True)
class Failure:
    """A first attempt that failed, as the job that made it hands it over."""

    kind: str  # "schedule" | "cron"
    origin: str  # schedule "<group>/<name>" or cron job id
    event: Any
    error: dict[str, Any] | None
    fired: Fired  # its line in the report, which learns when the retry comes (or that none will)
    first_at: datetime


@dataclass
class Retry:
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
    schedule: ScheduleInfo | None = None  # scheduler mode: whose retry policy, DLQ and role apply
    on_settled: Callable[[ScheduleInfo], None] | None = None  # scheduler mode: delivery done or given up
    last_error: dict[str, Any] | None = None


def backoff(mode: str, attempts: int) -> float:
    """Seconds until the next attempt after `attempts` failed ones."""
    if mode == "scheduler":
        return SCHEDULER_RETRY_BACKOFF
    return LAMBDA_ASYNC_BACKOFFS[min(attempts - 1, len(LAMBDA_ASYNC_BACKOFFS) - 1)]


class AsyncRetries(Job):
    """See the module docstring. Thread-safe. `sqs` (a boto3 client) sends the dead letters."""

    def __init__(self, shared: Shared, sqs: Any) -> None:
        super().__init__(shared)
        self._sqs = sqs
        self._ids = itertools.count()
        self._lock = threading.RLock()
        self._waiting: dict[int, Retry] = {}
        self._held: set[tuple[str, str]] = set()  # schedules whose delivery is being retried

    # -- what the other jobs hand over ---------------------------------------------------------------

    def after_delivery_failure(
        self,
        info: ScheduleInfo,
        failure: Failure,
        report: FireReport,
        *,
        on_settled: Callable[[ScheduleInfo], None] | None = None,
    ) -> None:
        """Scheduler could not deliver the event to the target of `info`: retry per its RetryPolicy,
        then its DeadLetterConfig; `on_settled(info)` once delivered or given up."""
        policy = info.retry_policy
        retry = self._first_retry(
            "scheduler",
            info.target_function,
            failure,
            max_retries=int(policy.get("MaximumRetryAttempts", 185)),
            max_age=float(policy.get("MaximumEventAgeInSeconds", 86400)),
            schedule=info,
            on_settled=on_settled,
        )
        self._retry_or_give_up(retry, failure.fired, report)

    def after_function_error(self, function: str, failure: Failure, report: FireReport) -> None:
        """An asynchronous invocation of `function` failed: Lambda retries it per its EventInvokeConfig,
        then sends it to its OnFailure destination / DeadLetterQueue."""
        config = self.async_config(function)
        retry = self._first_retry(
            "lambda", function, failure, max_retries=config["max_retries"], max_age=config["max_age"]
        )
        self._retry_or_give_up(retry, failure.fired, report)

    def _first_retry(self, mode: str, function: str | None, failure: Failure, **policy: Any) -> Retry:
        return Retry(
            id=next(self._ids),
            due=self._now() + timedelta(seconds=backoff(mode, 1)),
            mode=mode,
            kind=failure.kind,
            origin=failure.origin,
            function=function,
            event=failure.event,
            attempts=1,
            first_at=failure.first_at,
            last_error=failure.error,
            **policy,
        )

    def holds(self, key: tuple[str, str]) -> bool:
        """Whether the schedule `key`'s delivery is being retried (so it must not fire anew)."""
        with self._lock:
            return key in self._held

    def due(self, horizon: datetime, *, all_pending: bool) -> list[Due]:
        """The retries due by `horizon` (every pending one with `all_pending`), as work to run."""
        with self._lock:
            waiting = list(self._waiting.values())
        return [
            Due(retry.due, ("retry", retry.id), partial(self._run, retry))
            for retry in waiting
            if all_pending or retry.due <= horizon
        ]

    # -- retrying ------------------------------------------------------------------------------------

    def _retry_or_give_up(self, retry: Retry, fired: Fired, report: FireReport) -> None:
        retries_made = retry.attempts - 1
        too_old = (retry.due - retry.first_at).total_seconds() > retry.max_age
        if retries_made < retry.max_retries and not too_old:
            with self._lock:
                self._waiting[retry.id] = retry
                if retry.schedule is not None:
                    self._held.add(retry.schedule.key)  # never fire it anew while retrying
            fired.detail["retry_at"] = iso_z(retry.due)
            return
        condition = "MaximumEventAgeInSeconds" if too_old else "MaximumRetryAttempts"
        fired.detail["gave_up"] = condition
        if retry.mode == "scheduler":
            self._scheduler_dead_letter(retry, condition, report)
            self._settled(retry)
        else:
            self._lambda_dead_letter(retry, condition, report)

    def _settled(self, retry: Retry) -> None:
        if retry.schedule is None:
            return
        with self._lock:
            self._held.discard(retry.schedule.key)
        if retry.on_settled is not None:
            retry.on_settled(retry.schedule)

    def _run(self, retry: Retry, report: FireReport) -> None:
        with self._lock:
            if self._waiting.pop(retry.id, None) is None:
                return
        attempt = retry.attempts + 1
        refusal = (
            delivery_refusal(self._grants, retry.schedule)
            if retry.mode == "scheduler" and retry.schedule is not None
            else None
        )
        if refusal is not None:
            outcome: tuple[bool, Any, dict[str, Any] | None] = (False, None, access_denied(refusal))
        elif retry.function is None:  # a delivery that cannot succeed until the template changes
            outcome = (False, None, retry.last_error)
        else:
            outcome = self._invoke(retry.function, retry.event, f"{retry.kind} {retry.origin}")
        fired = report.record(
            self._now(), retry.kind, retry.origin, retry.function, retry.due, attempt, outcome
        )
        fired.detail["retry"] = retry.mode
        ok, _, error = outcome
        if ok:
            self._settled(retry)
            return
        again = replace(
            retry,
            id=next(self._ids),
            due=self._now() + timedelta(seconds=backoff(retry.mode, attempt)),
            attempts=attempt,
            last_error=error,
        )
        self._retry_or_give_up(again, fired, report)

    # -- giving up -----------------------------------------------------------------------------------

    def _scheduler_dead_letter(self, retry: Retry, condition: str, report: FireReport) -> None:
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

    def _lambda_dead_letter(self, retry: Retry, condition: str, report: FireReport) -> None:
        assert retry.function is not None
        config = self.async_config(retry.function)
        error = retry.last_error or {}
        sent = False
        if config["on_failure"]:
            record = {
                "version": "1.0",
                "timestamp": iso_z(self._now()),
                "requestContext": {
                    "requestId": error.get("requestId", ""),
                    "functionArn": f"{self._template.functions[retry.function].arn}:$LATEST",
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

    def async_config(self, function: str) -> dict[str, Any]:
        """The function's async invoke settings: retries, maximum age, OnFailure queue, DLQ."""
        template = self._template
        props = template.resources_of_type(template.resources[function]["Type"]).get(function, {})
        invoke_config = props.get("EventInvokeConfig") or {}
        on_failure = ((invoke_config.get("DestinationConfig") or {}).get("OnFailure")) or {}
        destination = on_failure.get("Destination") if on_failure.get("Type", "SQS") == "SQS" else None
        if on_failure and not destination:
            self._log.warn_once(
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
        name = queue_name(queue_arn)
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
