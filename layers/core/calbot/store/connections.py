"""Connections (USER#<u> / CONN#<provider>#<account>), with the user's connection_count (the limit is
enforced in the transaction that writes a connection). No token material."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from botocore.exceptions import ClientError

from calbot.models import Connection, DisconnectState, account_key
from calbot.store.base import (
    _get,
    _is_conditional_failure,
    _query,
    _strip_keys,
    _table,
    _write,
    _write_if,
    from_item,
    to_item,
    transact_write,
    user_pk,
)
from calbot.store.users import get_user
from calbot.timeutil import iso_z, now


class ConnectionRecords(Protocol):
    """Connections, as the connect, disconnect, sync and notification services use them. This module
    is the real one."""

    def get_connection(self, user_id: str, provider: str, account_id: str) -> Connection | None: ...

    def list_connections(self, user_id: str, provider: str | None = ...) -> list[Connection]: ...

    def create_connection(self, conn: Connection, *, limit: int) -> None: ...

    def save_connection(self, conn: Connection) -> None: ...

    def count_connections(self, user_id: str) -> int: ...

    def set_connection_status(
        self, user_id: str, provider: str, account_id: str, status: str, reason: str | None
    ) -> bool: ...

    def restore_connection(self, user_id: str, provider: str, account_id: str) -> bool: ...

    def mark_needs_reauth(
        self, user_id: str, provider: str, account_id: str, reason: str
    ) -> Connection | None: ...

    def mark_disconnecting(
        self, user_id: str, provider: str, account_id: str, state: DisconnectState
    ) -> Connection | None: ...

    def delete_connection(self, conn: Connection) -> None: ...


class ConnectionExists(Exception):
    pass


class ConnectionLimitReached(Exception):
    pass


def conn_sk(provider: str, account_id: str) -> str:
    return f"CONN#{provider}#{account_key(account_id)}"


def _conn_item(conn: Connection) -> dict[str, Any]:
    data = conn.model_dump(mode="json")
    if data.get("disconnect") is None:
        data.pop("disconnect", None)  # absent, not NULL: save_connection tests that it does not exist
    return {
        "PK": user_pk(conn.user_id),
        "SK": conn_sk(conn.provider, conn.account_id),
        "kind": "connection",
        **data,
    }


def get_connection(user_id: str, provider: str, account_id: str) -> Connection | None:
    data = _get(user_pk(user_id), conn_sk(provider, account_id))
    return Connection.model_validate(_strip_keys(data)) if data else None


def list_connections(user_id: str, provider: str | None = None) -> list[Connection]:
    prefix = f"CONN#{provider}#" if provider else "CONN#"
    items = _query(
        KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
        ConsistentRead=True,
        ExpressionAttributeValues=to_item({":pk": user_pk(user_id), ":sk": prefix}),
    )
    return [Connection.model_validate(_strip_keys(i)) for i in items]


def create_connection(conn: Connection, *, limit: int) -> None:
    """Insert a new connection and count it against the user's limit in one transaction.

    Raises ConnectionExists when (provider, account) is already connected and ConnectionLimitReached
    when the user is at `limit`; both checks are atomic with the write, so concurrent connects cannot
    exceed the limit or create a duplicate.
    """
    items = [
        {
            "Put": {
                "TableName": _table(),
                "Item": to_item(_conn_item(conn)),
                "ConditionExpression": "attribute_not_exists(PK)",
            }
        },
        {
            "Update": {
                "TableName": _table(),
                "Key": to_item({"PK": user_pk(conn.user_id), "SK": "PROFILE"}),
                "UpdateExpression": "SET connection_count = if_not_exists(connection_count, :zero) + :one",
                "ConditionExpression": "attribute_not_exists(connection_count) OR connection_count < :limit",
                "ExpressionAttributeValues": to_item({":zero": 0, ":one": 1, ":limit": limit}),
            }
        },
    ]
    transact_write(items, on_condition=[ConnectionExists, ConnectionLimitReached])


def save_connection(conn: Connection) -> None:
    """Overwrite an existing connection record (it must exist: a replace never resurrects a deleted one,
    and a copy read before a disconnect started never wipes the disconnect's mark)."""
    try:
        _write(
            "put_item",
            Item=to_item(_conn_item(conn)),
            ConditionExpression="attribute_exists(PK) AND attribute_not_exists(#d)",
            ExpressionAttributeNames={"#d": "disconnect"},  # a reserved word
        )
    except ClientError as err:
        if _is_conditional_failure(err):
            raise KeyError("connection no longer exists") from err
        raise


class ConnectionGone(Exception):
    pass


class CounterAtZero(Exception):
    pass


def mark_disconnecting(
    user_id: str, provider: str, account_id: str, state: DisconnectState
) -> Connection | None:
    """Put the disconnect mark on a connection unless it already has one (a retry keeps the first
    attempt's decisions). Returns the connection as it now is, or None when it does not exist."""
    try:
        resp = _write(
            "update_item",
            Key=to_item({"PK": user_pk(user_id), "SK": conn_sk(provider, account_id)}),
            UpdateExpression="SET #d = if_not_exists(#d, :d)",
            ConditionExpression="attribute_exists(PK)",
            ExpressionAttributeNames={"#d": "disconnect"},
            ExpressionAttributeValues=to_item({":d": state.model_dump(mode="json")}),
            ReturnValues="ALL_NEW",
        )
    except ClientError as err:
        if _is_conditional_failure(err):
            return None
        raise
    return Connection.model_validate(_strip_keys(from_item(resp["Attributes"])))


def record_subscriptions_stopped(
    user_id: str, provider: str, account_id: str, stopped: int, warnings: list[dict[str, str]]
) -> None:
    """A disconnecting connection's subscriptions are dealt with: forget them and count them."""
    _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": conn_sk(provider, account_id)}),
        UpdateExpression=(
            "SET subscriptions = :none, #d.subscriptions_stopped = #d.subscriptions_stopped + :n, "
            "#d.warnings = list_append(#d.warnings, :w)"
        ),
        ConditionExpression="attribute_exists(#d.started_at)",
        ExpressionAttributeNames={"#d": "disconnect"},
        ExpressionAttributeValues=to_item({":none": [], ":n": stopped, ":w": warnings}),
    )


