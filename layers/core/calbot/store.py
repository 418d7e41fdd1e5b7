"""Single-table DynamoDB access: the only module that talks to DynamoDB.

Key layout (PK / SK):
  USER#<u> / PROFILE                     user, with connection_count (the 200-limit is enforced here)
  APIKEY#<sha256(key)> / APIKEY          api key -> user (GSI1: USER#<u>#APIKEYS / key_id)
  USER#<u> / CONN#<provider>#<account>   connection record (no token material)
  SUB#<subscription id> / SUB            subscription -> user/account, clientState hash, expiry
                                         (GSI2, sparse and sharded: SUBEXP#<shard> / <expiry>#<id>)
  USER#<u> / EVENT#<event id>            event (GSI1: USER#<u>#EVENTS / <start>#<id> for time ranges;
                                         GSI2: ACCT#<u>#<provider>#<account> / EVENT#<calendar>#<id>;
                                         GSI3, occurrences only: SERIES#<u>#<series id> / <start>#<id>)
  USER#<u> / SYNC#<provider>#<account>#<calendar>   delta link / sync token and its window
  USER#<u> / BOT#<bot id>                scheduled bot (GSI1: USER#<u>#BOTS / <join time>#<id>;
                                         GSI2: SERIESBOTS#<u>#<series or event id> / <occurrence>#<id>)
  DEDUP#<u>#<meeting key> / DEDUP        one live bot per (user, meeting URL, occurrence start)
  USER#<u> / SETTINGS#AUTO               auto-schedule settings (GSI3, sparse and sharded while enabled:
                                         AUTOSCHED#<shard> / <user id>; the midnight job never scans)
  LOCK#<name> / LOCK                     short-lived mutex with a TTL
  RATE#<key_id> / WINDOW#<window start epoch>   per-API-key request counters of one fixed window:
                                         n (whole window) and s<second> (each second of it); TTL
                                         `ttl` a few minutes after the window ends (calbot.ratelimit)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, retry_if_exception_type, wait_exponential_jitter

from calbot import aws
from calbot.config import get_settings
from calbot.models import (
    ApiKeyRecord,
    AutoScheduleSettings,
    Connection,
    DisconnectState,
    Event,
    LastRun,
    ScheduledBot,
    Subscription,
    SyncState,
    User,
    account_key,
)
from calbot.retry import retrying
from calbot.timeutil import iso_z, now

_ser = TypeSerializer()
_deser = TypeDeserializer()
SUB_EXPIRY_SHARDS = 8


class ConnectionExists(Exception):
    pass


class ConnectionLimitReached(Exception):
    pass


class LockBusy(Exception):
    pass


# --------------------------------------------------------------------------------------------------
# low-level helpers


def _table() -> str:
    return get_settings().table_name


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal; give pydantic ints/floats."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dynamo(value: Any) -> Any:
    """boto3 refuses Python floats (user-supplied bot_config values can be any JSON number): store
    them as the Decimal of their shortest repr, which round-trips to the same float."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dynamo(v) for v in value]
    return value


def to_item(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(_dynamo(v)) for k, v in data.items()}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deser.deserialize(v)) for k, v in item.items()}


def _strip_keys(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in data.items()
        if k not in {"PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK", "GSI3PK", "GSI3SK", "ttl", "kind"}
    }


def _get(pk: str, sk: str, *, consistent: bool = True) -> dict[str, Any] | None:
    resp = aws.dynamodb().get_item(
        TableName=_table(), Key=to_item({"PK": pk, "SK": sk}), ConsistentRead=consistent
    )
    item = resp.get("Item")
    return from_item(item) if item else None


def _query(**kwargs: Any) -> Iterator[dict[str, Any]]:
    kwargs = {"TableName": _table(), **kwargs}
    while True:
        resp = aws.dynamodb().query(**kwargs)
        for item in resp.get("Items", []):
            yield from_item(item)
        if "LastEvaluatedKey" not in resp:
            return
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


WRITE_ATTEMPTS = 6
# Calls of one batch chunk before its unprocessed part is an error (about 20 s of backoff at most).
BATCH_ATTEMPTS = 12


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _write(operation: str, **kwargs: Any) -> dict[str, Any]:
    """Every single-item write (PutItem, UpdateItem, DeleteItem) of this module goes through here.

    DynamoDB refuses a single-item write on an item that a transaction is writing at that moment with
    TransactionConflictException, which botocore's retry modes do not retry (they retry throttling and
    5xx). It is safe to repeat: the write was not applied. Retried with jittered backoff; any other
    error (a failed condition included) is raised at once.
    """
    call = getattr(aws.dynamodb(), operation)
    for attempt in retrying(retry=retry_if_exception(_is_transaction_conflict), attempts=WRITE_ATTEMPTS):
        with attempt:
            return dict(call(TableName=_table(), **kwargs))
    raise AssertionError("unreachable")


def _is_transaction_conflict(err: BaseException) -> bool:
    return isinstance(err, ClientError) and _error_code(err) == "TransactionConflictException"


