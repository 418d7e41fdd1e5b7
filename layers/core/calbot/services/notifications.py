"""Provider notifications, as the per-account webhook (functions/webhook) hands them over.

The webhook answers Graph's validation handshake itself and reads the request into a `Notice`: whose
notifications they claim to be (the URL's user, provider and account) and what the provider sent (its
headers and its JSON body). The provider the URL names checks them (its registered `verify`: Graph's
clientState per body item, Google's channel token headers): the subscription must exist, belong to
the user and account named in the path, and carry its own secret (compared as SHA-256 hashes in
constant time). Valid work is enqueued on a FIFO queue whose message group is the account (one
account's syncs never race on its delta token; accounts run in parallel) and the webhook answers at
once. The answer is the same whatever was dropped (what `receive` returns besides the provider's
answer is counts, for the log and tests): it is never an oracle for ids or secrets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from calbot import aws, store
from calbot import deadline as deadlines
from calbot.config import get_settings
from calbot.log import logger
from calbot.models import ChangeMessage, Connection, Subscription, SyncState, account_key
from calbot.providers import registry
from calbot.providers.registry import Notice
from calbot.services.connections import mark_needs_reauth
from calbot.timeutil import now

__all__ = [
    "Notice",
    "Received",
    "consume",
    "deduplication_id",
    "enqueue",
    "enqueue_many",
    "group_id",
    "receive",
]

if TYPE_CHECKING:  # the batch utilities take ~40 ms to import: only consume() (the sync worker) loads them
    from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

# Distinct subscriptions looked up per request: one BatchGetItem (DynamoDB's cap is 100 keys a call).
# A genuine body names only this account's subscriptions (one per calendar), so its items fit; a forged
# body costs one read call whatever it holds. Graph documents no maximum number of items per POST.
MAX_SUBSCRIPTIONS = 100
MESSAGE_SECONDS = 30.0  # what one account's sync may take in the worker; not started with less left
# A sync that started at least this long after a message was queued has read what it reports (a margin
# for the clocks of the Lambda that queued it and the one that synced).
COVERED_MARGIN = timedelta(seconds=1)


@dataclass(frozen=True)
class Received:
    accepted: int
    dropped: int
    enqueued: int
    answer: int = 202  # what the provider is answered: its own protocol's (Google: 200 to a channel's sync)


def _lookup(sub_ids: list[str]) -> dict[str, Subscription]:
    """The subscriptions a notification names, read once each in one batch; only the first
    MAX_SUBSCRIPTIONS distinct ids are read at all (the others come back absent, so are dropped)."""
    return store.get_subscriptions(list(dict.fromkeys(sub_ids))[:MAX_SUBSCRIPTIONS])


def receive(notice: Notice) -> Received:
    """One webhook request: the provider its URL names (a name or an alias) checks it; what it accepts
    is enqueued. An unknown provider's notifications are dropped like any other forgery."""
    try:
        spec = registry.spec(notice.provider)
    except ValueError:
        logger.info("notification dropped", extra={"dropped": 1, "why": "unknown provider"})
        return Received(0, 1, 0)
    notice = dataclasses.replace(notice, provider=spec.name)
    verdict = spec.verifier()(notice, _lookup)
    for change in verdict.changes:
        message = ChangeMessage(
            user_id=notice.user_id,
            provider=spec.name,
            account_id=change.account_id,
            kind=change.kind,
            subscription_id=change.subscription_id,
        )
        enqueue(message, dedup=change.dedup)
    received = Received(verdict.accepted, verdict.dropped, len(verdict.changes), verdict.answer)
    logger.info(
        verdict.note,
        extra={"accepted": received.accepted, "dropped": received.dropped, "enqueued": received.enqueued},
    )
    return received


_SQS_ID = re.compile(r"^[!-~]{1,128}$")  # SQS: 1-128 alphanumeric or punctuation characters


def group_id(message: ChangeMessage) -> str:
    """The account's FIFO message group: a hash of who it is (user, provider, case-folded account), so
    always 69 ASCII characters whatever the ids hold (an address may be 320 characters, or not ASCII;
    SQS takes 1-128 printable ASCII), and exactly one group per account."""
    who = f"{message.user_id}\n{message.provider}\n{account_key(message.account_id)}"
    return "acct-" + hashlib.sha256(who.encode()).hexdigest()


def deduplication_id(dedup: str) -> str:
    """A FIFO deduplication id SQS takes: the caller's own when it already fits, else its hash (never
    cut short: two long ids sharing their first 128 characters must not drop each other)."""
    return dedup if _SQS_ID.match(dedup) else hashlib.sha256(dedup.encode()).hexdigest()


def _stamped(message: ChangeMessage) -> ChangeMessage:
    """The message with the time it is queued (kept when the caller set one)."""
    return message if message.sent_at else message.model_copy(update={"sent_at": now()})


def enqueue(message: ChangeMessage, *, dedup: str) -> None:
    queue_url = get_settings().require("sync_queue_url")  # before any client: a clear error if unset
    aws.sqs().send_message(
        QueueUrl=queue_url,
        MessageBody=_stamped(message).model_dump_json(),
        MessageGroupId=group_id(message),
        MessageDeduplicationId=deduplication_id(dedup),
    )


