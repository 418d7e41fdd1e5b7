"""local/moto_speed.py's DynamoDB and server patches answer exactly what moto answers: response bodies
byte for byte against moto's own serializer, and Query results (index and table, pagination, order,
filters, projections) against moto's full-table scan, over random items and writes."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import ActionResult
from moto.core.serialize import JSONSerializer
from moto.dynamodb.models.table import Table

from local.moto_speed import install_speedups


@pytest.fixture
def ddb(sped_up_moto_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("dynamodb", region_name="us-east-1")


def _table(ddb: Any, name: str, range_key: bool = True) -> None:
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "S"})
    attrs += [
        {"AttributeName": "g", "AttributeType": "S"},
        {"AttributeName": "r", "AttributeType": "N"},
        {"AttributeName": "h", "AttributeType": "S"},
    ]
    ddb.create_table(
        TableName=name,
        KeySchema=keys,
        AttributeDefinitions=attrs,
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {
                "IndexName": "byG",
                "KeySchema": [
                    {"AttributeName": "g", "KeyType": "HASH"},
                    {"AttributeName": "r", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": "byH",
                "KeySchema": [{"AttributeName": "h", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["x"]},
            },
        ],
    )


EVERY_TYPE = {
    "s": {"S": 'text é ✓ "quoted" \\ </tag>'},
    "empty": {"S": ""},
    "n": {"N": "-12.50"},
    "b": {"B": b"\x00\xffbinary"},
    "t": {"BOOL": True},
    "f": {"BOOL": False},
    "null": {"NULL": True},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"x", b"\x01"]},
    "l": {"L": [{"S": "x"}, {"N": "1"}, {"L": [{"NULL": True}]}, {"M": {"k": {"B": b"z"}}}]},
    "m": {"M": {"a": {"SS": ["q"]}, "b": {"M": {"c": {"BOOL": False}, "d": {"BS": [b"y"]}}}}},
}


@pytest.fixture
def both_serializers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every response is serialized twice, with the fast path and with moto's own serializer; the
    bodies must be identical. Also counts the AttributeValue nodes moto's code still had to do."""
    original_execute = ActionResult.execute_result
    original_serialize = JSONSerializer._calbot_original_serialize  # type: ignore[attr-defined]
    fast_serialize = JSONSerializer._serialize
    seen: list[tuple[str, int]] = []
    slow_nodes = [0]

    def counting(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if shape.name == "AttributeValue":
            slow_nodes[0] += 1
        original_serialize(self, serialized, value, shape, key)

    def execute_result(self: Any, context: Any) -> Any:
        if context.service_model.service_name != "dynamodb":
            return original_execute(self, context)
        monkeypatch.setattr(JSONSerializer, "_serialize", original_serialize)
        expected = original_execute(self, context)
        monkeypatch.setattr(JSONSerializer, "_calbot_original_serialize", counting)
        monkeypatch.setattr(JSONSerializer, "_serialize", fast_serialize)
        slow_nodes[0] = 0
        got = original_execute(self, context)
        assert got == expected, (context.operation_model.name, got, expected)
        seen.append((str(context.operation_model.name), slow_nodes[0]))
        return got

    monkeypatch.setattr(ActionResult, "execute_result", execute_result)
    return seen


def test_dynamodb_bodies_are_moto_s_own(ddb: Any, both_serializers: list[tuple[str, int]]) -> None:
    # the fast path reads moto's own serializer through this attribute: re-read it per call
    import local.moto_speed as speed

    assert JSONSerializer._calbot_fast_dynamodb  # type: ignore[attr-defined]
    assert speed is not None
    _table(ddb, "t")
    for i in range(30):
        item = {"pk": {"S": f"p{i % 3}"}, "sk": {"S": f"s{i:03d}"}, "g": {"S": "G"}, "r": {"N": str(i)}}
        ddb.put_item(TableName="t", Item={**item, **EVERY_TYPE})
    ddb.get_item(TableName="t", Key={"pk": {"S": "p0"}, "sk": {"S": "s000"}})
    ddb.get_item(TableName="t", Key={"pk": {"S": "p0"}, "sk": {"S": "nope"}})
    ddb.query(
        TableName="t",
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "p1"}},
        Limit=4,
    )
    ddb.query(
        TableName="t",
        IndexName="byG",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "G"}},
    )
    ddb.scan(TableName="t", Limit=7)
    ddb.batch_get_item(
        RequestItems={
            "t": {
                "Keys": [{"pk": {"S": "p0"}, "sk": {"S": "s000"}}, {"pk": {"S": "p1"}, "sk": {"S": "s001"}}]
            }
        }
    )
    ddb.transact_get_items(
        TransactItems=[{"Get": {"TableName": "t", "Key": {"pk": {"S": "p2"}, "sk": {"S": "s002"}}}}]
    )
    ddb.update_item(
        TableName="t",
        Key={"pk": {"S": "p0"}, "sk": {"S": "s003"}},
        UpdateExpression="SET extra = :e, m.b.c = :t REMOVE s",
        ExpressionAttributeValues={":e": {"L": [{"B": b"q"}, {"NS": ["7"]}]}, ":t": {"BOOL": True}},
        ReturnValues="ALL_NEW",
    )
    ddb.delete_item(TableName="t", Key={"pk": {"S": "p0"}, "sk": {"S": "s006"}}, ReturnValues="ALL_OLD")
    ddb.put_item(
        TableName="t", Item={"pk": {"S": "p0"}, "sk": {"S": "s009"}, **EVERY_TYPE}, ReturnValues="ALL_OLD"
    )
    with pytest.raises(ddb.exceptions.ConditionalCheckFailedException):
        ddb.put_item(
            TableName="t",
            Item={"pk": {"S": "p0"}, "sk": {"S": "s012"}},
            ConditionExpression="attribute_not_exists(pk)",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    with pytest.raises(ddb.exceptions.TransactionCanceledException):
        ddb.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": "t",
                        "Item": {"pk": {"S": "p0"}, "sk": {"S": "s015"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                }
            ]
        )
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.get_item(TableName="missing", Key={"pk": {"S": "x"}})
    with pytest.raises(ddb.exceptions.ClientError):
        ddb.query(
            TableName="t", KeyConditionExpression="sk = :p", ExpressionAttributeValues={":p": {"S": "x"}}
        )
    ddb.describe_table(TableName="t")
    operations = {op for op, _ in both_serializers}
    assert {
        "GetItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "TransactGetItems",
        "UpdateItem",
        "DeleteItem",
    } <= operations
    assert {"PutItem", "DescribeTable"} <= operations, operations
    # plain items never reach moto's per-member code: the fast path did them
    item_reads = [n for op, n in both_serializers if op in ("Query", "Scan", "BatchGetItem", "GetItem")]
    assert item_reads and not any(item_reads)


