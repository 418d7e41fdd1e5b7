"""One whole day at 100,000 users, projected from a small population driven through a day.

A population of N users (default 4; more gives the same per-user figures, slower) x 3 accounts
(2 Outlook, 1 Google) x 20 meetings per account on
the day goes through 24 hours of the local stack in virtual time (local.stack.LocalStack with
--virtual-time semantics; nothing but this script moves the clock): the real handlers behind
template.yaml's routes, the Lambda authorizer, the real cron jobs and their queue workers, one-time
schedules firing the launch path, and the emulators' change notifications into the webhook. The
script drives only stable interfaces: HTTP through the gateway, the clock (advance / drain), the
emulators' control API. What it measures, per operation, in that run:

- every AWS call made by calbot's own boto3 clients (botocore hooks; the stack's own clients, which
  stand in for Lambda's SQS polling and for Scheduler, are left out) per service and operation;
  DynamoDB read and write units by AWS's billing rules (tests/conftest.py DynamoWrites for writes,
  bench/auto_schedule.py's Units for reads);
- every Lambda invocation per function and its duration (see `billed` below), every API Gateway
  request, every EventBridge Scheduler invocation (one-time schedules and the cron jobs), every SQS
  batch delivered to a function, every provider request (token, calendar data, subscriptions) and
  every Create Bot call.

Then it scales the day's counts linearly to 100,000 users and prices them (bench/report.py renders
the JSON). The model (who does what how often) is in MODEL below and printed with the figures.

Duration: Lambda bills wall time. In-process, an invocation's wall time is our code plus moto and
the emulators answering in the same process (standing in for DynamoDB's and Graph's round trips)
plus whatever else the shared machine runs. The projection therefore uses the process's CPU time
during the invocation (nested invocations, e.g. a webhook called while a connect runs, subtracted
from the outer one) plus the virtual seconds the invocation slept (a launcher waiting for its join
time bills that wait). CPU time does not grow with other load on the machine; it does not include
real network latency, so provider-bound functions are a lower bound. Wall time is printed beside it.

    python bench/day.py [--users 10] [--accounts 3] [--meetings 20] [--json] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

USERS_PROJECTED = 100_000
DAYS_PER_MONTH = 30

# The day each user lives through (assumptions, stated in the report with the figures).
MODEL: dict[str, Any] = {
    "google_accounts_per_user": 1,  # the rest are Outlook
    "meetings_from_utc_hour": 7,  # the day's meetings run from 07:00 to 19:00 UTC, each 30 minutes
    "meetings_until_utc_hour": 19,
    "auto_schedule": "every user has auto-schedule enabled: the 00:00 job schedules the day",
    # Share of the day's meetings that change during the day (each one change notification).
    "changes": {"moved": 0.20, "cancelled": 0.05, "created": 0.05},
    "changes_between_utc_hours": [7, 18],
    # Each user's client polls the API (UTC hours at which each call is made).
    "polls": {
        "GET /calendar/scheduled_bots": list(range(8, 18)),
        "GET /calendar/get_events": list(range(8, 18)),
        "GET /calendar/events": [8, 13],
        "GET /calendar/connections": [8],
        "GET /calendar/auto-schedule/settings": [8],
    },
    "manual": "each user unschedules one meeting at 10:00 and schedules it again at 11:00",
    "connects_per_account_per_day": 0.01,  # new users and re-connects: 1% of accounts a day
    # Concurrency peaks.
    "peak_0900_share": 0.10,  # of the day's bot launches, all with a join time of 09:00 UTC
    "launch_arrival_window_s": 60,  # they arrive within one minute (Scheduler's precision)
    "burst_notifications_per_s": 1000,
    "burst_accounts": 500,
    "night_window_s": 900,  # the midnight job and the renewal should each finish within this
    # Outlook subscriptions live 10,070 minutes and Google channels 7 days; the 03:00 job renews those
    # expiring within 2 days, so each is renewed about every 5 days: a day renews a fifth of them.
    "renewal_cycle_days": 5,
}

# us-east-1 list prices (USD); free tiers are ignored. Each with where it was read.
PRICES: dict[str, dict[str, Any]] = {
    "lambda_arm_gb_second": {"usd": 0.0000133334, "source": "https://aws.amazon.com/lambda/pricing/"},
    "lambda_request": {"usd": 0.20 / 1e6, "source": "https://aws.amazon.com/lambda/pricing/"},
    "dynamodb_wru": {
        "usd": 0.625 / 1e6,
        "source": "https://aws.amazon.com/dynamodb/pricing/on-demand/ (on-demand, after the 50% cut of "
        "1 Nov 2024)",
    },
    "dynamodb_rru": {"usd": 0.125 / 1e6, "source": "https://aws.amazon.com/dynamodb/pricing/on-demand/"},
    "dynamodb_gb_month": {"usd": 0.25, "source": "https://aws.amazon.com/dynamodb/pricing/on-demand/"},
    "ssm_advanced_parameter_month": {
        "usd": 0.05,
        "source": "https://aws.amazon.com/systems-manager/pricing/ (Parameter Store)",
    },
    "ssm_higher_throughput_interaction": {
        "usd": 0.05 / 10_000,
        "source": "https://aws.amazon.com/systems-manager/pricing/ (API interactions, higher throughput)",
    },
    "kms_request": {"usd": 0.03 / 10_000, "source": "https://aws.amazon.com/kms/pricing/"},
    "kms_key_month": {"usd": 1.00, "source": "https://aws.amazon.com/kms/pricing/"},
    "sqs_standard_request": {"usd": 0.40 / 1e6, "source": "https://aws.amazon.com/sqs/pricing/"},
    "sqs_fifo_request": {"usd": 0.50 / 1e6, "source": "https://aws.amazon.com/sqs/pricing/"},
    "scheduler_invocation": {"usd": 1.00 / 1e6, "source": "https://aws.amazon.com/eventbridge/pricing/"},
    "apigw_http_request": {"usd": 1.00 / 1e6, "source": "https://aws.amazon.com/api-gateway/pricing/"},
}

# Default quotas (us-east-1) the projection is held against, each with where it was read.
QUOTAS: dict[str, dict[str, Any]] = {
    "lambda_concurrency": {
        "value": 1000,
        "what": "Lambda concurrent executions per account and Region",
        "source": "https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html",
        "raise": "Service Quotas: Lambda 'Concurrent executions' (to tens of thousands), or fewer "
        "Lambda-seconds at the peak (a launch that does not wait in Lambda for its join time)",
    },
    "ssm_tps_default": {
        "value": 40,
        "what": "SSM Parameter Store GetParameter/GetParameters/PutParameter TPS, default throughput",
        "source": "https://docs.aws.amazon.com/general/latest/gr/ssm.html",
        "raise": "enable Parameter Store higher throughput (paid per API interaction)",
    },
    "ssm_tps_higher": {
        "value": 10_000,
        "what": "SSM Parameter Store GetParameter TPS with higher throughput (GetParameters: 1,000)",
        "source": "https://docs.aws.amazon.com/general/latest/gr/ssm.html (Parameter Store max throughput)",
        "raise": "cache credentials (fewer Gets), or the KMS-envelope credential backend",
    },
    "ssm_standard_parameters": {
        "value": 10_000,
        "what": "SSM Standard-tier parameters per account and Region (Advanced: 100,000)",
        "source": "https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html",
        "raise": "Intelligent-Tiering (Advanced, paid per parameter-month); past 100,000 the "
        "KMS-envelope credential backend",
    },
    "ssm_advanced_parameters": {
        "value": 100_000,
        "what": "SSM Advanced-tier parameters per account and Region",
        "source": "https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html",
        "raise": "not adjustable: the KMS-envelope credential backend (DynamoDB) past it",
    },
    "kms_symmetric_rps": {
        "value": 100_000,
        "what": "KMS cryptographic operations (symmetric) request rate, us-east-1, shared",
        "source": "https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html",
        "raise": "Service Quotas: KMS 'Cryptographic operations (symmetric) request rate'",
    },
    "scheduler_create_tps": {
        "value": 5000,
        "what": "EventBridge Scheduler CreateSchedule requests per second, us-east-1",
        "source": "https://docs.aws.amazon.com/scheduler/latest/UserGuide/scheduler-quotas.html",
        "raise": "Service Quotas: EventBridge Scheduler 'CreateSchedule request rate'",
    },
    "scheduler_schedules": {
        "value": 10_000_000,
        "what": "EventBridge Scheduler schedules in existence per account and Region (Number of schedules)",
        "source": "https://docs.aws.amazon.com/scheduler/latest/UserGuide/scheduler-quotas.html",
        "raise": "Service Quotas: EventBridge Scheduler 'Number of schedules' (adjustable to billions); "
        "past it CreateSchedule answers ServiceQuotaExceededException and no far bot can be armed",
    },
    "scheduler_invocations_tps": {
        "value": 1000,
        "what": "EventBridge Scheduler target invocations per second (throttle limit), us-east-1",
        "source": "https://docs.aws.amazon.com/scheduler/latest/UserGuide/scheduler-quotas.html",
        "raise": "Service Quotas: EventBridge Scheduler 'Invocations throttle limit'",
    },
    "dynamodb_table_rru_wru": {
        "value": 40_000,
        "what": "DynamoDB on-demand read / write request units per second per table (default)",
        "source": "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/on-demand-capacity-mode-max-throughput.html",
        "raise": "Service Quotas: DynamoDB table-level read/write throughput",
    },
    "apigw_rps": {
        "value": 10_000,
        "what": "API Gateway requests per second per account and Region (HTTP, REST, WebSocket)",
        "source": "https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html",
        "raise": "Service Quotas: API Gateway 'Throttle rate'",
    },
}

PHASES = ("connect", "midnight", "renewal", "launch", "notify", "api", "hourly")
# Cron jobs that run every hour whatever the number of users: their invocations (the "hourly" phase) are
# the day's as measured, never scaled; what grows with users is their work per run (here: the deferred
# bots the arming job hands over, none in this model).
HOURLY_JOBS = frozenset({"ArmingJobFunction"})


class Recorder:
    """Counts what calbot's clients and the stack's Lambda invocations do, by phase of the day."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.phase = "setup"
        self.on = False
        self.counts: dict[str, Counter[str]] = {p: Counter() for p in PHASES}
        self.active: list[dict[str, Any]] = []  # invocations running now, oldest first
        self._units: dict[str, Any] = {}
        self.fifo_consumers: set[str] = set()

    # -- AWS calls ---------------------------------------------------------------------------------

    def attach(self, client: Any) -> None:
        from bench.auto_schedule import Units
        from tests.conftest import DynamoWrites

        events = client.meta.events
        service = client.meta.service_model.service_name
        events.register(f"provide-client-params.{service}.*", self._params)
        if service == "dynamodb":
            units = Units()
            units.writes = DynamoWrites()  # every thread's calls: only calbot's clients get here
            units.writes.attach(events)  # a write is billed when its answer is in (after-call)
            events.register("provide-client-params.dynamodb.*", units.params)  # each read's consistency
            self._units[str(id(client))] = units
            events.register("after-call.dynamodb.*", self._ddb_units(units))

    def _bump(self, key: str, amount: float = 1) -> None:
        if not self.on:
            return
        with self.lock:
            self.counts.setdefault(self.phase, Counter())[key] += amount  # type: ignore[assignment]
            if self.active:
                self.active[-1]["aws"][key] += amount

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.service_name if hasattr(model, "service_model") else "?"
        self._bump(f"aws.{service}.{model.name}")
        if service == "ssm" and (
            (model.name in ("GetParameter", "GetParameters") and params.get("WithDecryption"))
            or (model.name == "PutParameter" and params.get("Type") == "SecureString")
        ):
            # Parameter Store decrypts / encrypts a SecureString with KMS on our behalf.
            self._bump("kms_via_ssm")
        if service == "sqs" and str(params.get("QueueUrl", "")).endswith(".fifo"):
            self._bump(f"sqs_fifo.{model.name}")

    def _ddb_units(self, units: Any) -> Callable[..., None]:
        """After DynamoWrites' own after-call hook: what this call added to the write and read units."""
        seen = [0]
        seen_kinds: Counter[str] = Counter()

        def hook(**kwargs: Any) -> None:
            written = units.writes.units
            self._bump("ddb.wru", written - seen[0])
            seen[0] = written
            kinds = Counter(units.writes.kind_units) + Counter(units.writes.kind_index_units)
            for kind, n in (kinds - seen_kinds).items():
                self._bump(f"ddb.wru_kind.{kind}", n)
            seen_kinds.clear()
            seen_kinds.update(kinds)
            before = units.read_units
            units.after(**kwargs)
            read = units.read_units - before
            self._bump("ddb.rru", read)
            if read:
                model = kwargs.get("model")
                self._bump(f"ddb.rru_op.{getattr(model, 'name', '?')}", read)

        return hook

    # -- Lambda invocations --------------------------------------------------------------------------

    def wrap_invoke(self, gateway: Any) -> None:
        invoke = gateway.invoke_function

        def measured(logical_id: str, event: Any, **kwargs: Any) -> Any:
            if logical_id in HOURLY_JOBS and self.phase != "hourly":
                with self.during("hourly"):
                    return measured(logical_id, event, **kwargs)
            record = {"aws": Counter(), "inner_cpu": 0.0}
            wall0, cpu0, offset0 = time.perf_counter(), time.process_time(), self.clock.offset_seconds
            with self.lock:
                self.active.append(record)
            try:
                return invoke(logical_id, event, **kwargs)
            finally:
                cpu = time.process_time() - cpu0
                with self.lock:
                    self.active.remove(record)
                    own_cpu = max(cpu - record["inner_cpu"], 0.0)
                    for other in self.active:  # started before this one: it ran inside them
                        other["inner_cpu"] += own_cpu
                # The clock's offset moves during an invocation only by virtual sleeps (its own or
                # those of an invocation nested in it): the driver never advances meanwhile.
                slept = max(self.clock.offset_seconds - offset0, 0.0)
                # Lambda rounds each duration up to the millisecond.
                billed = math.ceil((own_cpu + slept) * 1000) / 1000
                self._bump(f"lambda.n.{logical_id}")
                self._bump(f"lambda.billed_s.{logical_id}", billed)
                self._bump(f"lambda.cpu_s.{logical_id}", own_cpu)
                self._bump(f"lambda.slept_s.{logical_id}", slept)
                self._bump(f"lambda.wall_s.{logical_id}", time.perf_counter() - wall0)

        gateway.invoke_function = measured

    def wrap_handlers(self, gateway: Any) -> None:
        """The CPU time of the handler's own thread: calbot's code alone (not moto's or the emulators'
        work, nor threads the handler starts), a floor under the billed duration."""
        get = gateway.handler

        def handler(logical_id: str) -> Any:
            inner = get(logical_id)

            def run(event: Any, context: Any) -> Any:
                started = time.thread_time()
                try:
                    return inner(event, context)
                finally:
                    self._bump(f"lambda.own_cpu_s.{logical_id}", time.thread_time() - started)

            return run

        gateway.handler = handler

    def wrap_http(self, gateway: Any) -> None:
        handle = gateway.handle

        def counted(req: Any) -> Any:
            found = gateway.match(req.method, req.path)
            route = found.route.route_key if found else f"{req.method} (no route)"
            self._bump(f"apigw.{route}")
            return handle(req)

        gateway.handle = counted

    def record_fires(self, report: Any) -> None:
        """EventBridge Scheduler invocations (one-time schedules and cron jobs, retries included) and
        the SQS batches the event source mappings delivered (each a receive and a delete)."""
        for fired in report.fired:
            if fired.kind == "cron" and fired.function in HOURLY_JOBS:
                with self.during("hourly"):
                    self._bump("scheduler.cron")
            elif fired.kind in ("schedule", "cron"):
                self._bump(f"scheduler.{fired.kind}")
            elif fired.kind == "sqs":
                self._bump(f"esm.{fired.id}")
                if fired.id in self.fifo_consumers:
                    self._bump("sqs_fifo.esm", 2)  # the batch's receive and delete

    def watch_services(self, stack: Any) -> None:
        """Provider requests (at the emulators) and Create Bot calls are attributed to the phase in
        which they were made: read at every phase's end."""
        self.stack = stack
        self.seen: dict[str, int] = {"graph": 0, "google": 0, "bots": 0}

    def _collect_services(self) -> None:
        stack = getattr(self, "stack", None)
        if stack is None:
            return
        for name, source in (("graph", stack.graph), ("google", stack.google)):
            log = source.requests()
            for r in log[self.seen[name] :]:
                path = r["path"]
                if path.startswith("/_control"):
                    continue
                if path.endswith("/token"):
                    kind = "token"
                elif "subscriptions" in path or "/watch" in path or "channels/stop" in path:
                    kind = "subscriptions"
                else:
                    kind = "calendar"
                self._bump(f"provider.{name}.{kind}")
            self.seen[name] = len(log)
        calls = len(stack.bots.calls())
        self._bump("bots.create", calls - self.seen["bots"])
        self.seen["bots"] = calls

    @contextmanager
    def during(self, phase: str) -> Iterator[None]:
        self._collect_services()
        before = self.phase
        self.phase = phase
        try:
            yield
        finally:
            self._collect_services()
            self.phase = before