def _is_conditional_failure(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _write_if(operation: str, **kwargs: Any) -> bool:
    """`_write` with a ConditionExpression: False, nothing written, when the condition failed."""
    try:
        _write(operation, **kwargs)
    except ClientError as err:
        if _is_conditional_failure(err):
            return False
        raise
    return True


def batch_write(puts: Iterable[dict[str, Any]] = (), deletes: Iterable[tuple[str, str]] = ()) -> int:
    """Write items in batches of 25, retrying unprocessed items with backoff. Returns items written."""
    requests = [{"PutRequest": {"Item": to_item(p)}} for p in puts]
    requests += [{"DeleteRequest": {"Key": to_item({"PK": pk, "SK": sk})}} for pk, sk in deletes]
    written = 0
    for start in range(0, len(requests), 25):
        pending = {_table(): requests[start : start + 25]}
        for attempt in _unprocessed_retries(max_delay=2.0):
            with attempt:
                resp = aws.dynamodb().batch_write_item(RequestItems=pending)
                pending = resp.get("UnprocessedItems") or {}
                if pending:
                    raise Unprocessed(f"{sum(len(v) for v in pending.values())} items left unwritten")
        written += len(requests[start : start + 25])
    return written


def _batch_get(keys: list[dict[str, Any]], *, max_delay: float) -> Iterator[dict[str, Any]]:
    """Consistent reads of these keys, 100 per BatchGetItem, retrying unprocessed keys with backoff (up to
    `max_delay` seconds between calls). Yields the items found, in no particular order."""
    for start in range(0, len(keys), 100):
        chunk = [to_item(k) for k in keys[start : start + 100]]
        pending: dict[str, Any] = {_table(): {"Keys": chunk, "ConsistentRead": True}}
        found: list[dict[str, Any]] = []
        for attempt in _unprocessed_retries(max_delay=max_delay):
            with attempt:  # nothing is yielded in here: tenacity's attempt would swallow GeneratorExit
                resp = aws.dynamodb().batch_get_item(RequestItems=pending)
                found += resp.get("Responses", {}).get(_table(), [])
                pending = resp.get("UnprocessedKeys") or {}
                if pending:
                    raise Unprocessed(f"{len(pending[_table()]['Keys'])} keys left unread")
        yield from (from_item(item) for item in found)


class Unprocessed(Exception):
    """A batch call still left items unprocessed (DynamoDB throttled it) after every retry."""


def _unprocessed_retries(*, max_delay: float) -> Retrying:
    """DynamoDB answers a throttled batch with the part it did not do; it asks for backoff before the
    next call. Give up after BATCH_ATTEMPTS calls or at the deadline, with `Unprocessed`."""
    return retrying(
        retry=retry_if_exception_type(Unprocessed),
        attempts=BATCH_ATTEMPTS,
        wait=wait_exponential_jitter(initial=0.05, max=max_delay, jitter=0.05),
    )


# --------------------------------------------------------------------------------------------------
# users and api keys


def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


def put_user(user: User) -> None:
    data = user.model_dump(mode="json")
    _write(
        "put_item",
        Item=to_item({"PK": user_pk(user.user_id), "SK": "PROFILE", "kind": "user", **data}),
        ConditionExpression="attribute_not_exists(PK)",
    )


def get_user(user_id: str) -> User | None:
    data = _get(user_pk(user_id), "PROFILE")
    return User.model_validate(_strip_keys(data)) if data else None


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def put_api_key(record: ApiKeyRecord) -> None:
    _write(
        "put_item",
        Item=to_item(
            {
                "PK": f"APIKEY#{record.key_hash}",
                "SK": "APIKEY",
                "kind": "apikey",
                "GSI1PK": f"USER#{record.user_id}#APIKEYS",
                "GSI1SK": record.key_id,
                **record.model_dump(mode="json"),
            }
        ),
        ConditionExpression="attribute_not_exists(PK)",
    )


def get_api_key(key_hash: str) -> ApiKeyRecord | None:
    # Eventually consistent is fine: a key is readable long before anyone uses it, and revocation
    # removes the item.
    data = _get(f"APIKEY#{key_hash}", "APIKEY", consistent=False)
    return ApiKeyRecord.model_validate(_strip_keys(data)) if data else None


def list_api_keys(user_id: str) -> list[ApiKeyRecord]:
    items = _query(
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk",
        ExpressionAttributeValues=to_item({":pk": f"USER#{user_id}#APIKEYS"}),
    )
    return [ApiKeyRecord.model_validate(_strip_keys(i)) for i in items]


def delete_api_key(key_hash: str) -> bool:
    return _write_if(
        "delete_item",
        Key=to_item({"PK": f"APIKEY#{key_hash}", "SK": "APIKEY"}),
        ConditionExpression="attribute_exists(PK)",
    )


@dataclass(frozen=True)
class RateCount:
    counted: bool  # False: a limit was already reached and nothing was added
    window_count: int  # the window's count after this request (when counted) or as it stood
    second_count: int  # the same for this second of the window


def count_request(
    key_id: str, window_start: int, second: int, *, window_limit: int, second_limit: int, ttl_epoch: int
) -> RateCount:
    """Count one request of an API key in a fixed window and one of its seconds, unless either counter
    is already at its limit: one conditional UpdateItem, atomic under any concurrency. The item stays
    far below 1 KB (a few attributes and at most one small counter per second), so this costs one
    write unit whether it counts or refuses (a failed condition is billed like a write)."""
    second_attr = f"s{second:02d}"
    try:
        resp = _write(
            "update_item",
            Key=to_item({"PK": f"RATE#{key_id}", "SK": f"WINDOW#{window_start}"}),
            UpdateExpression="SET #kind = :kind, #ttl = :ttl ADD #n :one, #s :one",
            ConditionExpression=(
                "(attribute_not_exists(#n) OR #n < :wl) AND (attribute_not_exists(#s) OR #s < :sl)"
            ),
            ExpressionAttributeNames={"#kind": "kind", "#ttl": "ttl", "#n": "n", "#s": second_attr},
            ExpressionAttributeValues=to_item(
                {":kind": "ratelimit", ":ttl": ttl_epoch, ":one": 1, ":wl": window_limit, ":sl": second_limit}
            ),
            ReturnValues="UPDATED_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as err:
        if not _is_conditional_failure(err):
            raise
        old = from_item(err.response.get("Item") or {})
        return RateCount(False, int(old.get("n", 0)), int(old.get(second_attr, 0)))
    new = from_item(resp.get("Attributes") or {})
    return RateCount(True, int(new.get("n", 0)), int(new.get(second_attr, 0)))


# --------------------------------------------------------------------------------------------------
# connections


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


def transact_write(
    items: list[dict[str, Any]],
    *,
    on_condition: list[type[Exception]],
    attempts: int = 6,
    token: str | None = None,
) -> None:
    """A transaction, retried while DynamoDB cancels it for a TransactionConflict (another transaction
    touching one of its items at the same moment, e.g. two connects bumping one user's counter).

    Every attempt carries the same ClientRequestToken (`token`, or a fresh one per call): DynamoDB
    applies a transaction once per token for 10 minutes, so a retry of one whose answer was lost
    (a timeout, a 500 after the commit) succeeds without applying it twice. botocore would make a new
    token for each of our attempts; it reuses one only across its own retries.

    A ConditionalCheckFailed on item i raises `on_condition[i]` (when given) instead.
    """
    import uuid

    token = token or str(uuid.uuid4())
    for attempt in retrying(retry=retry_if_exception(_cancelled_by_conflict), attempts=attempts):
        with attempt:
            try:
                aws.dynamodb().transact_write_items(TransactItems=items, ClientRequestToken=token)
            except ClientError as err:
                for index, code in enumerate(_cancellation_reasons(err)):
                    if code == "ConditionalCheckFailed" and index < len(on_condition):
                        raise on_condition[index] from err
                raise


def _cancellation_reasons(err: ClientError) -> list[str | None]:
    if _error_code(err) != "TransactionCanceledException":
        return []
    return [r.get("Code") for r in err.response.get("CancellationReasons", [])]


def _cancelled_by_conflict(err: BaseException) -> bool:
    """Cancelled because another transaction held an item: safe to send again with the same token."""
    return isinstance(err, ClientError) and "TransactionConflict" in _cancellation_reasons(err)


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


# --------------------------------------------------------------------------------------------------
# subscriptions


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


def subscriptions_expiring_before(when: datetime) -> Iterator[Subscription]:
    """Every subscription expiring before `when`, via the sparse sharded expiry index (never a scan)."""
    for shard in range(SUB_EXPIRY_SHARDS):
        items = _query(
            IndexName="GSI2",
            KeyConditionExpression="GSI2PK = :pk AND GSI2SK < :until",
            ExpressionAttributeValues=to_item({":pk": f"SUBEXP#{shard}", ":until": iso_z(when)}),
        )
        for item in items:
            yield Subscription.model_validate(_strip_keys(item))


# --------------------------------------------------------------------------------------------------
# locks


def acquire_lock(name: str, *, ttl_seconds: int = 60) -> str:
    """Take a named mutex; raise LockBusy while someone else holds an unexpired one. Returns a token."""
    import uuid  # locks are taken on write paths only

    token = uuid.uuid4().hex
    now_epoch = int(now().timestamp())
    try:
        _write(
            "put_item",
            Item=to_item(
                {
                    "PK": f"LOCK#{name}",
                    "SK": "LOCK",
                    "kind": "lock",
                    "owner": token,
                    "expires_epoch": now_epoch + ttl_seconds,
                    "ttl": now_epoch + ttl_seconds + 3600,
                }
            ),
            ConditionExpression="attribute_not_exists(PK) OR expires_epoch < :now",
            ExpressionAttributeValues=to_item({":now": now_epoch}),
        )
    except ClientError as err:
        if _is_conditional_failure(err):
            raise LockBusy(name) from err
        raise
    return token


def release_lock(name: str, token: str) -> None:
    # The condition fails when the lock expired and was taken over: nothing of ours to release.
    _write_if(
        "delete_item",
        Key=to_item({"PK": f"LOCK#{name}", "SK": "LOCK"}),
        ConditionExpression="#o = :token",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues=to_item({":token": token}),
    )


def set_connection_status(
    user_id: str, provider: str, account_id: str, status: str, reason: str | None
) -> bool:
    """Change a connection's status in place (never creates one). False when it no longer exists."""
    return _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": conn_sk(provider, account_id)}),
        UpdateExpression="SET #s = :s, status_reason = :r, updated_at = :u",
        ConditionExpression="attribute_exists(PK)",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=to_item({":s": status, ":r": reason, ":u": iso_z(now())}),
    )


def restore_connection(user_id: str, provider: str, account_id: str) -> bool:
    """needs_reauth -> active after a good refresh proved the credentials alive (only from that state:
    a disconnect or an `error` status is left alone). False when it was not needs_reauth."""
    return _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": conn_sk(provider, account_id)}),
        UpdateExpression="SET #s = :s, status_reason = :r, updated_at = :u",
        ConditionExpression="#s = :was",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=to_item(
            {":s": "active", ":r": None, ":u": iso_z(now()), ":was": "needs_reauth"}
        ),
    )


