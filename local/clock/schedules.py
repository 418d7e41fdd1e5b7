"""EventBridge Scheduler's one-time schedules, which moto stores but never fires.

The schedules in the template's ``AWS::Scheduler::ScheduleGroup``s: an ``at(...)`` schedule (in its
``ScheduleExpressionTimezone``) is due once its time has come; firing it invokes the function its
target ARN names (resolved against the template) with its ``Input`` (JSON) as the event, or
Scheduler's envelope when it has none. ``DISABLED`` schedules never fire; a schedule updated before it
fires fires at its new time only; ``ActionAfterCompletion: DELETE`` is applied (moto ignores it). A
flexible time window fires at its start. Recurring (cron/rate) schedules are not fired (a warning).

As AWS: a schedule fires at a point within the minute after its time (Scheduler's 60 s precision;
here a fixed point per schedule and version, `precision_seconds` wide), never exactly on it; and a
completed ``DELETE`` schedule is deleted after its invocation even if that invocation re-put it under
the same name (Scheduler may delete it after completion: re-arm under a new name).

Permissions (``local.grants``): the target is invoked only if the schedule's ``RoleArn`` is a role of
the template that trusts ``scheduler.amazonaws.com`` and may ``lambda:InvokeFunction`` it; else, like
a target that is no function of the template, it is a *delivery* failure, handed to
``AsyncRetries.after_delivery_failure``. A handler's exception is a *function* error, Lambda's to
retry (``after_function_error``), unless ``target_errors="scheduler"`` (then it is a delivery failure
too: simpler, not what AWS does).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from local.clock.common import (
    Due,
    FireReport,
    Job,
    Outcome,
    ScheduleInfo,
    Shared,
    access_denied,
    delivery_refusal,
    is_not_found,
    iso_z,
)
from local.clock.expressions import ScheduleExpression, ScheduleExpressionError
from local.clock.retries import AsyncRetries, Failure

PRECISION_SECONDS = 60.0  # Scheduler invokes between at() and at() + 59 s
# (version) -> (current version, the (group, name) changed since, or None when unknown)
ChangeFeed = Callable[[int | None], tuple[int, set[tuple[str, str]] | None]]
# With a change feed, a full listing is still made at least this often (real seconds): a moto reset
# that bypassed the feed is seen within it.
RELIST_SECONDS = 5.0


def precision_offset(info: ScheduleInfo, width: float) -> timedelta:
    """Where in the minute after its time this version of the schedule fires (stable per version):
    whole seconds from 0 to width - 1, as Scheduler's "between at() and at() + 59 s" (a fraction
    past the last whole second would let a handler's own start-up carry it over the minute)."""
    if width <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{info.group}/{info.name}/{info.modified}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:4], "big") % max(1, int(width)))


