"""The local stack's moto: a failed transaction still rolls back completely with one backup per table."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ParamValidationError

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


def test_a_transaction_copies_only_its_own_items(
    inproc_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No copy of the whole table per transaction (a burst's table made each one cost a second), and a
    refused transaction still puts back exactly what it overwrote, updated or added."""
    from moto.dynamodb.models.table import Table

    table_copies: list[int] = []

    def counted(self: Table, memo: dict[int, object]) -> Table:
        table_copies.append(1)
        raise AssertionError("the whole table was copied")

    monkeypatch.setattr(Table, "__deepcopy__", counted, raising=False)
    ddb, table = aws.dynamodb(), get_settings().table_name
    key = {"PK": {"S": "T#undo"}}
    ddb.put_item(TableName=table, Item={**key, "SK": {"S": "A"}, "v": {"S": "old"}})
    ddb.put_item(TableName=table, Item={**key, "SK": {"S": "B"}, "n": {"N": "1"}})
    overwrite = {"Put": {"TableName": table, "Item": {**key, "SK": {"S": "A"}, "v": {"S": "new"}}}}
    update = {
        "Update": {
            "TableName": table,
            "Key": {**key, "SK": {"S": "B"}},
            "UpdateExpression": "SET n = :two",
            "ExpressionAttributeValues": {":two": {"N": "2"}},
        }
    }
    add = {"Put": {"TableName": table, "Item": {**key, "SK": {"S": "C"}}}}
    refused = {
        "ConditionCheck": {
            "TableName": table,
            "Key": {**key, "SK": {"S": "missing"}},
            "ConditionExpression": "attribute_exists(PK)",
        }
    }
    with pytest.raises(ddb.exceptions.TransactionCanceledException):
        ddb.transact_write_items(TransactItems=[overwrite, update, add, refused])

    def held() -> list[dict[str, object]]:
        return ddb.query(
            TableName=table,
            KeyConditionExpression="PK = :pk",
            ExpressionAttributeValues={":pk": {"S": "T#undo"}},
        )["Items"]

    assert held() == [
        {**key, "SK": {"S": "A"}, "v": {"S": "old"}},
        {**key, "SK": {"S": "B"}, "n": {"N": "1"}},
    ]
    ddb.transact_write_items(TransactItems=[overwrite, update, add])
    assert [i.get("v", i.get("n")) for i in held()] == [{"S": "new"}, {"N": "2"}, None]
    assert table_copies == []


# -- service limits (local/aws_limits.py): what AWS refuses, the local moto refuses too ------------


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_ssm_value_size_follows_the_tier(inproc_stack: LocalStack) -> None:
    ssm = aws.ssm()
    name = f"{get_settings().ssm_prefix}/limits/standard"
    token_sized = "x" * 4097  # a credential holding a real access token is bigger than 4 KB
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value=token_sized, Type="SecureString", Tier="Standard")
    assert _code(exc) == "ValidationException"
    assert "4096 characters" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:  # no tier given: the default tier, Standard
        ssm.put_parameter(Name=name, Value=token_sized, Type="SecureString")
    assert _code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="x" * 8193, Type="SecureString", Tier="Advanced")
    assert _code(exc) == "ValidationException"
    put = ssm.put_parameter(Name=name, Value="x" * 4096, Type="SecureString", Tier="Standard")
    assert put["Tier"] == "Standard"
    # Intelligent-Tiering takes the smallest tier that fits, and says which
    put = ssm.put_parameter(
        Name=name, Value=token_sized, Type="SecureString", Tier="Intelligent-Tiering", Overwrite=True
    )
    assert put["Tier"] == "Advanced"
    small = ssm.put_parameter(
        Name=name + "-small", Value="v", Type="SecureString", Tier="Intelligent-Tiering"
    )
    assert small["Tier"] == "Standard"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("/calbot/has space", "ValidationException"),
        ("/calbot/colon:x", "ValidationException"),
        ("/calbot/é", "ValidationException"),
        ("/" + "/".join(f"l{i}" for i in range(16)), "HierarchyLevelLimitExceededException"),
        ("/calbot/" + "n" * 1000, "ValidationException"),
        ("ssmPrefixed", "ValidationException"),  # moto's own check, kept
    ],
)
def test_ssm_parameter_name_rules(inproc_stack: LocalStack, name: str, code: str) -> None:
    with pytest.raises(ClientError) as exc:
        aws.ssm().put_parameter(Name=name, Value="v", Type="String")
    assert _code(exc) == code


