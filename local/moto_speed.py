"""Speed fixes for the local stack's moto (never imported by production code); behaviour unchanged.

moto 5's SQS `Queue.attributes` is a property that rebuilds every attribute on each read, including
ApproximateNumberOfMessages, ...Delayed and ...NotVisible: each a scan of every message in the queue
with a clock read per message. SendMessage reads `attributes.get("ContentBasedDeduplication")` three
times per message, so each send costs O(messages in the queue): 200 messages already made a FIFO
SendMessageBatch take 0.25 s instead of 10 ms, and a burst of 1,000 notifications slowed the whole
webhook -> queue -> worker path quadratically. Here the three counts are computed only when read
(GetQueueAttributes, or any read of those keys), every other attribute as before.

moto's server (`DomainDispatcherApplication.get_backend_for_host`) answers "which backend serves this
host" by listing moto's package directory (`backends.list_of_moto_modules`: an os.listdir and an
isdir per entry) and then trying every backend's URL regex: ~2.4 ms of CPU on every request. The
answer depends only on the host string and on what is installed, both fixed for the process, so it
is memoized per host (a bounded dict).

moto serializes every response through its shape-driven serializer (`moto.core.serialize`): for each
member of each structure it builds a picker context, instantiates the alias providers and tries the
key and its snake_case form. A DynamoDB AttributeValue has ten members, so an item of 30 attributes
costs ~300 picker calls, and a Query returning many items ~27 ms. The values a DynamoDB item holds
are already wire-shaped ({"S": str}, {"N": str}, {"B": bytes}, {"BOOL": bool}, {"L": [...]}, ...):
here an AttributeValue node, and a map of them (an item, a key), is serialized directly when it has
exactly one key holding the plain type moto's own path passes through unchanged (str for S/N/SS/NS,
bool for BOOL/NULL, bytes or str for B/BS, base64-encoded as moto does, dict/list recursing); anything
else (several keys, None, a Decimal, an Enum...) goes through moto's own code for that node. It
applies only to the dynamodb service and only when no response transformer is registered (moto's
EC2/ECS register some). tests/unit/test_moto_speed_dynamodb.py compares the bodies byte for byte with moto's
serializer over real responses.

moto's `Table.query` finds a partition by sorting and scanning every item of the table
(`all_items()`), for an index query and a base-table query alike: O(table) per Query, ~300 ms at 60
accounts. Here the query gets the candidates moto would keep, without the scan: for a base table, the
items stored under the hash key (`table.items[hash_key]`, the dict moto keys by it); for an index, the
items whose first index hash attribute holds the queried value, from a per-table attribute -> value
-> primary keys map. That map is built on the first query of an attribute and kept in step on every
write path moto has: Table.put_item and Table.delete_item (PutItem, DeleteItem, BatchWriteItem,
PartiQL), DynamoDBBackend.update_item (in-place updates, inside transactions too) and
DynamoDBBackend.transact_write_items (every key it names, after a rollback too); when a key cannot be
worked out, the table's map is dropped and rebuilt by the next query. A table that moto replaces
(restore, its own transaction rollback) is a new object or a deep copy with its map. The candidates
reach moto's own query as what `all_items()` returns (same order: sorted by primary key), so moto's
code still does every check, the sort, pagination, Limit, ScanIndexForward, filters and projections;
a value that cannot be hashed goes to a bucket every query of that attribute also gets. Proven
against unpatched moto on random tables and writes in tests/unit/test_moto_speed_dynamodb.py.
"""

from __future__ import annotations

import base64
import functools
import inspect
import threading
from collections.abc import Callable, ItemsView, Iterator, ValuesView
from typing import Any

_LAZY = {
    "ApproximateNumberOfMessages": "approximate_number_of_messages",
    "ApproximateNumberOfMessagesDelayed": "approximate_number_of_messages_delayed",
    "ApproximateNumberOfMessagesNotVisible": "approximate_number_of_messages_not_visible",
}


