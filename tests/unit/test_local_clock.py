"""local.clock (EventBridge Scheduler firing, cron jobs, SQS event source mappings, virtual time) and
local.control (its HTTP API), driven with a throwaway template, throwaway handlers and in-process moto."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from moto import mock_aws
from werkzeug.test import Client

from calbot import timeutil
from local.aws_bootstrap import create_resources
from local.clock import Cron, LocalClock, ScheduleExpression, ScheduleExpressionError
from local.clock.sqs import LOCAL_POLLERS
from local.control import ControlApp, with_control
from local.gateway import Gateway
from local.template import Template, load_template

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = """\
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    Timeout: 30
Resources:
  Group:
    Type: AWS::Scheduler::ScheduleGroup
    Properties: {Name: !Sub "bots-${AWS::StackName}"}
  ScheduleDlq:
    Type: AWS::SQS::Queue
  # The role the test schedules run with (EventBridge Scheduler assumes it to invoke their targets).
  SchedulerRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - Effect: Allow
            Principal: {Service: scheduler.amazonaws.com}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: invoke
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: lambda:InvokeFunction
                Resource: !Sub "arn:aws:lambda:${AWS::Region}:${AWS::AccountId}:function:*"
              - Effect: Allow
                Action: sqs:SendMessage
                Resource: !GetAtt ScheduleDlq.Arn
  FlakyDlq:
    Type: AWS::SQS::Queue
  Work:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      ContentBasedDeduplication: true
      VisibilityTimeout: 30
      RedrivePolicy: {deadLetterTargetArn: !GetAtt WorkDlq.Arn, maxReceiveCount: 3}
  WorkDlq:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true}
  TargetFn:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: test-target
      CodeUri: fn/
  FlakyFn:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: test-flaky
      CodeUri: fn/
      DeadLetterQueue: {Type: SQS, TargetArn: !GetAtt FlakyDlq.Arn}
  MidnightFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Events:
        Midnight: {Type: Schedule, Properties: {Schedule: "cron(0 0 * * ? *)"}}
  RenewFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Events:
        Renew:
          Type: ScheduleV2
          Properties: {ScheduleExpression: "cron(0 3 * * ? *)", Input: '{"job": "renew"}'}
  WorkerFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
"""

# One handler for every function: it records what it got (and the clock time it ran at) to a file.
HANDLER = """\
import json

from calbot import timeutil

LOG = {log!r}


def _write(entry):
    with open(LOG, "a") as fh:
        fh.write(json.dumps(entry) + "\\n")


def handler(event, context):
    entry = {{"fn": context.function_name, "now": timeutil.iso_z(timeutil.now())}}
    if isinstance(event, dict) and "Records" in event:
        records = event["Records"]
        entry["records"] = [
            {{
                "id": r["messageId"],
                "body": r["body"],
                "group": r["attributes"].get("MessageGroupId"),
                "count": r["attributes"]["ApproximateReceiveCount"],
                "source": r["eventSourceARN"],
            }}
            for r in records
        ]
        _write(entry)
        if any(r["body"] == "explode" and r["attributes"]["ApproximateReceiveCount"] == "1" for r in records):
            raise RuntimeError("worker down")
        # Bodies containing "fail" fail on their first delivery only. Like Powertools' FIFO processor,
        # the later messages of a failed message's group are named too, unless its body says "alone".
        failures, held = [], set()
        for r in records:
            group = r["attributes"].get("MessageGroupId")
            if group in held:
                failures.append({{"itemIdentifier": r["messageId"]}})
            elif "fail" in r["body"] and r["attributes"]["ApproximateReceiveCount"] == "1":
                failures.append({{"itemIdentifier": r["messageId"]}})
                if "alone" not in r["body"]:
                    held.add(group)
        return {{"batchItemFailures": failures}}
    if isinstance(event, dict) and event.get("sleep"):
        timeutil.sleep(event["sleep"])
        entry["now"] = timeutil.iso_z(timeutil.now())
    entry["event"] = event
    entry["remaining_ms"] = context.get_remaining_time_in_millis()
    _write(entry)
    if isinstance(event, dict) and event.get("reput"):
        # re-put its own schedule under the same name, from inside its own invocation
        import boto3

        scheduler = boto3.client("scheduler", region_name="us-east-1")
        mine = scheduler.get_schedule(Name=event["reput"], GroupName=event["group"])
        scheduler.update_schedule(
            Name=mine["Name"],
            GroupName=mine["GroupName"],
            ScheduleExpression=event["at"],
            FlexibleTimeWindow=mine["FlexibleTimeWindow"],
            Target=mine["Target"],
        )
    if isinstance(event, dict) and event.get("fail") == "once":
        marker = LOG + ".failed-once"
        try:
            open(marker, "x").close()
        except FileExistsError:
            return {{"ok": "second time"}}
        raise RuntimeError("boom once")
    if isinstance(event, dict) and event.get("fail"):
        raise RuntimeError("boom " + str(event["fail"]))
    return {{"ok": True}}
