"""Delivery records in DynamoDB (moto in-process): created once, replaced only under their token, one
endpoint's listed newest first and paged by the last id, with a TTL days after they end; and the local
SQS refusing a message timer over 900 s in a batch too (SQS's limit, which the retries rely on)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from calbot import aws
from calbot.config import reset_settings
from calbot.models import WebhookDelivery
from calbot.store import webhook_deliveries as store

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SSM_PREFIX": "/calbot/test",
    }.items():
        monkeypatch.setenv(key, value)
    name = f"deliveries-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TABLE_NAME", name)
    mock = mock_aws()
    mock.start(reset=False)
    reset_settings()
    aws.reset_clients()
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        yield name
    finally:
        mock.stop(remove_data=False)
        reset_settings()
        aws.reset_clients()


def delivery(n: int, webhook_id: str = "wh_1", user: str = "usr_1") -> WebhookDelivery:
    at = START + timedelta(minutes=n)
    return WebhookDelivery(
        delivery_id=store.delivery_id(webhook_id, f"evt_{n}", at),
        user_id=user,
        webhook_id=webhook_id,
        event_id=f"evt_{n}",
        type="bot.updated",
        body="{}",
        created_at=at,
        next_attempt_at=at,
        token=f"t{n}",
    )


def test_created_once_and_replaced_only_under_its_token(table: str) -> None:
    d = delivery(1)
    assert store.put_delivery(d) and not store.put_delivery(d)
    assert store.get_delivery("usr_1", "wh_1", d.delivery_id) == d
    assert store.get_delivery("usr_2", "wh_1", d.delivery_id) is None  # another user's partition
    done = d.model_copy(
        update={"state": "delivered", "attempts": 1, "token": "t-next", "next_attempt_at": None}
    )
    assert not store.save_delivery(done, expected_token="someone-else")
    assert store.save_delivery(done, expected_token="t1")
    assert store.get_delivery("usr_1", "wh_1", d.delivery_id) == done
    item = boto3.client("dynamodb").get_item(
        TableName=table, Key={"PK": {"S": "USER#usr_1"}, "SK": {"S": f"WHDLV#wh_1#{d.delivery_id}"}}
    )["Item"]
    assert int(item["ttl"]["N"]) == int((d.created_at + timedelta(days=store.DELIVERY_KEEP_DAYS)).timestamp())


def test_the_id_is_the_same_for_the_same_endpoint_and_event_and_sorts_by_time() -> None:
    a = store.delivery_id("wh_1", "evt_1", START)
    assert a == store.delivery_id("wh_1", "evt_1", START) != store.delivery_id("wh_2", "evt_1", START)
    assert store.delivery_id("wh_1", "evt_0", START + timedelta(milliseconds=1)) > a


def test_listed_newest_first_and_paged(table: str) -> None:
    for n in range(7):
        store.put_delivery(delivery(n))
    store.put_delivery(delivery(9, webhook_id="wh_2"))
    rows, after = store.deliveries_page("usr_1", "wh_1", limit=3)
    assert [r.event_id for r in rows] == ["evt_6", "evt_5", "evt_4"] and after == rows[-1].delivery_id
    rows, after = store.deliveries_page("usr_1", "wh_1", limit=3, after=after)
    assert [r.event_id for r in rows] == ["evt_3", "evt_2", "evt_1"] and after
    rows, after = store.deliveries_page("usr_1", "wh_1", limit=3, after=after)
    assert [r.event_id for r in rows] == ["evt_0"] and after is None


def test_the_local_sqs_refuses_a_batch_delay_over_900_seconds(table: str) -> None:
    from local.aws_limits import install_limits

    install_limits()
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=f"whq-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "x", "DelaySeconds": 900}])
    for send in (
        lambda: sqs.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=901),
        lambda: sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "x", "DelaySeconds": 901}]
        ),
    ):
        with pytest.raises(ClientError) as refused:
            send()
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