def touch_connection_synced(user_id: str, provider: str, account_id: str, when: datetime) -> None:
    _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": conn_sk(provider, account_id)}),
        UpdateExpression="SET last_synced_at = :t",
        ConditionExpression="attribute_exists(PK)",
        ExpressionAttributeValues=to_item({":t": iso_z(when)}),
    )


# --------------------------------------------------------------------------------------------------
# events and sync state


def account_partition(user_id: str, provider: str, account_id: str) -> str:
    return f"ACCT#{user_id}#{provider}#{account_key(account_id)}"


def series_partition(user_id: str, series_id: str) -> str:
    return f"SERIES#{user_id}#{series_id}"


def event_item(event: Event) -> dict[str, Any]:
    item = {
        "PK": user_pk(event.user_id),
        "SK": f"EVENT#{event.event_id}",
        "kind": "event",
        "GSI1PK": f"USER#{event.user_id}#EVENTS",
        "GSI1SK": f"{iso_z(event.start_time)}#{event.event_id}",
        "GSI2PK": account_partition(event.user_id, event.provider, event.account_id),
        "GSI2SK": f"EVENT#{event.calendar_id}#{event.event_id}",
        **event.model_dump(mode="json"),
    }
    if event.series_id:
        # Sparse: an occurrence is also found by its series id alone (POST /calendar/schedule/{series_id}
        # names no account).
        item["GSI3PK"] = series_partition(event.user_id, event.series_id)
        item["GSI3SK"] = f"{iso_z(event.start_time)}#{event.event_id}"
    return item


