"""AWS service limits and AWS faults for the local stack's moto (never imported by production code).

moto 5.2.5 already refuses, as AWS does: DynamoDB key attributes over 2,048 / 1,024 bytes on PutItem,
items over ~400 KB, transactions of more than 100 actions, SQS bodies over the queue's
MaximumMessageSize (counted in characters), SSM names prefixed `aws`/`ssm`. `install_limits()` patches
moto's backends and responses (idempotent, like local.stack's other moto patches) for the rest:

* SSM PutParameter: name characters (a-zA-Z0-9_.-/), length, hierarchy depth <= 15; value size per tier
  (Standard 4,096 characters, Advanced 8,192; `Intelligent-Tiering` picks the smallest tier that
  fits and reports it, as AWS does).
* DynamoDB: key sizes on every keyed call (GetItem, UpdateItem, DeleteItem and transaction keys, not
  only PutItem); a transaction's aggregate size <= 4 MB; `ClientRequestToken` honoured for 10 minutes
  (the same request again is answered with success and applied once; the same token with other
  parameters is `IdempotentParameterMismatchException`).
* SQS: message size in bytes including message attributes (<= the queue's MaximumMessageSize);
  FIFO `MessageGroupId` / `MessageDeduplicationId` 1-128 alphanumeric or punctuation characters;
  a message timer (`DelaySeconds`) of 0-900 s in SendMessageBatch too (moto checks only SendMessage;
  ChangeMessageVisibility's 43,200 s cap moto already enforces).
* Scheduler: schedule and group names 1-64 characters of [0-9a-zA-Z-_.]; the account's "Number of
  schedules" quota (10,000,000 a Region by default; `LOCAL_SCHEDULER_MAX_SCHEDULES` sets it): a
  CreateSchedule past it is `ServiceQuotaExceededException` (HTTP 402), and `scheduler_standing()` tells
  how many schedules exist now and at most since `reset_scheduler_peak()` (bench/day.py holds that
  against the quota).

`AwsFaults` holds fault rules (a share and/or a count of one service's calls answer an AWS error, or,
with `tps`, a throughput quota: the calls past `tps` per second answer it) and
`AwsFaultInjector` is the WSGI middleware in front of moto that applies them; the stack's control API
edits them under /_local/aws/faults. Calls made by the local stack's own machinery (the clock standing
in for Scheduler and Lambda's SQS polling) carry LOCAL_USER_AGENT and are never faulted.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import inspect
import itertools
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

LOCAL_USER_AGENT = "calbot-local-stack"

SSM_STANDARD_MAX = 4096
SSM_ADVANCED_MAX = 8192
SSM_NAME_MAX = 1011  # the fully qualified name, counting the ARN before it (AWS's rule)
SSM_MAX_DEPTH = 15
DDB_TRANSACTION_MAX_BYTES = 4 * 1024 * 1024
# An index's INCLUDE projection names at most 20 non-key attributes, and all of a table's indexes at
# most 100 together (API_Projection.html); moto accepts any number.
DDB_INDEX_NON_KEY_ATTRIBUTES = 20
DDB_TABLE_NON_KEY_ATTRIBUTES = 100
DDB_TOKEN_WINDOW_SECONDS = 600
SQS_ID_MAX = 128
SQS_MAX_DELAY_SECONDS = 900  # a message timer (DelaySeconds) is 0 to 900 s, in SendMessage and its batch
SCHEDULER_NAME = re.compile(r"^[0-9a-zA-Z\-_.]{1,64}$")
# Scheduler's "Number of schedules" quota, per account and Region (scheduler-quotas.html: default
# 10,000,000, adjustable); the local stack's is this environment variable's, read on each create.
SCHEDULER_MAX_SCHEDULES_DEFAULT = 10_000_000
SCHEDULER_MAX_SCHEDULES_ENV = "LOCAL_SCHEDULER_MAX_SCHEDULES"
_SSM_NAME = re.compile(r"^[a-zA-Z0-9_.\-/]+$")
_SQS_ID = re.compile(r"^[!-~]{1,128}$")  # alphanumeric and punctuation (printable ASCII, no space)


# -- SSM -------------------------------------------------------------------------------------------


def ssm_name_error(name: str, account_id: str, region: str) -> tuple[str, str] | None:
    """(error code, message) AWS answers PutParameter for this name, or None when it is valid."""
    if not name or not _SSM_NAME.match(name):
        return (
            "ValidationException",
            'Parameter name: can\'t be prefixed with "ssm" (case-insensitive). If formed as a path, it '
            "can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of "
            "letters, numbers and the following 3 symbols .-_",
        )
    arn = f"arn:aws:ssm:{region}:{account_id}:parameter/{name.lstrip('/')}"
    if len(arn) > SSM_NAME_MAX:
        return (
            "ValidationException",
            f"Parameter name: {name[:32]}... exceeds the maximum length of {SSM_NAME_MAX} characters "
            "(counting the parameter's ARN).",
        )
    if name.strip("/").count("/") + 1 > SSM_MAX_DEPTH:
        return (
            "HierarchyLevelLimitExceededException",
            "A hierarchy can have a maximum of 15 levels. For more information, see Requirements and "
            "constraints for parameter names in the AWS Systems Manager User Guide.",
        )
    return None


def ssm_tier_for(value: str, tier: str) -> tuple[str | None, str | None]:
    """(the tier the parameter gets, or None; the ValidationException message, or None)."""
    size = len(value)
    if tier == "Standard":
        if size > SSM_STANDARD_MAX:
            return None, (
                "Standard tier parameters support a maximum parameter value of 4096 characters. To "
                "create a larger parameter value, upgrade the parameter to use the advanced-parameter "
                "tier. For more information, see https://docs.aws.amazon.com/systems-manager/latest/"
                "userguide/parameter-store-advanced-parameters.html"
            )
        return "Standard", None
    if size > SSM_ADVANCED_MAX:
        return None, (
            "Advanced tier parameters support a maximum parameter value of 8192 characters. For more "
            "information, see https://docs.aws.amazon.com/systems-manager/latest/userguide/"
            "parameter-store-advanced-parameters.html"
        )
    if tier == "Intelligent-Tiering":
        return ("Standard" if size <= SSM_STANDARD_MAX else "Advanced"), None
    return tier, None


def _patch_ssm() -> None:
    from moto.ssm import exceptions, models

    backend = models.SimpleSystemManagerBackend
    if getattr(backend, "_calbot_limits", False):
        return
    original = backend.put_parameter

    def put_parameter(self: Any, name: str, description: str, value: str, *args: Any, **kwargs: Any) -> Any:
        error = ssm_name_error(name, self.account_id, self.region_name)
        if error:
            code, message = error
            if code == "ValidationException":
                raise exceptions.ValidationException(message)
            raise exceptions.SSMException(code, message)
        if value:
            previous = self._parameters.get(name) or []
            requested = kwargs.get("tier")
            tier = requested or (previous[-1].tier if previous else None) or "Standard"
            resolved, too_large = ssm_tier_for(value, tier)
            if too_large:
                raise exceptions.ValidationException(too_large)
            if requested or resolved != tier:
                kwargs["tier"] = resolved
        return original(self, name, description, value, *args, **kwargs)

    backend.put_parameter = put_parameter  # type: ignore[method-assign]
    backend._calbot_limits = True  # type: ignore[attr-defined]


# -- DynamoDB --------------------------------------------------------------------------------------


def ddb_value_size(value: dict[str, Any]) -> int:
    """A DynamoDB attribute value's size by AWS's published rules (UTF-8 bytes of strings, etc.)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "B":
        return len(inner) if isinstance(inner, bytes | bytearray) else len(inner) * 3 // 4
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").strip("0")
        return (len(digits) + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + ddb_value_size(v) + 1 for k, v in inner.items())
    if kind == "L":
        return 3 + sum(ddb_value_size(v) + 1 for v in inner)
    if kind == "SS":
        return sum(len(x.encode()) for x in inner)
    if kind == "NS":
        return sum(ddb_value_size({"N": x}) for x in inner)
    return sum(len(x) for x in inner)