def test_ssm_names_at_the_limits_are_accepted(inproc_stack: LocalStack) -> None:
    fifteen = "/" + "/".join(f"d{i}" for i in range(15))
    aws.ssm().put_parameter(Name=fifteen, Value="v", Type="String")
    assert aws.ssm().get_parameter(Name=fifteen)["Parameter"]["Value"] == "v"


def _ddb_key(pk: str, sk: str = "S") -> dict:
    return {"PK": {"S": pk}, "SK": {"S": sk}}


@pytest.mark.parametrize("call", ["put", "get", "update", "delete", "transact"])
def test_dynamodb_key_sizes_are_counted_in_utf8_bytes(inproc_stack: LocalStack, call: str) -> None:
    ddb, table = aws.dynamodb(), get_settings().table_name
    too_long = "é" * 1025  # 1,025 characters, 2,050 bytes
    key = _ddb_key(too_long)
    calls = {
        "put": lambda: ddb.put_item(TableName=table, Item=key),
        "get": lambda: ddb.get_item(TableName=table, Key=key),
        "update": lambda: ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET a = :a",
            ExpressionAttributeValues={":a": {"S": "x"}},
        ),
        "delete": lambda: ddb.delete_item(TableName=table, Key=key),
        "transact": lambda: ddb.transact_write_items(
            TransactItems=[{"Delete": {"TableName": table, "Key": key}}]
        ),
    }
    with pytest.raises(ClientError) as exc:
        calls[call]()
    assert _code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:  # the sort key's limit is 1,024 bytes
        ddb.get_item(TableName=table, Key=_ddb_key("T#sk", "é" * 513))
    assert _code(exc) == "ValidationException"
    ddb.put_item(TableName=table, Item=_ddb_key("p" * 2048, "s" * 1024))  # exactly at the limits


def test_dynamodb_transaction_limits(inproc_stack: LocalStack) -> None:
    ddb, table = aws.dynamodb(), get_settings().table_name
    many = [{"Put": {"TableName": table, "Item": _ddb_key(f"T#many{i}")}} for i in range(101)]
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=many)
    assert _code(exc) == "ValidationException"
    big = [
        {"Put": {"TableName": table, "Item": {**_ddb_key(f"T#big{i}"), "v": {"S": "x" * 350_000}}}}
        for i in range(12)
    ]
    with pytest.raises(ClientError) as exc:  # 12 items of 350 KB: over 4 MB
        ddb.transact_write_items(TransactItems=big)
    assert _code(exc) == "ValidationException"
    assert ddb.get_item(TableName=table, Key=_ddb_key("T#big0")).get("Item") is None
    with pytest.raises(ClientError) as exc:
        ddb.put_item(TableName=table, Item={**_ddb_key("T#huge"), "v": {"S": "x" * 410_000}})
    assert _code(exc) == "ValidationException"


def test_a_transaction_retried_with_its_client_request_token_is_applied_once(
    inproc_stack: LocalStack,
) -> None:
    ddb, table = aws.dynamodb(), get_settings().table_name
    bump = [
        {
            "Update": {
                "TableName": table,
                "Key": _ddb_key("T#token"),
                "UpdateExpression": "ADD n :one",
                "ExpressionAttributeValues": {":one": {"N": "1"}},
            }
        }
    ]
    ddb.transact_write_items(TransactItems=bump, ClientRequestToken="retry-me-1")
    ddb.transact_write_items(TransactItems=bump, ClientRequestToken="retry-me-1")  # a retry: success
    assert ddb.get_item(TableName=table, Key=_ddb_key("T#token"))["Item"]["n"] == {"N": "1"}
    ddb.transact_write_items(TransactItems=bump, ClientRequestToken="another-request")
    assert ddb.get_item(TableName=table, Key=_ddb_key("T#token"))["Item"]["n"] == {"N": "2"}
    other = [{"Put": {"TableName": table, "Item": _ddb_key("T#token2")}}]
    with pytest.raises(ClientError) as exc:  # the same token with other parameters
        ddb.transact_write_items(TransactItems=other, ClientRequestToken="retry-me-1")
    assert _code(exc) == "IdempotentParameterMismatchException"
    with pytest.raises(ClientError) as exc:  # tokens are 1-36 characters
        ddb.transact_write_items(TransactItems=other, ClientRequestToken="t" * 37)
    assert _code(exc) == "ValidationException"


