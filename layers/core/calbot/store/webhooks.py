"""Customer webhook endpoints (USER#<u> / WEBHOOK#<webhook id>), with the user's webhook_count on the
PROFILE item (the 10-per-user limit is enforced in the transaction that writes an endpoint, as
connection_count is for connections). No secret here: calbot.webhook_secrets keeps those."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from botocore.exceptions import ClientError

from calbot.models import WEBHOOK_DISABLE_AFTER_SECONDS, WEBHOOK_LIMIT, WebhookEndpoint
from calbot.store import base
from calbot.store.base import _is_conditional_failure, _table, _write, from_item, to_item, user_pk
from calbot.timeutil import iso_z

WEBHOOK = "WEBHOOK#"
DISABLED_FAILING = "failing_5_days"
# What update_webhook may change; the keys, ids and created_at never change.
UPDATABLE = frozenset(
    {
        "url",
        "event_types",
        "description",
        "enabled",
        "updated_at",
        "failing_since",
        "disabled_reason",
        "secret_version",
        "previous_secret_expires_at",
    }
)


class WebhookRecords(Protocol):
    """Webhook endpoints, as the webhook services use them. This module is the real one."""

    def create_webhook(self, endpoint: WebhookEndpoint, *, limit: int = ...) -> None: ...

    def get_webhook(self, user_id: str, webhook_id: str) -> WebhookEndpoint | None: ...

    def list_webhooks(self, user_id: str) -> list[WebhookEndpoint]: ...

    def update_webhook(
        self, user_id: str, webhook_id: str, changes: dict[str, Any]
    ) -> WebhookEndpoint | None: ...

    def delete_webhook(self, user_id: str, webhook_id: str) -> bool: ...

    def mark_webhook_delivery_result(
        self, user_id: str, webhook_id: str, *, ok: bool, at: datetime
    ) -> WebhookEndpoint | None: ...


class WebhookLimitReached(Exception):
    pass


class _WebhookExists(Exception):
    pass


class _WebhookGone(Exception):
    pass


class _NoneCounted(Exception):
    pass


def webhook_sk(webhook_id: str) -> str:
    return WEBHOOK + webhook_id


def _key(user_id: str, webhook_id: str) -> dict[str, Any]:
    return to_item({"PK": user_pk(user_id), "SK": webhook_sk(webhook_id)})


def _record(data: dict[str, Any]) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate(base._strip_keys(data))


def create_webhook(endpoint: WebhookEndpoint, *, limit: int = WEBHOOK_LIMIT) -> None:
    """Insert an endpoint and count it against the user's limit in one transaction: concurrent
    registrations never exceed `limit` (WebhookLimitReached)."""
    item = {
        "PK": user_pk(endpoint.user_id),
        "SK": webhook_sk(endpoint.webhook_id),
        "kind": "webhook",
        # absent, not NULL: failing_since is set with if_not_exists, and a None field is removed
        **endpoint.model_dump(mode="json", exclude_none=True),
    }
    count = {
        "TableName": _table(),
        "Key": to_item({"PK": user_pk(endpoint.user_id), "SK": "PROFILE"}),
        "UpdateExpression": "SET webhook_count = if_not_exists(webhook_count, :zero) + :one",
        "ConditionExpression": "attribute_not_exists(webhook_count) OR webhook_count < :limit",
        "ExpressionAttributeValues": to_item({":zero": 0, ":one": 1, ":limit": limit}),
    }
    put = {"TableName": _table(), "Item": to_item(item), "ConditionExpression": "attribute_not_exists(PK)"}
    base.transact_write([{"Put": put}, {"Update": count}], on_condition=[_WebhookExists, WebhookLimitReached])


def get_webhook(user_id: str, webhook_id: str) -> WebhookEndpoint | None:
    data = base._get(user_pk(user_id), webhook_sk(webhook_id))
    return _record(data) if data else None


def list_webhooks(user_id: str) -> list[WebhookEndpoint]:
    """Every endpoint of the user (at most WEBHOOK_LIMIT), oldest first."""
    items = base._query(
        KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
        ConsistentRead=True,
        ExpressionAttributeValues=to_item({":pk": user_pk(user_id), ":sk": WEBHOOK}),
    )
    return sorted((_record(i) for i in items), key=lambda e: (e.created_at, e.webhook_id))


def _json_value(value: Any) -> Any:
    return iso_z(value) if isinstance(value, datetime) else value


def _update(
    user_id: str, webhook_id: str, expression: str, condition: str, **kwargs: Any
) -> WebhookEndpoint | None:
    """One UpdateItem of the endpoint returning the record after; None when `condition` failed."""
    try:
        resp = _write(
            "update_item",
            Key=_key(user_id, webhook_id),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ReturnValues="ALL_NEW",
            **kwargs,
        )
    except ClientError as err:
        if _is_conditional_failure(err):
            return None
        raise
    return _record(from_item(resp["Attributes"]))


def update_webhook(user_id: str, webhook_id: str, changes: dict[str, Any]) -> WebhookEndpoint | None:
    """Set these fields (UPDATABLE; a None value removes the attribute) in one UpdateItem, so a
    concurrent change of other fields (a delivery's failing_since) is never undone. The record after,
    or None when the endpoint does not exist (never creates one)."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    if not changes:
        return get_webhook(user_id, webhook_id)
    names = {f"#f{n}": field for n, field in enumerate(sorted(changes))}
    values = {f":v{name[2:]}": _json_value(changes[f]) for name, f in names.items() if changes[f] is not None}
    sets = [f"{name} = :v{name[2:]}" for name, field in names.items() if changes[field] is not None]
    removes = [name for name, field in names.items() if changes[field] is None]
    clauses = [f"{verb} {', '.join(parts)}" for verb, parts in (("SET", sets), ("REMOVE", removes)) if parts]
    expression = " ".join(clauses)
    extra: dict[str, Any] = {"ExpressionAttributeValues": to_item(values)} if values else {}
    return _update(
        user_id, webhook_id, expression, "attribute_exists(PK)", ExpressionAttributeNames=names, **extra
    )


def delete_webhook(user_id: str, webhook_id: str) -> bool:
    """Delete an endpoint and give its place back under the limit, in one transaction. False when it
    did not exist."""
    delete = {
        "TableName": _table(),
        "Key": _key(user_id, webhook_id),
        "ConditionExpression": "attribute_exists(PK)",
    }
    release = {
        "TableName": _table(),
        "Key": to_item({"PK": user_pk(user_id), "SK": "PROFILE"}),
        "UpdateExpression": "SET webhook_count = webhook_count - :one",
        "ConditionExpression": "webhook_count > :zero",
        "ExpressionAttributeValues": to_item({":zero": 0, ":one": 1}),
    }
    try:
        try:
            base.transact_write(
                [{"Delete": delete}, {"Update": release}], on_condition=[_WebhookGone, _NoneCounted]
            )
        except _NoneCounted:  # the counter can only undercount: the endpoint must still go
            base.transact_write([{"Delete": delete}], on_condition=[_WebhookGone])
    except _WebhookGone:
        return False
    return True


def mark_webhook_delivery_result(
    user_id: str, webhook_id: str, *, ok: bool, at: datetime
) -> WebhookEndpoint | None:
    """Record how a delivery to the endpoint ended; the record after (None: the endpoint is gone).

    A success clears `failing_since` (written only when it was set: most deliveries cost a read, not a
    write). A failure sets it if unset; when every delivery since has failed for 5 days
    (at - failing_since >= 5 days), the endpoint is disabled with reason "failing_5_days"."""
    if ok:
        cleared = _update(
            user_id,
            webhook_id,
            "REMOVE failing_since",
            "attribute_exists(PK) AND attribute_exists(failing_since)",
        )
        return cleared or get_webhook(user_id, webhook_id)
    endpoint = _update(
        user_id,
        webhook_id,
        "SET failing_since = if_not_exists(failing_since, :at)",
        "attribute_exists(PK)",
        ExpressionAttributeValues=to_item({":at": iso_z(at)}),
    )
    since = endpoint.failing_since if endpoint else None
    if endpoint is None or since is None or not endpoint.enabled:
        return endpoint
    if at - since < timedelta(seconds=WEBHOOK_DISABLE_AFTER_SECONDS):
        return endpoint
    values = {":off": False, ":on": True, ":why": DISABLED_FAILING, ":at": iso_z(at), ":since": iso_z(since)}
    disabled = _update(
        user_id,
        webhook_id,
        "SET enabled = :off, disabled_reason = :why, updated_at = :at",
        # only the failure streak we measured: a success (or a re-enable) in between wins
        "attribute_exists(PK) AND enabled = :on AND failing_since = :since",
        ExpressionAttributeValues=to_item(values),
    )
    return disabled or get_webhook(user_id, webhook_id)
