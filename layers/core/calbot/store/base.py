"""The table and the calls every record kind shares: item (de)serialisation, reads, queries, and the
writes that retry what DynamoDB allows to be retried (calbot.retry is the policy)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, retry_if_exception_type, wait_exponential_jitter

from calbot import aws
from calbot.config import get_settings
from calbot.retry import retrying

_ser = TypeSerializer()


_deser = TypeDeserializer()


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


# Attributes of an item that are storage, not the record: keys, TTL, kind, the compressed payload, a
# bot's index phase (store/bots.py).
_STORAGE_ATTRIBUTES = {"PK", "SK", "ttl", "kind", "raw_z", "phase"} | {
    f"GSI{n}{part}" for n in (1, 2, 3) for part in ("PK", "SK")
}


def _strip_keys(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in _STORAGE_ATTRIBUTES}


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


def _full_items(entries: Iterable[dict[str, Any]], *, consistent: bool = True) -> list[dict[str, Any]]:
    """The table's items behind these index entries, in the entries' order.

    The indexes project only keys and the attributes their queries filter on (template.yaml `Table`):
    each entry is a write on every change of its item, billed by its size, so a full copy of every
    record in every index would multiply the cost of each write. A query reads the keys from the index
    and the records from the table (BatchGetItem, consistent unless `consistent=False`: half the read
    units, for a listing whose index entries are eventually consistent anyway). An item deleted in
    between is left out.
    """
    wanted = [{"PK": e["PK"], "SK": e["SK"]} for e in entries]
    found = {(i["PK"], i["SK"]): i for i in _batch_get(wanted, max_delay=2.0, consistent=consistent)}
    return [found[(k["PK"], k["SK"])] for k in wanted if (k["PK"], k["SK"]) in found]


def _query_records(*, consistent: bool = True, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """`_query` on an index, yielding the full records (read from the table 100 keys at a time,
    consistently unless told: `_full_items`)."""
    chunk: list[dict[str, Any]] = []
    for entry in _query(**kwargs):
        chunk.append(entry)
        if len(chunk) == 100:
            yield from _full_items(chunk, consistent=consistent)
            chunk = []
    if chunk:
        yield from _full_items(chunk, consistent=consistent)


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


def _put_if(**kwargs: Any) -> bool:
    """A conditional PutItem (`_write`'s arguments: Item in wire form, its ConditionExpression...) that is
    safe to retry: False when the condition failed, True when the item was written.

    botocore retries a call whose answer was lost (a 500 or a timeout after DynamoDB applied it), and
    the retry then fails the very condition the first attempt made untrue. A transaction is protected
    by its ClientRequestToken (transact_write); a single write is not, so the refusal asks for the
    stored item (ReturnValuesOnConditionCheckFailure ALL_OLD: no read units) and a stored item equal to
    this one is this write, already applied. One item is written this way, not as a one-item
    transaction, which DynamoDB bills twice."""
    try:
        _write("put_item", ReturnValuesOnConditionCheckFailure="ALL_OLD", **kwargs)
    except ClientError as err:
        if not _is_conditional_failure(err):
            raise
        stored = err.response.get("Item")
        return bool(stored) and from_item(stored) == from_item(kwargs["Item"])
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


def _batch_get(
    keys: list[dict[str, Any]], *, max_delay: float, consistent: bool = True
) -> Iterator[dict[str, Any]]:
    """Reads of these keys (consistent unless told), 100 per BatchGetItem, retrying unprocessed keys with
    backoff (up to `max_delay` seconds between calls). Yields the items found, in no particular order."""
    for start in range(0, len(keys), 100):
        chunk = [to_item(k) for k in keys[start : start + 100]]
        pending: dict[str, Any] = {_table(): {"Keys": chunk, "ConsistentRead": consistent}}
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


def user_pk(user_id: str) -> str:
    return f"USER#{user_id}"


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


def delete_keys(keys: Iterable[tuple[str, str]]) -> int:
    return batch_write(deletes=keys)
