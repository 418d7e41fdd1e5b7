"""DynamoDB write units as AWS bills them, counted on the calls calbot's client makes.

The rules (PROTOCOLS.md lists them with their sources):

- An item's size is the sum of its attribute names and values (`item_size`); a write unit covers 1 KB
  of it, rounded up per item, at least 1.
- PutItem and UpdateItem cost by the larger of the item before and after the write; DeleteItem by the
  deleted item (an absent item: 1 unit).
- A write whose condition failed still consumes (by the existing item, at least 1 unit); it writes no
  index.
- TransactWriteItems: 2 units per KB of each item (a cancelled transaction too). The index writes that
  follow from the transaction's items are ordinary ones.
- Each global secondary index costs its own writes, by its projection: an item that enters the index is
  1 write of its index entry, one that leaves it 1 write, a change of the index's key attributes 2
  (delete and put), a change of a projected non-key attribute 1, any other change 0. An index entry's
  size is its projected attributes (the index keys and the table keys always) plus 100 bytes.

The counter needs the item before and after each write: it reads them from moto's in-process backend
(no DynamoDB call, so the code under test and its call counts see nothing). That works both with
`mock_aws` (benches) and with the local stack's moto server running in this process (service tests).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

from local.aws_limits import ddb_item_size

KB = 1024
INDEX_ENTRY_OVERHEAD = 100  # bytes DynamoDB adds to each index entry


def item_size(item: dict) -> int:
    """An item's size as DynamoDB bills it: attribute names plus values (AWS's published rules; the
    local stack's size limits use the same function)."""
    return ddb_item_size(item)


def units_of(size: int) -> int:
    """Write units of one item of `size` bytes: 1 KB each, rounded up, at least 1."""
    return max(1, math.ceil(size / KB))


class IndexShape:
    """One global secondary index: its key attributes and what it projects."""

    def __init__(self, name: str, keys: list[str], table_keys: list[str], projection: dict[str, Any]):
        self.name = name
        self.keys = keys
        self.table_keys = table_keys
        self.type = projection.get("ProjectionType", "ALL")
        self.non_key = list(projection.get("NonKeyAttributes", []))

    def entry(self, item: dict | None) -> dict | None:
        """The item's entry in this index (None: the item is not in it, a sparse index)."""
        if item is None or any(k not in item for k in self.keys):
            return None
        if self.type == "ALL":
            return item
        wanted = {*self.keys, *self.table_keys, *(self.non_key if self.type == "INCLUDE" else ())}
        return {k: v for k, v in item.items() if k in wanted}

    def write_units(self, before: dict | None, after: dict | None) -> int:
        """What this index costs when the table item goes from `before` to `after`."""
        old, new = self.entry(before), self.entry(after)
        if old is None and new is None:
            return 0
        if old is None:
            return units_of(item_size(new or {}) + INDEX_ENTRY_OVERHEAD)
        if new is None:
            return units_of(item_size(old) + INDEX_ENTRY_OVERHEAD)
        old_size, new_size = item_size(old) + INDEX_ENTRY_OVERHEAD, item_size(new) + INDEX_ENTRY_OVERHEAD
        if any(old.get(k) != new.get(k) for k in self.keys):
            return units_of(old_size) + units_of(new_size)  # the old entry deleted, the new one put
        if old == new:
            return 0
        return units_of(max(old_size, new_size))


class TableShape:
    """A table's key attributes and its global secondary indexes, as moto holds them."""

    def __init__(self, keys: list[str], indexes: list[IndexShape]):
        self.keys = keys
        self.indexes = indexes

    @classmethod
    def of_moto(cls, table: Any) -> TableShape:
        keys = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
        indexes = [
            IndexShape(i.name, [k["AttributeName"] for k in i.schema], keys, i.projection or {})
            for i in table.global_indexes
        ]
        return cls(keys, indexes)