def hook_calbot_clients(recorder: Recorder) -> None:
    """Every boto3 client made from now on gets the recorder's hooks, unless it is the local stack's
    own (its clients carry local.aws_limits.LOCAL_USER_AGENT): those stand in for AWS itself."""
    import boto3.session

    from local.aws_limits import LOCAL_USER_AGENT

    original = boto3.session.Session.client

    def client(self: Any, *args: Any, **kwargs: Any) -> Any:
        made = original(self, *args, **kwargs)
        if LOCAL_USER_AGENT not in (made.meta.config.user_agent_extra or ""):
            recorder.attach(made)
        return made

    boto3.session.Session.client = client  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------------------
# The population and its day


def meeting_times(day: datetime, count: int, account: int) -> list[datetime]:
    first, last = MODEL["meetings_from_utc_hour"], MODEL["meetings_until_utc_hour"]
    span = (last - first) * 60 - 30
    return [
        day + timedelta(hours=first, minutes=(i * span // max(count - 1, 1) + account * 7) % span)
        for i in range(count)
    ]


class Population:
    def __init__(self, stack: Any, client: Any, users: int, accounts: int, meetings: int, day: datetime):
        self.stack, self.client = stack, client
        self.users, self.accounts, self.meetings, self.day = users, accounts, meetings, day
        self.keys: list[dict[str, str]] = []
        # (provider, emulator event id, start, account, calendar)
        self.events: list[tuple[str, str, datetime, str, str]] = []
        self.rng = random.Random(18)
        self.errors: Counter[str] = Counter()

    def call(self, method: str, path: str, headers: dict[str, str], body: Any = None, **query: Any) -> Any:
        response = self.client.open(
            f"/api/v1{path}", method=method, headers=headers, json=body, query_string=query or None
        )
        if response.status_code >= 300:
            route = self.stack.gateway.match(method, f"/api/v1{path}")
            name = route.route.route_key if route else path
            self.errors[f"{name} {response.status_code} {response.get_data(as_text=True)[:160]}"] += 1
        return response.get_json(silent=True)

    def create(self) -> None:
        from calbot.admin import create_user
        from calbot.auth import issue_api_key

        graph, google = self.stack.graph, self.stack.google
        graph.add_app("day-client", "day-secret")
        google.add_app("day-google.apps.googleusercontent.com", "GOCSPX-day-secret")
        n_google = MODEL["google_accounts_per_user"]
        for u in range(self.users):
            user = create_user(f"user{u}@day.example")
            key, _ = issue_api_key(user.user_id)
            headers = {"Authorization": f"Token {key}"}
            self.keys.append(headers)
            for a in range(self.accounts):
                mail = f"u{u}.a{a}@day.example"
                if a >= self.accounts - n_google:
                    acct = google.add_account(mail, client_id="day-google.apps.googleusercontent.com")
                    body = {
                        "google_client_id": "day-google.apps.googleusercontent.com",
                        "google_client_secret": "GOCSPX-day-secret",
                        "google_refresh_token": acct["refresh_token"],
                    }
                    for i, start in enumerate(meeting_times(self.day, self.meetings, a)):
                        ev = google.add_event(
                            mail,
                            "primary",
                            summary=f"M{i}",
                            start=start.isoformat(),
                            end=(start + timedelta(minutes=30)).isoformat(),
                            meet=True,  # the emulator makes a Meet link of Google's shape
                        )
                        self.events.append(("google", ev["id"], start, mail, "primary"))
                    path = "/calendar/create_calendar"
                else:
                    acct = graph.add_account(client_id="day-client", mail=mail, user_principal_name=mail)
                    body = {
                        "microsoft_client_id": "day-client",
                        "microsoft_client_secret": "day-secret",
                        "microsoft_refresh_token": acct["refresh_token"],
                    }
                    cal = acct["calendars"][0]["id"]
                    for i, start in enumerate(meeting_times(self.day, self.meetings, a)):
                        ev = graph.add_event(
                            acct["id"],
                            cal,
                            subject=f"M{i}",
                            start=start,
                            end=start + timedelta(minutes=30),
                            online_meeting_url=f"https://acme.zoom.us/j/{u:04d}{a}{i:03d}",
                        )
                        self.events.append(("outlook", ev["id"], start, acct["id"], cal))
                    path = "/calendar/create_outlook_calendar"
                self.call("POST", path, headers, body)
            self.call(
                "POST",
                "/calendar/auto-schedule/enable",
                headers,
                {"default_bot_config": {"bot_name": "Day"}},
            )
            self.call("GET", "/calendar/events", headers)  # the first sync, as a new user's client does

    def settle_notifications(self) -> None:
        self.stack.graph.flush_notifications()
        self.stack.google.flush_notifications()
        self.stack.recorder.record_fires(self.stack.clock.fire_due())

    def change(self, when: datetime, kind: str) -> None:
        """One meeting changes at its provider: the notification reaches the webhook, the sync follows."""
        graph, google = self.stack.graph, self.stack.google
        later = [e for e in self.events if e[2] > when + timedelta(hours=1)]
        if not later and kind != "created":
            return
        if kind == "created":
            provider, _, start, account, calendar = self.rng.choice(self.events)
            start = max(start, when + timedelta(hours=2))
            if provider == "google":
                ev = google.add_event(
                    account,
                    calendar,
                    summary="New",
                    start=start.isoformat(),
                    end=(start + timedelta(minutes=30)).isoformat(),
                    meet=True,
                )
            else:
                ev = graph.add_event(
                    account,
                    calendar,
                    subject="New",
                    start=start,
                    end=start + timedelta(minutes=30),
                    online_meeting_url=f"https://acme.zoom.us/j/9{self.rng.randrange(10**9)}",
                )
            self.events.append((provider, ev["id"], start, account, calendar))
        else:
            event = self.rng.choice(later)
            provider, source, start, account, calendar = event
            if kind == "cancelled":
                (google if provider == "google" else graph).cancel_event(source)
                self.events.remove(event)
            else:
                moved = start + timedelta(minutes=30)
                if provider == "google":
                    google.update_event(
                        source, start=moved.isoformat(), end=(moved + timedelta(minutes=30)).isoformat()
                    )
                else:
                    graph.update_event(source, start=moved, end=moved + timedelta(minutes=30))
                self.events[self.events.index(event)] = (provider, source, moved, account, calendar)
        self.settle_notifications()


def timeline(pop: Population, day: datetime) -> list[tuple[datetime, str, Callable[[], None]]]:
    """The day's driver actions (the clock fires crons and schedules on its own while advancing)."""
    actions: list[tuple[datetime, str, Callable[[], None]]] = []
    for route, hours in MODEL["polls"].items():
        method, path = route.split(" ", 1)
        for hour in hours:
            for headers in pop.keys:
                actions.append(
                    (
                        day + timedelta(hours=hour),
                        "api",
                        lambda h=headers, p=path, m=method: pop.call(m, p, h),
                    )
                )
    picked: dict[int, str] = {}

    def unschedule(u: int) -> None:
        page = pop.call("GET", "/calendar/scheduled_bots", pop.keys[u]) or {}
        later = [b for b in page.get("results", []) if b.get("event_id") and b.get("status") == "Scheduled"]
        if later:
            picked[u] = later[-1]["event_id"]
            pop.call("DELETE", f"/calendar/schedule/{picked[u]}", pop.keys[u])

    def reschedule(u: int) -> None:
        if u in picked:
            pop.call("POST", f"/calendar/schedule/{picked[u]}", pop.keys[u], {})

    for u in range(len(pop.keys)):
        actions.append((day + timedelta(hours=10), "api", lambda u=u: unschedule(u)))
        actions.append((day + timedelta(hours=11), "api", lambda u=u: reschedule(u)))
    total = pop.users * pop.accounts * pop.meetings
    first, last = MODEL["changes_between_utc_hours"]
    kinds = [k for k, share in MODEL["changes"].items() for _ in range(round(total * share))]
    pop.rng.shuffle(kinds)
    for i, kind in enumerate(kinds):
        at = day + timedelta(hours=first) + (timedelta(hours=last - first) * i) / max(len(kinds), 1)
        actions.append((at.replace(microsecond=0), "notify", lambda k=kind, t=at: pop.change(t, k)))
    return sorted(actions, key=lambda a: a[0])


# --------------------------------------------------------------------------------------------------
# The projection


def per_function(counts: Counter[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, value in counts.items():
        if key.startswith("lambda."):
            _, stat, fn = key.split(".", 2)
            stats = {"n": 0, "billed_s": 0.0, "cpu_s": 0.0, "own_cpu_s": 0.0, "slept_s": 0.0, "wall_s": 0.0}
            out.setdefault(fn, stats)[stat] += value
    return out


def total(counts: dict[str, Counter[str]], phases: tuple[str, ...] = PHASES) -> Counter[str]:
    out: Counter[str] = Counter()
    for phase in phases:
        out.update(counts.get(phase, Counter()))
    return out


def service_requests(c: Counter[str]) -> dict[str, float]:
    out: Counter[str] = Counter()
    for key, value in c.items():
        if key.startswith("aws."):
            out[key.split(".")[1]] += value
    return dict(out)


def project(measured: dict[str, Any], template: Any) -> dict[str, Any]:
    """Everything at 100,000 users from this run's counts; see MODEL for the arrival assumptions."""
    users = measured["users"]
    scale = USERS_PROJECTED / users
    accounts = users * measured["accounts_per_user"]
    phases: dict[str, Counter[str]] = {p: Counter(v) for p, v in measured["counts"].items()}
    day = total(phases, tuple(p for p in PHASES if p not in ("connect", "renewal", "hourly")))
    daily: Counter[str] = Counter({k: v * scale for k, v in day.items()})
    daily.update(phases.get("hourly", Counter()))  # the day's hourly runs, as measured (HOURLY_JOBS)
    # The measured night renewed every subscription (the worst night); a day renews its share.
    daily.update({k: v * scale / MODEL["renewal_cycle_days"] for k, v in phases["renewal"].items()})
    # Connects at MODEL's daily share of accounts, from the measured cost of one connect.
    connect_factor = MODEL["connects_per_account_per_day"] * accounts / max(measured["connects"], 1)
    daily.update({k: v * connect_factor * scale for k, v in phases["connect"].items()})
    # A cron job runs once a day whatever the number of users (its duration grows with them).
    for phase in ("midnight", "renewal"):
        for fn in measured["crons"][phase]:
            daily[f"lambda.n.{fn}"] = phases[phase][f"lambda.n.{fn}"]
        daily["scheduler.cron"] += phases[phase]["scheduler.cron"] - phases[phase]["scheduler.cron"] * (
            scale if phase == "midnight" else scale / MODEL["renewal_cycle_days"]
        )

    functions = template.resources_of_type("AWS::Serverless::Function")
    specs = template.functions
    fn_rows = {}
    measured_rows = per_function(total(phases))  # per-invocation means: as measured, not scaled
    for fn, row in per_function(daily).items():
        one = measured_rows[fn]
        memory = specs[fn].memory_size if fn in specs else 0
        fn_rows[fn] = {
            "invocations": round(row["n"]),
            "lambda_seconds": round(row["billed_s"]),
            "gb_seconds": round(row["billed_s"] * memory / 1024),
            "memory_mb": memory,
            "measured_mean_billed_ms": round(one["billed_s"] / max(one["n"], 1) * 1000, 1),
            "measured_mean_wall_ms": round(one["wall_s"] / max(one["n"], 1) * 1000, 1),
            "measured_mean_own_cpu_ms": round(one["own_cpu_s"] / max(one["n"], 1) * 1000, 1),
            "measured_mean_slept_ms": round(one["slept_s"] / max(one["n"], 1) * 1000, 1),
            "reserved_concurrency": functions.get(fn, {}).get("ReservedConcurrentExecutions"),
        }
    requests = {k: round(v) for k, v in sorted(service_requests(daily).items())}
    requests["lambda (invocations)"] = sum(r["invocations"] for r in fn_rows.values())
    requests["apigateway"] = round(sum(v for k, v in daily.items() if k.startswith("apigw.")))
    requests["scheduler (target invocations)"] = round(daily["scheduler.schedule"] + daily["scheduler.cron"])
    esm_batches = sum(v for k, v in daily.items() if k.startswith("esm."))
    requests["sqs (event source receive + delete per batch)"] = round(2 * esm_batches)
    provider = {k.split(".", 1)[1]: round(v) for k, v in sorted(daily.items()) if k.startswith("provider.")}
    kms_direct = sum(v for k, v in daily.items() if k.startswith("aws.kms."))
    ssm_calls = sum(
        v
        for k, v in daily.items()
        if k.startswith("aws.ssm.") and k.split(".")[2] in ("GetParameter", "GetParameters", "PutParameter")
    )

    peaks = concurrency_peaks(measured, phases, scale, specs, functions)
    quotas = quota_checks(measured, daily, peaks, ssm_calls, kms_direct)
    schedules = standing_schedules(measured)
    cost = monthly_cost(measured, daily, fn_rows, ssm_calls, kms_direct, peaks, accounts)
    return {
        "users": USERS_PROJECTED,
        "scale_factor": round(scale),
        "requests_per_day": requests,
        "aws_operations_per_day": {
            k[4:]: round(v) for k, v in sorted(daily.items()) if k.startswith("aws.") and v * 1 >= 0.5
        },
        "provider_requests_per_day": provider,
        "bot_api_calls_per_day": round(daily["bots.create"]),
        "dynamodb_units_per_day": {"write": round(daily["ddb.wru"]), "read": round(daily["ddb.rru"])},
        # where the write units go: by record kind (the key's first part), table item or index entry
        "dynamodb_write_units_by_record": dict(
            sorted(
                (
                    (k.removeprefix("ddb.wru_kind."), round(v))
                    for k, v in daily.items()
                    if k.startswith("ddb.wru_kind.")
                ),
                key=lambda kv: -kv[1],
            )
        ),
        "midnight_write_units_per_bot": midnight_write_units(phases["midnight"]),
        "ssm_calls_per_day": round(ssm_calls),
        "kms_calls_per_day": {
            "direct": round(kms_direct),
            "via_ssm_securestring": round(daily["kms_via_ssm"]),
        },
        "lambda": fn_rows,
        "lambda_seconds_per_day": sum(r["lambda_seconds"] for r in fn_rows.values()),
        "gb_seconds_per_day": sum(r["gb_seconds"] for r in fn_rows.values()),
        "peaks": peaks,
        "quotas": quotas,
        "schedules": schedules,
        "monthly_cost_per_1000_users": cost,
    }


def standing_schedules(measured: dict[str, Any]) -> dict[str, Any] | None:
    """The day's most schedules standing at once, per user and at 100,000 users, against Scheduler's
    Number of schedules quota; and the bound deferred arming keeps whatever users schedule ahead: a bot
    joining beyond ARM_WITHIN holds no schedule (calbot.scheduler), so at most ARM_WITHIN of a user's
    bots do (a series scheduled with all its occurrences, up to 366 bots, included). The bound is the
    measured day's bots at that rate, an extrapolation."""
    peak = measured.get("schedules_peak_per_user")
    if peak is None:
        return None
    from calbot.scheduler import ARM_WITHIN

    quota = QUOTAS["scheduler_schedules"]["value"]
    hours = ARM_WITHIN.total_seconds() / 3600
    bots_per_day = measured["accounts_per_user"] * measured["meetings_per_account"]
    bound = max(peak, bots_per_day * hours / 24)
    return {
        "peak_per_user": peak,
        "projected_peak": round(peak * USERS_PROJECTED),
        "quota": quota,
        "quota_per_user": quota / USERS_PROJECTED,
        "arm_within_hours": hours,
        "bound_per_user": round(bound, 1),
        "projected_bound": round(bound * USERS_PROJECTED),
    }


def _phase_functions(c: Counter[str]) -> dict[str, dict[str, float]]:
    return per_function(c)


def _per_container_rate(
    phase: Counter[str],
    service: str,
    launches: float,
    at_peak: float,
    window: float,
    want: float,
    reserved_cap: int | None,
) -> float:
    """Calls a second to `service` (ssm, or kms: direct plus SSM's own SecureString decrypts) in the
    launch peak when the launcher's calls are per-container cached reads: linear in launches, as
    measured, but never more than each container reading once per cache age within the window."""
    from calbot.params import PARAMETER_MAX_AGE_SECONDS

    measured = sum(v for k, v in phase.items() if k.startswith(f"aws.{service}."))
    if service == "kms":
        measured += phase["kms_via_ssm"]
    linear = measured / max(launches, 1) * at_peak / window
    if not measured:
        return 0.0
    containers = min(math.ceil(want), reserved_cap) if reserved_cap else math.ceil(want)
    reads_per_container = math.ceil(window / PARAMETER_MAX_AGE_SECONDS)
    return round(min(linear, containers * reads_per_container / window), 1)


def midnight_write_units(counts: dict[str, float]) -> dict[str, Any]:
    """The midnight job's write units per bot it scheduled, in steady state: the day's events were synced
    before (at connect here, by change notifications in production), so the job writes none of them,
    only the bots and each account's token refresh, locks, sync state and settings. Each bot it
    scheduled created one launch schedule (every bot of the day joins within the 36-hour arming window)."""
    from bench.harness import write_units_by_share

    bots = counts.get("aws.scheduler.CreateSchedule", 0)
    records = {k.removeprefix("ddb.wru_kind."): v for k, v in counts.items() if k.startswith("ddb.wru_kind.")}
    return {
        "bots": round(bots),
        "total": round(counts.get("ddb.wru", 0) / max(bots, 1), 2),
        "by_share": write_units_by_share(records, bots),
    }


def _window(
    name: str,
    c: Counter[str],
    scale: float,
    specs: dict[str, Any],
    functions: dict[str, Any],
    cron: list[str],
    night_jobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A night job at 100,000 users: its cron-fired function runs once (its duration grows with the
    users it walks), the queue-fed workers share the work at their event source's MaximumConcurrency.
    A cron job's duration at scale comes from its fan-out bench when given (`night_jobs`): scaling
    this run's one invocation linearly would multiply its fixed part (one index page, one batch call)
    by the scale factor too."""
    rows = _phase_functions(c)
    lambda_s = sum(r["billed_s"] for r in rows.values()) * scale
    out: dict[str, Any] = {"lambda_seconds": round(lambda_s), "functions": {}}
    concurrency = 0
    finish_s = 0.0
    for fn, r in rows.items():
        seconds = r["billed_s"] * scale
        spec = specs.get(fn)
        entry: dict[str, Any] = {"lambda_seconds": round(seconds), "invocations": round(r["n"] * scale)}
        sqs = [e for e in spec.events if e.type == "SQS"] if spec else []
        if fn in cron:
            entry["role"] = "cron job (one invocation)"
            entry["timeout_s"] = spec.timeout if spec else None
            entry["invocations"] = round(r["n"])
            entry["duration_s"] = round(seconds / max(r["n"], 1), 1)
            entry["duration_source"] = "this run's one invocation scaled linearly (an upper bound)"
            if night_jobs and fn in night_jobs:
                entry["duration_s"] = night_jobs[fn]["duration_s"]
                entry["duration_source"] = night_jobs[fn]["source"]
            entry["over_timeout"] = bool(spec and entry["duration_s"] > spec.timeout)
            concurrency += 1
            finish_s = max(finish_s, entry["duration_s"])
        elif sqs:
            cap = (sqs[0].properties.get("ScalingConfig") or {}).get("MaximumConcurrency")
            entry["role"] = "queue worker"
            entry["maximum_concurrency"] = cap
            needed = math.ceil(seconds / MODEL["night_window_s"])
            used = min(int(cap), needed) if cap else needed
            entry["concurrency"] = used
            entry["duration_s"] = round(seconds / max(used, 1), 1)
            concurrency += used
            finish_s = max(finish_s, entry["duration_s"])
        else:
            entry["role"] = "other"
        out["functions"][fn] = entry
    out["peak_concurrency"] = concurrency
    out["finishes_in_s"] = round(finish_s, 1)
    out["ssm_calls"] = round(sum(v for k, v in c.items() if k.startswith("aws.ssm.")) * scale)
    out["ssm_per_second"] = round(out["ssm_calls"] / max(finish_s, 1), 1)
    out["create_schedule_per_second"] = round(c["aws.scheduler.CreateSchedule"] * scale / max(finish_s, 1), 1)
    out["kms_per_second"] = round(
        (sum(v for k, v in c.items() if k.startswith("aws.kms.")) + c["kms_via_ssm"])
        * scale
        / max(finish_s, 1),
        1,
    )
    out["name"] = name
    return out


def night_jobs_from(directory: Path) -> dict[str, Any]:
    """The cron jobs' fan-out time at scale as the dedicated benches of the same `make bench` run
    measured it (moto-measured and scaled, the larger of their two estimates), per cron function."""
    out: dict[str, Any] = {}
    auto, renewal = directory / "auto_schedule.json", directory / "renewal.json"
    if auto.exists():
        p = json.loads(auto.read_text())["projection_100k"]
        out["AutoScheduleJobFunction"] = {
            "duration_s": p["fan_out_seconds"],
            "source": "bench/auto_schedule.py (fan-out measured in moto, scaled to 100,000 users)",
        }
    if renewal.exists():
        p = json.loads(renewal.read_text())["projection_300k"]
        out["RenewalJobFunction"] = {
            "duration_s": p["fan_out_seconds_measured_scaled"],
            "source": "bench/renewal.py (fan-out measured in moto, scaled to 300,000 subscriptions)",
        }
    return out


def concurrency_peaks(
    measured: dict[str, Any], phases: dict[str, Counter[str]], scale: float, specs: Any, functions: Any
) -> dict[str, Any]:
    peaks: dict[str, Any] = {}
    launch = phases["launch"]
    launches = max(launch["bots.create"], 1)
    rows = per_function(launch)
    per_launch_s = sum(r["billed_s"] for r in rows.values()) / launches
    per_launch_longest = max((r["billed_s"] / max(r["n"], 1) for r in rows.values()), default=0.0)
    day_launches = launch["bots.create"] * scale
    at_0900 = day_launches * MODEL["peak_0900_share"]
    window = MODEL["launch_arrival_window_s"]
    from calbot.scheduler import LEAD_SPREAD

    fire_window = int(LEAD_SPREAD.total_seconds()) + 60
    reserved = [functions.get(fn, {}).get("ReservedConcurrentExecutions") for fn in rows]
    reserved_cap = sum(int(r) for r in reserved if r) or None
    want = at_0900 * min(per_launch_s, window) / window
    peaks["launches_0900"] = {
        "launches": round(at_0900),
        "lambda_seconds_per_launch": round(per_launch_s, 3),
        "longest_invocation_s": round(per_launch_longest, 3),
        "functions": sorted(rows),
        "invocations_per_second": round(sum(r["n"] for r in rows.values()) / launches * at_0900 / window, 1),
        "concurrency_wanted": math.ceil(want),
        "reserved_concurrency": reserved_cap,
        "concurrency": min(math.ceil(want), reserved_cap) if reserved_cap else math.ceil(want),
        "drain_s_at_reserved": round(at_0900 * per_launch_s / reserved_cap, 1) if reserved_cap else None,
        # Each bot's schedule fires at its own lead before the join time (calbot.scheduler.lead: spread
        # over LEAD_SPREAD) plus up to Scheduler's minute, so the 09:00 bots' schedules fire over
        # that whole window, not the launches' minute.
        "schedule_fire_window_s": fire_window,
        "scheduler_invocations_per_second": round(
            (launch["scheduler.schedule"] / launches) * at_0900 / fire_window, 1
        ),
        "create_schedule_per_second": round(
            launch["aws.scheduler.CreateSchedule"] / launches * at_0900 / window, 1
        ),
        # The launcher's SSM reads are its cached parameters (the bot API key: calbot.params keeps a
        # value PARAMETER_MAX_AGE_SECONDS in each container), so they scale with containers, not
        # launches: the in-process run is one warm container all day, and scaling its few reads per
        # launch would charge every launch a share of a fetch. Per container: each cached read once
        # per max age within the window; containers: the peak's concurrency.
        "ssm_per_second": _per_container_rate(launch, "ssm", launches, at_0900, window, want, reserved_cap),
        "kms_per_second": _per_container_rate(launch, "kms", launches, at_0900, window, want, reserved_cap),
        "model": f"{MODEL['peak_0900_share']:.0%} of the day's launches join at 09:00 UTC and arrive "
        f"spread over {window} s (their schedules fire over {fire_window} s: each bot's own lead plus "
        "Scheduler's minute); concurrency = launches x min(Lambda-seconds per launch, window) / window; "
        "SSM/KMS: each launcher container reads its cached parameters once per cache age (calbot.params; "
        "all at once if every container starts in the same second)",
    }
    night_jobs = measured.get("night_jobs_measured") or {}
    peaks["midnight"] = _window(
        "midnight", phases["midnight"], scale, specs, functions, measured["crons"]["midnight"], night_jobs
    )
    peaks["renewal"] = _window(
        "renewal", phases["renewal"], scale, specs, functions, measured["crons"]["renewal"], night_jobs
    )
    notify = phases["notify"]
    changes = max(measured["changes"], 1)
    rate = MODEL["burst_notifications_per_s"]
    rows = per_function(notify)
    burst: dict[str, Any] = {"notifications_per_second": rate, "functions": {}}
    for fn, r in rows.items():
        per_change_s = r["billed_s"] / changes
        spec = specs.get(fn)
        is_queue = bool(spec and any(e.type == "SQS" for e in spec.events))
        conc = rate * per_change_s
        if is_queue and fn == max(rows, key=lambda f: rows[f]["billed_s"]):
            conc = min(conc, MODEL["burst_accounts"])  # one FIFO group per account: at most one each
        burst["functions"][fn] = {
            "lambda_seconds_per_notification": round(per_change_s, 3),
            "invocations_per_notification": round(r["n"] / changes, 2),
            "concurrency": math.ceil(conc),
        }
    burst["concurrency"] = sum(f["concurrency"] for f in burst["functions"].values())
    burst["create_schedule_per_second"] = round(notify["aws.scheduler.CreateSchedule"] / changes * rate, 1)
    burst["ssm_per_second"] = round(
        sum(v for k, v in notify.items() if k.startswith("aws.ssm.")) / changes * rate, 1
    )
    burst["kms_per_second"] = round(
        (sum(v for k, v in notify.items() if k.startswith("aws.kms.")) + notify["kms_via_ssm"])
        / changes
        * rate,
        1,
    )
    burst["apigw_per_second"] = round(
        sum(v for k, v in notify.items() if k.startswith("apigw.")) / changes * rate, 1
    )
    burst["dynamodb_wru_per_second"] = round(notify["ddb.wru"] / changes * rate)
    burst["model"] = (
        f"{rate:,} notifications in one second across {MODEL['burst_accounts']} accounts, each costing what "
        "one measured change cost (webhook + sync); concurrency = rate x Lambda-seconds per notification, "
        "the sync worker capped at one per account (FIFO group)"
    )
    peaks["notification_burst"] = burst
    return peaks


def quota_checks(
    measured: dict[str, Any], daily: Counter[str], peaks: dict[str, Any], ssm_calls: float, kms_direct: float
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def check(quota: str, where: str, value: float) -> None:
        q = QUOTAS[quota]
        rows.append(
            {
                "quota": q["what"],
                "limit": q["value"],
                "where": where,
                "projected": round(value, 1),
                "crossed": value > q["value"],
                "raise": q["raise"] if value > q["value"] else "",
                "source": q["source"],
            }
        )

    launch = peaks["launches_0900"]
    check(
        "lambda_concurrency", "launches_0900, wanted (before any reserved cap)", launch["concurrency_wanted"]
    )
    reserved = launch.get("reserved_concurrency")
    if reserved:
        # Lambda refuses (the deploy fails) a reservation leaving under 100 of the account's limit
        # unreserved; new accounts may start at a limit of 10 (local/concurrency.py, test_deployment).
        from local.concurrency import UNRESERVED_MINIMUM

        needs = reserved + UNRESERVED_MINIMUM
        rows.append(
            {
                "quota": "Lambda concurrent executions the template's reservations need at deploy "
                "(reserved + the 100 Lambda keeps unreserved; a new account may start at 10)",
                "limit": QUOTAS["lambda_concurrency"]["value"],
                "where": "deploy (prod's LauncherReservedConcurrency)",
                "projected": needs,
                "crossed": needs > QUOTAS["lambda_concurrency"]["value"],
                "raise": "Service Quotas: Lambda 'Concurrent executions' (L-B99A9384) to at least "
                f"{needs} before deploying, or a smaller LauncherReservedConcurrency"
                if needs > QUOTAS["lambda_concurrency"]["value"]
                else "",
                "source": "https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html",
            }
        )
        late = launch["drain_s_at_reserved"] > MODEL["launch_arrival_window_s"]
        rows.append(
            {
                "quota": "the launcher's reserved concurrency (template.yaml)",
                "limit": reserved,
                "where": "launches_0900, concurrency wanted",
                "projected": launch["concurrency_wanted"],
                "crossed": late,
                "raise": f"the peak's Lambda work takes {launch['drain_s_at_reserved']} s at it, so launches "
                "queue behind each other: raise the launcher's reserved concurrency (within the account's "
                "Lambda concurrency) or spread the launches"
                if late
                else "",
                "source": "template.yaml",
            }
        )
    for night in ("midnight", "renewal"):
        for fn, entry in peaks[night]["functions"].items():
            if "timeout_s" in entry:
                rows.append(
                    {
                        "quota": f"{fn} Timeout (template.yaml; Lambda's maximum is 900 s)",
                        "limit": entry["timeout_s"],
                        "where": f"{night}: its one invocation",
                        "projected": entry["duration_s"],
                        "crossed": entry["over_timeout"],
                        "raise": "fan the job out (a queue and workers) so no one invocation walks every user"
                        if entry["over_timeout"]
                        else "",
                        "source": "template.yaml",
                    }
                )
    for name in ("launches_0900", "midnight", "renewal", "notification_burst"):
        p = peaks[name]
        check("lambda_concurrency", name, p.get("concurrency", p.get("peak_concurrency", 0)))
        check("ssm_tps_default", name, p["ssm_per_second"])
        check("kms_symmetric_rps", name, p["kms_per_second"])
        check("scheduler_create_tps", name, p["create_schedule_per_second"])
        if p["ssm_per_second"] > QUOTAS["ssm_tps_default"]["value"]:
            check("ssm_tps_higher", name, p["ssm_per_second"])
    check("ssm_tps_default", "day average", ssm_calls / 86400)
    check("kms_symmetric_rps", "day average", (kms_direct + daily["kms_via_ssm"]) / 86400)
    check(
        "ssm_standard_parameters",
        "credential parameters at 100,000 users",
        measured["parameters_per_user"] * USERS_PROJECTED,
    )
    check(
        "ssm_advanced_parameters",
        "credential parameters at 100,000 users",
        measured["parameters_per_user"] * USERS_PROJECTED,
    )
    if "schedules_peak_per_user" in measured:
        check(
            "scheduler_schedules",
            "the day's most at once (launch and reschedule schedules standing)",
            measured["schedules_peak_per_user"] * USERS_PROJECTED,
        )
    check(
        "scheduler_invocations_tps",
        "launches_0900",
        peaks["launches_0900"]["scheduler_invocations_per_second"],
    )
    check("apigw_rps", "notification_burst", peaks["notification_burst"]["apigw_per_second"])
    check(
        "dynamodb_table_rru_wru",
        "notification_burst (WRU/s)",
        peaks["notification_burst"]["dynamodb_wru_per_second"],
    )
    return rows


def monthly_cost(
    measured: dict[str, Any],
    daily: Counter[str],
    fn_rows: dict[str, Any],
    ssm_calls: float,
    kms_direct: float,
    peaks: dict[str, Any],
    accounts: int,
) -> dict[str, Any]:
    """USD a month for 1,000 users (the day's projected counts x 30 / 100)."""
    k = DAYS_PER_MONTH * 1000 / USERS_PROJECTED
    p = {name: v["usd"] for name, v in PRICES.items()}
    gb_s = sum(r["gb_seconds"] for r in fn_rows.values())
    invocations = sum(r["invocations"] for r in fn_rows.values())
    fifo = sum(v for key, v in daily.items() if key.startswith("sqs_fifo."))  # already x2 for batches
    sqs_all = sum(v for key, v in daily.items() if key.startswith("aws.sqs.")) + 2 * sum(
        v for key, v in daily.items() if key.startswith("esm.")
    )
    peak_ssm = max(
        peaks[n]["ssm_per_second"] for n in ("launches_0900", "midnight", "renewal", "notification_burst")
    )
    higher_throughput = peak_ssm > QUOTAS["ssm_tps_default"]["value"]
    params_1000 = measured["parameters_per_user"] * 1000
    advanced = measured["parameters_per_user"] * USERS_PROJECTED > QUOTAS["ssm_standard_parameters"]["value"]
    cost = {
        "lambda": gb_s * k * p["lambda_arm_gb_second"] + invocations * k * p["lambda_request"],
        "dynamodb (requests)": daily["ddb.wru"] * k * p["dynamodb_wru"]
        + daily["ddb.rru"] * k * p["dynamodb_rru"],
        "dynamodb (storage)": measured["table_bytes_per_user"] * 1000 / 2**30 * p["dynamodb_gb_month"],
        "ssm (advanced parameters)": params_1000 * p["ssm_advanced_parameter_month"] if advanced else 0.0,
        "ssm (higher-throughput interactions)": ssm_calls * k * p["ssm_higher_throughput_interaction"]
        if higher_throughput
        else 0.0,
        "kms (requests)": (kms_direct + daily["kms_via_ssm"]) * k * p["kms_request"],
        "kms (customer key)": p["kms_key_month"] * 1000 / USERS_PROJECTED if kms_direct else 0.0,
        "sqs": (sqs_all - fifo) * k * p["sqs_standard_request"] + fifo * k * p["sqs_fifo_request"],
        "eventbridge scheduler": (daily["scheduler.schedule"] + daily["scheduler.cron"])
        * k
        * p["scheduler_invocation"],
        "api gateway (http api)": sum(v for key, v in daily.items() if key.startswith("apigw."))
        * k
        * p["apigw_http_request"],
    }
    rounded = {name: round(v, 2) for name, v in cost.items()}
    return {
        "usd": rounded,
        "total_usd": round(sum(cost.values()), 2),
        "ssm_advanced_tier": advanced,
        "ssm_higher_throughput": higher_throughput,
        "not_included": "CloudWatch Logs (log bytes not measured), data transfer, free tiers, the "
        "Graph/Google/Create Bot APIs (not AWS)",
    }


# --------------------------------------------------------------------------------------------------


def run(users: int, accounts: int, meetings: int, credential_backend: str = "ssm") -> dict[str, Any]:
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from bench.harness import speed_up_moto_queries
    from local.stack import LocalStack

    speed_up_moto_queries()  # same answers, less of moto's sorting (the table grows over the days)
    recorder = Recorder(None)  # the stack's clock once it exists
    hook_calbot_clients(recorder)
    stack = LocalStack(
        state_dir=Path(tempfile.mkdtemp(prefix="calbot-day-")),
        seed=False,
        virtual_time=True,
        parameter_overrides={"CredentialBackend": credential_backend},
    )
    stack.start()
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"  # the template's INFO: one line per request
    try:
        stack.clock.stop()  # nothing moves but this script: every firing happens inside an advance/drain
        recorder.clock = stack.clock
        stack.recorder = recorder  # type: ignore[attr-defined]
        recorder.wrap_invoke(stack.gateway)
        recorder.wrap_http(stack.gateway)
        recorder.wrap_handlers(stack.gateway)
        recorder.fifo_consumers = {c.id for c in stack.clock.consumers if c.queue_name.endswith(".fifo")}
        from werkzeug.test import Client

        client = Client(stack.gateway)
        for logical_id in stack.gateway.template.functions:
            stack.gateway.handler(logical_id)  # warm: cold starts are bench/cold_start.py's subject
        now = stack.clock.now()
        day = (now + timedelta(days=6)).replace(hour=0, minute=0, second=0, microsecond=0)
        # Connected five days before (at 02:00), every subscription and channel is due for renewal at
        # the day's 03:00 run: that night is the renewal window's worst case (MODEL spreads the
        # renewals over the days in the daily totals).
        setup_at = day - timedelta(days=5) + timedelta(hours=2)
        if setup_at > now:
            stack.clock.advance(to=setup_at)
        parameters_before = count_parameters()
        progress(f"connecting {users} users x {accounts} accounts")
        t0 = time.perf_counter()
        pop = Population(stack, client, users, accounts, meetings, day)
        recorder.watch_services(stack)
        recorder.on = True
        with recorder.during("connect"):
            pop.create()
            pop.settle_notifications()
        connects = users * accounts
        recorder.on = False
        setup_s = time.perf_counter() - t0
        parameters_per_user = (count_parameters() - parameters_before) / users
        # The days before run uncounted (their midnight jobs and renewals), so the day is steady state.
        progress("the days before (uncounted)")
        stack.clock.advance(to=day - timedelta(minutes=1))
        progress("the day: 00:00 auto-schedule, 03:00 renewal")
        recorder._collect_services()  # (not counted: recording is off)
        from local.aws_limits import reset_scheduler_peak, scheduler_standing

        reset_scheduler_peak()  # the most schedules standing at once over the day, against the quota
        recorder.on = True
        crons: dict[str, list[str]] = {}
        t1 = time.perf_counter()
        with recorder.during("midnight"):
            report = stack.clock.advance(to=day + timedelta(minutes=30))
            recorder.record_fires(report)
            crons["midnight"] = sorted(
                {
                    f.function
                    for f in report.fired
                    if f.kind == "cron" and f.function and f.function not in HOURLY_JOBS
                }
            )
        with recorder.during("renewal"):
            report = stack.clock.advance(to=day + timedelta(hours=3, minutes=30))
            recorder.record_fires(report)
            crons["renewal"] = sorted(
                {
                    f.function
                    for f in report.fired
                    if f.kind == "cron" and f.function and f.function not in HOURLY_JOBS
                }
            )
        changes = 0
        hour = -1
        for at, phase, action in timeline(pop, day):
            if at.hour != hour:
                hour = at.hour
                progress(f"{at:%H:%M} ({time.perf_counter() - t1:.0f} s)")
            if at > stack.clock.now():
                with recorder.during("launch"):
                    recorder.record_fires(stack.clock.advance(to=at))
            with recorder.during(phase):
                action()
            changes += phase == "notify"
        with recorder.during("launch"):
            recorder.record_fires(stack.clock.advance(to=day + timedelta(hours=23, minutes=59)))
        day_s = time.perf_counter() - t1
        recorder.on = False
        schedules_peak = scheduler_standing()[1]
        measured = {
            "users": users,
            "accounts_per_user": accounts,
            "meetings_per_account": meetings,
            "credential_backend": credential_backend,
            "connects": connects,
            "changes": changes,
            "crons": crons,
            "day": day.date().isoformat(),
            "setup_seconds": round(setup_s, 1),
            "day_seconds": round(day_s, 1),
            "http_errors": dict(pop.errors),
            "overruns": stack.gateway.overruns(),
            "bots_launched": round(recorder.counts["launch"]["bots.create"]),
            "subscriptions_renewed": round(
                sum(v for k, v in recorder.counts["renewal"].items() if k.endswith(".subscriptions"))
            ),
            "parameters_per_user": round(parameters_per_user, 2),
            "schedules_peak_per_user": round(schedules_peak / users, 2),
            **storage(stack, users),
        }
        measured["counts"] = {p: dict(c) for p, c in recorder.counts.items()}
        measured["template"] = stack.gateway.template
    finally:
        stack.stop()
    return measured


def night_jobs(report: Any) -> list[str]:
    """The once-a-day cron functions that fired in this advance of the clock (not the HOURLY_JOBS)."""
    return sorted({f.function for f in report.fired if f.kind == "cron" and f.function} - HOURLY_JOBS)


def progress(text: str) -> None:
    print(f"[day] {text}", file=sys.stderr, flush=True)


def storage(stack: Any, users: int) -> dict[str, Any]:
    """Table bytes (DynamoDB's item sizes + 100 bytes of overhead each) and SSM parameters per user,
    read with the stack's own client (not counted)."""
    import boto3
    from botocore.config import Config

    from local.aws_limits import LOCAL_USER_AGENT
    from tests.conftest import item_size

    session = boto3.session.Session(region_name="us-east-1")
    config = Config(user_agent_extra=LOCAL_USER_AGENT)
    ddb = session.client("dynamodb", config=config)
    total_bytes, items = 0, 0
    for table in ddb.list_tables()["TableNames"]:
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                total_bytes += item_size(item) + 100
                items += 1
    return {
        "table_items_per_user": round(items / users, 1),
        "table_bytes_per_user": round(total_bytes / users),
    }


def count_parameters() -> int:
    import boto3
    from botocore.config import Config

    from local.aws_limits import LOCAL_USER_AGENT

    ssm = boto3.session.Session(region_name="us-east-1").client(
        "ssm", config=Config(user_agent_extra=LOCAL_USER_AGENT)
    )
    return sum(len(page["Parameters"]) for page in ssm.get_paginator("describe_parameters").paginate())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--meetings", type=int, default=20, help="per account on the day")
    parser.add_argument(
        "--credential-backend",
        choices=("ssm", "dynamodb"),
        default="ssm",
        help="the CredentialBackend the stack runs with (README: past SSM's parameter ceiling, dynamodb)",
    )
    parser.add_argument(
        "--night-jobs-from",
        type=Path,
        help="a directory holding this make bench run's auto_schedule.json and renewal.json: the two cron "
        "jobs' durations at scale are taken from those benches' fan-out measurements, not from scaling "
        "this run's one invocation (whose fixed part dominates at a few users)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="do not run: project again the measurements of an earlier run's JSON (same counts, this "
        "script's model, prices and quotas, and the template as it is now)",
    )
    from bench.harness import add_json_out, write_json

    add_json_out(parser)
    args = parser.parse_args()
    if args.from_json:
        from local.template import load_template

        measured = json.loads(args.from_json.read_text())["measured"]
        figures = {
            "measured": measured,
            "model": MODEL,
            "prices": PRICES,
            "quota_sources": QUOTAS,
            "projection": project(measured, load_template(ROOT / "template.yaml")),
        }
        write_json(figures, args.json_out)
        print_summary(figures)
        return 0
    started = {
        "run_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_1min": os.getloadavg()[0],
    }
    measured = run(args.users, args.accounts, args.meetings, args.credential_backend)
    measured.update(started)
    if args.night_jobs_from:
        measured["night_jobs_measured"] = night_jobs_from(args.night_jobs_from)
    measured["git_commit"] = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"],
        cwd=Path(__file__).resolve().parent,
        capture_output=True,
        text=True,
    ).stdout.strip()
    template = measured.pop("template")
    figures = {
        "measured": measured,
        "model": MODEL,
        "prices": PRICES,
        "quota_sources": QUOTAS,
        "projection": project(measured, template),
    }
    write_json(figures, args.json_out)
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print_summary(figures)
    return 0


def print_summary(f: dict[str, Any]) -> None:
    m, p = f["measured"], f["projection"]
    print(
        f"one day: {m['users']} users x {m['accounts_per_user']} accounts x {m['meetings_per_account']} "
        f"meetings (setup {m['setup_seconds']} s, day {m['day_seconds']} s); {m['bots_launched']} bots "
        f"launched, {m['changes']} changes; HTTP errors {m['http_errors'] or 'none'}"
    )
    print(f"projected to {p['users']:,} users a day:")
    for service, n in p["requests_per_day"].items():
        print(f"  {service:<48} {n:>16,}")
    print(f"  Lambda-seconds {p['lambda_seconds_per_day']:,}, GB-seconds {p['gb_seconds_per_day']:,}")
    print(
        f"  DynamoDB units: {p['dynamodb_units_per_day']['write']:,} write, "
        f"{p['dynamodb_units_per_day']['read']:,} read"
    )
    print(
        "  DynamoDB write units by record: "
        + ", ".join(f"{k} {v:,}" for k, v in p.get("dynamodb_write_units_by_record", {}).items())
    )
    mid = p.get("midnight_write_units_per_bot")
    if mid:
        shares = mid["by_share"]
        print(
            f"  midnight job: {mid['total']} write units per scheduled bot ({mid['bots']} bots; events "
            f"synced before, none written): the bot's own records {shares['bot']}, its event "
            f"{shares['event']}, per-account token, lock, sync and settings writes {shares['account']}"
        )
    for name, peak in p["peaks"].items():
        conc = peak.get("concurrency", peak.get("peak_concurrency"))
        print(
            f"  peak {name}: concurrency {conc}, SSM {peak['ssm_per_second']}/s, "
            f"KMS {peak['kms_per_second']}/s"
        )
    for q in p["quotas"]:
        if q["crossed"]:
            print(
                f"  QUOTA CROSSED: {q['quota']} at {q['where']}: {q['projected']:,} > {q['limit']:,}; "
                + q["raise"]
            )
    c = p["monthly_cost_per_1000_users"]
    print(f"  monthly cost per 1,000 users: ${c['total_usd']} " + json.dumps(c["usd"]))


if __name__ == "__main__":
    sys.exit(main())