"""


class Env:
    def __init__(self, tmp_path: Path, template: Template, clock: LocalClock, session: Any) -> None:
        self.log = tmp_path / "calls.jsonl"
        self.template = template
        self.group = str(template.ref("Group"))
        self.clock = clock
        self.scheduler = session.client("scheduler")
        self.sqs = session.client("sqs")

    def clock_log(self) -> str:
        stream = self.clock.log.stream
        return stream.getvalue() if isinstance(stream, io.StringIO) else ""

    def calls(self, fn: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        entries = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [e for e in entries if fn is None or e["fn"].endswith(fn)]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)

    def schedule(
        self,
        name: str,
        at: datetime,
        payload: Any,
        *,
        target: str = "arn:aws:lambda:us-east-1:123456789012:function:test-target",
        retry: dict[str, Any] | None = None,
        state: str = "ENABLED",
        timezone: str = "UTC",
        role: str | None = None,
    ) -> None:
        self.scheduler.create_schedule(
            **self._request(name, at, payload, target, retry, state, timezone, role)
        )

    def reschedule(self, name: str, at: datetime, payload: Any) -> None:
        request = self._request(
            name, at, payload, "arn:aws:lambda:us-east-1:123456789012:function:test-target"
        )
        request.pop("ActionAfterCompletion")  # not an UpdateSchedule parameter in moto's model
        self.scheduler.update_schedule(**request)

    def _request(
        self,
        name: str,
        at: datetime,
        payload: Any,
        target: str,
        retry: dict[str, Any] | None = None,
        state: str = "ENABLED",
        timezone: str = "UTC",
        role: str | None = None,
    ) -> dict[str, Any]:
        local = at.astimezone(ZoneInfo(timezone))
        return {
            "Name": name,
            "GroupName": self.group,
            "ScheduleExpression": f"at({local.strftime('%Y-%m-%dT%H:%M:%S')})",
            "ScheduleExpressionTimezone": timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "ActionAfterCompletion": "DELETE",
            "State": state,
            "Target": {
                "Arn": target,
                "RoleArn": role or self.template.arn("SchedulerRole"),
                "Input": json.dumps(payload),
                "RetryPolicy": retry or {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600},
                "DeadLetterConfig": {"Arn": self.template.arn("ScheduleDlq")},
            },
        }

    def schedule_names(self) -> list[str]:
        return [s["Name"] for s in self.scheduler.list_schedules(GroupName=self.group)["Schedules"]]

    def queue_url(self, logical_id: str) -> str:
        return self.sqs.get_queue_url(QueueName=self.template.physical_name(logical_id))["QueueUrl"]

    def receive_all(self, logical_id: str) -> list[dict[str, Any]]:
        return self.sqs.receive_message(
            QueueUrl=self.queue_url(logical_id),
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            AttributeNames=["All"],
        ).get("Messages", [])


def _make_env(
    tmp_path: Path,
    *,
    virtual: bool = True,
    target_errors: str = "lambda",
    extra: str = "",
    precision_seconds: float = 0.0,
    drop: str | None = None,
    scheduler_changes: Any = None,
) -> tuple[Env, Any]:
    (tmp_path / "template.yaml").write_text(TEMPLATE + extra)
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text(HANDLER.format(log=str(tmp_path / "calls.jsonl")))
    # Unique names: moto's backends are shared with any stack this test session started.
    template = load_template(tmp_path / "template.yaml", stack_name=f"clock-{uuid.uuid4().hex[:8]}")
    if drop is not None:  # a resource SAM's transform emitted, taken out before anything reads it
        del template.translated["Resources"][drop]
    session = boto3.session.Session(region_name="us-east-1")
    create_resources(template, session)
    gateway = Gateway(template, log=io.StringIO())
    # precision 0: these tests pin what happens at a schedule's time; the minute after it in which
    # Scheduler really fires has tests of its own (precision_seconds=60, the stack's default)
    clock = LocalClock(
        template,
        gateway,
        session,
        virtual=virtual,
        target_errors=target_errors,
        log=io.StringIO(),
        schedule_precision_seconds=precision_seconds,
        scheduler_changes=scheduler_changes,
    )
    return Env(tmp_path, template, clock, session), clock


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # In-process moto; a stack started earlier in this session may have pointed boto3 elsewhere.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    # No reset on either side: moto's backends are process-wide, and a session's in-process stack
    # (tests/conftest.py) keeps its tables and parameters there. Names here are unique instead.
    mock = mock_aws()
    mock.start(reset=False)
    try:
        yield
    finally:
        mock.stop(remove_data=False)


@pytest.fixture
def env(tmp_path: Path, aws: None) -> Iterator[Env]:
    environment, clock = _make_env(tmp_path)
    yield environment
    clock.close()


def _attempts(report: Any) -> list[tuple[int, bool]]:
    """(attempt, ok) of a report's schedule invocations (a long advance may cross cron times too)."""
    return [(f.attempt, f.ok) for f in report.fired if f.kind == "schedule"]


def _next(hour: int, after: datetime) -> datetime:
    """The first hh:00:00 UTC strictly after `after`."""
    moment = after.replace(hour=hour, minute=0, second=0, microsecond=0)
    return moment if moment > after else moment + timedelta(days=1)


# -- one-time schedules ----------------------------------------------------------------------------


def test_a_schedule_fires_only_when_due_with_its_input_as_the_event_then_is_deleted(env: Env) -> None:
    at = (env.clock.now() + timedelta(minutes=10)).replace(microsecond=0)  # at() has whole seconds
    env.schedule("bot-1", at, {"bot_id": "b1", "user_id": "u1"})

    assert env.clock.fire_due().schedules == []
    report = env.clock.advance(seconds=9 * 60)
    assert report.schedules == [] and env.calls("test-target") == []
    assert env.schedule_names() == ["bot-1"]

    report = env.clock.advance(to=at + timedelta(seconds=5))
    assert report.schedules == ["bot-1"]
    (call,) = env.calls("test-target")
    assert call["fn"] == "test-target"
    assert call["event"] == {"bot_id": "b1", "user_id": "u1"}  # the Input itself, no envelope
    assert timeutil.parse_iso(call["now"]) >= at  # the handler ran at (or just after) the due time
    assert _attempts(report) == [(1, True)]
    assert [f.result for f in report.fired if f.kind == "schedule"] == [{"ok": True}]
    assert env.schedule_names() == []  # ActionAfterCompletion: DELETE
    assert env.clock.advance(seconds=3600).schedules == []  # and never again


def test_schedule_times_honour_the_schedule_time_zone(env: Env) -> None:
    at = (env.clock.now() + timedelta(hours=2)).replace(microsecond=0)
    env.schedule("berlin", at, {"zone": "berlin"}, timezone="Europe/Berlin")
    (listed,) = env.clock.schedules()
    assert listed.at == at
    assert env.clock.advance(to=at - timedelta(seconds=1)).schedules == []
    assert env.clock.advance(to=at).schedules == ["berlin"]


def test_an_updated_schedule_fires_at_its_new_time_only(env: Env) -> None:
    now = env.clock.now()
    env.schedule("bot-2", now + timedelta(minutes=5), {"v": 1})
    env.reschedule("bot-2", now + timedelta(minutes=30), {"v": 2})

    assert env.clock.advance(to=now + timedelta(minutes=20)).schedules == []
    assert env.calls("test-target") == []
    report = env.clock.advance(to=now + timedelta(minutes=31))
    assert report.schedules == ["bot-2"]
    assert [c["event"] for c in env.calls("test-target")] == [{"v": 2}]


def test_a_disabled_schedule_never_fires(env: Env) -> None:
    now = env.clock.now()
    env.schedule("off", now + timedelta(minutes=1), {"v": "off"}, state="DISABLED")
    env.schedule("on", now + timedelta(minutes=2), {"v": "on"})
    report = env.clock.advance(seconds=86400)
    assert report.schedules == ["on"]
    assert [c["event"] for c in env.calls("test-target")] == [{"v": "on"}]
    assert env.schedule_names() == ["off"]  # still there, never fired


def test_due_schedules_fire_in_due_order_and_virtual_sleeps_move_the_clock(env: Env) -> None:
    now = env.clock.now().replace(microsecond=0)
    env.schedule("late", now + timedelta(minutes=20), {"n": "late"})
    env.schedule("early", now + timedelta(minutes=10), {"n": "early", "sleep": 20})
    env.clock.advance(seconds=1800)
    early, late = env.calls("test-target")
    assert [early["event"]["n"], late["event"]["n"]] == ["early", "late"]
    # The early handler waited 20 s on the virtual clock: it saw the time move by 20 s at once.
    assert timeutil.parse_iso(early["now"]) >= now + timedelta(minutes=10, seconds=20)