def series_occurrences(user_id: str, series_id: str) -> list[Event]:
    """Every stored occurrence of one series of the user's, by start (GSI3, sparse)."""
    items = _query(
        IndexName="GSI3",
        KeyConditionExpression="GSI3PK = :pk",
        ExpressionAttributeValues=to_item({":pk": series_partition(user_id, series_id)}),
    )
    return [_event(i) for i in items]


def _event(data: dict[str, Any]) -> Event:
    return Event.model_validate(_strip_keys(data))


def put_events(events: Iterable[Event]) -> int:
    return batch_write(puts=[event_item(e) for e in events])


def get_event(user_id: str, event_id: str) -> Event | None:
    data = _get(user_pk(user_id), f"EVENT#{event_id}")
    return _event(data) if data else None


def get_events(user_id: str, event_ids: Iterable[str]) -> dict[str, Event]:
    """Batch read (100 keys per call), retrying unprocessed keys."""
    ids = list(dict.fromkeys(event_ids))
    found: dict[str, Event] = {}
    for item in _batch_get([{"PK": user_pk(user_id), "SK": f"EVENT#{i}"} for i in ids], max_delay=2.0):
        event = _event(item)
        found[event.event_id] = event
    return found


def events_of_calendar(user_id: str, provider: str, account_id: str, calendar_id: str) -> list[Event]:
    items = _query(
        IndexName="GSI2",
        KeyConditionExpression="GSI2PK = :pk AND begins_with(GSI2SK, :sk)",
        ExpressionAttributeValues=to_item(
            {":pk": account_partition(user_id, provider, account_id), ":sk": f"EVENT#{calendar_id}#"}
        ),
    )
    return [_event(i) for i in items]


def query_events(
    user_id: str,
    *,
    time_min: datetime,
    time_max: datetime,
    limit: int,
    after: str | None = None,
    before: str | None = None,
    provider: str | None = None,
    account_id: str | None = None,
    calendar_id: str | None = None,
) -> list[Event]:
    """Events starting in [time_min, time_max), ordered by (start, id), after/before a GSI1SK key.

    Returns up to `limit` events (ascending even when paging backwards). Filters are applied server
    side; DynamoDB's Limit counts items before filtering, so this keeps reading until it has enough.
    """
    lower, upper = iso_z(time_min), iso_z(time_max)
    if after is not None:
        cond, values = "GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi", {":lo": after + "\x00", ":hi": upper}
    elif before is not None:
        cond, values = "GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi", {":lo": lower, ":hi": before}
    else:
        cond, values = "GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi", {":lo": lower, ":hi": upper}
    filters: list[str] = []
    names: dict[str, str] = {}
    if provider:
        filters.append("provider = :prov")
        values[":prov"] = provider
    if account_id:
        filters.append("GSI2PK = :acct")
        values[":acct"] = account_partition(user_id, provider or "", account_id)
    if calendar_id:
        filters.append("calendar_id = :cal")
        values[":cal"] = calendar_id
    if after is not None or before is None:
        filters.append("GSI1SK >= :min")
        values[":min"] = lower
    kwargs: dict[str, Any] = {
        "IndexName": "GSI1",
        "KeyConditionExpression": cond,
        "ScanIndexForward": before is None,
        "ExpressionAttributeValues": to_item({":pk": f"USER#{user_id}#EVENTS", **values}),
        "Limit": max(limit, 25),
    }
    if filters:
        kwargs["FilterExpression"] = " AND ".join(filters)
    if names:
        kwargs["ExpressionAttributeNames"] = names
    out: list[Event] = []
    for item in _query(**kwargs):
        if before is not None and item["GSI1SK"] >= before:
            continue
        if item["GSI1SK"] >= upper:
            continue
        out.append(_event(item))
        if len(out) >= limit:
            break
    if before is not None:
        out.reverse()
    return out


