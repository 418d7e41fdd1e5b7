"""The local AWS's limit rules and fault rules (local/aws_limits.py), without a server."""

from __future__ import annotations

from typing import Any

import pytest

from local.aws_limits import (
    AwsFaults,
    FaultError,
    _service_and_operation,
    ddb_item_size,
    sqs_message_size,
    ssm_name_error,
    ssm_tier_for,
)

ACCOUNT, REGION = "123456789012", "us-east-1"


def test_ssm_name_length_counts_the_arn_before_the_name() -> None:
    prefix = len(f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/")
    fits = "/" + "n" * (1011 - prefix)
    assert ssm_name_error(fits, ACCOUNT, REGION) is None
    assert ssm_name_error(fits + "n", ACCOUNT, REGION) is not None


def test_ssm_hierarchy_depth() -> None:
    assert ssm_name_error("/" + "/".join("abcdefghijklmno"), ACCOUNT, REGION) is None  # 15 levels
    code, _ = ssm_name_error("/" + "/".join("abcdefghijklmnop"), ACCOUNT, REGION) or ("", "")
    assert code == "HierarchyLevelLimitExceededException"


def test_ssm_tiers() -> None:
    assert ssm_tier_for("x" * 4096, "Standard") == ("Standard", None)
    assert ssm_tier_for("x" * 4097, "Standard")[1]
    assert ssm_tier_for("x" * 4097, "Intelligent-Tiering") == ("Advanced", None)
    assert ssm_tier_for("x" * 8192, "Advanced") == ("Advanced", None)
    assert ssm_tier_for("x" * 8193, "Intelligent-Tiering")[1]


def test_dynamodb_sizes_follow_aws_rules() -> None:
    assert ddb_item_size({"PK": {"S": "é"}}) == 2 + 2
    assert ddb_item_size({"n": {"N": "123"}}) == 1 + 3  # (3 significant digits + 1) / 2 + 1
    assert ddb_item_size({"m": {"M": {"a": {"BOOL": True}}}}) == 1 + 3 + (1 + 1 + 1)


def test_sqs_size_counts_attributes() -> None:
    attrs = {"k": {"DataType": "String", "StringValue": "vv"}}
    assert sqs_message_size("é", attrs) == 2 + 1 + 6 + 2


def test_fault_rules_count_and_share() -> None:
    faults = AwsFaults()
    faults.add(service="dynamodb", error="TransactionConflict", times=2)
    assert faults.draw("dynamodb", "GetItem") is None  # a conflict only meets writes
    assert faults.draw("dynamodb", "PutItem") is not None
    assert faults.draw("dynamodb", "TransactWriteItems") is not None
    assert faults.draw("dynamodb", "PutItem") is None  # `times` spent
    faults.clear()
    faults.add(service="ssm", error="ThrottlingException", share=0.25, seed=3)
    hits = sum(faults.draw("ssm", "GetParameter") is not None for _ in range(2000))
    assert 400 <= hits <= 600
    with pytest.raises(FaultError):
        faults.add(service="ssm", error="TransactionConflict")


def test_ssm_throughput_quota_lets_tps_calls_a_second_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """SSM's one quota covers GetParameter, GetParameters and PutParameter: past it, ThrottlingException."""
    from local import aws_limits

    clock = [1000.0]
    monkeypatch.setattr(aws_limits.time, "monotonic", lambda: clock[0])
    faults = AwsFaults()
    rule = faults.add(service="ssm", error="ThrottlingException", tps=40)
    assert rule.operations == ["GetParameter", "GetParameters", "PutParameter"]
    passed = sum(faults.draw("ssm", op) is None for op in ["GetParameter", "PutParameter"] * 50)
    assert passed == 40  # one second's worth, then every call fails
    assert faults.draw("ssm", "DeleteParameter") is None  # not under that quota
    clock[0] += 0.5
    assert sum(faults.draw("ssm", "GetParameters") is None for _ in range(100)) == 20
    with pytest.raises(FaultError):
        faults.add(service="ssm", error="ThrottlingException", tps=0)


def test_calls_are_recognised_by_service_and_operation() -> None:
    auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{}/aws4_request, SignedHeaders=host"
    ddb = {"HTTP_AUTHORIZATION": auth.format("dynamodb"), "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem"}
    assert _service_and_operation(ddb) == ("dynamodb", "PutItem")
    sched = {
        "HTTP_AUTHORIZATION": auth.format("scheduler"),
        "PATH_INFO": "/schedules/x",
        "REQUEST_METHOD": "POST",
    }
    assert _service_and_operation(sched) == ("scheduler", "CreateSchedule")
    listing = {**sched, "PATH_INFO": "/schedules", "REQUEST_METHOD": "GET"}
    assert _service_and_operation(listing) == ("scheduler", "ListSchedules")


def test_index_projections_name_at_most_20_attributes_each_and_100_per_table() -> None:
    from moto.dynamodb.exceptions import MockValidationException

    from local.aws_limits import check_index_projections

    def index(n: int, count: int) -> dict:
        names = [f"a{n}_{i}" for i in range(count)]
        return {"IndexName": f"I{n}", "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": names}}

    check_index_projections([index(n, 20) for n in range(5)])  # 100 in all: accepted
    with pytest.raises(MockValidationException):
        check_index_projections([index(0, 21)])
    with pytest.raises(MockValidationException):
        check_index_projections([index(n, 17) for n in range(6)])  # 102 in all


