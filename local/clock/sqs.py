"""SQS event source mappings: the template functions' ``SQS`` events, which moto does not run.

A consumer receives batches (``BatchSize``) of its queue's messages and hands them to its function
the way Lambda does (Lambda's record shape). Successes are deleted; failures (the messages
``ReportBatchItemFailures`` names, or the whole batch when the handler raised or answered nonsense)
come back after the queue's visibility timeout in clock time, a batch's failures together and in
order. FIFO order within a message group is kept (moto never hands out a group that has messages in
flight). A consumer whose execution role lacks ``sqs:ReceiveMessage``, ``sqs:DeleteMessage`` or
``sqs:GetQueueAttributes`` on its queue, or whose queue's visibility timeout is under the function's
timeout, is never fed (Lambda refuses to create such a mapping), and the log says why.

A message's ``DelaySeconds`` runs on the stack's clock, as everything else here: moto counts it in real
time (``unix_time_millis``), which a virtual clock's advance would never reach, so `follow_clock_delays`
makes moto's delay use calbot.timeutil's (the clock's) time, and `due` lists when delayed messages of
a consumer's queue become visible, so an advance stops there and delivers them on time.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from local.clock.common import Due, FireReport, Job, Shared, is_enabled, iso_z, queue_name

DEFAULT_VISIBILITY_TIMEOUT = 30
# Batches of one consumer handed to its function at once, as Lambda's pollers do (capped by the event
# source's ScalingConfig.MaximumConcurrency). FIFO order holds: moto never hands out a group that has
# messages in flight, and a queue's receives run one at a time (SqsConsumer.receiving), so two batches
# never carry the same account.
LOCAL_POLLERS = 6
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
    pollers: int = 1  # batches in flight at once (LOCAL_POLLERS, or MaximumConcurrency if lower)
    # One ReceiveMessage of this queue at a time: moto's FIFO check (is the group in flight?) reads its
    # in-flight set once per call, so two pollers' overlapping receives could each take a message of
    # one group (two batches of one account at once). SQS never hands out a group with one in flight.
    receiving: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def fifo(self) -> bool:
        return self.queue_name.endswith(".fifo")


def batch_failures(result: Any, ids: list[str]) -> set[str] | None:
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


def left_in_queue(messages: list[dict[str, Any]], failed: set[str] | None) -> set[str]:
    """What goes back to the queue: the whole batch when the invocation failed, else exactly the
    messages batchItemFailures names. FIFO queues too: Lambda deletes every message the response
    does not name, so keeping a group's later messages behind its failure is the function's job
    ("return all failed and unprocessed messages", as Powertools' SqsFifoPartialProcessor does)."""
    if failed is None:
        return {m["MessageId"] for m in messages}
    return set(failed)


def esm_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """Lambda's spelling of a message attribute (camelCase, binary as base64)."""
    out: dict[str, Any] = {
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": value.get("DataType"),
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        raw = value["BinaryValue"]
        out["binaryValue"] = base64.b64encode(raw if isinstance(raw, bytes) else str(raw).encode()).decode()
    return out


def _clock_millis() -> float:
    from calbot import timeutil

    return timeutil.now().timestamp() * 1000


def follow_clock_delays() -> None:
    """Make moto's per-message delay (DelaySeconds) count on the stack's clock (idempotent)."""
    from moto.sqs import models

    message = models.Message
    if getattr(message, "_calbot_clock_delays", False):
        return

    def delay(self: Any, delay_seconds: int) -> None:
        self.delayed_until = _clock_millis() + int(delay_seconds) * 1000

    def delayed(self: Any) -> bool:
        return bool(_clock_millis() < self.delayed_until)

    message.delay = delay  # type: ignore[method-assign]
    message.delayed = property(delayed)  # type: ignore[method-assign,assignment]
    message._calbot_clock_delays = True  # type: ignore[attr-defined]


class SqsDelivery(Job):
    """See the module docstring. Thread-safe for different consumers. `sqs` is a boto3 client."""

    def __init__(self, shared: Shared, sqs: Any) -> None:
        super().__init__(shared)
        self._sqs = sqs
        self._lock = threading.Lock()
        # consumer id -> (when, receipt handles) of failed batches waiting for their visibility timeout
        self._redeliveries: dict[str, list[tuple[datetime, list[str]]]] = {}
        self.consumers = self._read_consumers()
        follow_clock_delays()

    def _read_consumers(self) -> list[SqsConsumer]:
        template = self._template
        consumers = []
        for fn, source in template.functions_by_event_type("SQS"):
            props = source.properties
            queue = str(props.get("Queue", ""))
            name = queue_name(queue)
            logical_id = template.resource_for_arn(queue) if queue.startswith("arn:") else None
            if logical_id is None:
                logical_id = next(
                    (
                        lid
                        for lid in template.resources_of_type("AWS::SQS::Queue")
                        if template.physical_name(lid) == name
                    ),
                    None,
                )
            if props.get("FilterCriteria"):
                self._log.warn_once(
                    ("filter", fn.logical_id), f"[clock] {fn.logical_id}: FilterCriteria is ignored"
                )
            queue_arn = (
                queue
                if queue.startswith("arn:")
                else f"arn:aws:sqs:{template.region}:{template.account_id}:{name}"
            )
            refused = self._grants.event_source_mapping_refusal(fn.logical_id, queue_arn)
            consumer_id = f"{fn.logical_id}.{source.name}"
            scaling = props.get("ScalingConfig") or {}
            pollers = max(1, min(LOCAL_POLLERS, int(scaling.get("MaximumConcurrency") or LOCAL_POLLERS)))
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
                    enabled=is_enabled(props) and refused is None,
                    refused=refused,
                    pollers=pollers,
                )
            )
        return consumers

    # -- delivering ------------------------------------------------------------------------------------

    def drain(self, report: FireReport, max_rounds: int = 100) -> int:
        """Hand out batches, round after round over every consumer, until a round finds nothing (at
        most `max_rounds`); returns how many messages were handed to functions."""
        total = 0
        for _ in range(max_rounds):
            delivered = sum(self.poll(c, report) for c in self.consumers if c.enabled)
            total += delivered
            if not delivered:
                break
        return total

    def consume(self, consumer: SqsConsumer, report: FireReport | None = None) -> None:
        """One consumer's turn (the background loop's, or a due redelivery's): what is due comes back,
        then batches until the queue has none (at most 100)."""
        report = report or FireReport(started=iso_z(self._now()))
        self.redeliver_due(consumer)
        for _ in range(100):  # keep up with a burst without hogging a worker forever
            if not self.poll(consumer, report):
                break

    def due(self, horizon: datetime) -> list[Due]:
        """Failed batches whose visibility timeout ends by `horizon`, as work to run."""
        by_id = {c.id: c for c in self.consumers}
        with self._lock:
            waiting = [(cid, when) for cid, entries in self._redeliveries.items() for when, _ in entries]
        due = [
            Due(when, ("sqs", cid), partial(self.consume, by_id[cid]))
            for cid, when in waiting
            if when <= horizon
        ]
        for consumer in self.consumers:
            if consumer.enabled:
                due.extend(
                    Due(when, ("sqs", consumer.id), partial(self.consume, consumer))
                    for when in self._delayed_until(consumer)
                    if when <= horizon
                )
        return due

    def _delayed_until(self, consumer: SqsConsumer) -> list[datetime]:
        """When the delayed messages of the consumer's queue become visible (distinct moments)."""
        try:
            queue = self._moto_queue(consumer.queue_name)
        except Exception:
            return []  # no in-process moto queue (yet): nothing to wait for
        now_ms = _clock_millis()
        moments = {m.delayed_until for m in list(queue._messages) if m.delayed_until > now_ms}
        return [datetime.fromtimestamp(ms / 1000, UTC) for ms in sorted(moments)]

    def poll(self, consumer: SqsConsumer, report: FireReport) -> int:
        """Receive one batch and hand it to the function; returns how many messages it held."""
        if not self._ensure_queue(consumer):
            return 0
        received_at = self._now()
        messages: list[dict[str, Any]] = []
        with consumer.receiving:
            while len(messages) < consumer.batch_size and self._receivable(consumer):
                try:
                    page = self._sqs.receive_message(
                        QueueUrl=consumer.url,
                        MaxNumberOfMessages=min(10, consumer.batch_size - len(messages)),
                        AttributeNames=["All"],
                        MessageAttributeNames=["All"],
                        WaitTimeSeconds=0,
                    ).get("Messages", [])
                except ClientError as exc:
                    if "NonExistentQueue" not in str(exc) and "QueueDoesNotExist" not in str(exc):
                        raise
                    # the queue went away under the poller (moto reset at a test's teardown, a
                    # deleted stack): look it up again next time, say so once, no traceback per tick
                    consumer.url = None
                    self._log.warn_once(
                        ("queue-gone", consumer.id),
                        f"[clock] {consumer.id}: queue {consumer.queue_name} is gone",
                    )
                    page = []
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
            failed = batch_failures(result, ids)
            if failed is None:
                self._log(
                    f"[clock] {consumer.function}: malformed batchItemFailures {result!r}: whole batch failed"
                )
        left = left_in_queue(messages, failed)
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
            with self._lock:
                self._redeliveries.setdefault(consumer.id, []).append((due, handles))
        fired = report.record(
            self._now(), "sqs", consumer.id, consumer.function, None, 1, (ok and not left, result, error)
        )
        fired.detail.update(
            {
                "queue": consumer.queue_logical_id or consumer.queue_name,
                "messages": ids,
                "failed": [i for i in ids if i in left],
            }
        )
        return len(messages)

    def _receivable(self, consumer: SqsConsumer) -> bool:
        """Whether a receive could return anything: moto's ReceiveMessage hands out only visible, not
        delayed messages (`Queue.messages`). The pollers of an idle stack made ~44 empty receives a
        second, each an HTTP round trip through moto's server that took CPU from the Lambdas."""
        try:
            queue = self._moto_queue(consumer.queue_name)
        except Exception:
            return True  # no in-process moto queue to look at: ask over the wire
        return any(m.visible and not m.delayed for m in list(queue._messages))

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
            self._log.warn_once(
                ("queue", consumer.id), f"[clock] {consumer.id}: queue {consumer.queue_name}: {exc}"
            )
            return False
        consumer.arn = attributes.get("QueueArn")
        consumer.visibility_timeout = int(attributes.get("VisibilityTimeout", DEFAULT_VISIBILITY_TIMEOUT))
        return True

    def _record_for(self, consumer: SqsConsumer, message: dict[str, Any]) -> dict[str, Any]:
        body = message.get("Body", "")
        attributes = message.get("Attributes") or {}
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": body,
            "attributes": {k: str(attributes[k]) for k in ESM_KEEP_ATTRIBUTES if k in attributes},
            "messageAttributes": {
                name: esm_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": message.get("MD5OfBody") or hashlib.md5(body.encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": consumer.arn,
            "awsRegion": self._template.region,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record

    # -- failed messages come back -------------------------------------------------------------------

    def redeliver_due(self, only: SqsConsumer | None = None) -> None:
        """Make failed messages whose visibility timeout has passed on the clock visible again, all of a
        batch at once and in order (moto on its own can hand out a FIFO group's later message first)."""
        now = self._now()
        reset = False
        for consumer in self.consumers:
            if only is not None and consumer is not only:
                continue
            with self._lock:
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
            queue = self._moto_queue(consumer.queue_name)
            wanted = set(handles)
            for message in list(queue.pending_messages):
                if wanted & set(getattr(message, "all_receipt_handles", ())):
                    queue.pending_messages.discard(message)
        except Exception:
            pass  # not an in-process moto: nothing to work around

    # -- looking without receiving ---------------------------------------------------------------------

    def _moto_queue(self, name: str) -> Any:
        """The queue in moto's in-process backend (raises when there is none)."""
        from moto.sqs.models import sqs_backends

        return sqs_backends[self._template.account_id][self._template.region].get_queue(name)

    def queue_messages(self, logical_id: str) -> list[dict[str, Any]]:
        """The messages in a template queue right now, in flight or not, without receiving them
        (read from moto's in-process backend, so receive counts and visibility are untouched)."""
        resource = self._template.resources.get(logical_id)
        if resource is None or resource["Type"] != "AWS::SQS::Queue":
            raise KeyError(f"no queue {logical_id!r} in the template")
        name = self._template.physical_name(logical_id)
        try:
            queue = self._moto_queue(name)
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
