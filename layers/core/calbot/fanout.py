"""Fan-out over SQS, shared by the nightly jobs (auto-schedule, subscription renewal) and their workers.

A job reads its work from a sparse index and packs several items (users, subscriptions) into each
message, ten messages to a `SendMessageBatch` call: 100,000 users at 20 a message are 500 calls, not
10,000 (SQS: at most 10 entries a call and 256 KB in all). A worker handles a message's items one by
one, each isolated from the others: an item that fails is put back on the queue alone (its retries,
and the dead-letter queue after them, concern only it), and the items it has no time left for go
back together. A one-item message that fails is reported as a batch item failure, so SQS's redrive
policy counts its attempts as for any message.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from calbot import aws
from calbot import deadline as deadlines
from calbot.config import get_settings
from calbot.errors import DomainError
from calbot.log import logger
from calbot.models import BatchedMessage

BATCH_ENTRIES = 10  # SQS SendMessageBatch: at most 10 entries
BATCH_BYTES = 262_144  # ... and at most 256 KB of bodies together


def chunks[T](items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _batches(bodies: Iterable[str]) -> Iterator[list[str]]:
    """Bodies grouped as SendMessageBatch takes them: up to 10 a call, within its total size."""
    batch: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode())
        if batch and (len(batch) == BATCH_ENTRIES or size + length > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += length
    if batch:
        yield batch


def send_all(queue_url: str, bodies: Iterable[str], *, delay_seconds: int = 0) -> tuple[int, list[str]]:
    """Every body as a message, in SendMessageBatch calls; entries SQS failed on its side (not the
    sender's fault) are sent once more. Returns how many were sent and the bodies that were not."""
    sqs = aws.sqs()
    sent = 0
    failed: list[str] = []
    for batch in _batches(bodies):
        entries: list[dict[str, Any]] = [
            {"Id": str(i), "MessageBody": body, "DelaySeconds": delay_seconds} for i, body in enumerate(batch)
        ]
        for attempt in range(2):
            resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            sent += len(resp.get("Successful", []))
            errors = resp.get("Failed", [])
            again = {e["Id"] for e in errors if not e.get("SenderFault")} if attempt == 0 else set()
            lost = {e["Id"] for e in errors} - again
            failed += [e["MessageBody"] for e in entries if e["Id"] in lost]
            entries = [e for e in entries if e["Id"] in again]
            if not entries:
                break
    return sent, failed


def _requeue(queue_setting: str, bodies: list[str], delay_seconds: int) -> None:
    queue_url = get_settings().require(queue_setting)
    if send_all(queue_url, bodies, delay_seconds=delay_seconds)[1]:
        raise RuntimeError("SQS refused to take items back")


def pack(kind: type[BatchedMessage], items: Iterable[str], size: int, counted: list[int]) -> Iterator[str]:
    """Message bodies of `size` items each under one new run id; `counted` gets each message's count."""
    run_id = secrets.token_hex(8)
    for chunk in chunks(items, size):
        counted.append(len(chunk))
        yield kind.carrying(chunk, run_id).model_dump_json()


def consume_items(
    event: dict[str, Any],
    kind: type[BatchedMessage],
    handle: Callable[[str], str],
    queue_setting: str,
    seconds_each: float,
    retry_delay: int,
) -> tuple[list[dict[str, str]], dict[str, int]]:
    """A worker's batch: every message's items in order while the invocation has `seconds_each` left
    for one more. Returns the batch item failures and the count of each outcome `handle` returned.

    A body that is no `kind` is malformed and dropped. `handle` does one item and says what happened
    (a ValueError or DomainError from it: that item can never succeed, dropped; any other exception:
    it failed, retried). Items put back go to the queue the setting `queue_setting` names, after
    `retry_delay` seconds."""
    what = kind.__name__
    failures: list[dict[str, str]] = []
    outcomes: dict[str, int] = {}
    budget = deadlines.current()
    for record in event.get("Records", []):
        try:
            items = kind.model_validate_json(record["body"]).items()
        except ValueError:
            logger.warning(f"{what} message rejected")  # malformed: retrying cannot help
            continue
        failed: list[str] = []
        left: list[str] = []
        for item in items:
            if not budget.allows(seconds_each):
                left.append(item)  # too little time: back to the queue, rather than killed half-way
                continue
            try:
                outcome = handle(item)
            except (ValueError, DomainError):
                logger.exception(f"{what} rejected")
                outcome = "rejected"
            except Exception:
                logger.exception(f"{what} failed")
                failed.append(item)
                outcome = "failed"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if not failed and not left:
            continue
        if len(items) == 1 or len(left) == len(items):
            failures.append({"itemIdentifier": record["messageId"]})  # SQS retries it as it is
            continue
        try:
            groups = [[item] for item in failed] + ([left] if left else [])
            run_id = secrets.token_hex(8)
            bodies = [kind.carrying(group, run_id).model_dump_json() for group in groups]
            _requeue(queue_setting, bodies, retry_delay)
        except Exception:
            # Not handed back: the whole message is retried (its done items again, which is harmless).
            logger.exception(f"{what}: could not requeue the failed items")
            failures.append({"itemIdentifier": record["messageId"]})
    return failures, outcomes