def test_scheduler_lists_while_other_threads_create_and_delete() -> None:
    """moto keeps schedules in plain dicts: without the local stack's lock a ListSchedules racing a
    DeleteSchedule failed with "dictionary changed size during iteration" (a 500 AWS never gives).
    The backend is called directly (a private instance, no botocore): the race under test is its own."""
    import sys
    import threading

    from moto.scheduler.models import EventBridgeSchedulerBackend

    from local.aws_limits import install_limits

    install_limits()
    backend = EventBridgeSchedulerBackend(REGION, ACCOUNT)
    target = {
        "Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f",
        "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/r",
    }
    errors: list[BaseException] = []

    def churn(worker: int) -> None:
        try:
            for n in range(400):
                name = f"w{worker}-{n}"
                backend.create_schedule(
                    description=None,
                    end_date=None,
                    flexible_time_window={"Mode": "OFF"},
                    group_name=None,
                    kms_key_arn=None,
                    name=name,
                    schedule_expression="at(2030-01-01T00:00:00)",
                    schedule_expression_timezone=None,
                    start_date=None,
                    state=None,
                    target=target,
                    action_after_completion=None,
                )
                if n % 2:
                    backend.delete_schedule(None, name)
        except BaseException as exc:
            errors.append(exc)

    def lister() -> None:
        try:
            for _ in range(400):
                backend.list_schedules(None, None)
        except BaseException as exc:
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: the race shows within the test
    try:
        threads = [threading.Thread(target=churn, args=(w,)) for w in range(3)]
        threads += [threading.Thread(target=lister) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert not errors, errors[:3]
    assert len(backend.schedule_groups["default"].schedules) == 3 * 200


def test_scheduler_refuses_a_schedule_past_the_number_of_schedules_quota(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scheduler's "Number of schedules" quota (default 10,000,000 an account and Region): a
    CreateSchedule past it is ServiceQuotaExceededException with HTTP 402 (botocore's model), which
    moto never answered. An update of an existing schedule, or a create once one is deleted, passes.
    scheduler_standing() keeps the high-water mark bench/day.py holds against the quota."""
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    from local.aws_limits import (
        SCHEDULER_MAX_SCHEDULES_DEFAULT,
        install_limits,
        reset_scheduler_peak,
        scheduler_max_schedules,
        scheduler_standing,
    )

    install_limits()
    monkeypatch.delenv("LOCAL_SCHEDULER_MAX_SCHEDULES", raising=False)
    assert scheduler_max_schedules() == SCHEDULER_MAX_SCHEDULES_DEFAULT == 10_000_000
    # moto's backends are process-wide: no reset (the session's in-process stack keeps its data there,
    # tests/unit/conftest.py moto_beside_the_stack), and a Region of this test's own (the quota and the
    # mark are per account and Region).
    region = "eu-west-3"
    mock = mock_aws()
    mock.start(reset=False)
    client = boto3.client("scheduler", region_name=region)
    try:
        assert reset_scheduler_peak(region) == 0
        monkeypatch.setenv("LOCAL_SCHEDULER_MAX_SCHEDULES", "3")

        def put(name: str, update: bool = False) -> None:
            (client.update_schedule if update else client.create_schedule)(
                Name=name,
                ScheduleExpression="at(2030-01-01T00:00:00)",
                FlexibleTimeWindow={"Mode": "OFF"},
                Target={
                    "Arn": f"arn:aws:lambda:{region}:{ACCOUNT}:function:f",
                    "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/r",
                },
            )

        for n in range(3):
            put(f"s{n}")
        with pytest.raises(ClientError) as refused:
            put("s3")
        assert refused.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
        assert "3 schedules" in refused.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as conflict:  # an existing name is a conflict, not the quota
            put("s0")
        assert conflict.value.response["Error"]["Code"] == "ConflictException"
        put("s0", update=True)  # an update creates nothing
        assert scheduler_standing(region) == (3, 3)
        client.delete_schedule(Name="s1")
        client.delete_schedule(Name="s2")
        put("s4")
        assert scheduler_standing(region) == (2, 3)  # two now, three at most
        assert reset_scheduler_peak(region) == 2
    finally:
        monkeypatch.delenv("LOCAL_SCHEDULER_MAX_SCHEDULES")
        for name in ("s0", "s3", "s4"):
            try:
                client.delete_schedule(Name=name)
            except client.exceptions.ResourceNotFoundException:
                pass
        mock.stop(remove_data=False)


def test_filter_attribute_names_resolves_placeholders_and_skips_values_and_functions() -> None:
    from local.aws_limits import filter_attribute_names

    names = filter_attribute_names(
        "#s IN (:a, :b) AND begins_with(title, :t) AND size(tags[0]) > :n AND NOT attribute_exists(x.y)",
        {"#s": "status"},
    )
    assert names == {"status", "title", "tags", "x"}


def test_a_query_filter_naming_a_key_of_what_it_queries_is_refused(
    sped_up_moto_env: None, moto_beside_the_stack: Any
) -> None:
    """As DynamoDB: "Filter Expression can only contain non-primary key attributes" (the queried
    index's keys, or the table's on a table query); moto accepted it."""
    from botocore.exceptions import ClientError

    from local.aws_limits import install_limits

    install_limits()
    ddb = moto_beside_the_stack
    ddb.create_table(
        TableName="filters",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("PK", "SK", "G1", "G1S")],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [
                    {"AttributeName": "G1", "KeyType": "HASH"},
                    {"AttributeName": "G1S", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    item = {"PK": {"S": "p"}, "SK": {"S": "s"}, "G1": {"S": "g"}, "G1S": {"S": "2026"}, "title": {"S": "t"}}
    ddb.put_item(TableName="filters", Item=item)
    on_index = {"TableName": "filters", "IndexName": "GSI1", "KeyConditionExpression": "G1 = :g"}

    def query(**kwargs: Any) -> list[Any]:
        return ddb.query(**kwargs)["Items"]

    for expression, names in (("G1S >= :v", {}), ("#k >= :v", {"#k": "G1S"})):
        with pytest.raises(ClientError) as refused:
            query(
                **on_index,
                FilterExpression=expression,
                ExpressionAttributeValues={":g": {"S": "g"}, ":v": {"S": "2000"}},
                **({"ExpressionAttributeNames": names} if names else {}),
            )
        assert refused.value.response["Error"]["Code"] == "ValidationException"
        assert "Primary key attribute: G1S" in refused.value.response["Error"]["Message"]
    values = {":g": {"S": "g"}, ":v": {"S": "t"}}  # a non-key attribute is a fine filter
    assert len(query(**on_index, FilterExpression="title = :v", ExpressionAttributeValues=values)) == 1
    with pytest.raises(ClientError, match="Primary key attribute: SK"):
        query(
            TableName="filters",
            KeyConditionExpression="PK = :p",
            FilterExpression="SK = :s",
            ExpressionAttributeValues={":p": {"S": "p"}, ":s": {"S": "s"}},
        )


def test_a_between_whose_lower_bound_is_above_its_upper_is_refused(
    sped_up_moto_env: None, moto_beside_the_stack: Any
) -> None:
    """As DynamoDB (ValidationException at parse time); moto answered no items."""
    from botocore.exceptions import ClientError

    from local.aws_limits import install_limits

    install_limits()
    ddb = moto_beside_the_stack
    ddb.create_table(
        TableName="between",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("PK", "SK")],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
    )
    ddb.put_item(TableName="between", Item={"PK": {"S": "p"}, "SK": {"S": "b"}})

    def query(lo: str, hi: str) -> list[Any]:
        return ddb.query(
            TableName="between",
            KeyConditionExpression="PK = :p AND SK between :lo AND :hi",
            ExpressionAttributeValues={":p": {"S": "p"}, ":lo": {"S": lo}, ":hi": {"S": hi}},
        )["Items"]

    assert len(query("a", "c")) == 1 and len(query("b", "b")) == 1
    with pytest.raises(ClientError, match="BETWEEN operator requires upper bound"):
        query("c", "a")
