"""Cron jobs: the template functions' ``Schedule`` / ``ScheduleV2`` events, which moto never runs.

Each event (``cron(...)``, ``rate(...)``, ``at(...)``, in its ``ScheduleExpressionTimezone``, between
its ``StartDate`` and ``EndDate``, unless disabled) fires whenever the clock crosses one of its
times, with EventBridge's scheduled-event envelope (the shape ``local.gen_events`` gives the sample
events) or the event's ``Input``. EventBridge invokes asynchronously, so a handler's error gets
Lambda's retries; a cron rule that may not invoke its function (``local.grants``: its generated
schedule role, or the function's permission for the rule) is a delivery failure, retried per the
event's ``RetryPolicy`` and sent to its ``DeadLetterConfig``. ``run`` runs a job now, on demand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from local.clock.common import (
    Due,
    FireReport,
    Job,
    ScheduleInfo,
    Shared,
    access_denied,
    is_enabled,
    iso_z,
    parse_time,
)
from local.clock.expressions import ScheduleExpression
from local.clock.retries import AsyncRetries, Failure
from local.gen_events import schedule_event
from local.template import EventSource, Template


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

    def next_time(self, horizon: datetime) -> datetime | None:
        """Its first time after the cursor, up to `horizon` (within its start and end dates)."""
        if not self.enabled:
            return None
        upper = min(horizon, self.end) if self.end else horizon
        lower = max(self.cursor, self.start - timedelta(microseconds=1)) if self.start else self.cursor
        return next(self.expression.times(lower, upper), None) if upper > lower else None

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


def read_cron_jobs(template: Template, start: datetime) -> list[CronJob]:
    """The template's schedule events; times up to `start` count as fired (rate() counts from it)."""
    jobs: list[CronJob] = []
    for event_type, key in (("Schedule", "Schedule"), ("ScheduleV2", "ScheduleExpression")):
        for fn, source in template.functions_by_event_type(event_type):
            props = source.properties
            expression = ScheduleExpression(
                str(props[key]), str(props.get("ScheduleExpressionTimezone") or "UTC"), anchor=start
            )
            enabled = is_enabled(props) and str(props.get("State", "ENABLED")).upper() not in ("DISABLED",)
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


class CronJobs(Job):
    """See the module docstring."""

    def __init__(self, shared: Shared, retries: AsyncRetries, *, start: datetime) -> None:
        super().__init__(shared)
        self._retries = retries
        self.jobs = read_cron_jobs(shared.template, start)

    def due(self, horizon: datetime) -> list[Due]:
        """Each job's next time by `horizon`, as work to run (one a job: it fires in order)."""
        out: list[Due] = []
        for job in self.jobs:
            moment = job.next_time(horizon)
            if moment is not None:
                out.append(Due(moment, ("cron", job.id), partial(self.fire, job, moment)))
        return out

    def event(self, job: CronJob, moment: datetime) -> Any:
        """What EventBridge sends the function for its time `moment`."""
        event = schedule_event(self._template, self._template.functions[job.function], job.source)
        if job.source.properties.get("Input") is not None:
            return event  # the configured Input, delivered as is
        return {**event, "id": str(uuid.uuid4()), "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}

    def fire(self, job: CronJob, moment: datetime, report: FireReport) -> None:
        if moment <= job.cursor:
            return
        job.cursor = moment
        event = self.event(job, moment)
        refusal = self._grants.cron_refusal(job.function, job.source.name)
        if refusal is None:
            outcome = self._invoke(job.function, event, f"cron {job.id}")
        else:
            self._log(f"[clock] cron {job.id}: {job.function} not invoked: {refusal}")
            outcome = (False, None, access_denied(refusal))
        fired = report.record(self._now(), "cron", job.id, job.function, moment, 1, outcome)
        ok, _, error = outcome
        if ok:
            return
        failure = Failure("cron", job.id, event, error, fired, first_at=self._now())
        if refusal is None:  # EventBridge invokes asynchronously too: Lambda's retries apply
            self._retries.after_function_error(job.function, failure, report)
            return
        info = self._rule(job)
        if info is not None:  # the schedule's (or rule's) retry policy and DLQ apply
            self._retries.after_delivery_failure(info, failure, report)

    def _rule(self, job: CronJob) -> ScheduleInfo | None:
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

    # -- on demand -------------------------------------------------------------------------------------

    def job(self, job_id: str) -> CronJob:
        """A job by its id, or by its function's logical id when the function has one schedule event."""
        for job in self.jobs:
            if job.id == job_id:
                return job
        matching = [job for job in self.jobs if job.function == job_id]
        if len(matching) == 1:
            return matching[0]
        known = ", ".join(job.id for job in self.jobs) or "none"
        if matching:
            raise KeyError(f"{job_id} has several schedule events; name one of: {known}")
        raise KeyError(f"no cron job {job_id!r} (cron jobs: {known})")

    def run(self, job_id: str) -> dict[str, Any]:
        """Run one cron job now (on demand: a direct invoke, no retries)."""
        job = self.job(job_id)
        now = self._now()
        event = self.event(job, now.replace(microsecond=0))
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

    def listing(self) -> list[dict[str, Any]]:
        now = self._now()
        return [job.to_dict(now) for job in self.jobs]