def _random_item(rng: random.Random, pk: str, sk: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": {"S": pk}, "x": {"N": str(rng.randint(0, 9))}}
    if sk is not None:
        item["sk"] = {"S": sk}
    if rng.random() < 0.8:
        item["g"] = {"S": rng.choice(["a", "b", "c"])}
    if rng.random() < 0.8:
        item["r"] = {"N": str(rng.randint(0, 6))}
    if rng.random() < 0.6:
        item["h"] = {"S": rng.choice(["u", "v"])}
    if rng.random() < 0.3:
        item["pad"] = {"S": "p" * rng.randint(0, 50)}
    return item


def _compare(call: Callable[[], Any]) -> Any:
    """The same call with the patched query and with moto's own (scan of all_items)."""
    originals = Table._calbot_originals  # type: ignore[attr-defined]
    fast_query, fast_all = Table.query, Table.all_items

    def run() -> Any:
        try:
            out = call()
        except Exception as exc:  # the same error is the same answer
            return ("error", type(exc).__name__, str(exc))
        out.pop("ResponseMetadata", None)
        return out

    got = run()
    Table.query, Table.all_items = originals["query"], originals["all_items"]  # type: ignore[method-assign]
    try:
        expected = run()
    finally:
        Table.query, Table.all_items = fast_query, fast_all  # type: ignore[method-assign]
    assert got == expected
    return got


@pytest.mark.parametrize(("range_key", "stack_rollback"), [(True, False), (False, False), (True, True)])
def test_queries_match_moto_s_scan_over_random_writes(
    ddb: Any, range_key: bool, stack_rollback: bool
) -> None:
    if stack_rollback:  # the local stack's own transaction rollback (local/stack.py), as it runs there
        from local.stack import _copy_each_table_once_per_transaction

        _copy_each_table_once_per_transaction()
    rng = random.Random(18 + range_key + 2 * stack_rollback)
    _table(ddb, "q", range_key=range_key)

    def key() -> dict[str, Any]:
        k: dict[str, Any] = {"pk": {"S": f"p{rng.randint(0, 4)}"}}
        if range_key:
            k["sk"] = {"S": f"s{rng.randint(0, 9)}"}
        return k

    def item() -> dict[str, Any]:
        k = key()
        return _random_item(rng, k["pk"]["S"], k.get("sk", {}).get("S"))

    def write() -> None:
        choice = rng.random()
        try:
            if choice < 0.35:
                ddb.put_item(TableName="q", Item=item())
            elif choice < 0.55:
                expr, values = rng.choice(
                    [
                        ("SET g = :g", {":g": {"S": rng.choice(["a", "b", "c"])}}),
                        ("SET r = :r, h = :h", {":r": {"N": str(rng.randint(0, 6))}, ":h": {"S": "u"}}),
                        ("REMOVE g", None),
                        ("REMOVE h, r", None),
                    ]
                )
                kwargs: dict[str, Any] = {"TableName": "q", "Key": key(), "UpdateExpression": expr}
                if values:
                    kwargs["ExpressionAttributeValues"] = values
                if rng.random() < 0.3:
                    kwargs["ConditionExpression"] = "attribute_exists(pk)"
                ddb.update_item(**kwargs)
            elif choice < 0.7:
                ddb.delete_item(TableName="q", Key=key())
            elif choice < 0.8:
                keys = {str(k): k for k in (key() for _ in range(3))}
                puts = {
                    str({"pk": i["pk"], **({"sk": i["sk"]} if range_key else {})}): i
                    for i in (item() for _ in range(3))
                }
                requests = [{"PutRequest": {"Item": i}} for k, i in puts.items() if k not in keys]
                requests += [{"DeleteRequest": {"Key": k}} for k in keys.values()]
                ddb.batch_write_item(RequestItems={"q": requests})
            else:
                k1, k2 = key(), key()
                ops: list[dict[str, Any]] = [
                    {
                        "Update": {
                            "TableName": "q",
                            "Key": k1,
                            "UpdateExpression": "SET g = :g",
                            "ExpressionAttributeValues": {":g": {"S": rng.choice(["a", "b"])}},
                        }
                    },
                ]
                if k2 != k1:
                    fail = rng.random() < 0.5
                    ops.append(
                        {
                            "Put": {
                                "TableName": "q",
                                "Item": {**_random_item(rng, "x", None), **k2},
                                "ConditionExpression": "attribute_not_exists(pk)"
                                if fail
                                else "attribute_not_exists(nope)",
                            }
                        }
                    )
                ddb.transact_write_items(TransactItems=ops)
        except ddb.exceptions.ClientError:
            pass  # a refused write is part of the history too

    def queries() -> None:
        g = rng.choice(["a", "b", "c", "zz"])
        kwargs: dict[str, Any] = {"TableName": "q", "ScanIndexForward": rng.random() < 0.5}
        shape = rng.random()
        if shape < 0.4:
            kwargs.update(
                IndexName="byG", KeyConditionExpression="g = :g", ExpressionAttributeValues={":g": {"S": g}}
            )
            if rng.random() < 0.4:
                kwargs["KeyConditionExpression"] += " AND r BETWEEN :lo AND :hi"
                kwargs["ExpressionAttributeValues"].update({":lo": {"N": "1"}, ":hi": {"N": "4"}})
        elif shape < 0.6:
            kwargs.update(
                IndexName="byH",
                KeyConditionExpression="h = :h",
                ExpressionAttributeValues={":h": {"S": rng.choice(["u", "v"])}},
            )
        else:
            kwargs.update(
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": f"p{rng.randint(0, 5)}"}},
            )
            if range_key and rng.random() < 0.4:
                kwargs["KeyConditionExpression"] += " AND sk > :s"
                kwargs["ExpressionAttributeValues"][":s"] = {"S": "s3"}
        if rng.random() < 0.3:
            kwargs["FilterExpression"] = "x > :x"
            kwargs["ExpressionAttributeValues"][":x"] = {"N": "3"}
        if rng.random() < 0.2:
            kwargs["ProjectionExpression"] = "pk, x, g"
        if rng.random() < 0.5:
            kwargs["Limit"] = rng.randint(1, 4)
        pages = 0
        while pages < 20:
            page = _compare(lambda: ddb.query(**kwargs))
            pages += 1
            if not isinstance(page, dict) or "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    for step in range(250):
        write()
        if step % 3 == 0:
            queries()
    for _ in range(40):
        queries()
    ddb.delete_table(TableName="q")
    _table(ddb, "q", range_key=range_key)  # a table of the same name starts empty
    assert (
        _compare(
            lambda: ddb.query(
                TableName="q",
                IndexName="byG",
                KeyConditionExpression="g = :g",
                ExpressionAttributeValues={":g": {"S": "a"}},
            )
        )["Items"]
        == []
    )


def test_the_backend_lookup_is_memoized() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.server import create_backend_app

    install_speedups()
    app = DomainDispatcherApplication(create_backend_app)
    assert app.get_backend_for_host("dynamodb") == "dynamodb"
    assert app.get_backend_for_host("sqs.us-east-1.amazonaws.com") == "sqs"
    assert app.get_backend_for_host(None) is None
    import moto.backends as backends

    listed = []
    original = backends.list_of_moto_modules

    def counting() -> Any:
        listed.append(1)
        return original()

    backends.list_of_moto_modules = counting
    try:
        for _ in range(5):
            assert app.get_backend_for_host("dynamodb") == "dynamodb"
            assert app.get_backend_for_host("sqs.us-east-1.amazonaws.com") == "sqs"
    finally:
        backends.list_of_moto_modules = original
    assert listed == []  # moto listed its package directory on every request


def test_a_query_reads_its_partition_not_the_table(ddb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _table(ddb, "big")
    for i in range(200):
        ddb.put_item(
            TableName="big",
            Item={"pk": {"S": f"p{i % 50}"}, "sk": {"S": f"s{i}"}, "g": {"S": f"g{i % 40}"}, "r": {"N": "1"}},
        )
    ddb.query(
        TableName="big",
        IndexName="byG",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "g1"}},
    )
    scans: list[int] = []
    full_scan = Table._calbot_originals["all_items"]  # type: ignore[attr-defined]

    def counted(table: Any) -> Any:
        scans.append(1)
        return full_scan(table)

    monkeypatch.setitem(Table._calbot_originals, "all_items", counted)  # type: ignore[attr-defined]
    got = ddb.query(
        TableName="big",
        IndexName="byG",
        KeyConditionExpression="g = :g",
        ExpressionAttributeValues={":g": {"S": "g7"}},
    )["Items"]
    assert [i["sk"]["S"] for i in got] == ["s167", "s127", "s87", "s47", "s7"]  # by r, then pk (a string)
    got = ddb.query(
        TableName="big", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p3"}}
    )["Items"]
    assert [i["sk"]["S"] for i in got] == ["s103", "s153", "s3", "s53"]
    assert scans == []  # moto sorted and scanned all 200 items for each query
    ddb.scan(TableName="big")
    assert scans == [1]  # a Scan is still moto's own full scan