def ddb_item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + ddb_value_size(value) for name, value in item.items())


@dataclass
class _Token:
    digest: str
    at: float


def _patch_dynamodb() -> None:
    from moto.dynamodb import exceptions as ddb_exc
    from moto.dynamodb import responses
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_calbot_limits", False):
        return

    def check_key(backend: Any, table_name: str, key: dict[str, Any] | None) -> None:
        if not key or table_name not in backend.tables:
            return
        backend.tables[table_name]._validate_key_sizes(key)

    for name in ("get_item", "delete_item", "update_item"):
        original = getattr(DynamoDBBackend, name)

        def keyed(
            self: Any, table_name: str, key: Any, *args: Any, _original: Any = original, **kw: Any
        ) -> Any:
            check_key(self, table_name, key)
            return _original(self, table_name, key, *args, **kw)

        setattr(DynamoDBBackend, name, keyed)

    tokens: dict[str, _Token] = {}
    lock = threading.Lock()
    handler = responses.DynamoHandler
    original_transact = handler.transact_write_items

    def transact_write_items(self: Any) -> Any:
        items = self.body.get("TransactItems") or []
        total = 0
        for entry in items:
            op = next(iter(entry.values()))
            total += ddb_item_size(op.get("Item") or op.get("Key") or {})
        if total > DDB_TRANSACTION_MAX_BYTES:
            raise ddb_exc.MockValidationException(
                f"Transaction request cannot be larger than 4 MB (the items of this one are {total} bytes)"
            )
        token = self.body.get("ClientRequestToken")
        if not token:
            return original_transact(self)
        if len(token) > 36:
            raise ddb_exc.MockValidationException(
                f"1 validation error detected: Value '{token}' at 'clientRequestToken' failed to satisfy "
                "constraint: Member must have length less than or equal to 36"
            )
        digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
        now = time.monotonic()
        with lock:
            for stale in [t for t, v in tokens.items() if now - v.at > DDB_TOKEN_WINDOW_SECONDS]:
                del tokens[stale]
            seen = tokens.get(token)
        if seen is not None:
            if seen.digest != digest:
                raise ddb_exc.DynamodbException(
                    ddb_exc.ERROR_TYPE_PREFIX + "IdempotentParameterMismatchException",
                    "The request uses the same client token as a previous, but non-identical request.",
                )
            # the same request again: success, nothing applied twice
            return responses.ActionResult({"ConsumedCapacity": [], "ItemCollectionMetrics": {}})
        result = original_transact(self)
        with lock:
            tokens[token] = _Token(digest, time.monotonic())
        return result

    handler.transact_write_items = transact_write_items  # type: ignore[method-assign]
    original_create = handler.create_table

    def create_table(self: Any) -> Any:
        check_index_projections(
            [
                *(self.body.get("GlobalSecondaryIndexes") or []),
                *(self.body.get("LocalSecondaryIndexes") or []),
            ]
        )
        return original_create(self)

    handler.create_table = create_table  # type: ignore[method-assign]
    original_query = handler.query

    def query(self: Any) -> Any:
        check_query_filter(self.dynamodb_backend, self.body)
        check_between_bounds(self.body)
        return original_query(self)

    handler.query = query  # type: ignore[method-assign]
    DynamoDBBackend._calbot_limits = True  # type: ignore[attr-defined]


