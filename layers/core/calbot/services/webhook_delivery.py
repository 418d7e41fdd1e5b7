"""Customer-webhook delivery: events become per-endpoint deliveries on a queue, and the delivery worker
POSTs them (signed per Standard Webhooks) until the receiver takes them or the retries run out.

* `enqueue_event` (called by calbot.webhook_events.emit, in the function whose action caused the event):
  one Query of the user's endpoints (a user with none costs that read and nothing else; a bulk action
  in webhook_events.endpoints_read_once reads them once for all its events) and, when some want the
  event, one SendMessage of it to the delivery queue. The caller never waits on a receiver.
* The worker (`consume`, the queue's Lambda) turns an `event` message into one delivery record per
  endpoint (deterministic ids: a redelivered message finds them) and makes each delivery's first
  attempt; a failed attempt schedules the next one after RETRY_DELAYS (5 s ... 10 h: 8 attempts over
  more than 27 h), then the delivery is `failed` and its message goes to the dead-letter queue.
* The delay: SQS per-message DelaySeconds, at most 900 s (message timers; a FIFO queue takes none, so
  the queue is standard). A longer wait is several hops: a message that arrives before its delivery's
  `next_attempt_at` is sent again with the rest of the wait (at most 900 s) and nothing else happens,
  so a receiver that is down for hours is retried on time and a later attempt still arrives. The
  delivery record is the truth: each scheduled attempt carries the record's `token`, and a message
  with another token (an attempt or a manual retry got there first) is dropped. The next message is
  sent before the record is written, so a crash between the two leaves an extra (stale) message,
  never a delivery nobody will attempt again.
* Every attempt is recorded on the delivery (attempts, last status and time, a short history) and
  reported to the endpoint (store.mark_webhook_delivery_result), which disables an endpoint failing
  for 5 days; a disabled or deleted endpoint's pending deliveries fail without a POST.
"""

from __future__ import annotations

