"""Provider notifications, as the per-account webhook (functions/webhook) hands them over, parsed.

The webhook answers Graph's validation handshake itself and reads the request; this module gets whose
notifications they claim to be (`Target`, from the webhook's path) and what they say: Graph's parsed
JSON body, or a Google channel notification's headers (`ChannelNotice`). Notifications are checked
item by item: the subscription must exist, belong to the user and account named in the path, and
carry its own secret (compared as SHA-256 hashes in constant time). Valid work is enqueued on a FIFO
queue whose message group is the account (one account's syncs never race on its delta token; accounts
run in parallel) and the webhook answers 202 at once. The answer is the same whatever was dropped (the
functions here return only counts, for the log and tests): it is never an oracle for ids or secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from calbot import aws, store
from calbot import deadline as deadlines
from calbot.config import get_settings
from calbot.log import logger
from calbot.models import PROVIDER_ALIASES, ChangeMessage, Connection, account_key, normalize_provider

MAX_ITEMS = 1000
# Distinct subscriptions looked up per request: one BatchGetItem (DynamoDB's cap is 100 keys a call).
# A genuine body names only this account's subscriptions (one per calendar), so its items fit; a forged
# body costs one read call whatever it holds. Graph documents no maximum number of items per POST.
MAX_SUBSCRIPTIONS = 100
MAX_SUBSCRIPTION_ID = 256
MESSAGE_SECONDS = 30.0  # what one account's sync may take in the worker; not started with less left
LIFECYCLE_KINDS = {"reauthorizationRequired": "renew", "subscriptionRemoved": "recreate", "missed": "sync"}


@dataclass(frozen=True)
class Target:
    """Whose notifications these claim to be: the webhook URL's user, provider (as written in the URL,
    an alias too) and account (unquoted). Nothing here is trusted until a subscription's secret is."""

    user_id: str
    provider: str
    account_id: str


@dataclass(frozen=True)
class ChannelNotice:
    """A Google channel notification: it has no body, its X-Goog-* headers are all it says."""

    channel_id: str  # our subscription id
    token: str | None  # the channel's own secret
    resource_state: str  # sync (the channel started), exists, not_exists
    resource_id: str | None
    message_number: str


@dataclass(frozen=True)
class Received:
    accepted: int
    dropped: int
    enqueued: int


def _same_secret(presented: Any, stored_hash: str) -> bool:
    if not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode()).hexdigest(), stored_hash)