def count_account_events(user_id: str, provider: str, account_id: str) -> int:
    kwargs: dict[str, Any] = {
        "TableName": _table(),
        "IndexName": "GSI2",
        "KeyConditionExpression": "GSI2PK = :pk AND begins_with(GSI2SK, :sk)",
        "ExpressionAttributeValues": to_item(
            {":pk": account_partition(user_id, provider, account_id), ":sk": "EVENT#"}
        ),
        "Select": "COUNT",
    }
    total = 0
    while True:
        resp = aws.dynamodb().query(**kwargs)
        total += int(resp.get("Count", 0))
        if "LastEvaluatedKey" not in resp:
            return total
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def account_event_keys(user_id: str, provider: str, account_id: str) -> Iterator[tuple[str, str]]:
    """(PK, SK) of every event of one account, page by page (keys only)."""
    for item in _query(
        IndexName="GSI2",
        KeyConditionExpression="GSI2PK = :pk AND begins_with(GSI2SK, :sk)",
        ProjectionExpression="PK, SK",
        ExpressionAttributeValues=to_item(
            {":pk": account_partition(user_id, provider, account_id), ":sk": "EVENT#"}
        ),
    ):
        yield item["PK"], item["SK"]


def delete_keys(keys: Iterable[tuple[str, str]]) -> int:
    return batch_write(deletes=keys)


def delete_sync_states(user_id: str, provider: str, account_id: str) -> int:
    """Forget an account's delta links / sync tokens (a reconnected account starts with a full sync)."""
    keys = [
        (i["PK"], i["SK"])
        for i in _query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ProjectionExpression="PK, SK",
            ExpressionAttributeValues=to_item(
                {":pk": user_pk(user_id), ":sk": f"SYNC#{provider}#{account_key(account_id)}#"}
            ),
        )
    ]
    return batch_write(deletes=keys)


def _sync_sk(provider: str, account_id: str, calendar_id: str) -> str:
    return f"SYNC#{provider}#{account_key(account_id)}#{calendar_id}"


class SyncConflict(Exception):
    """Another sync of the same calendar claimed the sync state since this one read it."""


def get_sync_state(user_id: str, provider: str, account_id: str, calendar_id: str) -> SyncState | None:
    data = _get(user_pk(user_id), _sync_sk(provider, account_id, calendar_id))
    return SyncState.model_validate(_strip_keys(data)) if data else None


def put_sync_state(state: SyncState) -> None:
    _write(
        "put_item",
        Item=to_item(
            {
                "PK": user_pk(state.user_id),
                "SK": _sync_sk(state.provider, state.account_id, state.calendar_id),
                "kind": "sync_state",
                **state.model_dump(mode="json"),
            }
        ),
    )


def _version_condition(expected: int) -> str:
    # A state written before versions existed counts as version 0.
    return "attribute_not_exists(#v)" if expected == 0 else "#v = :expected"


def _update_sync_state(
    state: SyncState, *, expected: int, sets: str, names: dict[str, str], values: dict[str, Any]
) -> None:
    """SET `sets` (plus the state's identity fields) on one calendar's sync state while it is still at
    version `expected`; SyncConflict otherwise."""
    values = {**values, ":kind": "sync_state"}
    for field in ("user_id", "provider", "account_id", "calendar_id"):
        values[f":{field}"] = getattr(state, field)
    if expected:
        values[":expected"] = expected
    try:
        _write(
            "update_item",
            Key=to_item(
                {
                    "PK": user_pk(state.user_id),
                    "SK": _sync_sk(state.provider, state.account_id, state.calendar_id),
                }
            ),
            UpdateExpression=(
                f"SET {sets}, kind = :kind, user_id = :user_id, provider = :provider, "
                "account_id = :account_id, calendar_id = :calendar_id"
            ),
            ConditionExpression=_version_condition(expected),
            ExpressionAttributeNames={"#v": "version", **names},
            ExpressionAttributeValues=to_item(values),
        )
    except ClientError as err:
        if _is_conditional_failure(err):
            raise SyncConflict(state.calendar_id) from err
        raise


def claim_sync(state: SyncState, *, expected: int) -> int:
    """Take the next sync version of one calendar's sync state, if it is still at `expected` (the
    version this sync read before it called the provider). Raises SyncConflict otherwise. Returns the
    new version: the events this sync writes carry it, and only it may then commit the cursor.

    Versions are taken after the provider answered, so a higher version always saw the provider later
    than a lower one: the order of versions is the order of what the syncs saw."""
    new = expected + 1
    _update_sync_state(state, expected=expected, sets="#v = :new", names={}, values={":new": new})
    return new


def commit_sync_state(state: SyncState, *, expected: int) -> None:
    """Store the cursor (and its window) only while the state is still at version `expected`: a sync
    that claimed `expected` itself, or, with no events to write, the version it read (then this write
    takes the next version). A sync overtaken by a later claim never moves the cursor: that later sync,
    which saw the provider after it, commits its own. Raises SyncConflict."""
    _update_sync_state(
        state,
        expected=expected,
        sets="#c = :cursor, window_start = :ws, window_end = :we, updated_at = :at, #v = :version",
        names={"#c": "cursor"},
        values={
            ":cursor": state.cursor,
            ":ws": iso_z(state.window_start) if state.window_start else None,
            ":we": iso_z(state.window_end) if state.window_end else None,
            ":at": iso_z(state.updated_at) if state.updated_at else None,
            ":version": state.version,
        },
    )


# Fields of a stored event that belong to the user, not to the provider: a sync never overwrites them.
_USER_OWNED_EVENT_FIELDS = ("recurring_enabled",)
_KEPT_EVENT_FIELDS = ("created_at",)  # set once, when the event is first stored
_SYNC_WRITE_WORKERS = 4  # per calendar; accounts sync in parallel too (aws.py sizes the pool)