import json
import math
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from calbot import aws, cursor, store, webhook_events, webhook_http, webhook_secrets, webhook_signing
from calbot.config import get_settings
from calbot.deadline import carried, current
from calbot.errors import Conflict, NotFound
from calbot.log import logger
from calbot.models import (
    DeliveriesQuery,
    DeliveryAttempt,
    DeliveryMessage,
    DeliveryPage,
    DeliveryView,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from calbot.pages import Paged
from calbot.store.webhook_deliveries import delivery_id as make_delivery_id
from calbot.timeutil import now

# Waits before the 2nd, 3rd, ... attempt: 27 h 35 min 5 s from the first attempt to the last.
RETRY_DELAYS = (5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds: 0 to 900
EARLY_TOLERANCE = timedelta(seconds=1)
HISTORY_KEPT = 20
# An attempt needs the POST's timeout and a few writes: one that could not finish in the invocation's
# time left goes back to the queue instead.
ATTEMPT_BUDGET_SECONDS = webhook_http.TIMEOUT_SECONDS + 5
POOL_SIZE = 16
TEST_EVENT = "webhook.test"


# -- emitting -----------------------------------------------------------------------------------------


def wants(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return endpoint.enabled and endpoint.subscribed(event_type)


def enqueue_event(user_id: str, event: WebhookEvent) -> None:
    """Queue `event` for every enabled endpoint of the user subscribed to its type (see the module)."""
    endpoints = webhook_events.read_endpoints(user_id, store.list_webhooks)
    targets = [w.webhook_id for w in endpoints if wants(w, event.type)]
    if not targets:
        return
    message = DeliveryMessage(
        kind="event", user_id=user_id, webhook_ids=targets, event=event.model_dump(mode="json")
    )
    _send(message, 0)


def _send(message: DeliveryMessage, delay: float) -> None:
    seconds = max(0, min(MAX_DELAY_SECONDS, math.ceil(delay)))
    aws.sqs().send_message(
        QueueUrl=get_settings().require("webhook_queue_url"),
        MessageBody=message.model_dump_json(exclude_none=True),
        DelaySeconds=seconds,
    )


def _dead_letter(delivery: WebhookDelivery) -> None:
    message = DeliveryMessage(
        kind="attempt",
        user_id=delivery.user_id,
        webhook_id=delivery.webhook_id,
        delivery_id=delivery.delivery_id,
        token=delivery.token,
    )
    aws.sqs().send_message(
        QueueUrl=get_settings().require("webhook_dlq_url"),
        MessageBody=message.model_dump_json(exclude_none=True),
    )


def _attempt_message(delivery: WebhookDelivery) -> DeliveryMessage:
    return DeliveryMessage(
        kind="attempt",
        user_id=delivery.user_id,
        webhook_id=delivery.webhook_id,
        delivery_id=delivery.delivery_id,
        token=delivery.token,
    )


def _new_token() -> str:
    return secrets.token_hex(8)


def new_delivery(user_id: str, webhook_id: str, event: WebhookEvent) -> WebhookDelivery:
    at = now()
    return WebhookDelivery(
        delivery_id=make_delivery_id(webhook_id, event.id, event.timestamp),
        user_id=user_id,
        webhook_id=webhook_id,
        event_id=event.id,
        type=event.type,
        body=json.dumps(event.model_dump(mode="json"), separators=(",", ":")),
        created_at=at,
        next_attempt_at=at,
        token=_new_token(),
    )


# -- the worker ---------------------------------------------------------------------------------------


def consume(event: dict[str, Any]) -> dict[str, Any]:
    """The delivery queue's batch: every attempt of it in parallel; a message whose handling raised
    (not a receiver's failure: that is recorded and rescheduled) goes back alone."""
    records = event.get("Records", [])
    if not records:
        return {"batchItemFailures": []}
    with ThreadPoolExecutor(max_workers=min(POOL_SIZE, len(records))) as pool:
        results = list(pool.map(carried(_one), records))
    return {
        "batchItemFailures": [
            {"itemIdentifier": r["messageId"]} for r, ok in zip(records, results, strict=True) if not ok
        ]
    }


def _one(record: dict[str, Any]) -> bool:
    try:
        message = DeliveryMessage.model_validate(json.loads(record["body"]))
    except (ValueError, ValidationError):
        logger.exception("webhook delivery message rejected")  # malformed: retrying cannot help
        return True
    try:
        if message.kind == "event":
            _fan_out(message)
        else:
            attempt(message.user_id, message.webhook_id or "", message.delivery_id or "", message.token)
    except Exception:
        logger.exception(
            "webhook delivery failed",
            extra={"webhook_id": message.webhook_id, "delivery_id": message.delivery_id},
        )
        return False
    return True


def _fan_out(message: DeliveryMessage) -> None:
    """One delivery per endpoint (created once), each attempted now, in parallel."""
    event = WebhookEvent.model_validate(message.event)
    pending: list[WebhookDelivery] = []
    for webhook_id in message.webhook_ids:
        delivery = new_delivery(message.user_id, webhook_id, event)
        if not store.put_delivery(delivery):  # a redelivered message: attempt what is still due
            found = store.get_delivery(message.user_id, webhook_id, delivery.delivery_id)
            if found is None or found.state != "pending" or found.attempts:
                continue  # done, or its own attempt messages carry it on
            delivery = found
        pending.append(delivery)
    if len(pending) == 1:
        _attempt_record(pending[0])
        return
    with ThreadPoolExecutor(max_workers=min(POOL_SIZE, max(1, len(pending)))) as pool:
        list(pool.map(carried(_attempt_record), pending))


def attempt(user_id: str, webhook_id: str, delivery_id: str, token: str | None) -> str:
    """Act on one scheduled attempt message; returns what happened (for logs and tests)."""
    delivery = store.get_delivery(user_id, webhook_id, delivery_id)
    if delivery is None or delivery.state != "pending":
        return "done"
    if token is not None and token != delivery.token:
        return "stale"
    return _attempt_record(delivery)


def _attempt_record(delivery: WebhookDelivery) -> str:
    moment = now()
    due = delivery.next_attempt_at or moment
    if due - moment > EARLY_TOLERANCE:  # another hop of the wait (DelaySeconds is at most 900 s)
        _send(_attempt_message(delivery), (due - moment).total_seconds())
        return "waiting"
    if not current().allows(ATTEMPT_BUDGET_SECONDS):  # no time left for a POST: next invocation
        _send(_attempt_message(delivery), 0)
        return "deferred"
    endpoint = store.get_webhook(delivery.user_id, delivery.webhook_id)
    if endpoint is None or not endpoint.enabled:
        reason = "endpoint_deleted" if endpoint is None else "endpoint_disabled"
        _finish_without_post(delivery, reason)
        return reason
    result = _post(endpoint, delivery)
    return _record(delivery, result, endpoint)


def _post(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> webhook_http.PostResult:
    body = delivery.body.encode()
    signing = webhook_secrets.signing_secrets(
        endpoint.user_id, endpoint.webhook_id, version=endpoint.secret_version
    )
    headers = webhook_signing.headers(signing, delivery.event_id, int(now().timestamp()), body)
    return webhook_http.post(endpoint.url, body, headers)


def _record(delivery: WebhookDelivery, result: webhook_http.PostResult, endpoint: WebhookEndpoint) -> str:
    at = now()
    attempts = delivery.attempts + 1
    history = [*delivery.history, DeliveryAttempt(at=at, status=result.status, error=result.error)]
    changed = delivery.model_copy(
        update={
            "attempts": attempts,
            "last_status": result.status,
            "last_error": result.error,
            "last_attempt_at": at,
            "history": history[-HISTORY_KEPT:],
            "token": _new_token(),
        }
    )
    if result.ok:
        changed = changed.model_copy(update={"state": "delivered", "next_attempt_at": None})
        outcome = "delivered"
    elif attempts >= MAX_ATTEMPTS:
        changed = changed.model_copy(update={"state": "failed", "next_attempt_at": None})
        _dead_letter(changed)
        outcome = "failed"
    else:
        wait = RETRY_DELAYS[attempts - 1]
        changed = changed.model_copy(update={"next_attempt_at": at + timedelta(seconds=wait)})
        _send(_attempt_message(changed), wait)
        outcome = "retrying"
    if not store.save_delivery(changed, expected_token=delivery.token):
        return "raced"  # another attempt or a retry wrote first: its messages carry it on
    store.mark_webhook_delivery_result(endpoint.user_id, endpoint.webhook_id, ok=result.ok, at=at)
    logger.info(
        "webhook attempt",
        extra={
            "webhook_id": delivery.webhook_id,
            "delivery_id": delivery.delivery_id,
            "event_type": delivery.type,
            "attempt": attempts,
            "status": result.status,
            "error": result.error,
            "outcome": outcome,
        },
    )
    return outcome


def _finish_without_post(delivery: WebhookDelivery, reason: str) -> None:
    changed = delivery.model_copy(
        update={"state": "failed", "next_attempt_at": None, "last_error": reason, "token": _new_token()}
    )
    if reason == "endpoint_disabled":
        _dead_letter(changed)
    store.save_delivery(changed, expected_token=delivery.token)


# -- the endpoints ------------------------------------------------------------------------------------


def _endpoint_or_404(user_id: str, webhook_id: str) -> WebhookEndpoint:
    endpoint = store.get_webhook(user_id, webhook_id)
    if endpoint is None:
        raise NotFound("webhook_not_found", f"No webhook {webhook_id}.", webhook_id=webhook_id)
    return endpoint


def list_deliveries(user_id: str, webhook_id: str, query: DeliveriesQuery) -> Paged[DeliveryPage]:
    """An endpoint's deliveries, newest first, a page at a time (the cursor holds the last id)."""
    _endpoint_or_404(user_id, webhook_id)
    scope = cursor.scope_of("webhook_deliveries", {"webhook_id": webhook_id})
    after: str | None = None
    if query.cursor:
        after = str(cursor.decode(user_id, scope, query.cursor).get("d") or "") or None
    rows, last = store.deliveries_page(user_id, webhook_id, limit=query.limit, after=after)
    token = cursor.encode(user_id, scope, {"d": last}) if last else None
    page = DeliveryPage(results=[DeliveryView.of(d) for d in rows], next=None, has_more=token is not None)
    return Paged(page, next_cursor=token)


def retry_delivery(user_id: str, webhook_id: str, delivery_id: str) -> DeliveryView:
    """Attempt a delivery again now (whatever its state); its later failures follow the schedule."""
    endpoint = _endpoint_or_404(user_id, webhook_id)
    delivery = store.get_delivery(user_id, webhook_id, delivery_id)
    if delivery is None:
        raise NotFound("delivery_not_found", f"No delivery {delivery_id}.", delivery_id=delivery_id)
    _require_enabled(endpoint)
    at = now()
    changed = delivery.model_copy(
        update={
            "state": "pending",
            "next_attempt_at": at,
            "token": _new_token(),
            # a retried failure gets one more attempt, not a new schedule
            "attempts": min(delivery.attempts, MAX_ATTEMPTS - 1),
        }
    )
    _send(_attempt_message(changed), 0)
    if not store.save_delivery(changed, expected_token=delivery.token):
        raise Conflict("delivery_busy", "The delivery is being attempted right now; try again.")
    return DeliveryView.of(changed)


def send_test(user_id: str, webhook_id: str) -> DeliveryView:
    """Queue a `webhook.test` event to this endpoint alone (whatever types it subscribes to)."""
    endpoint = _endpoint_or_404(user_id, webhook_id)
    _require_enabled(endpoint)
    at = now()
    event = WebhookEvent(
        id="evt_" + secrets.token_hex(12),
        type=TEST_EVENT,
        timestamp=at,
        data={"webhook_id": webhook_id, "message": "This is a test event from calbot."},
    )
    delivery = new_delivery(user_id, webhook_id, event)
    store.put_delivery(delivery)
    try:
        _send(_attempt_message(delivery), 0)
    except Exception:
        # Not queued: the record must not wait forever as pending (the caller gets the error).
        failed = delivery.model_copy(
            update={"state": "failed", "next_attempt_at": None, "last_error": "not_queued"}
        )
        store.save_delivery(failed, expected_token=delivery.token)
        raise
    return DeliveryView.of(delivery)


def _require_enabled(endpoint: WebhookEndpoint) -> None:
    if not endpoint.enabled:
        raise Conflict(
            "webhook_disabled",
            "The webhook is disabled; enable it (PATCH enabled: true) before sending to it.",
            webhook_id=endpoint.webhook_id,
        )