_FILTER_WORDS = {
    "and", "or", "not", "between", "in", "attribute_exists", "attribute_not_exists", "attribute_type",
    "begins_with", "contains", "size",
}  # fmt: skip
_FILTER_TOKEN = re.compile(r"(?<![:#.\w])(#?[A-Za-z_][A-Za-z0-9_]*)")


def filter_attribute_names(expression: str, names: dict[str, str]) -> set[str]:
    """The attribute names a filter expression refers to (placeholders resolved; top-level names of
    document paths; `:values`, functions and keywords left out)."""
    found = set()
    for token in _FILTER_TOKEN.findall(re.sub(r"\[\d+\]", "", expression)):
        if token.startswith("#"):
            found.add(names.get(token, token))
        elif token.lower() not in _FILTER_WORDS:
            found.add(token)
    return found


_BETWEEN = re.compile(r"BETWEEN\s+(:\w+)\s+AND\s+(:\w+)", re.IGNORECASE)


def _comparable(value: dict[str, Any]) -> Any:
    ((kind, inner),) = value.items()
    if kind == "N":
        return ("N", float(inner))
    if kind == "S":
        return ("S", inner.encode())  # strings compare by their UTF-8 bytes
    return (kind, str(inner))


def check_between_bounds(body: dict[str, Any]) -> None:
    """DynamoDB refuses a key condition `BETWEEN :lo AND :hi` whose lower bound is above its upper
    ("The BETWEEN operator requires upper bound to be greater than or equal to lower bound"); moto
    answered it with no items."""
    from moto.dynamodb import exceptions as ddb_exc

    values = body.get("ExpressionAttributeValues") or {}
    for lo_name, hi_name in _BETWEEN.findall(body.get("KeyConditionExpression") or ""):
        lo, hi = values.get(lo_name), values.get(hi_name)
        if not lo or not hi:
            continue
        low, high = _comparable(lo), _comparable(hi)
        if low[0] == high[0] and low[1] > high[1]:
            raise ddb_exc.MockValidationException(
                "Invalid KeyConditionExpression: The BETWEEN operator requires upper bound to be greater "
                f"than or equal to lower bound; lower bound operand: AttributeValue: {lo}, upper bound "
                f"operand: AttributeValue: {hi}"
            )