class LazyAttributes(dict[str, Any]):
    """A queue's attributes whose expensive values are computed on first read (then kept)."""

    def __init__(self, values: dict[str, Any], lazy: dict[str, Callable[[], Any]]) -> None:
        super().__init__(values)
        self._lazy = dict(lazy)
        for key in lazy:
            super().__setitem__(key, None)  # present, in order, until read

    def _resolve(self, key: str) -> None:
        compute = self._lazy.pop(key, None)
        if compute is not None:
            super().__setitem__(key, compute())

    def _resolve_all(self) -> None:
        for key in list(self._lazy):
            self._resolve(key)

    def __getitem__(self, key: str) -> Any:
        self._resolve(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 (self.get is this method)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        self._resolve_all()
        return super().items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        self._resolve_all()
        return super().values()

    def copy(self) -> dict[str, Any]:
        self._resolve_all()
        return dict(super().items())

    def __eq__(self, other: object) -> bool:
        self._resolve_all()
        return dict(super().items()) == other

    __hash__ = None

    def __iter__(self) -> Iterator[str]:
        return super().__iter__()

    def __repr__(self) -> str:
        self._resolve_all()
        return super().__repr__()


def _patch_sqs_attributes() -> None:
    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Queue

    if getattr(Queue, "_calbot_lazy_attributes", False):
        return
    original = Queue.attributes.fget  # type: ignore[attr-defined]
    names = {a: camelcase_to_underscores(a) for a in (*Queue.BASE_ATTRIBUTES, *Queue.FIFO_ATTRIBUTES)}
    names.update({a: camelcase_to_underscores(a) for a in getattr(Queue, "KMS_ATTRIBUTES", [])})

    def attributes(self: Any) -> dict[str, Any]:
        result: dict[str, Any] = {}
        lazy: dict[str, Callable[[], Any]] = {}
        wanted = [
            *Queue.BASE_ATTRIBUTES,
            *(Queue.FIFO_ATTRIBUTES if self.fifo_queue else []),
            *(getattr(Queue, "KMS_ATTRIBUTES", []) if self.kms_master_key_id else []),
        ]
        for attribute in wanted:
            if attribute in _LAZY:
                lazy[attribute] = functools.partial(getattr, self, _LAZY[attribute])
                result[attribute] = None
            else:
                result[attribute] = getattr(self, names[attribute])
        if self.policy:
            result["Policy"] = self.policy
        if self.redrive_policy:
            import json

            result["RedrivePolicy"] = json.dumps(self.redrive_policy)
        for key, value in result.items():
            if isinstance(value, bool):
                result[key] = str(value).lower()
        return LazyAttributes({k: v for k, v in result.items() if k not in lazy}, lazy)

    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    Queue._calbot_original_attributes = original  # type: ignore[attr-defined]
    Queue._calbot_lazy_attributes = True  # type: ignore[attr-defined]


_LOOKUP_CACHE_MAX = 1024


def _patch_backend_lookup() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if getattr(DomainDispatcherApplication, "_calbot_memo_lookup", False):
        return
    original = DomainDispatcherApplication.get_backend_for_host

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        memo: dict[str | None, Any] = self.__dict__.setdefault("_calbot_backend_for_host", {})
        try:
            return memo[host]
        except KeyError:
            pass
        backend = original(self, host)
        if len(memo) < _LOOKUP_CACHE_MAX:
            memo[host] = backend
        return backend

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]
    DomainDispatcherApplication._calbot_memo_lookup = True  # type: ignore[attr-defined]


_ABSENT = object()  # moto's serializer would not set the key at all
_SLOW = object()  # not a plain value: let moto's own code serialize the node


def _b64(value: Any) -> Any:
    if type(value) is bytes:
        return base64.b64encode(value).strip().decode("utf-8")
    if type(value) is str:
        return base64.b64encode(value.encode("utf-8")).strip().decode("utf-8")
    return _SLOW