def _moto_table(name: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    for _account, _region, backend in dynamodb_backends.iter_backends():
        table = backend.tables.get(name)
        if table is not None:
            return table
    raise LookupError(f"no moto table {name!r} in this process")


def _moto_item(table: Any, key: dict) -> dict | None:
    """The item stored under `key` (wire form), read from moto's backend without a DynamoDB call."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_key = DynamoType(key[table.hash_key_attr])
    range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
    try:
        stored = table.get_item(hash_key, range_key)
    except KeyError:
        return None
    if stored is None:
        return None
    return {name: value.to_regular_json() for name, value in stored.attrs.items()}


class EveryThread:
    """The default scope: every thread's calls count (a bench, where nothing else shares the client)."""

    def active(self) -> bool:
        return True


def _kind(key: dict) -> str:
    """A record's kind from its key: the sort key's first part (EVENT, BOT, TOKEN...), or the partition
    key's when the sort key is a constant (DEDUP, LOCK, SUB)."""
    sk = str(next(iter((key.get("SK") or {"S": ""}).values())))
    pk = str(next(iter((key.get("PK") or {"S": ""}).values())))
    return sk.split("#", 1)[0] if "#" in sk else pk.split("#", 1)[0]


class _Write:
    """One item written by a call: its table, key, and the item before the call."""

    def __init__(self, table: str, key: dict, before: dict | None, intended: dict | None, factor: int):
        self.table, self.key, self.before, self.intended, self.factor = table, key, before, intended, factor


class DynamoWrites:
    """Counts DynamoDB write calls and the write units AWS bills for them (table and index writes),
    made through calbot's client (botocore hooks, so they see every write whatever code path makes it;
    a `scope`, tests.conftest.CodeUnderTest, keeps out the calls of the in-process stack's own threads;
    without one every thread counts).

    Register with `attach(client.meta.events)` (before- and after-call hooks). Registering the object
    alone on "provide-client-params.dynamodb.*" still works: each write is then settled at the
    thread's next write or when a figure is read.

    `units` is the total; `table_units` and `index_units` (per index name) split it; `calls` lists
    the write operations; `items` counts the items they wrote.
    """

    WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
    # Refusals that still consumed write capacity: the condition was evaluated against the stored item.
    CONSUMING_ERRORS = {"ConditionalCheckFailedException", "TransactionCanceledException"}

    def __init__(self, scope: Any = None) -> None:
        self.scope = scope or EveryThread()
        self.calls: list[str] = []
        self.items = 0
        self._units = 0
        self.table_units: Counter[str] = Counter()
        self.index_units: Counter[str] = Counter()
        self.kind_units: Counter[str] = Counter()  # table units by record kind (the key's first part)
        self.kind_index_units: Counter[str] = Counter()  # index units by "<kind> <index>"
        self._pending: dict[int, tuple[Any, str, list[_Write], threading.Thread]] = {}
        self._after_hooked = False
        self._lock = threading.RLock()
        self._shapes: dict[str, TableShape] = {}

    # -- registration

    def attach(self, events: Any) -> None:
        events.register("provide-client-params.dynamodb.*", self)
        events.register("after-call.dynamodb.*", self.after_call)
        self._after_hooked = True

    def detach(self, events: Any) -> None:
        events.unregister("provide-client-params.dynamodb.*", self)
        events.unregister("after-call.dynamodb.*", self.after_call)

    # -- figures

    @property
    def units(self) -> int:
        self._settle_unanswered()
        return self._units

    def breakdown(self) -> dict[str, Any]:
        """Units by where they go: {"total", "table": {table: n}, "indexes": {index: n}}."""
        self._settle_unanswered()
        return {"total": self._units, "table": dict(self.table_units), "indexes": dict(self.index_units)}

    def reset(self) -> None:
        with self._lock:
            self._settle_unanswered()
            self.calls.clear()
            self.items = self._units = 0
            self.table_units.clear()
            self.index_units.clear()
            self.kind_units.clear()
            self.kind_index_units.clear()

    # -- hooks

    def __call__(self, params: dict, model: object, context: Any = None, **_: object) -> None:
        op = getattr(model, "name", "")
        if op not in self.WRITE_OPS or not self.scope.active():
            return
        if not self._after_hooked:
            self._settle_unanswered(threading.current_thread())
        writes = self._writes(op, params)
        with self._lock:
            self.calls.append(op)
            self.items += len(writes)
            self._pending[id(context)] = (context, op, writes, threading.current_thread())

    def after_call(self, parsed: dict, context: Any = None, **_: object) -> None:
        with self._lock:
            pending = self._pending.pop(id(context), None)
        if pending is None:
            return
        _, op, writes, _thread = pending
        error = str((parsed or {}).get("Error", {}).get("Code", "")) if isinstance(parsed, dict) else ""
        if op == "BatchWriteItem":  # what DynamoDB left unprocessed was not written, nor billed
            left = {
                (table, self._key_of(table, r.get("PutRequest", {}).get("Item") or r["DeleteRequest"]["Key"]))
                for table, reqs in ((parsed or {}).get("UnprocessedItems") or {}).items()
                for r in reqs
            }
            writes = [w for w in writes if (w.table, self._key_of(w.table, w.key)) not in left]
        if error and error not in self.CONSUMING_ERRORS:
            return  # refused before anything was read or written (validation, throttling): not billed
        self._settle(writes, failed=bool(error))

    # -- pricing

    def _shape(self, table: str) -> TableShape:
        if table not in self._shapes:
            self._shapes[table] = TableShape.of_moto(_moto_table(table))
        return self._shapes[table]

    def _key_of(self, table: str, item: dict) -> str:
        return repr([item.get(k) for k in self._shape(table).keys])

    def _writes(self, op: str, params: dict) -> list[_Write]:
        out: list[_Write] = []

        def add(table: str, key: dict | None, item: dict | None, factor: int) -> None:
            shape = self._shape(table)
            key = key or {k: (item or {})[k] for k in shape.keys}
            out.append(_Write(table, key, _moto_item(_moto_table(table), key), item, factor))

        if op == "BatchWriteItem":
            for table, reqs in params["RequestItems"].items():
                for r in reqs:
                    if "PutRequest" in r:
                        add(table, None, r["PutRequest"]["Item"], 1)
                    else:
                        add(table, r["DeleteRequest"]["Key"], None, 1)
        elif op == "TransactWriteItems":
            for t in params["TransactItems"]:
                ((_kind, body),) = t.items()
                add(body["TableName"], body.get("Key"), body.get("Item"), 2)
        else:
            add(params["TableName"], params.get("Key"), params.get("Item"), 1)
        return out

    def _settle(self, writes: list[_Write], *, failed: bool) -> None:
        for w in writes:
            shape = self._shape(w.table)
            after = w.before if failed else _moto_item(_moto_table(w.table), w.key)
            table_units = w.factor * units_of(max(item_size(w.before or {}), item_size(after or {})))
            index_units = {} if failed else {i.name: i.write_units(w.before, after) for i in shape.indexes}
            with self._lock:
                self.kind_units[_kind(w.key)] += table_units
                self.table_units[w.table] += table_units
                self._units += table_units
                for name, n in index_units.items():
                    if n:
                        self.index_units[name] += n
                        self.kind_index_units[f"{_kind(w.key)} {name}"] += n
                        self._units += n

    def _settle_unanswered(self, thread: threading.Thread | None = None) -> None:
        """Without the after-call hook: settle the writes whose call has returned (all of this thread's,
        or all of them when a figure is read), reading their items as they are now."""
        if self._after_hooked:
            return
        with self._lock:
            keys = [k for k, p in self._pending.items() if thread is None or p[3] is thread]
            done = [self._pending.pop(k) for k in keys]
        for _, _, writes, _ in done:
            failed = all(_moto_item(_moto_table(w.table), w.key) == w.before for w in writes)
            self._settle(writes, failed=failed)