def _sub_id(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    value = item.get("subscriptionId")
    if not isinstance(value, str) or not value or len(value) > MAX_SUBSCRIPTION_ID:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def receive(target: Target, body: dict[str, Any] | None) -> Received:
    """A Graph notification POST: `body` is its JSON object, None when it could not be read."""
    try:
        provider = normalize_provider(target.provider)
    except Exception:
        body = None
    if body is None:
        logger.info("notification dropped", extra={"dropped": 1, "why": "unreadable"})
        return Received(0, 1, 0)
    user_id, account = target.user_id, account_key(target.account_id)
    value = body.get("value")
    items = value[:MAX_ITEMS] if isinstance(value, list) else []
    # Each subscription is read once per request, all in one batch, and only the first
    # MAX_SUBSCRIPTIONS distinct ids are read at all: the items naming any other are dropped unread.
    wanted = list(dict.fromkeys(i for i in map(_sub_id, items) if i is not None))[:MAX_SUBSCRIPTIONS]
    subs = store.get_subscriptions(wanted)
    messages: dict[tuple[str, str], ChangeMessage] = {}
    accepted: dict[tuple[str, str], list[dict[str, Any]]] = {}
    dropped = 0
    for item in items:
        sub_id = _sub_id(item)
        sub = subs.get(sub_id) if sub_id is not None else None
        if (
            sub is None
            or sub.user_id != user_id
            or sub.provider != provider
            or account_key(sub.account_id) != account
            or not _same_secret(item.get("clientState"), sub.client_state_hash)
        ):
            dropped += 1
            continue
        kind = (
            LIFECYCLE_KINDS.get(str(item.get("lifecycleEvent")), "sync")
            if "lifecycleEvent" in item
            else "sync"
        )
        key = (kind, sub.id if kind != "sync" else "")
        messages[key] = ChangeMessage(
            user_id=user_id,
            provider=provider,
            account_id=sub.account_id,
            kind=kind,
            subscription_id=sub.id if kind != "sync" else None,
        )
        accepted.setdefault(key, []).append(item)
    for key, message in messages.items():
        enqueue(message, dedup=_dedup_id(message, accepted[key]))
    logger.info(
        "notifications",
        extra={"accepted": len(items) - dropped, "dropped": dropped, "enqueued": len(messages)},
    )
    return Received(len(items) - dropped, dropped, len(messages))


def receive_channel(target: Target, notice: ChannelNotice) -> Received:
    """A Google channel notification.

    The channel (our subscription id) must belong to the user and account in the path, carry that
    channel's own token, and name the resource it was created for. `sync` (sent once when a channel
    starts) needs no work. The webhook answers the same way per state whatever happens here, so the
    answer reveals nothing.
    """
    state = notice.resource_state
    user_id, account = target.user_id, account_key(target.account_id)
    sub = store.get_subscription(notice.channel_id)
    if (
        sub is None
        or sub.provider != "google"
        or PROVIDER_ALIASES.get(target.provider.lower()) != "google"
        or sub.user_id != user_id
        or account_key(sub.account_id) != account
        or not _same_secret(notice.token, sub.client_state_hash)
        or (sub.resource_id is not None and notice.resource_id != sub.resource_id)
    ):
        logger.info("notifications", extra={"accepted": 0, "dropped": 1, "enqueued": 0})
        return Received(0, 1, 0)
    if state == "sync":
        logger.info("channel started", extra={"accepted": 1, "dropped": 0, "enqueued": 0})
        return Received(1, 0, 0)
    message = ChangeMessage(user_id=user_id, provider="google", account_id=sub.account_id, kind="sync")
    enqueue(message, dedup=hashlib.sha256(f"{sub.id}|{notice.message_number}|{state}".encode()).hexdigest())
    logger.info("notifications", extra={"accepted": 1, "dropped": 0, "enqueued": 1})
    return Received(1, 0, 1)


def _dedup_id(message: ChangeMessage, accepted: list[dict[str, Any]]) -> str:
    """The same notification delivered twice (Graph retries, duplicates) maps to the same id, so SQS FIFO
    drops the copy within its 5-minute window. Only the items that were accepted for this message count:
    junk added to a captured genuine body (unknown subscriptions, wrong secrets) cannot mint a new id,
    and neither can repeating an accepted item."""

    def field(item: dict[str, Any], name: str) -> str:
        data = item.get("resourceData")
        return str((data if isinstance(data, dict) else {}).get(name))

    parts = sorted(
        {
            f"{i.get('subscriptionId')}|{i.get('changeType')}|{field(i, 'id')}|"
            f"{field(i, '@odata.etag')}|{i.get('lifecycleEvent')}"
            for i in accepted
        }
    )
    return hashlib.sha256((message.model_dump_json() + "\n".join(parts)).encode()).hexdigest()


_GROUP_ID = re.compile(r"^[!-~]{1,128}$")  # SQS: 1-128 alphanumeric or punctuation characters


def group_id(message: ChangeMessage) -> str:
    """The account's FIFO message group: readable when SQS takes it as it is, else the account part is
    hashed (an address may be up to 320 characters, or not ASCII), the same for every message of the
    account either way."""
    readable = f"{message.user_id}#{message.provider}#{account_key(message.account_id)}"
    if _GROUP_ID.match(readable):
        return readable
    digest = hashlib.sha256(account_key(message.account_id).encode()).hexdigest()[:40]
    return f"{message.user_id}#{message.provider}#{digest}"


def enqueue(message: ChangeMessage, *, dedup: str) -> None:
    queue_url = get_settings().require("sync_queue_url")  # before any client: a clear error if unset
    aws.sqs().send_message(
        QueueUrl=queue_url,
        MessageBody=message.model_dump_json(),
        MessageGroupId=group_id(message),
        MessageDeduplicationId=dedup[:128],
    )


def _processor() -> SqsFifoPartialProcessor:
    """Powertools' FIFO partial-batch processor: a failed message holds back only the later messages of
    its own group (one account), which it reports as failed too; every other account's messages in the
    batch are processed and deleted. An all-failed batch is reported item by item, not raised."""
    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    processor.raise_on_entire_batch_failure = False  # the FIFO class takes no such argument in 3.37
    return processor


def consume(event: dict[str, Any]) -> PartialItemFailureResponse:
    """The sync worker: per message, sync that account (or renew / recreate a subscription, then sync),
    then make its bots follow the changed events. A failing message is reported with the later messages
    of its group (its account), which must not overtake it; the other accounts' messages go on."""
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
        try:
            _keep_subscription(conn, message)
        except ProviderAuthError as err:
            if not err.revoked:
                raise  # refused even with a fresh token: try again later
            # A real auth failure: say so (the user must reconnect); retrying cannot help.
            store.set_connection_status(
                conn.user_id, conn.provider, conn.account_id, "needs_reauth", err.message
            )
            return
        result = sync_connection(conn)
        if result.error and result.error.get("error") in ("provider_unavailable", "sync_failed"):
            # transient (throttled, down, or its bots could not follow yet): retry this account later
            raise RuntimeError(f"{result.error['error']}; retry this account later")
        logger.info("account synced", extra={"written": result.written, **result.reconciled})
    except Exception:
        logger.exception("change message failed")
        raise


def _keep_subscription(conn: Connection, message: ChangeMessage) -> None:
    """A lifecycle message's renewal or recreation (a refused cached access token is refreshed once)."""
    from calbot.services.subscriptions import recreate, renew, with_fresh_token

    if message.kind in ("renew", "recreate") and message.subscription_id:
        with_fresh_token(conn, renew if message.kind == "renew" else recreate, message.subscription_id)
