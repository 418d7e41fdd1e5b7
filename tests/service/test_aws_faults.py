"""AWS faults as knobs (local/aws_limits.py, /_local/aws/faults): each knob answers the error AWS would,
in AWS's shape, and the store survives the ones it must (TransactionConflict on a single-item write, a
transaction whose answer was lost after its commit)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from calbot import aws, store
from calbot.config import get_settings
from calbot.models import AutoScheduleSettings, ScheduledBot
from local.stack import LocalStack


@pytest.fixture
def faults(inproc_stack: LocalStack) -> Iterator[Any]:
    url = f"{inproc_stack.info['control_url']}/aws/faults"

    def add(**rule: Any) -> dict[str, Any]:
        resp = requests.post(url, json=rule, timeout=10)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    add.url = url  # type: ignore[attr-defined]
    yield add
    requests.delete(url, timeout=10)


def raw(service: str) -> Any:
    """A client that does not retry, to see each answer as AWS gives it."""
    return boto3.client(service, config=Config(retries={"total_max_attempts": 1}))


def error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    resp = exc.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"], resp["Error"].get("Message", "")


def _key(pk: str) -> dict[str, Any]:
    return {"PK": {"S": pk}, "SK": {"S": "A"}}


def test_transaction_conflict_has_aws_shape_for_single_writes_and_transactions(faults: Any) -> None:
    table = get_settings().table_name
    faults(service="dynamodb", error="TransactionConflict")
    ddb = raw("dynamodb")
    with pytest.raises(ClientError) as exc:
        ddb.put_item(TableName=table, Item=_key("F#single"))
    assert error(exc) == (400, "TransactionConflictException", "Transaction is ongoing for the item")
    with pytest.raises(ClientError) as exc:
        ddb.update_item(
            TableName=table,
            Key=_key("F#single"),
            UpdateExpression="SET a = :a",
            ExpressionAttributeValues={":a": {"N": "1"}},
        )
    assert error(exc)[1] == "TransactionConflictException"
    items = [{"Put": {"TableName": table, "Item": _key(f"F#tx{i}")}} for i in range(2)]
    with pytest.raises(ClientError) as exc:
        ddb.transact_write_items(TransactItems=items)
    status, code, message = error(exc)
    assert (status, code) == (400, "TransactionCanceledException")
    assert [r["Code"] for r in exc.value.response["CancellationReasons"]] == ["TransactionConflict", "None"]
    assert "[TransactionConflict, None]" in message
    assert ddb.get_item(TableName=table, Key=_key("F#tx0")).get("Item") is None  # reads are untouched


@pytest.mark.parametrize(
    ("service", "err", "call", "status"),
    [
        ("dynamodb", "ThrottlingException", lambda: raw("dynamodb").list_tables(), 400),
        ("dynamodb", "ProvisionedThroughputExceededException", lambda: raw("dynamodb").list_tables(), 400),
        ("ssm", "ThrottlingException", lambda: raw("ssm").describe_parameters(MaxResults=1), 400),
        ("scheduler", "ThrottlingException", lambda: raw("scheduler").list_schedules(), 429),
        ("sqs", "InternalError", lambda: raw("sqs").list_queues(), 500),
    ],
)
def test_each_knob_answers_the_aws_error(faults: Any, service: str, err: str, call: Any, status: int) -> None:
    rule = faults(service=service, error=err, times=1)
    with pytest.raises(ClientError) as exc:
        call()
    got_status, code, message = error(exc)
    assert (got_status, code) == (status, err)
    if err == "ThrottlingException" and service != "dynamodb":
        assert message == "Rate exceeded"
    call()  # `times: 1`: the next call goes through
    listed = requests.get(faults.url, timeout=10).json()["value"]
    assert [(r["id"], r["hits"]) for r in listed] == [(rule["id"], 1)]


def test_sqs_sends_fail_and_receives_do_not(faults: Any) -> None:
    sqs = raw("sqs")
    url = sqs.create_queue(QueueName="faults-send")["QueueUrl"]
    faults(service="sqs", error="InternalError", operations=["SendMessage", "SendMessageBatch"])
    with pytest.raises(ClientError) as exc:
        sqs.send_message(QueueUrl=url, MessageBody="m")
    assert error(exc)[:2] == (500, "InternalError")
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None


def test_a_share_fails_about_that_share_and_the_stacks_own_calls_are_spared(
    faults: Any, inproc_stack: LocalStack
) -> None:
    faults(service="ssm", error="ThrottlingException", share=0.3, seed=7)
    ssm = raw("ssm")
    failed = 0
    for _ in range(200):
        try:
            ssm.describe_parameters(MaxResults=1)
        except ClientError:
            failed += 1
    assert 30 <= failed <= 90  # seeded: deterministic for one thread
    spared = boto3.session.Session()
    from local.aws_limits import LOCAL_USER_AGENT

    own = spared.client(
        "ssm", config=Config(user_agent_extra=LOCAL_USER_AGENT, retries={"total_max_attempts": 1})
    )
    for _ in range(20):
        own.describe_parameters(MaxResults=1)


def test_bad_rules_are_refused(faults: Any) -> None:
    for rule in (
        {"service": "s3", "error": "ThrottlingException"},
        {"service": "ssm", "error": "TransactionConflict"},
        {"service": "ssm", "error": "ThrottlingException", "share": 0},
        {"service": "ssm", "error": "ThrottlingException", "times": 0},
        {"service": "ssm", "error": "ThrottlingException", "colour": "red"},
    ):
        assert requests.post(faults.url, json=rule, timeout=10).status_code == 400


# -- the store under these faults ------------------------------------------------------------------


def test_the_store_retries_a_single_write_that_meets_a_transaction(faults: Any) -> None:
    user_id = f"u-{uuid.uuid4().hex[:8]}"
    rule = faults(service="dynamodb", error="TransactionConflict", operations=["PutItem"], times=2)
    now = datetime.now(UTC).replace(microsecond=0)
    store.put_auto_settings(AutoScheduleSettings(user_id=user_id, enabled=True, updated_at=now))
    assert store.get_auto_settings(user_id) is not None
    listed = requests.get(faults.url, timeout=10).json()["value"]
    assert [r["hits"] for r in listed if r["id"] == rule["id"]] == [2]


def test_a_failed_condition_is_not_retried(faults: Any) -> None:
    name = f"faults-{uuid.uuid4().hex[:8]}"
    token = store.acquire_lock(name)
    with pytest.raises(store.LockBusy):
        store.acquire_lock(name)
    store.release_lock(name, token)


def _bot(user_id: str) -> ScheduledBot:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now + timedelta(days=1)
    bot_id = f"bot_{uuid.uuid4().hex[:12]}"
    return ScheduledBot(
        bot_id=bot_id,
        user_id=user_id,
        event_id="evt_faults",
        series_key="evt_faults",
        provider="outlook",
        account_id="faults@contoso.example",
        meeting_url="https://acme.zoom.us/j/1234567890",
        occurrence_start=start,
        meeting_end=start + timedelta(hours=1),
        scheduled_join_time=start - timedelta(minutes=1),
        dedup_key=f"zoom:{bot_id}",
        created_at=now,
        updated_at=now,
    )


def test_every_attempt_of_one_transaction_carries_one_client_request_token(faults: Any) -> None:
    tokens: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        tokens.append(json.loads(params["body"])["ClientRequestToken"])

    events = aws.dynamodb().meta.events
    events.register("before-call.dynamodb.TransactWriteItems", record)
    try:
        pair = _pair()
        faults(service="dynamodb", error="TransactionConflict", operations=["TransactWriteItems"], times=2)
        _write_pair(pair)
    finally:
        events.unregister("before-call.dynamodb.TransactWriteItems", record)
    assert len(tokens) == 3 and len(set(tokens)) == 1
    _assert_written(pair)


def _pair() -> list[str]:
    """The keys of two new items one transaction writes, each only where none exists (as a webhook and
    its user's counter are)."""
    return [f"TXN#{uuid.uuid4().hex}" for _ in range(2)]


def _write_pair(pair: list[str]) -> None:
    from calbot.store import base

    class Refused(Exception):
        pass

    base.transact_write(
        [
            {
                "Put": {
                    "TableName": get_settings().table_name,
                    "Item": _key(pk),
                    "ConditionExpression": "attribute_not_exists(PK)",
                }
            }
            for pk in pair
        ],
        on_condition=[Refused, Refused],
    )


def _assert_written(pair: list[str]) -> None:
    for pk in pair:
        assert aws.dynamodb().get_item(TableName=get_settings().table_name, Key=_key(pk)).get("Item")


def _cancelled(bot: ScheduledBot) -> ScheduledBot:
    return bot.model_copy(update={"status": "Cancelled", "reason": "user_cancelled"})


def _assert_cancelled(bot: ScheduledBot) -> None:
    stored = store.get_bot(bot.user_id, bot.bot_id)
    assert stored is not None and stored.status == "Cancelled"
    assert store.dedup_owner(bot.user_id, bot.dedup_key) is None


def test_a_transaction_whose_answer_was_lost_after_the_commit_is_not_applied_twice(faults: Any) -> None:
    # DynamoDB answers 500 once the transaction is committed; botocore retries it with the same
    # ClientRequestToken, which DynamoDB (and now the local moto) answers with success, not a
    # ConditionalCheckFailed on the items the first attempt wrote.
    pair = _pair()
    faults(
        service="dynamodb",
        error="InternalServerError",
        operations=["TransactWriteItems"],
        times=1,
        after=True,
    )
    _write_pair(pair)  # its conditions, checked again, would refuse it
    _assert_written(pair)


@pytest.mark.parametrize("lost", [1, 2], ids=["the guard's put", "the bot's put"])
def test_a_created_bot_whose_put_answer_was_lost_is_created_once(faults: Any, lost: int) -> None:
    # The guard and the bot are two conditional PutItems (no ClientRequestToken). botocore retries the
    # 500 DynamoDB answers after applying one; the retry fails its own attribute_not_exists, and the
    # refusal's stored item (ReturnValuesOnConditionCheckFailure) is this very write: created, not
    # AlreadyScheduled naming itself with a guard and no bot.
    bot = _bot(f"u-{uuid.uuid4().hex[:8]}")
    puts = {"calls": 0, "sent": 0}

    def lose_answer(**_: Any) -> None:
        puts["calls"] += 1
        if puts["calls"] == lost:  # this PutItem is applied, then answered with a 500
            faults(
                service="dynamodb", error="InternalServerError", operations=["PutItem"], times=1, after=True
            )

    def sent(**_: Any) -> None:
        puts["sent"] += 1

    events = aws.dynamodb().meta.events
    events.register("before-call.dynamodb.PutItem", lose_answer)
    events.register("before-send.dynamodb.PutItem", sent)
    try:
        store.create_bot(bot)
    finally:
        events.unregister("before-call.dynamodb.PutItem", lose_answer)
        events.unregister("before-send.dynamodb.PutItem", sent)
    assert puts == {"calls": 2, "sent": 3}  # the guard, the bot, and botocore's retry of the lost one
    assert store.get_bot(bot.user_id, bot.bot_id) == bot
    assert store.dedup_owner(bot.user_id, bot.dedup_key) == bot.bot_id


def test_a_launch_claim_whose_answer_was_lost_is_still_the_claimers(faults: Any) -> None:
    # Scheduled -> Launching is one conditional PutItem. Its answer lost after the write, botocore's retry
    # meets status Launching: without the stored-item check the claimer would take it for a rival's
    # claim (BotChanged) and drop a launch nobody else holds.
    bot = _bot(f"u-{uuid.uuid4().hex[:8]}")
    store.create_bot(bot)
    claimed = bot.model_copy(update={"status": "Launching", "launch_claim": "c1", "launch_attempts": 1})
    faults(service="dynamodb", error="InternalServerError", operations=["PutItem"], times=1, after=True)
    store.save_bot(claimed, expect_status="Scheduled")
    assert store.get_bot(bot.user_id, bot.bot_id) == claimed
    # a rival's claim on the same bot is still refused: the stored item is not its own
    rival = claimed.model_copy(update={"launch_claim": "c2"})
    with pytest.raises(store.BotChanged):
        store.save_bot(rival, expect_status="Scheduled")
    assert store.get_bot(bot.user_id, bot.bot_id) == claimed


def test_a_single_bot_save_is_one_put_not_a_transaction(faults: Any) -> None:
    # A one-item transaction bills its item twice: a bot saved alone is a conditional PutItem.
    ops: list[str] = []

    def record(model: Any, **_: Any) -> None:
        ops.append(model.name)

    bot = _bot(f"u-{uuid.uuid4().hex[:8]}")
    store.create_bot(bot)
    events = aws.dynamodb().meta.events
    events.register("before-parameter-build.dynamodb", record)
    try:
        store.save_bot(bot.model_copy(update={"title": "Renamed"}), expect_status="Scheduled")
        store.save_bot(_cancelled(bot), expect_status="Scheduled", release_guard=True)
    finally:
        events.unregister("before-parameter-build.dynamodb", record)
    # a cancel too: the bot's save, then its guard's release (store.bots: cut off between them, the
    # guard names a Cancelled bot and holds nothing)
    assert ops == ["PutItem", "PutItem", "DeleteItem"]
    _assert_cancelled(bot)