def enqueue_many(messages: list[tuple[ChangeMessage, str]]) -> list[bool]:
    """Several (message, dedup) at once, ten a SendMessageBatch call; whether each was queued."""
    queue_url = get_settings().require("sync_queue_url")
    sqs = aws.sqs()
    queued = [False] * len(messages)
    for start in range(0, len(messages), 10):
        entries = [
            {
                "Id": str(start + i),
                "MessageBody": _stamped(message).model_dump_json(),
                "MessageGroupId": group_id(message),
                "MessageDeduplicationId": deduplication_id(dedup),
            }
            for i, (message, dedup) in enumerate(messages[start : start + 10])
        ]
        resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        for ok in resp.get("Successful", []):
            queued[int(ok["Id"])] = True
    return queued


def _processor() -> SqsFifoPartialProcessor:
    """Powertools' FIFO partial-batch processor: a failed message holds back only the later messages of
    its own group (one account), which it reports as failed too; every other account's messages in the
    batch are processed and deleted. An all-failed batch is reported item by item, not raised."""
    from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor

    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    processor.raise_on_entire_batch_failure = False  # the FIFO class takes no such argument in 3.37
    return processor


def consume(event: dict[str, Any]) -> PartialItemFailureResponse:
    """The sync worker: per message, sync that account (or renew / recreate a subscription, then sync),
    then make its bots follow the changed events. A failing message is reported with the later messages
    of its group (its account), which must not overtake it; the other accounts' messages go on."""
    from aws_lambda_powertools.utilities.batch import process_partial_response

    if not event.get("Records"):
        return {"batchItemFailures": []}
    return process_partial_response(event=event, record_handler=_handle_record, processor=_processor())


def _handle_record(record: SQSRecord) -> None:
    """One change message; raising makes SQS redeliver it (and its group's later messages)."""
    from calbot.providers.base import ProviderAuthError
    from calbot.services.sync import sync_connection

    if not deadlines.current().allows(MESSAGE_SECONDS):
        # Too little time left to sync an account: hand this message back to the queue untouched
        # (with its group's later ones) rather than be killed half-way through it.
        raise TimeoutError("too little time left in this invocation; handed back to the queue")
    try:
        message = ChangeMessage.model_validate(json.loads(record.body))
    except ValueError:
        logger.warning("change message rejected")  # malformed: retrying cannot help
        return
    try:
        conn = store.get_connection(message.user_id, message.provider, message.account_id)
        if conn is None or not conn.live:
            return  # disconnected (or being disconnected) meanwhile: nothing to do
        states: dict[str, SyncState | None] = {}  # what _covered read, for the sync not to read again
        if _covered(conn, message, record, states):
            logger.info("account already synced since this change", extra={"coalesced": 1})
            return
        try:
            _keep_subscription(conn, message)
        except ProviderAuthError as err:
            if not err.revoked:
                raise  # refused even with a fresh token: try again later
            # A real auth failure: say so (the user must reconnect); retrying cannot help.
            mark_needs_reauth(conn, err.message)
            return
        result = sync_connection(conn, states=states)
        if result.error and result.error.get("error") in ("provider_unavailable", "sync_failed"):
            # transient (throttled, down, or its bots could not follow yet): retry this account later
            raise RuntimeError(f"{result.error['error']}; retry this account later")
        logger.info("account synced", extra={"written": result.written, **result.reconciled})
    except Exception:
        logger.exception("change message failed")
        raise


def _covered(
    conn: Connection, message: ChangeMessage, record: SQSRecord, states: dict[str, SyncState | None]
) -> bool:
    """Whether a sync already read everything this plain sync message reports: every calendar's sync
    state was last written by a sync that started (before it asked the provider) COVERED_MARGIN or more
    after the message was queued. A burst's second notification for an account then costs one read,
    not a provider sync. The states it reads go into `states`, for the sync that follows. Never for a
    redelivered message (its own failed attempt may have written that state before its bots followed)
    nor for a subscription's renewal or recreation."""
    if message.kind != "sync" or message.sent_at is None or not conn.calendars:
        return False
    # Only a first delivery we can tell is one: a record without its receive count syncs.
    if str((record.raw_event.get("attributes") or {}).get("ApproximateReceiveCount")) != "1":
        return False
    since = message.sent_at + COVERED_MARGIN
    for cal in conn.calendars:
        state = states[cal.id] = store.get_sync_state(conn.user_id, conn.provider, conn.account_id, cal.id)
        if state is None or state.cursor is None or state.updated_at is None or state.updated_at < since:
            return False
    return True


def _keep_subscription(conn: Connection, message: ChangeMessage) -> None:
    """A lifecycle message's renewal or recreation (a refused cached access token is refreshed once)."""
    from calbot.services.subscriptions import recreate, renew, with_fresh_token

    if message.kind in ("renew", "recreate") and message.subscription_id:
        with_fresh_token(conn, renew if message.kind == "renew" else recreate, message.subscription_id)