def check_query_filter(backend: Any, body: dict[str, Any]) -> None:
    """DynamoDB refuses a Query whose FilterExpression names a key attribute of what it queries (the
    table's keys, or the index's): "Filter Expression can only contain non-primary key attributes".
    moto accepted it, so a filter on GSI1SK passed here and would fail every call on AWS."""
    from moto.dynamodb import exceptions as ddb_exc

    expression = body.get("FilterExpression")
    table = backend.tables.get(body.get("TableName", ""))
    if not expression or table is None:
        return
    index_name = body.get("IndexName")
    if index_name:
        index = next((i for i in table.all_indexes() if i.name == index_name), None)
        if index is None:
            return  # moto answers the unknown index itself
        keys = set(index.schema_key_attrs)
    else:
        keys = {k for k in (table.hash_key_attr, table.range_key_attr) if k}
    used = filter_attribute_names(expression, body.get("ExpressionAttributeNames") or {})
    for name in sorted(used & keys):
        raise ddb_exc.MockValidationException(
            f"Filter Expression can only contain non-primary key attributes: Primary key attribute: {name}"
        )


def check_index_projections(indexes: list[dict[str, Any]]) -> None:
    """DynamoDB's limits on what INCLUDE projections name (ValidationException past them)."""
    from moto.dynamodb import exceptions as ddb_exc

    total = 0
    for index in indexes:
        names = index.get("Projection", {}).get("NonKeyAttributes") or []
        if len(names) > DDB_INDEX_NON_KEY_ATTRIBUTES:
            raise ddb_exc.MockValidationException(
                f"1 validation error detected: Value at 'projection.nonKeyAttributes' of index "
                f"{index.get('IndexName')} failed to satisfy constraint: Member must have length less than "
                f"or equal to {DDB_INDEX_NON_KEY_ATTRIBUTES}"
            )
        total += len(names)
    if total > DDB_TABLE_NON_KEY_ATTRIBUTES:
        raise ddb_exc.MockValidationException(
            f"One or more parameter values were invalid: Number of projected attributes in all indexes "
            f"exceeds limit of {DDB_TABLE_NON_KEY_ATTRIBUTES}, number of projected attributes: {total}"
        )


# -- SQS -------------------------------------------------------------------------------------------


def sqs_message_size(body: str, attributes: dict[str, Any] | None) -> int:
    """Bytes SQS counts against MaximumMessageSize: the body plus each attribute's name, type and value."""
    size = len(body.encode())
    for name, attr in (attributes or {}).items():
        size += len(name.encode()) + len(str(attr.get("data_type") or attr.get("DataType") or "").encode())
        for key in ("string_value", "StringValue"):
            if attr.get(key) is not None:
                size += len(str(attr[key]).encode())
        for key in ("binary_value", "BinaryValue"):
            if attr.get(key) is not None:
                size += len(attr[key])
    return size


def _patch_sqs() -> None:
    from moto.sqs import models

    backend = models.SQSBackend
    if getattr(backend, "_calbot_limits", False):
        return

    def check(queue: Any, body: str, attributes: Any, group_id: Any, dedup_id: Any) -> None:
        for label, value in (("MessageGroupId", group_id), ("MessageDeduplicationId", dedup_id)):
            if value is not None and not _SQS_ID.match(str(value)):
                raise models.InvalidParameterValue(
                    f"Value {value} for parameter {label} is invalid. Reason: {label} can only include "
                    "alphanumeric and punctuation characters. 1 to 128 in length."
                )
        limit = int(queue.maximum_message_size)
        if sqs_message_size(body, attributes) > limit:
            raise models.InvalidParameterValue(
                f"One or more parameters are invalid. Reason: Message must be shorter than {limit} bytes."
            )

    original_send = backend.send_message

    def send_message(self: Any, queue_name: str, message_body: str, *args: Any, **kwargs: Any) -> Any:
        attributes = kwargs.get("message_attributes", args[0] if args else None)
        check(
            self.get_queue(queue_name),
            message_body,
            attributes,
            kwargs.get("group_id"),
            kwargs.get("deduplication_id"),
        )
        return original_send(self, queue_name, message_body, *args, **kwargs)

    original_batch = backend.send_message_batch

    def send_message_batch(self: Any, queue_name: str, entries: dict[str, dict[str, Any]]) -> Any:
        queue = self.get_queue(queue_name)
        for entry in entries.values():  # all checked before any is sent
            delay = entry.get("DelaySeconds")
            if delay is not None and not 0 <= int(delay) <= SQS_MAX_DELAY_SECONDS:
                # SendMessage already refuses it in moto; SendMessageBatch did not (SQS refuses both)
                raise models.InvalidParameterValue(
                    f"Value {delay} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be "
                    f">= 0 and <= {SQS_MAX_DELAY_SECONDS}."
                )
            check(
                queue,
                entry["MessageBody"],
                entry.get("MessageAttributes"),
                entry.get("MessageGroupId"),
                entry.get("MessageDeduplicationId"),
            )
        return original_batch(self, queue_name, entries)

    backend.send_message = send_message  # type: ignore[method-assign]
    backend.send_message_batch = send_message_batch  # type: ignore[method-assign]
    backend._calbot_limits = True  # type: ignore[attr-defined]