def test_a_clock_invocation_has_its_timeout_and_virtual_sleeps_count_against_it(env: Env) -> None:
    at = env.clock.now() + timedelta(minutes=1)
    env.schedule("napper", at, {"n": "napper", "sleep": 20})
    env.clock.advance(to=at)
    (call,) = env.calls("test-target")
    # Timeout 30 (the template's), 20 s of it slept on the virtual clock: about 10 s are left.
    assert 9000 < call["remaining_ms"] <= 10000


def test_a_clock_invocation_past_its_timeout_fails_and_gets_lambdas_async_retries(env: Env) -> None:
    # Lambda kills it at its Timeout: whatever it would have returned, the invocation failed, and it is
    # retried (after 1 and 2 minutes) and then sent to the function's dead-letter queue.
    at = env.clock.now() + timedelta(minutes=1)
    env.schedule(
        "overlong", at, {"sleep": 45}, target="arn:aws:lambda:us-east-1:123456789012:function:test-flaky"
    )
    report = env.clock.advance(to=at)
    assert _attempts(report) == [(1, False), (2, False), (3, False)]
    (dead,) = env.receive_all("FlakyDlq")
    assert json.loads(dead["Body"]) == {"sleep": 45}
    assert "Task timed out after 30.00 seconds" in dead["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert [o["kind"] for o in env.clock.gateway.overruns()] == ["timeout"] * 3


def test_virtual_sleep_advances_the_clock_instead_of_sleeping(env: Env) -> None:
    before, started = env.clock.now(), time.monotonic()
    timeutil.sleep(600)  # calbot's sleep is the clock's
    env.clock.sleep(60)
    assert time.monotonic() - started < 10  # 660 s of clock time, far fewer real ones (even loaded)
    assert env.clock.now() - before >= timedelta(seconds=660)
    assert env.clock.offset_seconds >= 660
    assert timeutil.now() - env.clock.now() < timedelta(seconds=1)  # calbot reads the same clock


def test_listeners_hear_every_forward_move(env: Env) -> None:
    moves: list[float] = []
    env.clock.on_move(moves.append)
    env.clock.sleep(90)
    env.clock.advance(seconds=3600)
    env.clock.advance(seconds=0)
    assert moves[0] == 90 and 3599 < sum(moves[1:]) <= 3600  # real time ran on a little meanwhile
    assert all(m > 0 for m in moves)


def test_the_clock_never_goes_backwards(env: Env) -> None:
    env.clock.advance(seconds=3600)
    with pytest.raises(ValueError, match="backwards"):
        env.clock.advance(to=datetime.now(UTC))
    with pytest.raises(ValueError):
        env.clock.advance(seconds=-5)


def test_a_failing_handler_gets_lambdas_async_retries_then_its_dead_letter_queue(env: Env) -> None:
    # Scheduler invokes Lambda asynchronously: a function error is Lambda's to retry (twice, after 1
    # and 2 minutes), then it goes to the function's DeadLetterQueue; the schedule's DLQ stays empty.
    at = env.clock.now() + timedelta(minutes=1)
    env.schedule(
        "flaky", at, {"fail": "always"}, target="arn:aws:lambda:us-east-1:123456789012:function:test-flaky"
    )
    report = env.clock.advance(to=at)
    attempts = [c for c in env.calls() if c["fn"] == "test-flaky"]
    assert len(attempts) == 3
    times = [timeutil.parse_iso(c["now"]) for c in attempts]
    assert times[1] - times[0] >= timedelta(seconds=60) and times[2] - times[1] >= timedelta(seconds=120)
    assert _attempts(report) == [(1, False), (2, False), (3, False)]
    assert env.schedule_names() == []  # Scheduler's delivery succeeded: its part is done
    (dead,) = env.receive_all("FlakyDlq")
    assert json.loads(dead["Body"]) == {"fail": "always"}
    assert dead["MessageAttributes"]["ErrorMessage"]["StringValue"] == "boom always"
    assert env.receive_all("ScheduleDlq") == []


def test_an_undeliverable_target_is_retried_per_its_retry_policy_then_lands_in_the_schedule_dlq(
    env: Env,
) -> None:
    at = env.clock.now() + timedelta(minutes=1)
    missing = "arn:aws:lambda:us-east-1:123456789012:function:no-such-function"
    env.schedule("lost", at, {"bot_id": "b9"}, target=missing, retry={"MaximumRetryAttempts": 2})
    report = env.clock.advance(to=at)
    assert _attempts(report) == [(1, False), (2, False), (3, False)]
    (dead,) = env.receive_all("ScheduleDlq")
    assert json.loads(dead["Body"]) == {"bot_id": "b9"}
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] == "ResourceNotFoundException"
    assert missing in attributes["ERROR_MESSAGE"]
    assert attributes["EXHAUSTED_RETRY_CONDITION"] == "MaximumRetryAttempts"
    assert attributes["RETRY_ATTEMPTS"] == "2"
    assert env.schedule_names() == []


def test_in_scheduler_mode_a_failing_target_retries_then_lands_in_the_schedule_dlq(
    tmp_path: Path, aws: None
) -> None:
    environment, clock = _make_env(tmp_path, target_errors="scheduler")
    try:
        at = clock.now() + timedelta(minutes=1)
        environment.schedule("bot-x", at, {"fail": "down"}, retry={"MaximumRetryAttempts": 1})
        report = clock.advance(to=at)
        assert _attempts(report) == [(1, False), (2, False)]
        times = [timeutil.parse_iso(c["now"]) for c in environment.calls("test-target")]
        assert times[1] - times[0] >= timedelta(seconds=60)  # a virtual backoff, inside the advance
        (dead,) = environment.receive_all("ScheduleDlq")
        assert json.loads(dead["Body"]) == {"fail": "down"}
        assert dead["MessageAttributes"]["ERROR_CODE"]["StringValue"] == "RuntimeError"
        assert dead["MessageAttributes"]["ERROR_MESSAGE"]["StringValue"] == "boom down"
        assert environment.schedule_names() == []
    finally:
        clock.close()


def test_a_retry_that_succeeds_completes_the_schedule(tmp_path: Path, aws: None) -> None:
    environment, clock = _make_env(tmp_path, target_errors="scheduler")
    try:
        at = clock.now() + timedelta(minutes=1)
        environment.schedule("once", at, {"fail": "once"})
        report = clock.advance(to=at)
        assert _attempts(report) == [(1, False), (2, True)]
        assert [f.result for f in report.fired if f.kind == "schedule"][1] == {"ok": "second time"}
        assert environment.schedule_names() == [] and environment.receive_all("ScheduleDlq") == []
    finally:
        clock.close()


