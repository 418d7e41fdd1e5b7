"""Keeping change notifications alive: renewal (the 03:00 UTC job and `reauthorizationRequired`) and
recreation (a subscription the provider says is gone, or `subscriptionRemoved`).

The job finds subscriptions expiring within two days through the sparse, sharded expiry index (never
a scan) and fans them out to the renewal queue, several a message (calbot.fanout); the renewal worker
renews each to the longest lifetime the provider allows and stores the expiry it returns, each on its
own: a failed one goes back to the queue alone. Only a real authorization failure marks a connection
needs_reauth.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from calbot import fanout, store, tokens
from calbot.log import logger
from calbot.models import ChangeMessage, Connection, RenewalMessage, Subscription, SubscriptionRef
from calbot.providers import get_provider
from calbot.providers.base import ProviderAuthError, ProviderError
from calbot.services.connect import subscription_record
from calbot.services.connections import mark_needs_reauth
from calbot.timeutil import now

RENEW_WITHIN = timedelta(days=2)
# Subscriptions per renewal message: 300,000 are 12,000 messages, 1,200 SendMessageBatch calls.
SUBSCRIPTIONS_PER_MESSAGE = 25
SUBSCRIPTION_SECONDS = 30.0  # what one renewal may take (a throttled provider's Retry-After included)
RETRY_DELAY_SECONDS = 60  # a subscription put back after a failure waits this long


def _replace_ref(conn: Connection, old_id: str, new: Subscription | None, expires_at: Any = None) -> None:
    refs = [r for r in conn.subscriptions if r.id != old_id]
    if new is not None:
        refs.append(SubscriptionRef.of(new))
    elif expires_at is not None:
        old = next((r for r in conn.subscriptions if r.id == old_id), None)
        if old is not None:
            refs.append(old.model_copy(update={"expires_at": expires_at}))
    store.save_connection(conn.model_copy(update={"subscriptions": refs, "updated_at": now()}))


def renew(conn: Connection, subscription_id: str) -> str:
    """Extend one subscription; recreate it when the provider says it is gone. Returns what happened."""
    sub = store.get_subscription(subscription_id)
    if sub is None:
        return "unknown"
    provider = get_provider(conn.provider)
    renewed = provider.renew_subscription(tokens.access_token(conn), subscription_id)
    if renewed is None:
        recreate(conn, subscription_id)
        return "recreated"
    store.put_subscriptions([sub.model_copy(update={"expires_at": renewed.expires_at})])
    _replace_ref(conn, subscription_id, None, expires_at=renewed.expires_at)
    return "renewed"


def recreate(conn: Connection, subscription_id: str) -> str:
    """A new subscription (with a fresh secret) for the calendar the old one watched."""
    old = store.get_subscription(subscription_id)
    calendar_id = (
        old.calendar_id
        if old
        else next((r.calendar_id for r in conn.subscriptions if r.id == subscription_id), None)
    )
    if calendar_id is None:
        return "unknown"
    provider = get_provider(conn.provider)
    token = tokens.access_token(conn)
    client_state = secrets.token_urlsafe(48)
    made = provider.create_subscription(
        token, calendar_id=calendar_id, notification_url=conn.webhook_url, client_state=client_state
    )
    new = subscription_record(made, client_state, conn.user_id, conn.provider, conn.account_id)
    store.put_subscriptions([new])
    try:
        _replace_ref(conn, subscription_id, new)
    except KeyError:
        # The account was disconnected (or is being) meanwhile: the new subscription must not outlive it.
        store.delete_subscriptions([new.id])
        try:
            provider.delete_subscription(token, new.id, handle=made.handle)
        except ProviderError:
            pass
        raise
    store.delete_subscriptions([subscription_id])
    try:
        # if it still exists, stop it (with what the provider needs to address it, e.g. a resource id)
        provider.delete_subscription(token, subscription_id, handle=old.handle if old else {})
    except ProviderError:
        pass
    return "recreated"


def _resync_later(conn: Connection, old_subscription_id: str) -> None:
    """A subscription that was gone missed every change since it went: have the sync worker sync the
    account (and its bots follow), as a `subscriptionRemoved` lifecycle notification would."""
    from calbot.services.notifications import enqueue

    message = ChangeMessage(
        user_id=conn.user_id, provider=conn.provider, account_id=conn.account_id, kind="sync"
    )
    dedup = hashlib.sha256(f"renewal-recreated|{old_subscription_id}".encode()).hexdigest()
    try:
        enqueue(message, dedup=dedup)
    except Exception:
        logger.exception("could not enqueue the resync of a recreated subscription's account")


def with_fresh_token(conn: Connection, action: Callable[[Connection, str], str], subscription_id: str) -> str:
    """`renew` or `recreate`; a cached access token the provider refused (401) is dropped and the call
    made once more with a fresh one, so that only a refused refresh counts as an auth failure."""
    try:
        return action(conn, subscription_id)
    except ProviderAuthError as err:
        if err.revoked:
            raise
        tokens.forget_access_token(conn)
        return action(conn, subscription_id)


def run_renewal(queue_url: str) -> dict[str, Any]:
    """The 03:00 UTC job: only fans out. The subscriptions due (the sparse expiry index, ids only) go
    to the renewal queue SUBSCRIPTIONS_PER_MESSAGE a message, ten messages a SendMessageBatch call;
    the renewal worker (`consume`) renews them."""
    counted: list[int] = []
    ids = store.subscription_ids_expiring_before(now() + RENEW_WITHIN)
    sent, lost = fanout.send_all(
        queue_url, fanout.pack(RenewalMessage, ids, SUBSCRIPTIONS_PER_MESSAGE, counted)
    )
    failed = sum(len(RenewalMessage.model_validate_json(body).subscription_ids) for body in lost)
    if failed:  # still due tomorrow (two days of slack): the next run enqueues them again
        logger.error("renewal fan-out could not enqueue some subscriptions", extra={"failed": failed})
    return {"subscriptions_enqueued": sum(counted) - failed, "messages": sent, "failed": failed}


def renew_due(subscription_id: str) -> str:
    """The worker's one subscription: renewed (recreated when the provider says it is gone), unless an
    earlier delivery did it already. Raises for a failure worth retrying (the queue retries it)."""
    sub = store.get_subscription(subscription_id)
    if sub is None:
        return "unknown"  # deleted meanwhile (a disconnect, or recreated by an earlier delivery)
    if sub.expires_at > now() + RENEW_WITHIN:
        return "current"  # renewed by an earlier delivery of this message
    conn = store.get_connection(sub.user_id, sub.provider, sub.account_id)
    if conn is None:
        store.delete_subscriptions([sub.id])  # its connection is gone
        return "orphaned"
    if conn.status == "needs_reauth" or not conn.live:
        return "skipped"  # dead credentials, or a disconnect in progress (it deletes the subscription)
    try:
        outcome = with_fresh_token(conn, renew, sub.id)
    except ProviderAuthError as err:
        if not err.revoked:
            raise  # refused even with a fresh token: not proof of revocation; retried
        mark_needs_reauth(conn, err.message)
        return "needs_reauth"
    if outcome == "recreated":
        _resync_later(conn, sub.id)
    return outcome


def renew_batch(event: dict[str, Any]) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The renewal worker's batch: its failures (for SQS) and the count of each outcome."""
    return fanout.consume_items(
        event, RenewalMessage, renew_due, "renewal_queue_url", SUBSCRIPTION_SECONDS, RETRY_DELAY_SECONDS
    )


def consume(event: dict[str, Any]) -> dict[str, Any]:
    """The renewal worker (SQS, partial batch responses): a failed subscription goes back to the queue
    alone and is retried (then the dead-letter queue, which alarms); the others are not held back."""
    failures, outcomes = renew_batch(event)
    logger.info("renewal batch", extra=outcomes)
    return {"batchItemFailures": failures}
