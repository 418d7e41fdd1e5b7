"""Subscriptions (SUB#<id> / SUB; GSI2, sparse and sharded by expiry: SUBEXP#<shard> / <expiry>#<id>)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol

from calbot.models import Subscription
from calbot.store.base import _batch_get, _get, _query, _query_records, _strip_keys, batch_write, to_item
from calbot.timeutil import iso_z

SUB_EXPIRY_SHARDS = 8


class SubscriptionRecords(Protocol):
    """Subscriptions, as the connect, renewal and notification services use them. This module is the
    real one."""

    def put_subscriptions(self, subs: Iterable[Subscription]) -> int: ...

    def delete_subscriptions(self, ids: Iterable[str]) -> int: ...

    def get_subscription(self, sub_id: str) -> Subscription | None: ...

    def get_subscriptions(self, sub_ids: Iterable[str]) -> dict[str, Subscription]: ...

    def subscriptions_expiring_before(self, when: datetime) -> Iterator[Subscription]: ...

    def subscription_ids_expiring_before(self, when: datetime) -> Iterator[str]: ...


def _sub_item(sub: Subscription) -> dict[str, Any]:
    shard = int(hashlib.sha256(sub.id.encode()).hexdigest(), 16) % SUB_EXPIRY_SHARDS
    return {
        "PK": f"SUB#{sub.id}",
        "SK": "SUB",
        "kind": "subscription",
        "GSI2PK": f"SUBEXP#{shard}",
        "GSI2SK": f"{iso_z(sub.expires_at)}#{sub.id}",
        **sub.model_dump(mode="json"),
    }


def put_subscriptions(subs: Iterable[Subscription]) -> int:
    return batch_write(puts=[_sub_item(s) for s in subs])


def delete_subscriptions(ids: Iterable[str]) -> int:
    return batch_write(deletes=[(f"SUB#{i}", "SUB") for i in ids])


def get_subscription(sub_id: str) -> Subscription | None:
    data = _get(f"SUB#{sub_id}", "SUB")
    return Subscription.model_validate(_strip_keys(data)) if data else None


def get_subscriptions(sub_ids: Iterable[str]) -> dict[str, Subscription]:
    """Several subscriptions in one BatchGetItem (at most 100 distinct ids: DynamoDB's cap per call),
    retrying unprocessed keys. Unknown ids are simply absent from the answer."""
    ids = list(dict.fromkeys(sub_ids))
    if len(ids) > 100:
        raise ValueError("at most 100 subscriptions per batch")
    found: dict[str, Subscription] = {}
    if not ids:
        return found
    keys = [{"PK": f"SUB#{i}", "SK": "SUB"} for i in ids]
    for item in _batch_get(keys, max_delay=1.0):
        sub = Subscription.model_validate(_strip_keys(item))
        found[sub.id] = sub
    return found


def subscription_ids_expiring_before(when: datetime) -> Iterator[str]:
    """The ids of every subscription expiring before `when` (the renewal fan-out): the expiry index's
    keys only, whatever else it projects."""
    for shard in range(SUB_EXPIRY_SHARDS):
        items = _query(
            IndexName="GSI2",
            KeyConditionExpression="GSI2PK = :pk AND GSI2SK < :until",
            ExpressionAttributeValues=to_item({":pk": f"SUBEXP#{shard}", ":until": iso_z(when)}),
            ProjectionExpression="PK",
        )
        for item in items:
            yield str(item["PK"]).removeprefix("SUB#")


def subscriptions_expiring_before(when: datetime) -> Iterator[Subscription]:
    """Every subscription expiring before `when`, via the sparse sharded expiry index (never a scan)."""
    for shard in range(SUB_EXPIRY_SHARDS):
        items = _query_records(
            IndexName="GSI2",
            KeyConditionExpression="GSI2PK = :pk AND GSI2SK < :until",
            ExpressionAttributeValues=to_item({":pk": f"SUBEXP#{shard}", ":until": iso_z(when)}),
        )
        for item in items:
            yield Subscription.model_validate(_strip_keys(item))