def test_schedule_targets_of_the_real_template_resolve_to_their_functions(aws: None) -> None:
    template = load_template(ROOT / "template.yaml", parameter_overrides={"Stage": "local"})
    clock = LocalClock(
        template, None, boto3.session.Session(region_name="us-east-1"), virtual=True, install=False
    )
    env_vars = template.functions["ScheduleEventFunction"].environment
    assert clock.one_time.function_for_arn(env_vars["BOT_LAUNCHER_ARN"]) == "BotLauncherFunction"
    assert clock.one_time.function_for_arn(env_vars["RESCHEDULE_ARN"]) == "RecurrenceRescheduleFunction"
    assert clock.one_time.function_for_arn(env_vars["BOT_LAUNCHER_ARN"] + ":$LATEST") == "BotLauncherFunction"
    assert clock.one_time.function_for_arn("arn:aws:lambda:us-east-1:123456789012:function:nope") is None
    assert clock.groups == ["calbot-bots-local"]


def test_every_queue_consumer_of_the_real_template_is_fed(aws: None) -> None:
    template = load_template(ROOT / "template.yaml", parameter_overrides={"Stage": "local"})
    clock = LocalClock(
        template, None, boto3.session.Session(region_name="us-east-1"), virtual=True, install=False
    )
    fed = {
        c.id: (c.queue_logical_id, c.batch_size, c.report_failures, c.pollers)
        for c in clock.consumers
        if c.enabled
    }
    # several batches of a queue at once (a burst is not served one batch at a time), as Lambda's pollers
    assert fed == {
        "AutoScheduleWorkerFunction.Users": ("AutoScheduleQueue", 1, True, LOCAL_POLLERS),
        "SyncWorkerFunction.Changes": ("SyncQueue", 10, True, LOCAL_POLLERS),
        "RenewalWorkerFunction.Subscriptions": ("RenewalQueue", 1, True, LOCAL_POLLERS),
        "BotLauncherFunction.Launches": ("LaunchQueue", 10, True, LOCAL_POLLERS),
        "WebhookDeliveryFunction.Deliveries": ("WebhookQueue", 10, True, LOCAL_POLLERS),
    }
    assert LOCAL_POLLERS > 1


# -- permissions -----------------------------------------------------------------------------------

# Roles that cannot do what a schedule or a queue consumer needs, and the functions that use them.
RESTRICTED = """\
  SendOnlyRole:  # trusts Scheduler, may send dead letters, may not invoke anything
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - {Effect: Allow, Principal: {Service: scheduler.amazonaws.com}, Action: sts:AssumeRole}
      Policies:
        - PolicyName: dlq
          PolicyDocument:
            Statement:
              - {Effect: Allow, Action: sqs:SendMessage, Resource: !GetAtt ScheduleDlq.Arn}
  LambdaTrustRole:  # may invoke and send, but Scheduler cannot assume it
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - {Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}
      Policies:
        - PolicyName: all
          PolicyDocument:
            Statement:
              - {Effect: Allow, Action: ["lambda:InvokeFunction", "sqs:SendMessage"], Resource: "*"}
  NoReceiveRole:  # a consumer's execution role without sqs:ReceiveMessage
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - {Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}
      Policies:
        - PolicyName: sqs
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: [sqs:DeleteMessage, sqs:GetQueueAttributes]
                Resource: !GetAtt Locked.Arn
  Locked:
    Type: AWS::SQS::Queue
  LockedWorkerFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Role: !GetAtt NoReceiveRole.Arn
      Events:
        Work: {Type: SQS, Properties: {Queue: !GetAtt Locked.Arn}}
  DeniedCronFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Events:
        Early:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: "cron(30 4 * * ? *)"
            RoleArn: !GetAtt SendOnlyRole.Arn
            RetryPolicy: {MaximumRetryAttempts: 1}
            DeadLetterConfig: {Arn: !GetAtt ScheduleDlq.Arn}
"""


@pytest.fixture
def restricted(tmp_path: Path, aws: None) -> Iterator[Env]:
    environment, clock = _make_env(tmp_path, extra=RESTRICTED)
    yield environment
    clock.close()


def test_a_target_the_schedule_role_may_not_invoke_is_retried_then_dead_lettered(restricted: Env) -> None:
    env = restricted
    at = env.clock.now() + timedelta(minutes=1)
    role = env.template.arn("SendOnlyRole")
    env.schedule("denied", at, {"bot_id": "b1"}, role=role, retry={"MaximumRetryAttempts": 2})
    report = env.clock.advance(to=at)
    assert env.calls("test-target") == []  # never invoked
    assert _attempts(report) == [(1, False), (2, False), (3, False)]
    (dead,) = env.receive_all("ScheduleDlq")
    assert json.loads(dead["Body"]) == {"bot_id": "b1"}
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["ERROR_CODE"] == "AccessDeniedException"
    assert "lambda:InvokeFunction" in attributes["ERROR_MESSAGE"] and role in attributes["ERROR_MESSAGE"]
    assert env.schedule_names() == []
    assert "not invoked" in env.clock_log()


def test_a_role_scheduler_cannot_assume_invokes_nothing_and_sends_no_dead_letter(restricted: Env) -> None:
    env = restricted
    at = env.clock.now() + timedelta(minutes=1)
    env.schedule(
        "untrusted",
        at,
        {"bot_id": "b2"},
        role=env.template.arn("LambdaTrustRole"),
        retry={"MaximumRetryAttempts": 0},
    )
    report = env.clock.advance(to=at)
    assert env.calls("test-target") == []
    assert _attempts(report) == [(1, False)]
    (error,) = [f.error for f in report.fired if f.kind == "schedule"]
    assert error is not None and "sts:AssumeRole" in error["errorMessage"]
    # Scheduler sends dead letters with the same role: it cannot, so the event is lost.
    assert env.receive_all("ScheduleDlq") == []
    assert report.dead_letters[0]["dropped"] is True
    assert "dead letter not sent" in env.clock_log()


def test_a_role_outside_the_template_does_not_exist(restricted: Env) -> None:
    env = restricted
    at = env.clock.now() + timedelta(minutes=1)
    env.schedule(
        "ghost", at, {}, role="arn:aws:iam::123456789012:role/elsewhere", retry={"MaximumRetryAttempts": 0}
    )
    report = env.clock.advance(to=at)
    assert env.calls("test-target") == [] and _attempts(report) == [(1, False)]
    assert "does not exist" in report.fired[0].error["errorMessage"]  # type: ignore[index]


def test_a_queue_whose_consumer_role_cannot_receive_is_never_fed(restricted: Env) -> None:
    env = restricted
    (consumer,) = [c for c in env.clock.consumers if c.function == "LockedWorkerFn"]
    assert not consumer.enabled and consumer.refused is not None
    assert "does not have permissions to call ReceiveMessage on SQS" in env.clock_log()
    env.sqs.send_message(QueueUrl=env.queue_url("Locked"), MessageBody="hello")
    env.clock.advance(seconds=60)
    assert env.clock.drain() == 0
    assert env.calls("LockedWorkerFn") == []
    assert [m["body"] for m in env.clock.queue_messages("Locked")] == ["hello"]
    # The other consumer, with SAM's generated role, is fed as before.
    (worker,) = [c for c in env.clock.consumers if c.function == "WorkerFn"]
    assert worker.enabled and worker.refused is None


