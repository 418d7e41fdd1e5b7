"""The local stack's moto: a failed transaction still rolls back completely with one backup per table."""

from __future__ import annotations

import pytest

from calbot import aws
from calbot.config import get_settings
from local.stack import LocalStack


def test_a_failed_transaction_writes_nothing(inproc_stack: LocalStack) -> None:
    ddb, table = aws.dynamodb(), get_settings().table_name
    put = {"Put": {"TableName": table, "Item": {"PK": {"S": "T#rollback"}, "SK": {"S": "A"}}}}
    also = {"Put": {"TableName": table, "Item": {"PK": {"S": "T#rollback"}, "SK": {"S": "B"}}}}
    refused = {
        "ConditionCheck": {
            "TableName": table,
            "Key": {"PK": {"S": "T#rollback"}, "SK": {"S": "missing"}},
            "ConditionExpression": "attribute_exists(PK)",
        }
    }
    with pytest.raises(ddb.exceptions.TransactionCanceledException):
        ddb.transact_write_items(TransactItems=[put, also, refused])
    items = ddb.query(
        TableName=table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": "T#rollback"}},
    )["Items"]
    assert items == []
    ddb.transact_write_items(TransactItems=[put, also])
    assert (
        len(
            ddb.query(
                TableName=table,
                KeyConditionExpression="PK = :pk",
                ExpressionAttributeValues={":pk": {"S": "T#rollback"}},
            )["Items"]
        )
        == 2
    )