def _patch_dynamodb_serializer() -> None:
    from moto.core.serialize import JSONSerializer

    if getattr(JSONSerializer, "_calbot_fast_dynamodb", False):
        return
    original = JSONSerializer._serialize
    kinds: dict[str, str | None] = {}  # DynamoDB shape name -> "value" | "map" | None

    def kind_of(shape: Any) -> str | None:
        name = shape.name
        if name not in kinds:
            kind = None
            if shape.type_name == "structure" and name == "AttributeValue":
                kind = "value" if not shape.serialization.get("name") else None
            elif shape.type_name == "map" and getattr(shape.value, "name", None) == "AttributeValue":
                plain = not shape.value.serialization.get("name")
                kind = "map" if plain and not shape.is_flattened else None
            kinds[name] = kind
        return kinds[name]

    def fast(self: Any) -> bool:
        flag = self.__dict__.get("_calbot_fast")
        if flag is None:
            picker = self._value_picker
            flag = self.service_model.service_name == "dynamodb" and not getattr(
                picker, "response_transformers", None
            )
            self._calbot_fast = flag
        return bool(flag)

    def value_slow(self: Any, value: Any, shape: Any) -> Any:
        wrapper: dict[str, Any] = {}
        original(self, wrapper, value, shape, "v")
        return wrapper.get("v", _ABSENT)

    def attribute_value(self: Any, value: Any, shape: Any) -> Any:
        """What moto's serializer makes of one AttributeValue (or _ABSENT)."""
        if type(value) is dict and len(value) == 1:
            ((tag, inner),) = value.items()
            result: Any = _SLOW
            if tag in ("S", "N"):
                result = inner if type(inner) is str else _SLOW
            elif tag in ("BOOL", "NULL"):
                result = inner if type(inner) is bool else _SLOW
            elif tag == "B":
                result = _b64(inner)
            elif tag in ("SS", "NS") and type(inner) is list:
                if all(type(v) is str for v in inner):
                    result = list(inner)
            elif tag == "BS" and type(inner) is list:
                encoded = [_b64(v) for v in inner]
                result = _SLOW if _SLOW in encoded else encoded
            elif tag == "M" and type(inner) is dict:
                result = attribute_map(self, inner, shape)
            elif tag == "L" and type(inner) is list:
                result = []
                for v in inner:
                    converted = attribute_value(self, v, shape)
                    result.append(v if converted is _ABSENT else converted)
            if result is not _SLOW:
                return {tag: result}
        return value_slow(self, value, shape)

    def attribute_map(self: Any, value: dict[str, Any], shape: Any) -> dict[str, Any]:
        out = {}
        for name, v in value.items():
            converted = attribute_value(self, v, shape)
            if converted is not _ABSENT:
                out[name] = converted
        return out

    def _serialize(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        kind = kind_of(shape) if key and fast(self) else None
        if kind == "value":
            converted = attribute_value(self, value, shape)
            if converted is not _ABSENT:
                serialized[self.get_serialized_name(shape, key)] = converted
            return
        if kind == "map" and type(value) is dict:
            serialized[self.get_serialized_name(shape, key)] = attribute_map(self, value, shape.value)
            return
        original(self, serialized, value, shape, key)

    JSONSerializer._serialize = _serialize  # type: ignore[method-assign]
    JSONSerializer._calbot_original_serialize = original  # type: ignore[attr-defined]
    JSONSerializer._calbot_fast_dynamodb = True  # type: ignore[attr-defined]


_query_state = threading.local()  # the candidates a running Table.query gets from all_items()


class _Buckets:
    """One table's attribute -> value -> primary keys map (only for attributes an index query used)."""

    def __init__(self) -> None:
        self.by_attr: dict[str, dict[Any, set[tuple[Any, Any]]]] = {}
        self.entries: dict[tuple[Any, Any], dict[str, Any]] = {}  # key -> attribute -> its bucket


_UNHASHABLE = ("calbot-unhashable",)  # the bucket of values that cannot be dict keys


def _bucket_of(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return _UNHASHABLE
    return value


def _table_items(table: Any) -> Iterator[Any]:
    for hash_set in table.items.values():
        if table.range_key_attr:
            yield from hash_set.values()
        else:
            yield hash_set


def _stored(table: Any, hash_key: Any, range_key: Any) -> Any:
    if table.range_key_attr:
        hash_set = table.items.get(hash_key)
        return hash_set.get(range_key) if hash_set is not None else None
    return table.items.get(hash_key)


def _add(buckets: _Buckets, attr: str, item: Any) -> None:
    value = item.attrs.get(attr)
    if value is None:
        return
    key = (item.hash_key, item.range_key)
    bucket = _bucket_of(value)
    buckets.by_attr[attr].setdefault(bucket, set()).add(key)
    buckets.entries.setdefault(key, {})[attr] = bucket


def reindex_item(table: Any, hash_key: Any, range_key: Any) -> None:
    """The map follows whatever is now stored under this primary key (for code that writes
    `table.items` directly, like local.stack's transaction rollback)."""
    buckets = table.__dict__.get("_calbot_buckets")
    if buckets is None:
        return
    key = (hash_key, range_key if table.range_key_attr else None)
    for attr, bucket in buckets.entries.pop(key, {}).items():
        keys = buckets.by_attr[attr].get(bucket)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del buckets.by_attr[attr][bucket]
    item = _stored(table, key[0], key[1])
    if item is not None:
        for attr in buckets.by_attr:
            _add(buckets, attr, item)


def _drop(table: Any) -> None:
    table.__dict__.pop("_calbot_buckets", None)


def _key_of(table: Any, key: dict[str, Any]) -> tuple[Any, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_key = DynamoType(key[table.hash_key_attr])
    range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    return hash_key, range_key


def _reindex_by_key(backend: Any, table_name: Any, key: Any) -> None:
    table = backend.tables.get(table_name) if isinstance(table_name, str) else None
    if table is None or "_calbot_buckets" not in table.__dict__:
        return
    try:
        hash_key, range_key = _key_of(table, key)
    except Exception:
        _drop(table)  # cannot tell which item changed: rebuild on the next query
        return
    reindex_item(table, hash_key, range_key)


def _index_candidates(table: Any, attr: str, value: Any) -> list[Any] | None:
    bucket = _bucket_of(value)
    if bucket is _UNHASHABLE:
        return None
    buckets = table.__dict__.get("_calbot_buckets")
    if buckets is None:
        buckets = table._calbot_buckets = _Buckets()
    if attr not in buckets.by_attr:
        buckets.by_attr[attr] = {}
        for item in _table_items(table):
            _add(buckets, attr, item)
    by_value = buckets.by_attr[attr]
    keys = set(by_value.get(bucket, ())) | by_value.get(_UNHASHABLE, set())
    return [item for k in keys if (item := _stored(table, k[0], k[1])) is not None]


def _patch_dynamodb_query() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_calbot_partition_query", False):
        return
    original_all_items = Table.all_items
    original_query = Table.query
    original_put = Table.put_item
    original_delete = Table.delete_item
    original_update = DynamoDBBackend.update_item
    original_transact = DynamoDBBackend.transact_write_items

    def all_items(self: Any) -> list[Any]:
        pending = getattr(_query_state, "candidates", None)
        if pending is None or pending[0] is not self:
            return Table._calbot_originals["all_items"](self)  # type: ignore[attr-defined]
        _query_state.candidates = None  # once: the one all_items() call of this query
        return sorted(
            pending[1],
            key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key,
        )

    signature = inspect.signature(original_query)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        candidates = None
        called = signature.bind(self, hash_key, *args, **kwargs).arguments  # moto passes both ways
        conditions = called.get("hash_key_conditions")
        if called.get("index_name"):
            if conditions:
                attr, value = conditions[0]
                candidates = _index_candidates(self, attr, value)
        elif hash_key is not None and _bucket_of(hash_key) is not _UNHASHABLE:
            stored = self.items.get(hash_key)
            if stored is not None and self.range_key_attr:
                candidates = list(stored.values())
            else:
                candidates = [] if stored is None else [stored]
        if candidates is None:
            return original_query(self, hash_key, *args, **kwargs)
        _query_state.candidates = (self, candidates)
        try:
            return original_query(self, hash_key, *args, **kwargs)
        finally:
            _query_state.candidates = None

    def put_item(self: Any, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return original_put(self, item_attrs, *args, **kwargs)
        finally:
            if "_calbot_buckets" in self.__dict__:
                try:
                    key = _key_of(self, item_attrs)
                except Exception:
                    key = None  # moto refused it before writing
                if key is not None:
                    reindex_item(self, *key)

    def delete_item(self: Any, hash_key: Any, range_key: Any = None) -> Any:
        try:
            return original_delete(self, hash_key, range_key)
        finally:
            reindex_item(self, hash_key, range_key)

    def update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return original_update(self, table_name, key, *args, **kwargs)
        finally:
            _reindex_by_key(self, table_name, key)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        try:
            return original_transact(self, transact_items)
        finally:
            for entry in transact_items:
                try:
                    op_type, op = next(iter(entry.items()))
                    table_name = op["TableName"]
                    table = self.tables.get(table_name)
                    key = op["Item"] if op_type == "Put" else op["Key"]
                except Exception:
                    for table in self.tables.values():
                        _drop(table)  # cannot tell which table: rebuild on the next queries
                    continue
                if table is not None:
                    _reindex_by_key(self, table_name, key)

    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]
    Table.put_item = put_item  # type: ignore[method-assign]
    Table.delete_item = delete_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    Table._calbot_originals = {  # type: ignore[attr-defined]
        "all_items": original_all_items,
        "query": original_query,
        "put_item": original_put,
        "delete_item": original_delete,
    }
    Table._calbot_partition_query = True  # type: ignore[attr-defined]


def install_speedups() -> None:
    """Idempotent, like local.aws_limits.install_limits."""
    _patch_sqs_attributes()
    _patch_backend_lookup()
    _patch_dynamodb_serializer()
    _patch_dynamodb_query()