def test_a_cron_whose_schedule_role_cannot_invoke_is_retried_then_dead_lettered(restricted: Env) -> None:
    env = restricted
    start = _next(4, env.clock.now())
    env.clock.advance(to=start)
    env.clear()
    # Run between 04:00 and 04:30 UTC, the advance above crossed today's 04:30 and dead-lettered that
    # run already (CI met it at 04:07): only the run below is this test's.
    env.sqs.purge_queue(QueueUrl=env.queue_url("ScheduleDlq"))
    report = env.clock.advance(to=start + timedelta(minutes=31))
    assert env.calls("DeniedCronFn") == []
    attempts = [(f.attempt, f.ok) for f in report.fired if f.id == "DeniedCronFn.Early"]
    assert attempts == [(1, False), (2, False)]  # its RetryPolicy allows one retry
    (dead,) = env.receive_all("ScheduleDlq")
    assert dead["MessageAttributes"]["ERROR_CODE"]["StringValue"] == "AccessDeniedException"
    assert "DeniedCronFnEarly" in dead["MessageAttributes"]["SCHEDULE_ARN"]["StringValue"]
    # The template's other crons (SAM's generated roles and rule permissions) still run.
    env.clock.advance(to=_next(0, env.clock.now()) + timedelta(minutes=1))
    assert len(env.calls("MidnightFn")) == 1


def test_a_schedule_event_without_its_rule_permission_is_not_invoked(tmp_path: Path, aws: None) -> None:
    # A Schedule (EventBridge rule) event invokes under the function's resource policy, which SAM's
    # transform grants events.amazonaws.com for that rule: without it EventBridge cannot invoke.
    env, clock = _make_env(tmp_path, drop="MidnightFnMidnightPermission")
    try:
        eleven_pm = _next(23, clock.now())
        clock.advance(to=eleven_pm)
        report = clock.advance(to=eleven_pm + timedelta(hours=2))
        assert env.calls("MidnightFn") == []
        first = next(f for f in report.fired if f.id == "MidnightFn.Midnight")
        assert not first.ok and "events.amazonaws.com" in first.error["errorMessage"]  # type: ignore[index]
        assert "not invoked" in env.clock_log()
    finally:
        clock.close()


# -- cron jobs -------------------------------------------------------------------------------------


def test_cron_fires_when_the_clock_crosses_midnight_utc_only(env: Env) -> None:
    eleven_pm = _next(23, env.clock.now())
    env.clock.advance(to=eleven_pm)
    env.clear()

    report = env.clock.advance(to=eleven_pm + timedelta(hours=2))  # 23:00 -> 01:00
    assert report.crons == ["MidnightFn.Midnight"]
    (call,) = env.calls("MidnightFn")
    midnight = eleven_pm + timedelta(hours=1)
    assert call["event"]["time"] == midnight.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert call["event"]["detail-type"] == "Scheduled Event" and call["event"]["source"] == "aws.events"
    assert call["event"]["detail"] == {} and call["event"]["resources"][0].startswith("arn:aws:events:")
    assert timeutil.parse_iso(call["now"]) >= midnight

    env.clear()
    report = env.clock.advance(to=eleven_pm + timedelta(hours=24))  # 01:00 -> 23:00: no midnight
    assert "MidnightFn.Midnight" not in report.crons and env.calls("MidnightFn") == []
    assert report.crons == ["RenewFn.Renew"]  # 03:00 was crossed, with its Input as the event
    assert env.calls("RenewFn")[0]["event"] == {"job": "renew"}


def test_a_long_advance_fires_each_crossed_cron_time_in_order(env: Env) -> None:
    start = _next(12, env.clock.now())
    env.clock.advance(to=start)
    env.clear()
    report = env.clock.advance(to=start + timedelta(days=3))
    assert report.crons == ["MidnightFn.Midnight", "RenewFn.Renew"] * 3
    times = [c["event"]["time"] for c in env.calls("MidnightFn")]
    assert times == sorted(times) and len(set(times)) == 3


def test_run_cron_runs_a_job_now_on_demand(env: Env) -> None:
    result = env.clock.run_cron("MidnightFn")
    assert result["ok"] and result["job"] == "MidnightFn.Midnight" and result["result"] == {"ok": True}
    (call,) = env.calls("MidnightFn")
    assert call["event"]["detail-type"] == "Scheduled Event"
    assert env.clock.run_cron("RenewFn.Renew")["event"] == {"job": "renew"}
    with pytest.raises(KeyError):
        env.clock.run_cron("TargetFn")
    listed = {c["id"]: c for c in env.clock.cron_list()}
    assert listed["MidnightFn.Midnight"]["next"].endswith("T00:00:00Z")
    assert listed["RenewFn.Renew"]["next"].endswith("T03:00:00Z")


CRON_CASES = [
    # expression, UTC time, matches
    ("0 0 * * ? *", "2025-01-06T00:00", True),
    ("0 0 * * ? *", "2025-01-06T00:01", False),
    ("0 3 * * ? *", "2025-01-06T03:00", True),
    ("0/15 * * * ? *", "2025-01-06T10:45", True),
    ("0/15 * * * ? *", "2025-01-06T10:50", False),
    ("*/20 9-17 ? * MON-FRI *", "2025-01-10T17:40", True),  # a Friday
    ("*/20 9-17 ? * MON-FRI *", "2025-01-11T10:00", False),  # a Saturday
    ("0 8 ? * 2 *", "2025-01-06T08:00", True),  # 2 = MONDAY in AWS's numbering (1 = SUNDAY)
    ("0 8 ? * 1 *", "2025-01-05T08:00", True),  # a Sunday
    ("0 8 ? * 1 *", "2025-01-06T08:00", False),
    ("0 8 ? * SUN,SAT *", "2025-01-04T08:00", True),
    ("15 10 L * ? *", "2025-02-28T10:15", True),  # last day of February
    ("15 10 L * ? *", "2024-02-28T10:15", False),  # 2024 is a leap year
    ("15 10 L * ? *", "2024-02-29T10:15", True),
    ("0 12 1,15 * ? *", "2025-03-15T12:00", True),
    ("0 12 1-3 * ? *", "2025-03-04T12:00", False),
    ("0 0 1 JAN,JUL ? *", "2025-07-01T00:00", True),
    ("0 0 1 1/6 ? *", "2025-07-01T00:00", True),  # a/n: months 1 and 7
    ("0 0 1 1/6 ? *", "2025-04-01T00:00", False),
    ("0 10 ? * 6#3 *", "2025-01-17T10:00", True),  # the third Friday
    ("0 10 ? * 6#3 *", "2025-01-10T10:00", False),
    ("0 10 ? * 6L *", "2025-01-31T10:00", True),  # the last Friday
    ("0 10 ? * 6L *", "2025-01-24T10:00", False),
    ("0 9 15W * ? *", "2025-03-14T09:00", True),  # the 15th is a Saturday: nearest weekday is Friday
    ("0 0 * * ? 2026", "2025-01-06T00:00", False),
    ("0 0 * * ? 2024-2026", "2025-01-06T00:00", True),
    ("0 22 ? * FRI-MON *", "2025-01-05T22:00", True),  # a wrapping range includes Sunday
    ("0 22 ? * FRI-MON *", "2025-01-07T22:00", False),  # but not Tuesday
]