# -- Scheduler -------------------------------------------------------------------------------------


_SCHEDULER_LOCK = threading.RLock()
_scheduler_version = 0
# (version, (group, name)) of recent schedule changes; (version, None) for a group's, which may touch
# any schedule. Bounded: a caller further behind than this lists everything again.
_scheduler_log: collections.deque[tuple[int, tuple[str, str] | None]] = collections.deque(maxlen=20_000)


def scheduler_changes(since: int | None) -> tuple[int, set[tuple[str, str]] | None]:
    """This process's moto Scheduler changes after version `since`: (the current version, the (group,
    name) of each schedule created, updated or deleted since), or None for the set when that cannot
    be told (no `since`, the log no longer reaches back, or a schedule group changed). The local
    clock describes just those instead of listing every schedule on every tick."""
    with _SCHEDULER_LOCK:
        version = _scheduler_version
        if since is None or (since < version and (not _scheduler_log or _scheduler_log[0][0] > since + 1)):
            return version, None
        changed: set[tuple[str, str]] = set()
        for at, key in reversed(_scheduler_log):
            if at <= since:
                break
            if key is None:
                return version, None
            changed.add(key)
        return version, changed


def scheduler_max_schedules() -> int:
    """The local account's Number of schedules quota (LOCAL_SCHEDULER_MAX_SCHEDULES, else AWS's default)."""
    raw = os.environ.get(SCHEDULER_MAX_SCHEDULES_ENV, "").strip()
    return int(raw) if raw else SCHEDULER_MAX_SCHEDULES_DEFAULT


# The most schedules that existed at once in each moto Scheduler backend (account, Region) of this
# process since the last reset_scheduler_peak().
_scheduler_peaks: dict[tuple[str, str], int] = {}


def _standing(backend: Any) -> int:
    return sum(len(group.schedules) for group in backend.schedule_groups.values())


def _backends(region: str | None) -> list[Any]:
    from moto.scheduler.models import scheduler_backends

    return [
        backend
        for account in list(scheduler_backends.values())
        for name, backend in list(account.items())
        if region is None or name == region
    ]


def _key(backend: Any) -> tuple[str, str]:
    return (str(backend.account_id), str(backend.region_name))


def scheduler_standing(region: str | None = None) -> tuple[int, int]:
    """(the schedules that exist now, the most that existed at once since `reset_scheduler_peak`), over
    this process's moto Scheduler (in one Region, or all), each account and Region on its own: that is
    what the quota counts."""
    with _SCHEDULER_LOCK:
        backends = _backends(region)
        now_standing = sum(_standing(b) for b in backends)
        peak = sum(max(_scheduler_peaks.get(_key(b), 0), _standing(b)) for b in backends)
        return now_standing, peak


def reset_scheduler_peak(region: str | None = None) -> int:
    """Start a new high-water mark at the schedules that exist now (returned)."""
    with _SCHEDULER_LOCK:
        backends = _backends(region)
        for backend in backends:
            _scheduler_peaks[_key(backend)] = _standing(backend)
        return sum(_standing(b) for b in backends)


def _record_scheduler_change(method: str, bound: inspect.BoundArguments) -> None:
    """Count a change (lock held) before it is made: a failed one may still have changed something."""
    global _scheduler_version
    _scheduler_version += 1
    args = bound.arguments
    if method.endswith("_schedule_group"):
        _scheduler_log.append((_scheduler_version, None))
    else:
        _scheduler_log.append(
            (_scheduler_version, (str(args.get("group_name") or "default"), str(args["name"])))
        )