def _queue(name: str, **attributes: str) -> str:
    return aws.sqs().create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def test_sqs_message_size_counts_bytes_and_attributes(inproc_stack: LocalStack) -> None:
    sqs = aws.sqs()
    url = _queue("limits-256k", MaximumMessageSize="262144")
    with pytest.raises(ClientError) as exc:  # 200 KB of body + 70 KB of attributes
        sqs.send_message(
            QueueUrl=url,
            MessageBody="b" * 200_000,
            MessageAttributes={"extra": {"DataType": "String", "StringValue": "a" * 70_000}},
        )
    assert "262144 bytes" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError):  # 150,000 characters, 300,000 bytes
        sqs.send_message(QueueUrl=url, MessageBody="é" * 150_000)
    with pytest.raises(ClientError):
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "é" * 150_000}])
    sqs.send_message(QueueUrl=url, MessageBody="b" * 262_000)
    default = _queue("limits-default")  # SQS's default (and maximum) is now 1 MiB
    with pytest.raises(ClientError):
        sqs.send_message(QueueUrl=default, MessageBody="é" * 600_000)


def test_sqs_fifo_ids_are_at_most_128_characters(inproc_stack: LocalStack) -> None:
    sqs = aws.sqs()
    url = _queue("limits.fifo", FifoQueue="true")
    for field in ("MessageGroupId", "MessageDeduplicationId"):
        ids = {"MessageGroupId": "g", "MessageDeduplicationId": "d", field: "x" * 129}
        with pytest.raises(ClientError) as exc:
            sqs.send_message(QueueUrl=url, MessageBody="m", **ids)
        assert field in exc.value.response["Error"]["Message"]
        with pytest.raises(ClientError):
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "m", **ids}])
    sqs.send_message(
        QueueUrl=url, MessageBody="m", MessageGroupId="g" * 128, MessageDeduplicationId="d" * 128
    )


@pytest.mark.parametrize("name", ["", "has space", "slash/name", "x" * 65, "colon:name"])
def test_scheduler_names_follow_aws_rules(inproc_stack: LocalStack, name: str) -> None:
    scheduler = aws.scheduler()
    settings = get_settings()
    definition = {
        "ScheduleExpression": "at(2030-01-01T00:00:00)",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": {
            "Arn": "arn:aws:lambda:us-east-1:123456789012:function:f",
            "RoleArn": settings.scheduler_role_arn,
        },
    }
    with pytest.raises((ClientError, ParamValidationError)):
        scheduler.create_schedule(Name=name, GroupName=settings.schedule_group, **definition)
    with pytest.raises((ClientError, ParamValidationError)):
        scheduler.create_schedule_group(Name=name)
    if name and len(name) <= 64 and "/" not in name:  # reaches the service: its ValidationException
        with pytest.raises(ClientError) as exc:
            scheduler.create_schedule(Name=name, GroupName=settings.schedule_group, **definition)
        assert _code(exc) == "ValidationException"
    ok = f"launch-{'a' * 57}"  # 64 characters
    scheduler.create_schedule(Name=ok, GroupName=settings.schedule_group, **definition)
    scheduler.delete_schedule(Name=ok, GroupName=settings.schedule_group)


def test_a_credential_with_real_sized_tokens_is_stored(inproc_stack: LocalStack) -> None:
    from calbot import vault
    from calbot.models import Credentials

    # Microsoft access tokens are JWTs of 1.5-4 KB, refresh tokens about 1-2 KB: together over the
    # Standard tier's 4 KB. The access token never goes to SSM (it is cached, encrypted, in DynamoDB):
    # one Intelligent-Tiering parameter that stays Standard.
    creds = Credentials(
        provider="outlook",
        client_id="c" * 36,
        client_secret="s" * 40,
        refresh_token="r" * 1800,
        access_token="a" * 3000,
    )
    path = vault.credential_path("u-vault", "outlook", "big@contoso.example")
    vault.put(path, creds)
    stored = vault.get(path)
    assert stored is not None and stored.access_token == creds.access_token
    names = [path, path + vault.LEGACY_ACCESS_SUFFIX]
    described = aws.ssm().describe_parameters(ParameterFilters=[{"Key": "Name", "Values": names}])
    assert [(p["Name"], p["Tier"]) for p in described["Parameters"]] == [(path, "Standard")]