@pytest.mark.parametrize(("expression", "moment", "expected"), CRON_CASES)
def test_the_aws_cron_matcher(expression: str, moment: str, expected: bool) -> None:
    wall = datetime.fromisoformat(moment)
    assert Cron(expression).matches(wall) is expected
    # times() agrees with matches() on the same minute.
    aware = wall.replace(tzinfo=UTC)
    found = list(Cron(expression).times(aware - timedelta(minutes=1), aware, ZoneInfo("UTC")))
    assert (found == [aware]) is expected


@pytest.mark.parametrize(
    "bad", ["0 0 * * * *", "0 0 ? * ? *", "61 0 * * ? *", "0 0 * * ?", "0 0 * 13 ? *", "0 0 ? * 8 *"]
)
def test_cron_expressions_aws_rejects_are_rejected(bad: str) -> None:
    with pytest.raises(ScheduleExpressionError):
        Cron(bad)


def test_rate_at_and_zoned_cron_expressions() -> None:
    anchor = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    rate = ScheduleExpression("rate(15 minutes)", anchor=anchor)
    assert list(rate.times(anchor, anchor + timedelta(hours=1))) == [
        anchor + timedelta(minutes=m) for m in (15, 30, 45, 60)
    ]
    at = ScheduleExpression("at(2025-03-30T09:59:00)", "Europe/Berlin")  # CEST from that morning
    assert at.at == datetime(2025, 3, 30, 7, 59, tzinfo=UTC)
    zoned = ScheduleExpression("cron(0 9 * * ? *)", "America/New_York")
    assert zoned.next_after(datetime(2025, 1, 6, tzinfo=UTC)) == datetime(2025, 1, 6, 14, 0, tzinfo=UTC)
    assert zoned.next_after(datetime(2025, 7, 6, tzinfo=UTC)) == datetime(2025, 7, 6, 13, 0, tzinfo=UTC)
    with pytest.raises(ScheduleExpressionError):
        ScheduleExpression("at(2025-03-30 09:59)")
    with pytest.raises(ScheduleExpressionError):
        ScheduleExpression("rate(0 minutes)")


# -- SQS event source mapping ----------------------------------------------------------------------


def test_an_sqs_batch_with_one_failure_deletes_the_rest_and_redelivers_in_group_order(env: Env) -> None:
    url = env.queue_url("Work")
    for group, body in [("g1", "a"), ("g1", "b-fail"), ("g1", "c"), ("g2", "d"), ("g2", "e")]:
        env.sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group)

    assert env.clock.drain() == 5
    (first,) = env.calls("WorkerFn")
    assert [r["body"] for r in first["records"]] == ["a", "b-fail", "c", "d", "e"]
    assert first["records"][0]["source"] == env.template.arn("Work")
    # a, d, e are deleted; b failed and c (after it in g1) must wait with it.
    assert sorted(m["body"] for m in env.clock.queue_messages("Work")) == ["b-fail", "c"]
    assert all(m["in_flight"] for m in env.clock.queue_messages("Work"))

    env.clear()
    assert env.clock.advance(seconds=10).delivered == 0  # still inside the visibility timeout
    report = env.clock.advance(seconds=25)  # past it: redelivered, in order, and now succeeding
    assert report.delivered == 2
    (second,) = env.calls("WorkerFn")
    assert [(r["body"], r["count"]) for r in second["records"]] == [("b-fail", "2"), ("c", "2")]
    assert env.clock.queue_messages("Work") == []
    assert env.receive_all("WorkDlq") == []


def test_an_sqs_fifo_batch_returns_exactly_the_named_messages_as_lambda_does(env: Env) -> None:
    # Lambda deletes every message batchItemFailures does not name, FIFO or not: keeping a failed
    # message's later group mates is the function's job. A function that names only the failed one
    # loses the order of its group (c is deleted), and the local clock must not hide that.
    url = env.queue_url("Work")
    for group, body in [("g1", "a"), ("g1", "b-fail-alone"), ("g1", "c"), ("g2", "d")]:
        env.sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group)
    assert env.clock.drain() == 4
    assert [m["body"] for m in env.clock.queue_messages("Work")] == ["b-fail-alone"]
    env.clear()
    assert env.clock.advance(seconds=31).delivered == 1
    (again,) = env.calls("WorkerFn")
    assert [r["body"] for r in again["records"]] == ["b-fail-alone"]
    assert env.clock.queue_messages("Work") == []


def test_pollers_ask_moto_only_when_a_message_can_be_received(env: Env) -> None:
    # An empty ReceiveMessage is an HTTP round trip through moto's server: the stack's pollers made ~44
    # a second while idle (20% of a core taken from the Lambdas), so they look at the queue first.
    receives: list[str] = []
    env.clock.sqs._sqs.meta.events.register(
        "before-parameter-build.sqs.ReceiveMessage",
        lambda **kwargs: receives.append(kwargs["params"]["QueueUrl"]),
    )
    url = env.queue_url("Work")
    assert env.clock.drain() == 0
    assert receives == []  # nothing in any queue: no receive at all
    env.sqs.send_message(QueueUrl=url, MessageBody="later", MessageGroupId="g2", DelaySeconds=0)
    env.sqs.send_message(QueueUrl=url, MessageBody="a", MessageGroupId="g1")
    assert env.clock.drain() == 2
    assert receives and set(receives) == {url}
    assert [r["body"] for r in env.calls("WorkerFn")[0]["records"]] == ["later", "a"]
    receives.clear()
    assert env.clock.drain() == 0
    assert receives == []  # both deleted: nothing receivable again


def test_an_sqs_handler_exception_leaves_the_whole_batch(env: Env) -> None:
    url = env.queue_url("Work")
    env.sqs.send_message(QueueUrl=url, MessageBody="explode", MessageGroupId="g1")
    env.sqs.send_message(QueueUrl=url, MessageBody="fine", MessageGroupId="g2")
    report = env.clock.fire_due()
    (batch,) = report.batches
    assert not batch.ok and batch.error["errorMessage"] == "worker down"
    assert batch.detail["failed"] == batch.detail["messages"] and len(batch.detail["messages"]) == 2
    assert sorted(m["body"] for m in env.clock.queue_messages("Work")) == ["explode", "fine"]
    assert env.clock.advance(seconds=31).delivered == 2  # redelivered; the handler copes this time
    assert env.clock.queue_messages("Work") == []


