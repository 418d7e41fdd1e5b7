"""The local clock's jobs one at a time (local/clock/*): each driven alone with a hand-set time, a fake
invoker and, where it talks to AWS, a fake boto3 client, with no LocalClock, moto or gateway around it.
tests/unit/test_local_clock.py drives them together, through LocalClock, on moto."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from local.clock.common import ClockLog, FireReport, Outcome, ScheduleInfo, Shared, iso_z
from local.clock.cron import CronJobs
from local.clock.retries import AsyncRetries, Failure
from local.clock.sqs import SqsDelivery, batch_failures
from local.clock.timesource import TimeSource
from local.grants import grants
from local.template import Template, load_template

T0 = datetime(2030, 1, 1, tzinfo=UTC)

TEMPLATE = """\
Globals:
  Function:
    Runtime: python3.12
    Handler: app.handler
    Timeout: 30
Resources:
  Failures:
    Type: AWS::SQS::Queue
  Dlq:
    Type: AWS::SQS::Queue
  Work:
    Type: AWS::SQS::Queue
    Properties: {VisibilityTimeout: 45}
  SchedulerRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Statement:
          - {Effect: Allow, Principal: {Service: scheduler.amazonaws.com}, Action: sts:AssumeRole}
      Policies:
        - PolicyName: invoke
          PolicyDocument:
            Statement:
              - Effect: Allow
                Action: lambda:InvokeFunction
                Resource: !Sub "arn:aws:lambda:${AWS::Region}:${AWS::AccountId}:function:*"
  NightlyFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Events:
        Nightly:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: "cron(0 2 * * ? *)"
            StartDate: "2030-01-03T00:00:00Z"
            EndDate: "2030-01-05T00:00:00Z"
        Paused:
          Type: ScheduleV2
          Properties: {ScheduleExpression: "cron(0 * * * ? *)", State: DISABLED}
        Hourly:
          Type: Schedule
          Properties: {Schedule: "rate(1 hour)", Enabled: false}
  AsyncFn:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: async-fn
      CodeUri: fn/
      DeadLetterQueue: {Type: SQS, TargetArn: !GetAtt Dlq.Arn}
      EventInvokeConfig:
        MaximumRetryAttempts: 1
        DestinationConfig:
          OnFailure: {Type: SQS, Destination: !GetAtt Failures.Arn}
  AgedFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      EventInvokeConfig: {MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 120}
  WorkerFn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            BatchSize: 4
            FunctionResponseTypes: [ReportBatchItemFailures]