def _write_synced_event(event: Event, version: int) -> bool:
    item = event_item(event.model_copy(update={"sync_version": version}))
    names: dict[str, str] = {}
    values: dict[str, Any] = {":version": version}
    sets = []
    for i, (field, value) in enumerate(item.items()):
        if field in ("PK", "SK"):
            continue
        names[f"#f{i}"] = field
        values[f":f{i}"] = value
        if field in _USER_OWNED_EVENT_FIELDS or field in _KEPT_EVENT_FIELDS:
            sets.append(f"#f{i} = if_not_exists(#f{i}, :f{i})")
        else:
            sets.append(f"#f{i} = :f{i}")
    names["#sv"] = "sync_version"
    return _write_if(
        "update_item",
        Key=to_item({"PK": item["PK"], "SK": item["SK"]}),
        UpdateExpression="SET " + ", ".join(sets),
        ConditionExpression="attribute_not_exists(#sv) OR #sv <= :version",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=to_item(values),
    )


def write_synced_events(events: list[Event], *, version: int) -> list[Event]:
    """What a sync that holds `version` found, written field by field and only over what an older sync
    wrote (an event a later sync already wrote keeps that sync's copy). The user's own fields
    (recurring_enabled) are never overwritten, only given on creation. Returns the events written."""
    if len(events) <= _SYNC_WRITE_WORKERS:  # an incremental change: a few writes, one after the other
        return [e for e in events if _write_synced_event(e, version)]
    from concurrent.futures import ThreadPoolExecutor  # writes of many events only

    with ThreadPoolExecutor(max_workers=min(_SYNC_WRITE_WORKERS, len(events))) as pool:
        done = list(pool.map(lambda e: _write_synced_event(e, version), events))
    return [e for e, ok in zip(events, done, strict=True) if ok]


def set_recurring_enabled(user_id: str, event_ids: Iterable[str], enabled: bool, at: datetime) -> int:
    """The user's recurrence flag on each of these events, and nothing else of them (a sync writing
    their content at the same moment keeps its content, and this flag stays). Returns how many."""
    changed = 0
    for event_id in event_ids:
        if _write_if(
            "update_item",
            Key=to_item({"PK": user_pk(user_id), "SK": f"EVENT#{event_id}"}),
            UpdateExpression="SET recurring_enabled = :e, updated_at = :u",
            ConditionExpression="attribute_exists(PK)",
            ExpressionAttributeValues=to_item({":e": enabled, ":u": iso_z(at)}),
        ):
            changed += 1
    return changed


# --------------------------------------------------------------------------------------------------
# scheduled bots and their dedup guards


class AlreadyScheduled(Exception):
    def __init__(self, bot_id: str | None = None) -> None:
        super().__init__(bot_id)
        self.bot_id = bot_id


class BotChanged(Exception):
    """The bot was not in the state the write expected (launched, cancelled, or claimed meanwhile)."""


def _bot_item(bot: ScheduledBot) -> dict[str, Any]:
    return {
        "PK": user_pk(bot.user_id),
        "SK": f"BOT#{bot.bot_id}",
        "kind": "bot",
        "GSI1PK": f"USER#{bot.user_id}#BOTS",
        "GSI1SK": f"{iso_z(bot.scheduled_join_time)}#{bot.bot_id}",
        "GSI2PK": f"SERIESBOTS#{bot.user_id}#{bot.series_key}",
        "GSI2SK": f"{iso_z(bot.occurrence_start)}#{bot.bot_id}",
        **bot.model_dump(mode="json"),
    }


def _bot(data: dict[str, Any]) -> ScheduledBot:
    return ScheduledBot.model_validate(_strip_keys(data))


def _guard_key(user_id: str, dedup_key: str) -> dict[str, Any]:
    return {"PK": f"DEDUP#{user_id}#{dedup_key}", "SK": "DEDUP"}


def dedup_owner(user_id: str, dedup_key: str) -> str | None:
    """The bot holding the dedup guard of this occurrence of this meeting, if one does."""
    guard = _get(**{k.lower(): v for k, v in _guard_key(user_id, dedup_key).items()})
    return str(guard.get("bot_id") or "") or None if guard else None


def create_bot(bot: ScheduledBot) -> None:
    """Write the bot and its dedup guard in one transaction: two bots for one occurrence of one meeting
    are impossible, whatever races (double clicks, retries, the midnight job, two calendars)."""
    guard = {
        **_guard_key(bot.user_id, bot.dedup_key),
        "kind": "dedup",
        "bot_id": bot.bot_id,
        "event_id": bot.event_id,
    }
    try:
        transact_write(
            [
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": to_item(guard),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                },
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": to_item(_bot_item(bot)),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                },
            ],
            on_condition=[AlreadyScheduled, AlreadyScheduled],
        )
    except AlreadyScheduled:
        existing = _get(**{k.lower(): v for k, v in _guard_key(bot.user_id, bot.dedup_key).items()})
        raise AlreadyScheduled(existing.get("bot_id") if existing else None) from None


def delete_bot(bot: ScheduledBot) -> None:
    """Undo create_bot (its schedule could not be made)."""
    transact_write(
        [
            {
                "Delete": {
                    "TableName": _table(),
                    "Key": to_item(_guard_key(bot.user_id, bot.dedup_key)),
                    "ConditionExpression": "bot_id = :b",
                    "ExpressionAttributeValues": to_item({":b": bot.bot_id}),
                }
            },
            {
                "Delete": {
                    "TableName": _table(),
                    "Key": to_item({"PK": user_pk(bot.user_id), "SK": f"BOT#{bot.bot_id}"}),
                }
            },
        ],
        on_condition=[],
    )