# -- background loop -------------------------------------------------------------------------------


def _wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_real_time_loop_fires_due_schedules_and_drains_queues(tmp_path: Path, aws: None) -> None:
    environment, clock = _make_env(tmp_path, virtual=False)
    clock.tick_seconds = 0.1
    try:
        clock.start()
        environment.schedule("now", clock.now() - timedelta(seconds=1), {"n": "due"})
        environment.schedule("later", clock.now() + timedelta(hours=1), {"n": "later"})
        environment.sqs.send_message(
            QueueUrl=environment.queue_url("Work"), MessageBody="m", MessageGroupId="g"
        )
        assert _wait_for(lambda: environment.calls("test-target") and environment.calls("WorkerFn"))
        assert [c["event"] for c in environment.calls("test-target")] == [{"n": "due"}]
        assert _wait_for(lambda: environment.schedule_names() == ["later"])
        assert not clock.virtual and abs(clock.offset_seconds) < 1e-9
    finally:
        clock.close()


def test_a_stopped_and_restarted_loop_still_runs_the_work_stop_cancelled(tmp_path: Path, aws: None) -> None:
    """stop() cancels the loop's queued work (tests pause the in-process stack's loop around a
    virtual clock): that work's key is let go, so the restarted loop runs the consumer again."""
    environment, clock = _make_env(tmp_path, virtual=False)
    clock.tick_seconds = 0.1
    clock._workers = 1
    try:
        clock.start()
        running, release, ran = threading.Event(), threading.Event(), []
        clock._submit(("busy",), lambda: (running.set(), release.wait(10)))
        assert running.wait(10)
        clock._submit(("queued",), lambda: ran.append("queued"))  # behind the busy one: queued
        threading.Timer(0.3, release.set).start()
        clock.stop()
        assert ran == [] and clock._in_flight == set() and clock._busy == 0
        clock.start()
        clock._submit(("queued",), lambda: ran.append("queued"))
        environment.sqs.send_message(
            QueueUrl=environment.queue_url("Work"), MessageBody="m", MessageGroupId="g"
        )
        assert _wait_for(lambda: ran == ["queued"] and environment.calls("WorkerFn"))
    finally:
        clock.close()


def test_the_virtual_loop_fires_what_is_due_at_the_virtual_now(tmp_path: Path, aws: None) -> None:
    environment, clock = _make_env(tmp_path, virtual=True)
    clock.tick_seconds = 0.1
    try:
        clock.start()
        clock.sleep(3600)  # virtual time moves; nothing waits
        environment.schedule("past-virtual-now", clock.now() - timedelta(minutes=1), {"n": 1})
        assert _wait_for(lambda: environment.calls("test-target"))
        # deleted once the invocation returns (ActionAfterCompletion: DELETE), just after the call
        assert _wait_for(lambda: environment.schedule_names() == [])
    finally:
        clock.close()


def test_close_restores_calbots_time_source(tmp_path: Path, aws: None) -> None:
    environment, clock = _make_env(tmp_path)
    clock.sleep(86400)
    assert timeutil.now() - datetime.now(UTC) > timedelta(hours=23)
    clock.close()
    assert abs(timeutil.now() - datetime.now(UTC)) < timedelta(seconds=5)


# -- control API -----------------------------------------------------------------------------------


def test_the_control_api(env: Env) -> None:
    downstream_calls: list[str] = []

    def downstream(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        downstream_calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"gateway"]

    client = Client(with_control(downstream, ControlApp(env.clock)))
    assert client.get("/api/v1/anything").get_data() == b"gateway" and downstream_calls == [
        "/api/v1/anything"
    ]

    clock = client.get("/_local/clock").get_json()
    assert clock["virtual"] is True and timeutil.parse_iso(clock["now"]) - env.clock.now() < timedelta(
        seconds=1
    )

    at = env.clock.now() + timedelta(minutes=10)
    env.schedule("bot-http", at, {"bot_id": "bh"})
    (listed,) = client.get("/_local/schedules").get_json()["value"]
    assert listed["name"] == "bot-http" and listed["group"] == env.group
    assert listed["at"] == at.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    assert listed["target_function"] == "TargetFn" and listed["input"] == {"bot_id": "bh"}
    assert listed["state"] == "ENABLED" and listed["action_after_completion"] == "DELETE"
    assert listed["retry_policy"]["MaximumRetryAttempts"] == 2
    assert listed["dead_letter_arn"] == env.template.arn("ScheduleDlq")
    assert listed["flexible_time_window"] == {"Mode": "OFF"}

    assert client.post("/_local/clock/fire").get_json()["schedules"] == []
    report = client.post("/_local/clock/advance", json={"seconds": 601}).get_json()
    assert report["schedules"] == ["bot-http"]
    assert [f["result"] for f in report["fired"] if f["kind"] == "schedule"] == [{"ok": True}]
    assert report["errors"] == [] and report["delivered"] == 0
    assert client.post("/_local/clock/advance", json={"to": "2000-01-01T00:00:00Z"}).status_code == 400
    assert client.post("/_local/clock/advance", json={"seconds": 1, "to": "x"}).status_code == 400

    env.schedule("bot-bad", env.clock.now(), {"fail": "http"}, retry={"MaximumRetryAttempts": 0})
    failed = client.post("/_local/clock/fire").get_json()
    assert failed["schedules"] == ["bot-bad"]
    assert failed["errors"][0]["id"] == f"{env.group}/bot-bad"
    assert failed["errors"][0]["error"]["errorMessage"] == "boom http"

    ran = client.post("/_local/cron/MidnightFn").get_json()
    assert ran["ok"] and ran["function"] == "MidnightFn"
    assert client.post("/_local/cron/NoSuchFn").status_code == 404
    assert {c["id"] for c in client.get("/_local/crons").get_json()["value"]} == {
        "MidnightFn.Midnight",
        "RenewFn.Renew",
    }

    env.sqs.send_message(QueueUrl=env.queue_url("Work"), MessageBody="q", MessageGroupId="g")
    peek = client.get("/_local/queues/Work/messages").get_json()
    assert [m["body"] for m in peek["value"]] == ["q"]
    assert peek["value"][0]["attributes"]["ApproximateReceiveCount"] == "0"  # peeking is no receive
    assert client.post("/_local/queues/drain").get_json() == {"delivered": 1}
    assert client.get("/_local/queues/Work/messages").get_json()["value"] == []
    assert client.get("/_local/queues/Nope/messages").status_code == 404


# -- issue 18: Scheduler's minute, DELETE after completion, SQS delays on the clock ------------------


