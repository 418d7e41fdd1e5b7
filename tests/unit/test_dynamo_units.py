"""The write-unit counter (tests/dynamo_units.DynamoWrites) against worked examples of AWS's billing
rules: item size before and after, 1 KB per unit per item, transactions 2x, failed conditions, and
each global secondary index by its projection (enter 1, leave 1, key change 2, projected change 1,
untouched 0; entry = projected attributes + keys + 100 bytes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.dynamo_units import DynamoWrites, IndexShape, item_size

TABLE = "units"


@pytest.fixture
def ddb(sped_up_moto_env: None, moto_beside_the_stack: Any) -> Iterator[tuple[Any, DynamoWrites]]:
    client = moto_beside_the_stack
    attrs = ["PK", "SK", "A", "B", "C"]
    client.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in attrs],
        KeySchema=[
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "ALL_A",
                "KeySchema": [{"AttributeName": "A", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": "KEYS_B",
                "KeySchema": [{"AttributeName": "B", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
            {
                "IndexName": "INCL_C",
                "KeySchema": [{"AttributeName": "C", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["title"]},
            },
        ],
    )
    counter = DynamoWrites()
    counter.attach(client.meta.events)
    yield client, counter


def _item(size: int = 0, **attrs: str) -> dict[str, Any]:
    """PK/SK plus `attrs`, padded with a `fill` attribute to exactly `size` bytes when given."""
    item = {"PK": {"S": "p"}, "SK": {"S": "s"}, **{k: {"S": v} for k, v in attrs.items()}}
    if size:
        item["fill"] = {"S": ""}
        item["fill"] = {"S": "x" * (size - item_size(item))}
        assert item_size(item) == size
    return item


KEY = {"PK": {"S": "p"}, "SK": {"S": "s"}}


def test_a_new_small_item_costs_one_unit_and_one_per_index_it_enters(ddb: Any) -> None:
    client, counter = ddb
    client.put_item(TableName=TABLE, Item=_item(500, A="a", B="b"))  # not in INCL_C: no C
    assert counter.units == 3
    assert counter.breakdown() == {"total": 3, "table": {TABLE: 1}, "indexes": {"ALL_A": 1, "KEYS_B": 1}}


def test_items_cost_one_unit_per_kb_rounded_up_and_index_entries_by_what_they_project(ddb: Any) -> None:
    client, counter = ddb
    client.put_item(TableName=TABLE, Item=_item(1900, A="a", B="b", C="c"))
    # table: 1,900 B -> 2; ALL: 1,900 + 100 -> 2; KEYS_ONLY and INCLUDE (no title): keys + 100 -> 1 each
    assert counter.table_units[TABLE] == 2
    assert dict(counter.index_units) == {"ALL_A": 2, "KEYS_B": 1, "INCL_C": 1}
    assert counter.units == 6


def test_an_index_entry_carries_100_bytes_of_overhead(ddb: Any) -> None:
    client, counter = ddb
    client.put_item(TableName=TABLE, Item=_item(1000, A="a"))  # 1,000 B item: 1 unit, its entry 1,100 B
    assert counter.table_units[TABLE] == 1 and counter.index_units["ALL_A"] == 2


def test_an_update_costs_the_larger_of_before_and_after(ddb: Any) -> None:
    client, counter = ddb
    client.put_item(TableName=TABLE, Item=_item(3000))
    counter.reset()
    client.update_item(TableName=TABLE, Key=KEY, UpdateExpression="REMOVE fill")  # 3,000 B -> 5 B
    assert counter.units == 3 and counter.calls == ["UpdateItem"]
    counter.reset()
    client.put_item(TableName=TABLE, Item=_item(100))  # a put over a missing-fill item: 5 B -> 100 B
    assert counter.units == 1


def test_index_writes_follow_the_projection(ddb: Any) -> None:
    client, counter = ddb
    client.put_item(TableName=TABLE, Item=_item(A="a", B="b", C="c", title="t", xtra="o"))
    counter.reset()
    # a non-key attribute no index projects: the table and the ALL index only
    client.update_item(
        TableName=TABLE,
        Key=KEY,
        UpdateExpression="SET xtra = :v",
        ExpressionAttributeValues={":v": {"S": "p"}},
    )
    assert counter.breakdown()["indexes"] == {"ALL_A": 1}
    counter.reset()
    # a projected non-key attribute of INCL_C: one write there
    client.update_item(
        TableName=TABLE,
        Key=KEY,
        UpdateExpression="SET title = :v",
        ExpressionAttributeValues={":v": {"S": "u"}},
    )
    assert counter.breakdown()["indexes"] == {"ALL_A": 1, "INCL_C": 1}
    counter.reset()
    # an index key changes: delete + put in that index (2), a plain update in the ALL one
    client.update_item(
        TableName=TABLE, Key=KEY, UpdateExpression="SET B = :v", ExpressionAttributeValues={":v": {"S": "b2"}}
    )
    assert counter.breakdown()["indexes"] == {"ALL_A": 1, "KEYS_B": 2}
    counter.reset()
    # leaving a sparse index costs one write there
    client.update_item(TableName=TABLE, Key=KEY, UpdateExpression="REMOVE C")
    assert counter.breakdown()["indexes"] == {"ALL_A": 1, "INCL_C": 1}
    assert counter.units == 3


def test_a_delete_costs_the_deleted_item_and_each_index_it_leaves(ddb: Any) -> None:
    client, counter = ddb
    client.put_item(TableName=TABLE, Item=_item(2500, A="a", B="b"))
    counter.reset()
    client.delete_item(TableName=TABLE, Key=KEY)
    assert counter.breakdown() == {"total": 7, "table": {TABLE: 3}, "indexes": {"ALL_A": 3, "KEYS_B": 1}}
    counter.reset()
    client.delete_item(TableName=TABLE, Key=KEY)  # nothing there: still one unit
    assert counter.units == 1


def test_a_failed_condition_still_costs_the_existing_item_and_writes_no_index(ddb: Any) -> None:
    client, counter = ddb
    client.put_item(TableName=TABLE, Item=_item(1500, A="a"))
    counter.reset()
    with pytest.raises(ClientError):
        client.put_item(TableName=TABLE, Item=_item(A="z"), ConditionExpression="attribute_not_exists(PK)")
    assert counter.breakdown() == {"total": 2, "table": {TABLE: 2}, "indexes": {}}


def test_transactional_writes_cost_twice(ddb: Any) -> None:
    client, counter = ddb
    other = {**_item(A="a"), "SK": {"S": "t"}}
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": TABLE, "Item": _item(1500)}},
            {"Put": {"TableName": TABLE, "Item": other}},
        ]
    )
    assert counter.breakdown() == {"total": 7, "table": {TABLE: 6}, "indexes": {"ALL_A": 1}}
    counter.reset()
    with pytest.raises(ClientError):  # cancelled: each item still costs, by what is stored
        client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": TABLE,
                        "Item": _item(A="x"),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                }
            ]
        )
    assert counter.breakdown() == {"total": 4, "table": {TABLE: 4}, "indexes": {}}


def test_batch_writes_are_priced_item_by_item(ddb: Any) -> None:
    client, counter = ddb
    client.put_item(TableName=TABLE, Item={**_item(1200, B="b"), "SK": {"S": "old"}})
    counter.reset()
    client.batch_write_item(
        RequestItems={
            TABLE: [
                {"PutRequest": {"Item": _item(100, A="a")}},
                {"DeleteRequest": {"Key": {"PK": {"S": "p"}, "SK": {"S": "old"}}}},
            ]
        }
    )
    assert counter.items == 2
    assert counter.breakdown() == {"total": 5, "table": {TABLE: 3}, "indexes": {"ALL_A": 1, "KEYS_B": 1}}


def test_registered_alone_it_settles_writes_when_read(ddb: Any) -> None:
    """Benches that register the object on provide-client-params only still get the honest figure."""
    client, attached = ddb
    attached.detach(client.meta.events)
    counter = DynamoWrites()
    client.meta.events.register("provide-client-params.dynamodb.*", counter)
    client.put_item(TableName=TABLE, Item=_item(500, A="a", B="b"))
    client.update_item(
        TableName=TABLE, Key=KEY, UpdateExpression="SET B = :v", ExpressionAttributeValues={":v": {"S": "c"}}
    )
    assert counter.units == 3 + 1 + 1 + 2


def test_the_index_shape_reads_projections() -> None:
    index = IndexShape("I", ["K"], ["PK", "SK"], {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["n"]})
    item = {"PK": {"S": "p"}, "SK": {"S": "s"}, "K": {"S": "k"}, "n": {"S": "v"}, "x": {"S": "y"}}
    assert index.entry(item) == {k: item[k] for k in ("PK", "SK", "K", "n")}
    assert index.entry({"PK": {"S": "p"}, "SK": {"S": "s"}}) is None


def test_items_a_batch_left_unprocessed_are_not_billed(ddb: Any) -> None:
    _client, counter = ddb

    class Model:
        name = "BatchWriteItem"

    context: dict[str, Any] = {}
    put = {"PutRequest": {"Item": _item(100, A="a")}}
    delete = {"DeleteRequest": {"Key": {"PK": {"S": "p"}, "SK": {"S": "gone"}}}}
    counter({"RequestItems": {TABLE: [put, delete]}}, Model(), context=context)
    counter.after_call({"UnprocessedItems": {TABLE: [put]}}, context=context)  # the delete went through
    assert counter.calls == ["BatchWriteItem"] and counter.units == 1