def get_bot(user_id: str, bot_id: str) -> ScheduledBot | None:
    data = _get(user_pk(user_id), f"BOT#{bot_id}")
    return _bot(data) if data else None


def save_bot(
    bot: ScheduledBot,
    *,
    expect_status: str | tuple[str, ...],
    expect_claim: str | None = None,
    release_guard: bool = False,
) -> None:
    """Write a changed bot only if it is still in `expect_status` (and held by `expect_claim`).

    With release_guard the dedup guard goes in the same transaction, so a cancelled or failed
    occurrence can be scheduled again and a live one never loses its guard.
    """
    statuses = (expect_status,) if isinstance(expect_status, str) else expect_status
    names = {"#s": "status"}
    values: dict[str, Any] = {f":s{i}": st for i, st in enumerate(statuses)}
    cond = "(" + " OR ".join(f"#s = :s{i}" for i in range(len(statuses))) + ")"
    if expect_claim is not None:
        cond += " AND launch_claim = :claim"
        values[":claim"] = expect_claim
    items = [
        {
            "Put": {
                "TableName": _table(),
                "Item": to_item(_bot_item(bot)),
                "ConditionExpression": cond,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": to_item(values),
            }
        }
    ]
    if release_guard:
        items.append(
            {
                "Delete": {
                    "TableName": _table(),
                    "Key": to_item(_guard_key(bot.user_id, bot.dedup_key)),
                    "ConditionExpression": "attribute_not_exists(PK) OR bot_id = :b",
                    "ExpressionAttributeValues": to_item({":b": bot.bot_id}),
                }
            }
        )
    transact_write(items, on_condition=[BotChanged, BotChanged])


def upcoming_bots(
    user_id: str,
    *,
    after: datetime,
    limit: int,
    start_key: str | None = None,
    status: str | None = None,
    provider: str | None = None,
    account_id: str | None = None,
) -> list[ScheduledBot]:
    """Bots whose join time is after `after` (or after the bot `start_key` names), soonest first."""
    return bots_by_join_time(
        user_id,
        ascending=True,
        bound=start_key + "\x00" if start_key else iso_z(after),
        limit=limit,
        statuses=(status,) if status else None,
        provider=provider,
        account_id=account_id,
    )


def bots_by_join_time(
    user_id: str,
    *,
    ascending: bool,
    bound: str,
    limit: int,
    statuses: tuple[str, ...] | None = None,
    provider: str | None = None,
    account_id: str | None = None,
) -> list[ScheduledBot]:
    """One direction of the user's bots by join time (GSI1), filtered server side: ascending from
    `bound` (GSI1SK >= bound), or descending from just below it (GSI1SK < bound)."""
    values: dict[str, Any] = {":pk": f"USER#{user_id}#BOTS", ":b": bound}
    filters, names = [], {}
    if statuses:
        names["#s"] = "status"
        filters.append("#s IN (" + ", ".join(f":s{i}" for i in range(len(statuses))) + ")")
        values.update({f":s{i}": st for i, st in enumerate(statuses)})
    if provider:
        filters.append("provider = :prov")
        values[":prov"] = provider
    if account_id:
        filters.append("account_id = :acct")
        values[":acct"] = account_id
    kwargs: dict[str, Any] = {
        "IndexName": "GSI1",
        "KeyConditionExpression": f"GSI1PK = :pk AND GSI1SK {'>=' if ascending else '<'} :b",
        "ScanIndexForward": ascending,
        "ExpressionAttributeValues": to_item(values),
        "Limit": max(limit, 25),
    }
    if filters:
        kwargs["FilterExpression"] = " AND ".join(filters)
    if names:
        kwargs["ExpressionAttributeNames"] = names
    out: list[ScheduledBot] = []
    if limit <= 0:
        return out
    for item in _query(**kwargs):
        out.append(_bot(item))
        if len(out) >= limit:
            break
    return out


def account_bots(user_id: str, provider: str, account_id: str) -> Iterator[ScheduledBot]:
    """Every bot of one account (any status, any time), page by page, filtered server side."""
    for item in _query(
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk",
        FilterExpression="provider = :prov AND account_id = :acct",
        ExpressionAttributeValues=to_item(
            {":pk": f"USER#{user_id}#BOTS", ":prov": provider, ":acct": account_id}
        ),
    ):
        yield _bot(item)


def bots_between(user_id: str, start: datetime, end: datetime) -> list[ScheduledBot]:
    items = _query(
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi",
        ExpressionAttributeValues=to_item(
            {":pk": f"USER#{user_id}#BOTS", ":lo": iso_z(start), ":hi": iso_z(end) + "~"}
        ),
    )
    return [_bot(i) for i in items]


def bots_of_series(user_id: str, series_key: str) -> list[ScheduledBot]:
    """Every bot of one series (or of one single event), by occurrence start."""
    items = _query(
        IndexName="GSI2",
        KeyConditionExpression="GSI2PK = :pk",
        ExpressionAttributeValues=to_item({":pk": f"SERIESBOTS#{user_id}#{series_key}"}),
    )
    return [_bot(i) for i in items]


def events_of_series(user_id: str, provider: str, account_id: str, series_id: str) -> list[Event]:
    items = _query(
        IndexName="GSI2",
        KeyConditionExpression="GSI2PK = :pk AND begins_with(GSI2SK, :sk)",
        FilterExpression="series_id = :sid",
        ExpressionAttributeValues=to_item(
            {":pk": account_partition(user_id, provider, account_id), ":sk": "EVENT#", ":sid": series_id}
        ),
    )
    return sorted((_event(i) for i in items), key=lambda e: e.start_time)