def delete_connection(conn: Connection) -> None:
    """Delete a connection record and give its place back under the user's limit, in one transaction.

    Raises ConnectionGone when the record is already gone (a concurrent retry finished first).
    """
    delete = {
        "Delete": {
            "TableName": _table(),
            "Key": to_item({"PK": user_pk(conn.user_id), "SK": conn_sk(conn.provider, conn.account_id)}),
            "ConditionExpression": "attribute_exists(PK)",
        }
    }
    release = {
        "Update": {
            "TableName": _table(),
            "Key": to_item({"PK": user_pk(conn.user_id), "SK": "PROFILE"}),
            "UpdateExpression": "SET connection_count = connection_count - :one",
            "ConditionExpression": "connection_count > :zero",
            "ExpressionAttributeValues": to_item({":zero": 0, ":one": 1}),
        }
    }
    try:
        transact_write([delete, release], on_condition=[ConnectionGone, CounterAtZero])
    except CounterAtZero:
        # The counter is already at zero (it can only undercount): the record must still go.
        transact_write([delete], on_condition=[ConnectionGone])


def count_connections(user_id: str) -> int:
    user = get_user(user_id)
    return user.connection_count if user else 0


def set_connection_status(
    user_id: str, provider: str, account_id: str, status: str, reason: str | None
) -> bool:
    """Change a connection's status in place (never creates one). False when it no longer exists."""
    return _set_status(user_id, provider, account_id, status, reason, when="attribute_exists(PK)")


def mark_needs_reauth(user_id: str, provider: str, account_id: str, reason: str) -> Connection | None:
    """set_connection_status(..., "needs_reauth", reason), telling whether this write made the
    transition: the connection as it now is when it was in another status before, else None (already
    needs_reauth, or gone). Every call still writes the reason and updated_at (calbot.services.sync
    retries a refresh REAUTH_RETRY after the last failure)."""
    at = now()
    update = _status_update(
        user_id, provider, account_id, "needs_reauth", reason, when="attribute_exists(PK)", at=at
    )
    try:  # one write: the status before it tells whether this was the transition
        resp = _write("update_item", ReturnValues="ALL_OLD", **update)
    except ClientError as err:
        if _is_conditional_failure(err):
            return None
        raise
    before = Connection.model_validate(_strip_keys(from_item(resp["Attributes"])))
    if before.status == "needs_reauth":
        return None
    return before.model_copy(update={"status": "needs_reauth", "status_reason": reason, "updated_at": at})


def restore_connection(user_id: str, provider: str, account_id: str) -> bool:
    """needs_reauth -> active after a good refresh proved the credentials alive (only from that state:
    a disconnect or an `error` status is left alone). False when it was not needs_reauth."""
    return _set_status(user_id, provider, account_id, "active", None, when="#s = :was", was="needs_reauth")


def _set_status(
    user_id: str, provider: str, account_id: str, status: str, reason: str | None, *, when: str, was: str = ""
) -> bool:
    """One UpdateItem of status, status_reason and updated_at under the condition `when` (in which #s
    is the status and :was `was`)."""
    update = _status_update(user_id, provider, account_id, status, reason, when=when, was=was)
    return _write_if("update_item", **update)


def _status_update(
    user_id: str,
    provider: str,
    account_id: str,
    status: str,
    reason: str | None,
    *,
    when: str,
    was: str = "",
    at: datetime | None = None,
) -> dict[str, Any]:
    """The UpdateItem arguments of a status change (see _set_status)."""
    values = {":s": status, ":r": reason, ":u": iso_z(at or now())} | ({":was": was} if was else {})
    return {
        "Key": to_item({"PK": user_pk(user_id), "SK": conn_sk(provider, account_id)}),
        "UpdateExpression": "SET #s = :s, status_reason = :r, updated_at = :u",
        "ConditionExpression": when,
        "ExpressionAttributeNames": {"#s": "status"},
        "ExpressionAttributeValues": to_item(values),
    }