class OneTimeSchedules(Job):
    """See the module docstring. Thread-safe. `scheduler` is a boto3 client; failures go to `retries`."""

    def __init__(
        self,
        shared: Shared,
        scheduler: Any,
        retries: AsyncRetries,
        *,
        target_errors: str = "lambda",
        precision_seconds: float = PRECISION_SECONDS,
        changes: ChangeFeed | None = None,
    ) -> None:
        """`changes`: which schedules changed since a version (local.aws_limits.scheduler_changes, when
        moto runs in this process); with it a tick describes just the schedules changed since the last
        one instead of listing every schedule (about a tenth of the stack's CPU in a 500-account
        burst, which has a thousand schedules)."""
        if target_errors not in ("lambda", "scheduler"):
            raise ValueError("target_errors must be 'lambda' or 'scheduler'")
        super().__init__(shared)
        self._scheduler = scheduler
        self._retries = retries
        self.target_errors = target_errors
        self.precision_seconds = precision_seconds
        template = shared.template
        self.groups = [
            str(template.ref(lid)) for lid in template.resources_of_type("AWS::Scheduler::ScheduleGroup")
        ]
        self._lock = threading.RLock()
        self._cache: dict[tuple[str, str], ScheduleInfo] = {}
        self._completed: dict[tuple[str, str], str] = {}  # fired and kept (no DELETE): modified stamp
        self._arn_cache: dict[str, str | None] = {}
        self._functions_by_name = {fn.function_name: lid for lid, fn in template.functions.items()}
        self._changes = changes
        # The last full listing's version and time (the cache is kept up to date from the change feed
        # between full listings).
        self._listed: tuple[int, float] | None = None
        self.listings = 0  # full listings made (each a ListSchedules per page and group)

    # -- reading ---------------------------------------------------------------------------------------

    def listing(self) -> list[ScheduleInfo]:
        """Every schedule in the template's groups, described (from a cache, until it is modified)."""
        with self._lock:
            listed = self._listed
        if self._changes is not None and listed is not None and time.monotonic() - listed[1] < RELIST_SECONDS:
            now_at, changed = self._changes(listed[0])
            if changed is not None:
                return self._follow(now_at, listed[1], changed)
        version = self._changes(None)[0] if self._changes is not None else None
        self.listings += 1
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
                    self._log.warn_once(
                        ("group", group), f"[clock] cannot list schedule group {group}: {exc}"
                    )
                    break
                for summary in page.get("Schedules", []):
                    key = (group, summary["Name"])
                    seen.add(key)
                    stamp = str(summary.get("LastModificationDate") or "")
                    with self._lock:
                        cached = self._cache.get(key)
                    if cached is None or not stamp or cached.modified != stamp:
                        cached = self.describe(group, summary["Name"], stamp)
                        if cached is None:
                            continue
                    out.append(cached)
                token = page.get("NextToken")
                if not token:
                    break
        with self._lock:
            for key in list(self._cache):
                if key not in seen:
                    del self._cache[key]
                    self._completed.pop(key, None)
            # The version read before listing: a change made meanwhile is after it, so the next tick
            # describes that schedule again.
            self._listed = None if version is None else (version, time.monotonic())
        return out

    def _follow(self, version: int, listed_at: float, changed: set[tuple[str, str]]) -> list[ScheduleInfo]:
        """The last listing brought up to `version`: each changed schedule of our groups described
        again (dropped when it is gone)."""
        for group, name in sorted(changed):
            if group not in self.groups:
                continue
            if self.describe(group, name) is None:  # gone: describe dropped it from the cache
                with self._lock:
                    self._completed.pop((group, name), None)
        with self._lock:
            self._listed = (version, listed_at)
            return list(self._cache.values())

    def describe(self, group: str, name: str, stamp: str | None = None) -> ScheduleInfo | None:
        """The schedule as get_schedule describes it now, or None when it is gone."""
        try:
            detail = self._scheduler.get_schedule(GroupName=group, Name=name)
        except ClientError as exc:
            if is_not_found(exc):
                with self._lock:
                    self._cache.pop((group, name), None)
                return None
            raise
        target = detail.get("Target") or {}
        expression = str(detail.get("ScheduleExpression", ""))
        timezone = str(detail.get("ScheduleExpressionTimezone") or "UTC")
        at: datetime | None = None
        try:
            at = ScheduleExpression(expression, timezone).at
        except ScheduleExpressionError as exc:
            self._log.warn_once(("expr", group, name, expression), f"[clock] schedule {group}/{name}: {exc}")
        if at is None and expression.startswith(("cron(", "rate(")):
            self._log.warn_once(
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
            target_function=self.function_for_arn(str(target.get("Arn", ""))),
            input_text=target.get("Input"),
            action_after_completion=str(detail.get("ActionAfterCompletion") or "NONE"),
            flexible_time_window=dict(detail.get("FlexibleTimeWindow") or {"Mode": "OFF"}),
            retry_policy=dict(target.get("RetryPolicy") or {}),
            dead_letter_arn=(target.get("DeadLetterConfig") or {}).get("Arn"),
            modified=str(detail.get("LastModificationDate") or stamp or ""),
            role_arn=target.get("RoleArn"),
        )
        with self._lock:
            self._cache[info.key] = info
        return info

    def function_for_arn(self, arn: str) -> str | None:
        """The template function (logical id) a target ARN names, or None."""
        if arn in self._arn_cache:
            return self._arn_cache[arn]
        logical_id = self._template.resource_for_arn(arn)
        if logical_id not in self._template.functions:
            # A qualified ARN (…:function:name:alias) or another spelling of the same name.
            match = re.fullmatch(r"arn:[^:]+:lambda:[^:]*:[^:]*:function:([^:]+)(?::[^:]+)?", arn)
            logical_id = self._functions_by_name.get(match.group(1)) if match else None
        self._arn_cache[arn] = logical_id
        return logical_id

    def fires_at(self, info: ScheduleInfo) -> datetime | None:
        """When the schedule fires: within the minute after its time (None: it never does)."""
        if info.at is None:
            return None
        return info.at + precision_offset(info, self.precision_seconds)

    def is_due(self, info: ScheduleInfo, horizon: datetime) -> bool:
        fires = self.fires_at(info)
        if fires is None or info.state == "DISABLED" or fires > horizon:
            return False
        if self._retries.holds(info.key):
            return False
        with self._lock:
            return self._completed.get(info.key) != info.modified

    def due(self, horizon: datetime) -> list[Due]:
        """The schedules due by `horizon`, as work to run."""
        out = []
        for info in self.listing():
            fires = self.fires_at(info)
            if fires is not None and self.is_due(info, horizon):
                out.append(Due(fires, ("schedule", *info.key), partial(self.fire, info)))
        return out

    # -- firing ----------------------------------------------------------------------------------------

    def fire(self, listed: ScheduleInfo, report: FireReport) -> None:
        info = self.describe(listed.group, listed.name)  # fresh: it may have changed since listing
        if info is None or not self.is_due(info, self._now()):
            return
        schedule_id = f"{info.group}/{info.name}"
        event = info.input if info.input_text is not None else self._envelope(info)
        function = info.target_function
        undeliverable = self._undeliverable(info)
        outcome: Outcome = (False, None, undeliverable)
        if undeliverable is None and function is not None:
            outcome = self._invoke(function, event, f"schedule {schedule_id}")
        fired = report.record(self._now(), "schedule", schedule_id, function, info.at, 1, outcome)
        ok, _, error = outcome
        if ok:
            self.complete(info)
            return
        failure = Failure("schedule", schedule_id, event, error, fired, first_at=self._now())
        if function is None or undeliverable is not None or self.target_errors == "scheduler":
            self._retries.after_delivery_failure(info, failure, report, on_settled=self.complete)
        else:
            self.complete(info)  # Scheduler handed the event to Lambda: its part is done
            self._retries.after_function_error(function, failure, report)

    def _undeliverable(self, info: ScheduleInfo) -> dict[str, Any] | None:
        """Why Scheduler cannot deliver to the target (a missing permission, no such function), or None."""
        schedule_id = f"{info.group}/{info.name}"
        refusal = delivery_refusal(self._grants, info)
        if refusal is not None:
            self._log(f"[clock] schedule {schedule_id}: not invoked: {refusal}")
            return access_denied(refusal)
        if info.target_function is None:
            self._log(
                f"[clock] schedule {schedule_id}: target {info.target_arn} is no function of the template"
            )
            return {
                "errorType": "ResourceNotFoundException",
                "errorMessage": f"Function not found: {info.target_arn}",
            }
        return None

    def _envelope(self, info: ScheduleInfo) -> dict[str, Any]:
        # What Scheduler sends a templated target when the schedule has no Input.
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.scheduler",
            "account": self._template.account_id,
            "time": iso_z(info.at or self._now()),
            "region": self._template.region,
            "resources": [info.arn],
            "detail": "{}",
        }

    def complete(self, info: ScheduleInfo) -> None:
        """The schedule fired (or its delivery was given up): delete it or remember it as done."""
        if info.action_after_completion == "DELETE":
            # Deleted after its invocation, whatever that invocation did to it: a schedule re-put under
            # its own name from inside it is deleted too (AWS may do so; code must re-arm under a new
            # name).
            try:
                self._scheduler.delete_schedule(GroupName=info.group, Name=info.name)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
            with self._lock:
                self._cache.pop(info.key, None)
                self._completed.pop(info.key, None)
            return
        with self._lock:
            self._completed[info.key] = info.modified  # kept, but a one-time schedule fires once

    def sorted(self) -> list[ScheduleInfo]:
        """Every schedule in the template's schedule groups, soonest first."""
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(self.listing(), key=lambda s: (s.at or far, s.group, s.name))