# --------------------------------------------------------------------------------------------------
# auto-schedule settings

AUTO_SHARDS = 16


def _auto_shard(user_id: str) -> int:
    return int(hashlib.sha256(user_id.encode()).hexdigest(), 16) % AUTO_SHARDS


def put_auto_settings(settings: AutoScheduleSettings) -> None:
    item: dict[str, Any] = {
        "PK": user_pk(settings.user_id),
        "SK": "SETTINGS#AUTO",
        "kind": "auto_settings",
        **settings.model_dump(mode="json"),
    }
    if settings.enabled:  # sparse: only enabled users are in the index the midnight job reads
        item |= {"GSI3PK": f"AUTOSCHED#{_auto_shard(settings.user_id)}", "GSI3SK": settings.user_id}
    _write("put_item", Item=to_item(item))


def update_auto_settings(
    user_id: str,
    *,
    enabled: bool,
    updated_at: datetime,
    default_bot_config: dict[str, Any] | None = None,
    join_offset_seconds: int | None = None,
    create: bool = True,
) -> bool:
    """Change only the fields a user's enable / disable sets (one UpdateItem): a concurrent write of other
    fields (a run's last_run) is never undone, and neither is this one by it. The sparse index entry
    follows `enabled`. With create=False nothing is written for a user without settings (False)."""
    sets = {"#kind": "kind", "#user": "user_id", "#enabled": "enabled", "#updated": "updated_at"}
    values: dict[str, Any] = {
        ":kind": "auto_settings",
        ":user": user_id,
        ":enabled": enabled,
        ":updated": iso_z(updated_at),
    }
    if default_bot_config is not None:
        sets["#config"] = "default_bot_config"
        values[":config"] = default_bot_config
    if join_offset_seconds is not None:
        sets["#offset"] = "join_offset_seconds"
        values[":offset"] = join_offset_seconds
    expression = "SET " + ", ".join(f"{name} = :{name[1:]}" for name in sets)
    names = dict(sets)
    if enabled:  # sparse: only enabled users are in the index the midnight job reads
        expression += ", GSI3PK = :gsi3pk, GSI3SK = :user"
        values[":gsi3pk"] = f"AUTOSCHED#{_auto_shard(user_id)}"
    else:
        expression += " REMOVE GSI3PK, GSI3SK"
    kwargs: dict[str, Any] = {}
    if not create:
        kwargs["ConditionExpression"] = "attribute_exists(PK)"
    return _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": "SETTINGS#AUTO"}),
        UpdateExpression=expression,
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=to_item(values),
        **kwargs,
    )


def record_auto_run(user_id: str, at: datetime, run: LastRun) -> None:
    """A run's outcome, and nothing else: the user's settings as they are now stay as they are (a run
    never recreates settings that were deleted meanwhile either)."""
    _write_if(
        "update_item",
        Key=to_item({"PK": user_pk(user_id), "SK": "SETTINGS#AUTO"}),
        UpdateExpression="SET last_run_at = :at, last_run = :run",
        ConditionExpression="attribute_exists(PK)",
        ExpressionAttributeValues=to_item({":at": iso_z(at), ":run": run.model_dump(mode="json")}),
    )


def get_auto_settings(user_id: str) -> AutoScheduleSettings | None:
    data = _get(user_pk(user_id), "SETTINGS#AUTO")
    return AutoScheduleSettings.model_validate(_strip_keys(data)) if data else None


def enabled_auto_users() -> Iterator[str]:
    """Every user with auto-scheduling on, from the sparse sharded index (never a table scan)."""
    for shard in range(AUTO_SHARDS):
        for item in _query(
            IndexName="GSI3",
            KeyConditionExpression="GSI3PK = :pk",
            ExpressionAttributeValues=to_item({":pk": f"AUTOSCHED#{shard}"}),
            ProjectionExpression="GSI3SK",
        ):
            yield item["GSI3SK"]


def move_bot(bot: ScheduledBot, old_dedup_key: str) -> None:
    """Save a Scheduled bot whose meeting moved (new start or link): its dedup guard moves with it in the
    same transaction. Raises AlreadyScheduled when another live bot already holds the new slot, and
    BotChanged when the bot left Scheduled meanwhile."""
    if bot.dedup_key == old_dedup_key:
        save_bot(bot, expect_status="Scheduled")
        return
    guard = {
        **_guard_key(bot.user_id, bot.dedup_key),
        "kind": "dedup",
        "bot_id": bot.bot_id,
        "event_id": bot.event_id,
    }
    transact_write(
        [
            {
                "Put": {
                    "TableName": _table(),
                    "Item": to_item(_bot_item(bot)),
                    "ConditionExpression": "#s = :s",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": to_item({":s": "Scheduled"}),
                }
            },
            {
                "Put": {
                    "TableName": _table(),
                    "Item": to_item(guard),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            },
            {
                "Delete": {
                    "TableName": _table(),
                    "Key": to_item(_guard_key(bot.user_id, old_dedup_key)),
                    "ConditionExpression": "attribute_not_exists(PK) OR bot_id = :b",
                    "ExpressionAttributeValues": to_item({":b": bot.bot_id}),
                }
            },
        ],
        on_condition=[BotChanged, AlreadyScheduled, BotChanged],
    )