def test_a_schedule_fires_within_the_minute_after_its_time_not_on_it(tmp_path: Path, aws: None) -> None:
    environment, clock = _make_env(tmp_path, precision_seconds=60)
    try:
        fired = []
        for n in range(8):
            at = (clock.now() + timedelta(minutes=10 + n)).replace(second=0, microsecond=0)
            environment.schedule(f"minute-{n}", at, {"n": n})
            clock.advance(to=at + timedelta(seconds=60))
            (call,) = [c for c in environment.calls("test-target") if c["event"] == {"n": n}]
            fired.append((timeutil.parse_iso(call["now"]) - at).total_seconds())
        assert all(0 <= s < 60 for s in fired), fired
        assert len({round(s) for s in fired}) > 1, fired  # spread over the minute, not one fixed lag
    finally:
        clock.close()


REPUT = """\
  ReputFn:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: test-reput
      CodeUri: fn/
      Policies:
        - Statement:
            - Effect: Allow
              Action: [scheduler:GetSchedule, scheduler:UpdateSchedule, iam:PassRole]
              Resource: "*"
"""


def test_a_delete_schedule_re_put_under_its_name_by_its_own_invocation_is_deleted_anyway(
    tmp_path: Path, aws: None
) -> None:
    env, clock = _make_env(tmp_path, extra=REPUT)
    try:
        at = (clock.now() + timedelta(minutes=10)).replace(microsecond=0)
        later = f"at({(at + timedelta(hours=1)).strftime('%Y-%m-%dT%H:%M:%S')})"
        target = "arn:aws:lambda:us-east-1:123456789012:function:test-reput"
        env.schedule(
            "self-reput", at, {"reput": "self-reput", "group": env.group, "at": later}, target=target
        )
        report = clock.advance(to=at + timedelta(seconds=5))
        assert _attempts(report) == [(1, True)]
        assert env.schedule_names() == []  # as AWS may: re-arming must use a new name
        clock.advance(seconds=2 * 3600)
        assert len(env.calls("test-reput")) == 1
    finally:
        clock.close()


DELAYED = """\
  Delayed:
    Type: AWS::SQS::Queue
  DelayedFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Events:
        Delayed: {Type: SQS, Properties: {Queue: !GetAtt Delayed.Arn, BatchSize: 10}}
"""


SHORT_VISIBILITY = """\
  Short:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 20
  SlowFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Timeout: 60
      Events:
        Short: {Type: SQS, Properties: {Queue: !GetAtt Short.Arn, BatchSize: 10}}
"""


def test_a_queue_whose_visibility_is_under_its_consumers_timeout_is_never_fed(
    tmp_path: Path, aws: None
) -> None:
    # Lambda refuses to create that mapping (the deploy fails): the local stack never polls it.
    environment, clock = _make_env(tmp_path, extra=SHORT_VISIBILITY)
    try:
        (consumer,) = [c for c in clock.consumers if c.function == "SlowFn"]
        assert not consumer.enabled
        assert (
            consumer.refused
            == "Queue visibility timeout: 20 seconds is less than Function timeout: 60 seconds"
        )
        assert "Queue visibility timeout: 20 seconds" in environment.clock_log()
        environment.sqs.send_message(QueueUrl=environment.queue_url("Short"), MessageBody="m")
        assert clock.drain() == 0 and environment.calls("SlowFn") == []
    finally:
        clock.close()


def test_sqs_delay_seconds_run_on_the_virtual_clock(tmp_path: Path, aws: None) -> None:
    environment, clock = _make_env(tmp_path, extra=DELAYED)
    try:
        sent = clock.now()
        environment.sqs.send_message(
            QueueUrl=environment.queue_url("Delayed"), MessageBody="m", DelaySeconds=600
        )
        clock.drain()
        clock.advance(seconds=590)
        assert environment.calls("DelayedFn") == []  # still delayed on the clock (real time barely moved)
        clock.advance(seconds=20)
        (call,) = environment.calls("DelayedFn")
        at = timeutil.parse_iso(call["now"])
        assert sent + timedelta(seconds=600) <= at <= sent + timedelta(seconds=601)  # delivered when due
    finally:
        clock.close()


def test_the_clock_lists_schedules_again_only_when_they_changed(tmp_path: Path, aws: None) -> None:
    """With moto in the process (the local stack), a tick describes only the schedules changed since
    the last one (moto's change feed) instead of listing every schedule: listing each tick was about a
    tenth of the stack's CPU in a burst. A create, an update and a delete are all seen by the next
    tick: the new and moved schedules fire on time, the deleted one never."""
    from local.aws_limits import install_limits, scheduler_changes

    install_limits()
    environment, clock = _make_env(tmp_path, scheduler_changes=scheduler_changes)
    try:
        now = clock.now()
        environment.schedule("later", now + timedelta(hours=2), {"v": 1})
        clock.fire_due()
        listed = clock.one_time.listings
        for _ in range(5):
            clock.fire_due()
        assert clock.one_time.listings == listed  # nothing changed: no ListSchedules
        environment.schedule("soon", now + timedelta(minutes=1), {"v": 2})
        environment.schedule("dropped", now + timedelta(minutes=1), {"v": 4})
        clock.fire_due()  # sees both (not due yet)
        environment.reschedule("later", now + timedelta(minutes=2), {"v": 3})
        environment.scheduler.delete_schedule(Name="dropped", GroupName=environment.group)
        report = clock.advance(to=now + timedelta(minutes=3))
        assert clock.one_time.listings == listed  # every change came from the feed
        assert sorted(f.id for f in report.fired if f.kind == "schedule") == [
            f"{environment.group}/later",
            f"{environment.group}/soon",
        ]
        assert [c["event"] for c in environment.calls("test-target")] == [{"v": 2}, {"v": 3}]
        assert environment.schedule_names() == []  # both fired and deleted themselves (DELETE)
    finally:
        clock.close()


def test_the_scheduler_change_feed_names_each_change_or_says_it_cannot(tmp_path: Path, aws: None) -> None:
    from local.aws_limits import install_limits, scheduler_changes

    install_limits()
    environment, clock = _make_env(tmp_path)
    try:
        start, unknown = scheduler_changes(None)
        assert unknown is None  # no version to start from: list everything
        now = clock.now()
        environment.schedule("a", now + timedelta(hours=1), {"v": 1})
        environment.reschedule("a", now + timedelta(hours=2), {"v": 2})
        environment.schedule("b", now + timedelta(hours=1), {"v": 3})
        environment.scheduler.delete_schedule(Name="b", GroupName=environment.group)
        version, changed = scheduler_changes(start)
        assert version >= start + 4 and changed is not None
        assert {(environment.group, "a"), (environment.group, "b")} <= changed
        # A schedule group's change may touch any schedule: the feed cannot say which.
        environment.scheduler.create_schedule_group(Name=f"g-{uuid.uuid4().hex[:8]}")
        assert scheduler_changes(version)[1] is None
    finally:
        clock.close()