"""


class Invoker:
    """A fake ``Invoke``: records each call and answers from `answer(function, event)`."""

    def __init__(self, answer: Any = None) -> None:
        self.calls: list[tuple[str, Any, str]] = []
        self.answer = answer or (lambda function, event: (True, {"ok": True}, None))

    def __call__(self, function: str, event: Any, origin: str) -> Outcome:
        self.calls.append((function, event, origin))
        return self.answer(function, event)  # type: ignore[no-any-return]


def failing(message: str = "boom") -> Any:
    error = {"errorType": "RuntimeError", "errorMessage": message, "requestId": "req-again"}
    return lambda function, event: (False, None, error)


class Clock:
    """A hand-moved time."""

    def __init__(self) -> None:
        self.moment = T0

    def __call__(self) -> datetime:
        return self.moment

    def to(self, moment: datetime) -> None:
        self.moment = moment


class FakeSqs:
    """The few SQS calls the jobs make, over in-memory queues (by name)."""

    def __init__(self, template: Template) -> None:
        self.template = template
        self.queues: dict[str, list[dict[str, Any]]] = {}
        self.in_flight: set[str] = set()  # receipt handles
        self.deleted: list[str] = []  # message ids
        self.made_visible: list[str] = []  # receipt handles
        self.sent: list[dict[str, Any]] = []

    def get_queue_url(self, QueueName: str) -> dict[str, str]:
        return {"QueueUrl": f"https://sqs.local/{QueueName}"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        name = QueueUrl.rsplit("/", 1)[-1]
        logical_id = next(lid for lid in self.template.resources if self.template.physical_name(lid) == name)
        timeout = self.template.resources[logical_id].get("Properties", {}).get("VisibilityTimeout", 30)
        return {"Attributes": {"QueueArn": self.template.arn(logical_id), "VisibilityTimeout": str(timeout)}}

    def receive_message(self, QueueUrl: str, MaxNumberOfMessages: int, **_: Any) -> dict[str, Any]:
        visible = [
            m
            for m in self.queues.get(QueueUrl.rsplit("/", 1)[-1], [])
            if m["ReceiptHandle"] not in self.in_flight
        ]
        page = visible[:MaxNumberOfMessages]
        self.in_flight.update(m["ReceiptHandle"] for m in page)
        return {"Messages": page}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> None:
        handles = {e["ReceiptHandle"] for e in Entries}
        queue = self.queues[QueueUrl.rsplit("/", 1)[-1]]
        self.deleted += [m["MessageId"] for m in queue if m["ReceiptHandle"] in handles]
        queue[:] = [m for m in queue if m["ReceiptHandle"] not in handles]

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        assert VisibilityTimeout == 0
        self.made_visible.append(ReceiptHandle)
        self.in_flight.discard(ReceiptHandle)

    def send_message(self, QueueUrl: str, MessageBody: str, MessageAttributes: dict[str, Any]) -> None:
        attributes = {k: v["StringValue"] for k, v in MessageAttributes.items()}
        self.sent.append(
            {"queue": QueueUrl.rsplit("/", 1)[-1], "body": json.loads(MessageBody), "attributes": attributes}
        )

    def put(self, logical_id: str, message_id: str, body: str, **extra: Any) -> None:
        self.queues.setdefault(self.template.physical_name(logical_id), []).append(
            {"MessageId": message_id, "ReceiptHandle": f"rh-{message_id}", "Body": body, **extra}
        )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    folder: Path = tmp_path_factory.mktemp("clock-jobs")
    (folder / "template.yaml").write_text(TEMPLATE)
    (folder / "fn").mkdir()
    (folder / "fn" / "app.py").write_text("def handler(event, context):\n    return None\n")
    return load_template(folder / "template.yaml", stack_name="jobs")


def shared(template: Template, clock: Clock, invoke: Invoker) -> Shared:
    return Shared(template, grants(template), clock, invoke, ClockLog(io.StringIO()))


def report(clock: Clock) -> FireReport:
    return FireReport(started=iso_z(clock()))


# -- cron ------------------------------------------------------------------------------------------


def run_due(jobs: Any, clock: Clock, horizon: datetime, fire_report: FireReport) -> None:
    """What the clock does with one job: run its earliest due work, on time, until none is left."""
    while due := sorted(jobs.due(horizon), key=lambda d: d.due):
        clock.to(due[0].due)
        due[0].run(fire_report)


def test_a_cron_job_fires_each_time_within_its_start_and_end_dates_once_and_disabled_ones_never(
    template: Template,
) -> None:
    clock, invoke = Clock(), Invoker()
    cron = CronJobs(
        shared(template, clock, invoke), AsyncRetries(shared(template, clock, invoke), None), start=T0
    )
    fired = report(clock)
    run_due(cron, clock, T0 + timedelta(days=10), fired)

    # 02:00 on the 3rd and the 4th only: the 1st and 2nd are before StartDate, the 5th after EndDate;
    # the DISABLED and Enabled: false events never.
    assert [(function, event["time"]) for function, event, _ in invoke.calls] == [
        ("NightlyFn", "2030-01-03T02:00:00Z"),
        ("NightlyFn", "2030-01-04T02:00:00Z"),
    ]
    assert all(event["detail-type"] == "Scheduled Event" for _, event, _ in invoke.calls)
    assert fired.crons == ["NightlyFn.Nightly", "NightlyFn.Nightly"]
    assert [f.due for f in fired.fired] == ["2030-01-03T02:00:00Z", "2030-01-04T02:00:00Z"]
    # Firing a time again (a second tick that listed it) does nothing: the cursor is past it.
    (job,) = [j for j in cron.jobs if j.id == "NightlyFn.Nightly"]
    cron.fire(job, datetime(2030, 1, 4, 2, tzinfo=UTC), fired)
    assert len(invoke.calls) == 2
    assert {j["id"]: j["enabled"] for j in cron.listing()} == {
        "NightlyFn.Nightly": True,
        "NightlyFn.Paused": False,
        "NightlyFn.Hourly": False,
    }


def test_a_failing_cron_run_is_handed_to_lambdas_async_retries_with_its_event(template: Template) -> None:
    clock, invoke = Clock(), Invoker(failing("nightly down"))
    retries = AsyncRetries(shared(template, clock, invoke), FakeSqs(template))
    cron = CronJobs(shared(template, clock, invoke), retries, start=T0)
    fired = report(clock)
    (nightly,) = [d for d in cron.due(T0 + timedelta(days=3)) if d.key == ("cron", "NightlyFn.Nightly")]
    clock.to(nightly.due)
    nightly.run(fired)

    (first,) = fired.fired
    assert not first.ok and first.error is not None and first.error["errorMessage"] == "nightly down"
    assert first.detail["retry_at"] == "2030-01-03T02:01:00Z"  # Lambda's first retry: a minute later
    assert retries.due(nightly.due + timedelta(seconds=59), all_pending=False) == []
    (retry,) = retries.due(nightly.due + timedelta(seconds=60), all_pending=False)
    clock.to(retry.due)
    retry.run(fired)
    assert [c[1] for c in invoke.calls] == [invoke.calls[0][1]] * 2  # the same event, again
    assert [(f.kind, f.id, f.attempt) for f in fired.fired] == [
        ("cron", "NightlyFn.Nightly", 1),
        ("cron", "NightlyFn.Nightly", 2),
    ]


# -- Lambda's async retries and Scheduler's delivery retries ---------------------------------------


def first_failure(
    clock: Clock, fired: FireReport, kind: str, origin: str, function: str | None, event: Any
) -> Failure:
    error = {"errorType": "RuntimeError", "errorMessage": "boom", "requestId": "req-1"}
    line = fired.record(clock(), kind, origin, function, clock(), 1, (False, None, error))
    return Failure(kind, origin, event, error, line, first_at=clock())


def settle(retries: AsyncRetries, clock: Clock, fired: FireReport) -> None:
    while due := sorted(retries.due(clock(), all_pending=True), key=lambda d: d.due):
        clock.to(due[0].due)
        due[0].run(fired)


def test_function_errors_retry_per_event_invoke_config_then_reach_the_on_failure_destination_and_dlq(
    template: Template,
) -> None:
    clock, invoke, sqs = Clock(), Invoker(failing()), FakeSqs(template)
    retries = AsyncRetries(shared(template, clock, invoke), sqs)
    fired = report(clock)
    retries.after_function_error(
        "AsyncFn", first_failure(clock, fired, "schedule", "g/s", "AsyncFn", {"n": 1}), fired
    )
    settle(retries, clock, fired)

    # MaximumRetryAttempts: 1 -> one retry, a minute later, then the function's two destinations.
    assert [(f.attempt, f.ok, f.detail.get("gave_up")) for f in fired.fired] == [
        (1, False, None),
        (2, False, "MaximumRetryAttempts"),
    ]
    assert [c[1] for c in invoke.calls] == [{"n": 1}] and clock() == T0 + timedelta(seconds=60)
    on_failure, dead = sqs.sent
    assert on_failure["queue"] == template.physical_name("Failures") and on_failure["attributes"] == {}
    record = on_failure["body"]
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestContext"]["functionArn"] == template.functions["AsyncFn"].arn + ":$LATEST"
    assert record["requestPayload"] == {"n": 1}
    assert record["responsePayload"] == {"errorType": "RuntimeError", "errorMessage": "boom"}
    assert dead == {
        "queue": template.physical_name("Dlq"),
        "body": {"n": 1},
        "attributes": {
            "RequestID": "req-again",
            "ErrorCode": "200",
            "ErrorMessage": "boom",
        },  # the last try's
    }
    assert [d.get("destination", False) for d in fired.dead_letters] == [True, False]


def test_an_event_past_its_maximum_age_is_given_up_and_dropped_without_a_destination(
    template: Template,
) -> None:
    clock, invoke, sqs = Clock(), Invoker(failing()), FakeSqs(template)
    retries = AsyncRetries(shared(template, clock, invoke), sqs)
    fired = report(clock)
    retries.after_function_error(
        "AgedFn", first_failure(clock, fired, "cron", "AgedFn.X", "AgedFn", {}), fired
    )
    settle(retries, clock, fired)

    # MaximumEventAgeInSeconds: 120: the retry after 1 minute is made, the one 2 minutes after it is not.
    assert [(f.attempt, f.detail.get("gave_up")) for f in fired.fired] == [
        (1, None),
        (2, "MaximumEventAgeInSeconds"),
    ]
    assert sqs.sent == [] and fired.dead_letters == [{"origin": "AgedFn.X", "queue": None, "dropped": True}]


def test_a_delivery_retry_holds_its_schedule_until_it_succeeds_and_then_settles_it_once(
    template: Template,
) -> None:
    clock, invoke = Clock(), Invoker()  # the target answers this time
    retries = AsyncRetries(shared(template, clock, invoke), FakeSqs(template))
    info = ScheduleInfo(
        group="g",
        name="s",
        arn="arn:aws:scheduler:us-east-1:123456789012:schedule/g/s",
        expression="at(2030-01-01T00:00:00)",
        timezone="UTC",
        at=T0,
        state="ENABLED",
        target_arn=template.functions["AsyncFn"].arn,
        target_function="AsyncFn",
        input_text="{}",
        action_after_completion="DELETE",
        flexible_time_window={"Mode": "OFF"},
        retry_policy={"MaximumRetryAttempts": 3},
        dead_letter_arn=None,
        modified="m1",
        role_arn=template.arn("SchedulerRole"),
    )
    settled: list[ScheduleInfo] = []
    fired = report(clock)
    failure = first_failure(clock, fired, "schedule", "g/s", "AsyncFn", {})
    retries.after_delivery_failure(info, failure, fired, on_settled=settled.append)

    assert retries.holds(("g", "s")) and settled == []
    (retry,) = retries.due(T0 + timedelta(seconds=60), all_pending=False)  # Scheduler's 60 s
    clock.to(retry.due)
    retry.run(fired)
    assert settled == [info] and not retries.holds(("g", "s"))
    assert retries.due(T0 + timedelta(days=1), all_pending=True) == []
    assert (fired.fired[-1].attempt, fired.fired[-1].ok, fired.fired[-1].detail["retry"]) == (
        2,
        True,
        "scheduler",
    )
    retry.run(fired)  # a stale listing of the same retry runs nothing
    assert len(invoke.calls) == 1


# -- SQS event source mapping ----------------------------------------------------------------------


def test_a_batch_deletes_what_succeeded_and_brings_the_named_failures_back_after_the_visibility_timeout(
    template: Template,
) -> None:
    clock, sqs = Clock(), FakeSqs(template)
    invoke = Invoker(lambda function, event: (True, {"batchItemFailures": [{"itemIdentifier": "m2"}]}, None))
    delivery = SqsDelivery(shared(template, clock, invoke), sqs)
    binary = {"DataType": "Binary", "BinaryValue": b"\x00\x01"}
    sqs.put("Work", "m1", "one", Attributes={"ApproximateReceiveCount": "1", "Unlisted": "x"})
    sqs.put("Work", "m2", "two", MessageAttributes={"blob": binary})
    for n in range(3, 6):
        sqs.put("Work", f"m{n}", str(n))
    fired = report(clock)

    assert delivery.poll(delivery.consumers[0], fired) == 4  # BatchSize: 4
    ((function, event, _),) = invoke.calls
    assert function == "WorkerFn" and [r["messageId"] for r in event["Records"]] == ["m1", "m2", "m3", "m4"]
    first, second = event["Records"][:2]
    assert first["attributes"] == {"ApproximateReceiveCount": "1"}  # only what Lambda passes on
    assert first["eventSourceARN"] == template.arn("Work") and first["eventSource"] == "aws:sqs"
    assert second["messageAttributes"]["blob"]["binaryValue"] == base64.b64encode(b"\x00\x01").decode()
    assert sqs.deleted == ["m1", "m3", "m4"]
    (batch,) = fired.batches
    assert not batch.ok and batch.detail["failed"] == ["m2"]

    # The queue's VisibilityTimeout (45 s) on the clock, not before.
    assert delivery.due(T0 + timedelta(seconds=44)) == []
    (back,) = delivery.due(T0 + timedelta(seconds=45))
    clock.to(back.due)
    invoke.answer = lambda function, event: (True, None, None)
    back.run(fired)
    assert sqs.made_visible == ["rh-m2"]
    assert [r["messageId"] for r in invoke.calls[1][1]["Records"]] == ["m2", "m5"]
    assert sqs.deleted == ["m1", "m3", "m4", "m2", "m5"] and sqs.queues[template.physical_name("Work")] == []


def test_pollers_of_one_queue_never_receive_at_the_same_time(template: Template) -> None:
    """Several batches of a queue run at once, but their receives do not overlap: moto's FIFO check
    reads the in-flight groups once per call, so overlapping receives could split one group."""
    import threading
    import time

    clock, sqs = Clock(), FakeSqs(template)
    delivery = SqsDelivery(shared(template, clock, Invoker(lambda f, e: (True, None, None))), sqs)
    for n in range(8):
        sqs.put("Work", f"m{n}", str(n))
    inside, overlaps = [0], [0]
    receive = sqs.receive_message

    def slow_receive(**kwargs: Any) -> dict[str, Any]:
        inside[0] += 1
        overlaps[0] = max(overlaps[0], inside[0])
        time.sleep(0.05)
        try:
            return receive(**kwargs)
        finally:
            inside[0] -= 1

    sqs.receive_message = slow_receive  # type: ignore[method-assign]
    consumer = delivery.consumers[0]
    pollers = [threading.Thread(target=delivery.poll, args=(consumer, report(clock))) for _ in range(2)]
    for poller in pollers:
        poller.start()
    for poller in pollers:
        poller.join()
    assert overlaps[0] == 1
    assert sorted(sqs.deleted) == [f"m{n}" for n in range(8)]


def test_a_malformed_batch_item_failures_answer_fails_the_whole_batch(template: Template) -> None:
    clock, sqs = Clock(), FakeSqs(template)
    invoke = Invoker(
        lambda function, event: (True, {"batchItemFailures": [{"itemIdentifier": "other"}]}, None)
    )
    delivery = SqsDelivery(shared(template, clock, invoke), sqs)
    sqs.put("Work", "m1", "one")
    sqs.put("Work", "m2", "two")
    fired = report(clock)
    assert delivery.drain(fired) == 2
    assert sqs.deleted == [] and fired.batches[0].detail["failed"] == ["m1", "m2"]
    assert [d.due for d in delivery.due(T0 + timedelta(hours=1))] == [T0 + timedelta(seconds=45)]


@pytest.mark.parametrize(
    ("result", "named"),
    [
        (None, set()),
        ({"batchItemFailures": []}, set()),
        ({"other": 1}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "a"}]}, {"a"}),
        ({"batchItemFailures": [{"itemIdentifier": "zz"}]}, None),  # not in the batch
        ({"batchItemFailures": [{"id": "a"}]}, None),
        ({"batchItemFailures": "a"}, None),
        ("a", None),
    ],
)
def test_what_a_report_batch_item_failures_answer_names(result: Any, named: set[str] | None) -> None:
    assert batch_failures(result, ["a", "b"]) == named


# -- time ------------------------------------------------------------------------------------------


def test_the_time_source_counts_jumps_apart_from_sleeps_never_goes_back_and_survives_a_bad_listener() -> None:
    log = io.StringIO()
    source = TimeSource(virtual=True, log=ClockLog(log))
    heard: list[float] = []

    def broken(seconds: float) -> None:
        raise RuntimeError("listener down")

    source.on_move(broken)
    source.on_move(heard.append)
    source.sleep(100)
    assert source.advanced_seconds() == 0 and source.offset_seconds >= 100
    source.jump_to(source.now() + timedelta(hours=1))
    assert 3599 < source.advanced_seconds() <= 3600
    offset = source.offset_seconds
    source.jump_to(source.now() - timedelta(hours=5))
    assert source.offset_seconds == offset and len(heard) == 2 and heard[0] == 100
    assert log.getvalue().count("a clock listener failed") == 2