def _patch_scheduler() -> None:
    from moto.core.exceptions import JsonRESTError
    from moto.scheduler import models
    from moto.scheduler.exceptions import ValidationException

    class ServiceQuotaExceededException(JsonRESTError):
        code = 402  # Scheduler's model: ServiceQuotaExceededException, httpStatusCode 402

        def __init__(self, message: str) -> None:
            super().__init__("ServiceQuotaExceededException", message)

    backend = models.EventBridgeSchedulerBackend
    if getattr(backend, "_calbot_limits", False):
        return
    # moto's own signatures (the wrappers below take *args): how a change's group and name are found.
    signatures = {
        method: inspect.signature(getattr(backend, method))
        for method in (
            "create_schedule",
            "update_schedule",
            "delete_schedule",
            "create_schedule_group",
            "delete_schedule_group",
        )
        if hasattr(backend, method)
    }

    def check(label: str, value: str | None) -> None:
        if value is not None and not SCHEDULER_NAME.match(value):
            raise ValidationException(
                f"1 validation error detected: Value '{value}' at '{label}' failed to satisfy constraint: "
                "Member must satisfy regular expression pattern: ^[0-9a-zA-Z-_.]+$ and have length "
                "between 1 and 64"
            )

    for method in ("create_schedule", "update_schedule"):
        original = getattr(backend, method)

        def named(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            check("name", kwargs.get("name"))
            check("groupName", kwargs.get("group_name"))
            return _original(self, *args, **kwargs)

        setattr(backend, method, named)

    original_group = backend.create_schedule_group

    def create_schedule_group(self: Any, name: str, tags: Any) -> Any:
        check("name", name)
        return original_group(self, name, tags)

    backend.create_schedule_group = create_schedule_group  # type: ignore[method-assign]

    # The Number of schedules quota, and the high-water mark (this wrapper runs under the lock below).
    original_create = backend.create_schedule
    create_signature = signatures["create_schedule"]  # moto's (the wrapper above takes *args)

    def create_schedule(self: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = create_signature.bind(self, *args, **kwargs).arguments
        group = self.schedule_groups.get(arguments.get("group_name") or "default")
        exists = group is not None and arguments.get("name") in group.schedules
        limit = scheduler_max_schedules()
        if not exists and _standing(self) >= limit:
            raise ServiceQuotaExceededException(
                f"You have exceeded the quota of {limit} schedules for this account in this Region "
                "(Number of schedules): delete schedules or request a quota increase."
            )
        created = original_create(self, *args, **kwargs)
        key = _key(self)
        _scheduler_peaks[key] = max(_scheduler_peaks.get(key, 0), _standing(self))
        return created

    backend.create_schedule = create_schedule  # type: ignore[method-assign]

    # moto's backend keeps schedules in plain dicts with no lock: a ListSchedules iterating a group
    # while a launcher thread deletes a schedule raised "dictionary changed size during iteration"
    # (a 500 the real service never gives). Every operation holds one lock, as the service is
    # consistent per request; every change is counted (`scheduler_changes`).
    lock = _SCHEDULER_LOCK
    for method in (
        "create_schedule",
        "update_schedule",
        "delete_schedule",
        "get_schedule",
        "list_schedules",
        "create_schedule_group",
        "delete_schedule_group",
        "get_schedule_group",
        "list_schedule_groups",
    ):
        unlocked = getattr(backend, method, None)
        if unlocked is None:
            continue

        signature = signatures.get(method)

        def locked(
            self: Any,
            *args: Any,
            _unlocked: Any = unlocked,
            _method: str = method,
            _signature: inspect.Signature | None = signature,
            **kwargs: Any,
        ) -> Any:
            with lock:
                if _signature is not None:
                    _record_scheduler_change(_method, _signature.bind(self, *args, **kwargs))
                return _unlocked(self, *args, **kwargs)

        setattr(backend, method, locked)
    backend._calbot_limits = True  # type: ignore[attr-defined]


def install_limits() -> None:
    """Patch moto (in this process) to enforce the limits above; safe to call more than once."""
    _patch_ssm()
    _patch_dynamodb()
    _patch_sqs()
    _patch_scheduler()


# -- faults ----------------------------------------------------------------------------------------

_DDB = "com.amazonaws.dynamodb.v20120810#"
_DDB_SINGLE_WRITES = {"PutItem", "UpdateItem", "DeleteItem"}
_CONFLICT = "Transaction is ongoing for the item"

# SSM's one throughput quota covers these (PROTOCOLS): `{"service": "ssm", "error": "ThrottlingException",
# "tps": 40}` is the default quota, `"tps": 10000` higher throughput (SSM_QUOTA_OPERATIONS when no
# operations are given).
SSM_QUOTA_OPERATIONS = ["GetParameter", "GetParameters", "PutParameter"]

# service -> error -> (HTTP status, error type on the wire, message); TransactionConflict is special.
ERRORS: dict[str, dict[str, tuple[int, str, str]]] = {
    "dynamodb": {
        "TransactionConflict": (400, _DDB + "TransactionConflictException", _CONFLICT),
        "ThrottlingException": (
            400,
            "com.amazon.coral.availability#ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        ),
        "ProvisionedThroughputExceededException": (
            400,
            _DDB + "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. Consider "
            "increasing your provisioning level with the UpdateTable API.",
        ),
        "InternalServerError": (500, _DDB + "InternalServerError", "Internal server error"),
    },
    "ssm": {
        "ThrottlingException": (400, "ThrottlingException", "Rate exceeded"),
        "InternalServerError": (500, "InternalServerError", "An internal error occurred."),
    },
    "scheduler": {
        "ThrottlingException": (429, "ThrottlingException", "Rate exceeded"),
        "InternalServerException": (500, "InternalServerException", "Unexpected error occurred"),
    },
    "sqs": {
        "InternalError": (500, "InternalError", "We encountered an internal error. Please try again."),
        "RequestThrottled": (400, "RequestThrottled", "Rate exceeded"),
    },
}
_JSON_CONTENT = {"dynamodb": "application/x-amz-json-1.0", "sqs": "application/x-amz-json-1.0"}
_SCHEDULER_OPS = {
    ("POST", "schedules"): "CreateSchedule",
    ("PUT", "schedules"): "UpdateSchedule",
    ("GET", "schedules"): "GetSchedule",
    ("DELETE", "schedules"): "DeleteSchedule",
    ("POST", "schedule-groups"): "CreateScheduleGroup",
    ("GET", "schedule-groups"): "GetScheduleGroup",
    ("DELETE", "schedule-groups"): "DeleteScheduleGroup",
}
_ids = itertools.count(1)


class FaultError(ValueError):
    pass


@dataclass
class FaultRule:
    service: str
    error: str
    operations: list[str] = field(default_factory=list)  # empty: every operation the error fits
    share: float = 1.0  # the fraction of matching calls that fail
    times: int = -1  # at most this many failures (-1: no limit)
    after: bool = False  # apply the call, then answer the error (a response lost after the work)
    seed: int | None = None
    tps: float | None = None  # a throughput quota: calls within it pass, those past it fail
    id: str = ""
    hits: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)
    tokens: float = 0.0  # the quota's token bucket (one second's worth at most), refilled on the wall clock
    refilled: float | None = None

    def within_quota(self) -> bool:
        """Take one call from the bucket if there is one (the call passes), else False (it fails)."""
        if self.tps is None:
            return False
        now = time.monotonic()
        elapsed = 0.0 if self.refilled is None else max(0.0, now - self.refilled)
        self.tokens = min(max(self.tps, 1.0), self.tokens + elapsed * self.tps)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "error": self.error,
            "operations": self.operations,
            "share": self.share,
            "times": self.times,
            "after": self.after,
            "tps": self.tps,
            "hits": self.hits,
        }

    def fits(self, operation: str) -> bool:
        if self.operations and operation not in self.operations:
            return False
        if self.service == "dynamodb" and self.error == "TransactionConflict":
            return operation in _DDB_SINGLE_WRITES or operation == "TransactWriteItems"
        return True


class AwsFaults:
    """Fault rules for the local AWS, thread-safe. `add(service=..., error=..., ...)` returns the rule."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def add(self, **spec: Any) -> FaultRule:
        unknown = set(spec) - {"service", "error", "operations", "share", "times", "after", "seed", "tps"}
        if unknown:
            raise FaultError(f"unknown fault fields: {sorted(unknown)}")
        service, error = spec.get("service"), spec.get("error")
        if service not in ERRORS:
            raise FaultError(f"service must be one of {sorted(ERRORS)}")
        if error not in ERRORS[service]:
            raise FaultError(f"error for {service} must be one of {sorted(ERRORS[service])}")
        share = spec.get("share", 1.0)
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 < share <= 1:
            raise FaultError("share must be a number in (0, 1]")
        times = spec.get("times", -1)
        if not isinstance(times, int) or isinstance(times, bool) or times == 0 or times < -1:
            raise FaultError("times must be a positive integer, or -1 for no limit")
        operations = spec.get("operations") or []
        if not isinstance(operations, list) or not all(isinstance(o, str) for o in operations):
            raise FaultError("operations must be a list of operation names")
        seed = spec.get("seed")
        tps = spec.get("tps")
        if tps is not None:
            if not isinstance(tps, int | float) or isinstance(tps, bool) or tps <= 0:
                raise FaultError("tps must be a positive number of calls per second")
            if service == "ssm" and not operations:
                operations = list(SSM_QUOTA_OPERATIONS)
        rule = FaultRule(
            service=service,
            error=error,
            operations=operations,
            share=float(share),
            times=times,
            after=bool(spec.get("after", False)),
            seed=seed,
            tps=None if tps is None else float(tps),
            tokens=0.0 if tps is None else max(float(tps), 1.0),
            id=f"aws-fault-{next(_ids)}",
            rng=random.Random(seed),
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_dict() for rule in self._rules]

    def remove(self, rule_id: str) -> None:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            if len(self._rules) == before:
                raise KeyError(f"no AWS fault {rule_id!r}")

    def clear(self) -> None:
        with self._lock:
            self._rules = []

    def draw(self, service: str, operation: str) -> FaultRule | None:
        """The rule that fails this call, if any (counting the hit)."""
        with self._lock:
            for rule in self._rules:
                if rule.service != service or not rule.fits(operation):
                    continue
                if rule.times != -1 and rule.hits >= rule.times:
                    continue
                if rule.share < 1 and rule.rng.random() >= rule.share:
                    continue
                if rule.within_quota():
                    continue
                rule.hits += 1
                return copy.copy(rule)
        return None


def _service_and_operation(environ: dict[str, Any]) -> tuple[str, str]:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", auth)
    service = match.group(1) if match else ""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return service, target.rsplit(".", 1)[-1]
    if service == "scheduler":
        parts = [p for p in environ.get("PATH_INFO", "").split("/") if p]
        method = environ.get("REQUEST_METHOD", "GET")
        if len(parts) == 1 and method == "GET":
            return service, "ListSchedules" if parts[0] == "schedules" else "ListScheduleGroups"
        return service, _SCHEDULER_OPS.get((method, parts[0] if parts else ""), "")
    return service, ""


def _error_body(
    rule: FaultRule, operation: str, environ: dict[str, Any]
) -> tuple[int, dict[str, str], bytes]:
    status, wire_type, message = ERRORS[rule.service][rule.error]
    if (
        rule.service == "dynamodb"
        and rule.error == "TransactionConflict"
        and operation == "TransactWriteItems"
    ):
        try:
            request = json.loads(environ.get("calbot.body", b"") or b"{}")
        except ValueError:
            request = {}
        count = max(1, len(request.get("TransactItems") or []))
        reasons = [{"Code": "TransactionConflict", "Message": _CONFLICT}] + [{"Code": "None"}] * (count - 1)
        codes = ", ".join(r["Code"] for r in reasons)
        body = {
            "__type": _DDB + "TransactionCanceledException",
            "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
            f"[{codes}]",
            "CancellationReasons": reasons,
        }
        return 400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(body).encode()
    if rule.service == "scheduler":
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": wire_type}
        return status, headers, json.dumps({"Message": message}).encode()
    content = _JSON_CONTENT.get(rule.service, "application/x-amz-json-1.1")
    headers = {"Content-Type": content}
    if rule.service == "sqs":
        headers["x-amzn-query-error"] = f"{wire_type};{'Receiver' if status >= 500 else 'Sender'}"
    return status, headers, json.dumps({"__type": wire_type, "message": message}).encode()


class AwsFaultInjector:
    """WSGI middleware in front of moto: a call a fault rule draws is answered with that rule's AWS
    error, before moto sees it (or, with `after`, once moto has applied it)."""

    def __init__(self, app: Callable[..., Iterable[bytes]], faults: AwsFaults) -> None:
        self.app = app
        self.faults = faults

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if LOCAL_USER_AGENT in environ.get("HTTP_USER_AGENT", ""):
            return self.app(environ, start_response)
        service, operation = _service_and_operation(environ)
        rule = self.faults.draw(service, operation) if service else None
        if rule is None:
            return self.app(environ, start_response)
        if rule.service == "dynamodb" and operation == "TransactWriteItems":
            import io

            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["calbot.body"] = body
            environ["wsgi.input"] = io.BytesIO(body)
        if rule.after:
            list(self.app(environ, lambda *a, **k: None))  # applied; its answer is lost
        status, headers, body = _error_body(rule, operation, environ)
        reason = {400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error"}[status]
        start_response(f"{status} {reason}", [*headers.items(), ("Content-Length", str(len(body)))])
        return [body]
