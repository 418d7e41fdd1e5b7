"""Per-function IAM on the local stack (local/iam_enforce.py): the evaluator, what each AWS call is
authorized as, and the enforcement on real boto3 clients (moto behind them)."""

from __future__ import annotations

import dataclasses
import io
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from local import iam_enforce
from local.iam_enforce import (
    ALLOW,
    EXPLICIT_DENY,
    IMPLICIT_DENY,
    AwsEnv,
    FunctionPolicies,
    acting_as,
    evaluate,
    requirements,
)
from local.template import load_template

ACCOUNT = "123456789012"
ENV = AwsEnv(region="us-east-1", account_id=ACCOUNT, table_hash_keys={"T": "PK"})
TABLE = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/T"


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


# -- the evaluator ---------------------------------------------------------------------------------


def test_action_and_resource_must_both_match() -> None:
    policy = _policy({"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": TABLE})
    assert evaluate([policy], "dynamodb:GetItem", TABLE) == ALLOW
    assert evaluate([policy], "dynamodb:Scan", TABLE) == IMPLICIT_DENY
    assert evaluate([policy], "dynamodb:GetItem", TABLE.replace("table/T", "table/Other")) == IMPLICIT_DENY
    # An index is its own resource: a table ARN does not cover it.
    assert evaluate([policy], "dynamodb:GetItem", f"{TABLE}/index/GSI1") == IMPLICIT_DENY


def test_wildcards_and_case_insensitive_actions() -> None:
    policy = _policy(
        {
            "Effect": "Allow",
            "Action": ["ssm:Get*", "SQS:sendmessage"],
            "Resource": "arn:aws:*:*:*:parameter/a/?/*",
        }
    )
    param = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/a/b/c/d"
    assert evaluate([policy], "ssm:GetParameter", param) == ALLOW
    assert evaluate([policy], "ssm:PutParameter", param) == IMPLICIT_DENY
    assert evaluate([policy], "ssm:GetParameter", param.replace("/a/b/", "/a/bb/")) == IMPLICIT_DENY
    assert evaluate([policy], "sqs:SendMessage", param) == ALLOW


def test_not_action_not_resource_and_explicit_deny_wins() -> None:
    policies = [
        _policy({"Effect": "Allow", "NotAction": "dynamodb:Scan", "Resource": "*"}),
        _policy({"Effect": "Deny", "Action": "dynamodb:DeleteItem", "NotResource": f"{TABLE}/index/*"}),
    ]
    assert evaluate(policies, "dynamodb:Query", TABLE) == ALLOW
    assert evaluate(policies, "dynamodb:Scan", TABLE) == IMPLICIT_DENY
    assert evaluate(policies, "dynamodb:DeleteItem", TABLE) == EXPLICIT_DENY


def test_leading_keys_condition() -> None:
    policy = _policy(
        {
            "Effect": "Allow",
            "Action": "dynamodb:UpdateItem",
            "Resource": TABLE,
            "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["RATE#*"]}},
        }
    )
    assert evaluate([policy], "dynamodb:UpdateItem", TABLE, {"dynamodb:LeadingKeys": ["RATE#k1"]}) == ALLOW
    assert (
        evaluate([policy], "dynamodb:UpdateItem", TABLE, {"dynamodb:LeadingKeys": ["USER#u1"]})
        == IMPLICIT_DENY
    )
    # A leading key this module could not work out makes the condition unprovable: no grant.
    unknown = {"dynamodb:LeadingKeys": iam_enforce.UNKNOWN}
    assert evaluate([policy], "dynamodb:UpdateItem", TABLE, unknown) == IMPLICIT_DENY


def test_unevaluable_conditions_are_conservative() -> None:
    odd = {"StringEquals": {"aws:SourceVpce": "vpce-1"}}
    allow = _policy({"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*", "Condition": odd})
    assert evaluate([allow], "ssm:GetParameter", "arn:x") == IMPLICIT_DENY
    deny = _policy({"Effect": "Deny", "Action": "ssm:*", "Resource": "*", "Condition": odd})
    everything = _policy({"Effect": "Allow", "Action": "*", "Resource": "*"})
    assert evaluate([everything, deny], "ssm:GetParameter", "arn:x") == EXPLICIT_DENY
    assert evaluate([everything, deny], "sqs:SendMessage", "arn:x") == ALLOW


def test_global_keys_of_the_principal_and_request(reader: iam_enforce.Principal) -> None:
    policy = _policy(
        {
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:PrincipalAccount": ACCOUNT, "aws:RequestedRegion": "us-east-1"}
            },
        }
    )
    principal = dataclasses.replace(reader, policies=(policy,))
    here = iam_enforce.requirements("ssm", "GetParameter", {"Name": "/x"}, ENV)[0]
    elsewhere = iam_enforce.requirements(
        "ssm", "GetParameter", {"Name": "/x"}, dataclasses.replace(ENV, region="eu-west-1")
    )[0]
    assert principal.decide(here) == ALLOW
    assert principal.decide(elsewhere) == IMPLICIT_DENY
    assert dataclasses.replace(principal, account_id="999999999999").decide(here) == IMPLICIT_DENY


def test_pass_role_condition() -> None:
    policy = _policy(
        {
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": "arn:aws:iam::*:role/*",
            "Condition": {"StringLike": {"iam:PassedToService": "scheduler.amazonaws.com"}},
        }
    )
    role = f"arn:aws:iam::{ACCOUNT}:role/r"
    assert (
        evaluate([policy], "iam:PassRole", role, {"iam:PassedToService": "scheduler.amazonaws.com"}) == ALLOW
    )
    assert (
        evaluate([policy], "iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"})
        == IMPLICIT_DENY
    )


# -- what AWS authorizes each call as --------------------------------------------------------------


def _pairs(service: str, op: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r.action, r.resource) for r in requirements(service, op, params, ENV)]


def test_dynamodb_requirements() -> None:
    query = {
        "TableName": "T",
        "IndexName": "GSI1",
        "KeyConditionExpression": "GSI1PK = :p",
        "ExpressionAttributeValues": {":p": {"S": "x"}},
    }
    assert _pairs("dynamodb", "Query", query) == [("dynamodb:Query", f"{TABLE}/index/GSI1")]
    assert _pairs("dynamodb", "Scan", {"TableName": "T"}) == [("dynamodb:Scan", TABLE)]
    # A transaction needs each contained action on each table (there is no TransactWriteItems action).
    transact = {
        "TransactItems": [
            {"Put": {"TableName": "T", "Item": {"PK": {"S": "USER#1"}, "SK": {"S": "A"}}}},
            {"Update": {"TableName": "T", "Key": {"PK": {"S": "USER#1"}, "SK": {"S": "B"}}}},
            {"Delete": {"TableName": "Other", "Key": {"PK": {"S": "X"}}}},
            {"ConditionCheck": {"TableName": "T", "Key": {"PK": {"S": "DEDUP#1"}, "SK": {"S": "D"}}}},
        ]
    }
    reqs = requirements("dynamodb", "TransactWriteItems", transact, ENV)
    assert [(r.action, r.resource) for r in reqs] == [
        ("dynamodb:PutItem", TABLE),
        ("dynamodb:UpdateItem", TABLE),
        ("dynamodb:DeleteItem", TABLE.replace("table/T", "table/Other")),
        ("dynamodb:ConditionCheckItem", TABLE),
    ]
    assert reqs[0].context["dynamodb:leadingkeys"] == ["USER#1"]
    assert reqs[0].context["dynamodb:enclosingoperation"] == "TransactWriteItems"
    update = requirements("dynamodb", "UpdateItem", {"TableName": "T", "Key": {"PK": {"S": "RATE#k"}}}, ENV)
    assert update[0].context["dynamodb:leadingkeys"] == ["RATE#k"]
    batch = {"RequestItems": {"T": {"Keys": [{"PK": {"S": "A"}}, {"PK": {"S": "B"}}]}}}
    assert _pairs("dynamodb", "BatchGetItem", batch) == [("dynamodb:BatchGetItem", TABLE)]


def test_ssm_sqs_scheduler_requirements() -> None:
    param = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter"
    assert _pairs("ssm", "PutParameter", {"Name": "/calbot/dev/users/u/x"}) == [
        ("ssm:PutParameter", f"{param}/calbot/dev/users/u/x")
    ]
    assert _pairs("ssm", "GetParametersByPath", {"Path": "/calbot/dev"}) == [
        ("ssm:GetParametersByPath", f"{param}/calbot/dev")
    ]
    url = f"http://127.0.0.1:5000/{ACCOUNT}/q.fifo"
    # Batch calls are authorized as their single-message action.
    assert _pairs("sqs", "SendMessageBatch", {"QueueUrl": url, "Entries": []}) == [
        ("sqs:SendMessage", f"arn:aws:sqs:us-east-1:{ACCOUNT}:q.fifo")
    ]
    role = f"arn:aws:iam::{ACCOUNT}:role/SchedulerRole"
    create = {"Name": "bot-1", "GroupName": "g", "Target": {"Arn": "arn:fn", "RoleArn": role}}
    assert _pairs("scheduler", "CreateSchedule", create) == [
        ("scheduler:CreateSchedule", f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule/g/bot-1"),
        ("iam:PassRole", role),
    ]
    assert _pairs("scheduler", "DeleteSchedule", {"Name": "bot-1"}) == [
        ("scheduler:DeleteSchedule", f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule/default/bot-1")
    ]


# -- enforcement on real clients -------------------------------------------------------------------

SMALL_TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  Reader:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Runtime: python3.12
      Policies:
        - Statement:
            - Effect: Allow
              Action: ssm:GetParameter
              Resource: !Sub "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/app/*"
"""


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    mock = mock_aws()
    mock.start(reset=False)  # moto's backends are process-wide; names here are unique
    try:
        yield
    finally:
        mock.stop(remove_data=False)


@pytest.fixture
def reader(tmp_path: Path) -> iam_enforce.Principal:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text("def handler(event, context):\n    return None\n")
    (tmp_path / "template.yaml").write_text(textwrap.dedent(SMALL_TEMPLATE))
    iam_enforce.install()
    return FunctionPolicies(load_template(tmp_path / "template.yaml")).principal("Reader")


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    response: Any = exc.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


def test_a_function_without_put_parameter_is_refused(aws: None, reader: iam_enforce.Principal) -> None:
    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/app/iam-test-a", Value="v", Type="String", Overwrite=True)  # no function: setup
    with acting_as(reader):
        assert ssm.get_parameter(Name="/app/iam-test-a")["Parameter"]["Value"] == "v"
        with pytest.raises(ClientError) as denied:
            ssm.put_parameter(Name="/app/iam-test-a", Value="changed", Type="String", Overwrite=True)
        with pytest.raises(ClientError) as elsewhere:
            ssm.get_parameter(Name="/other/iam-test-a")  # granted action, resource not granted
    code, status, message = _error(denied)
    assert (code, status) == ("AccessDeniedException", 400)
    assert message == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/calbot-local-ReaderRole/calbot-local-Reader is not "
        f"authorized to perform: ssm:PutParameter on resource: arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/"
        "app/iam-test-a because no identity-based policy allows the ssm:PutParameter action"
    )
    assert _error(elsewhere)[0] == "AccessDeniedException"
    # Refused before anything was sent: the value is unchanged.
    assert ssm.get_parameter(Name="/app/iam-test-a")["Parameter"]["Value"] == "v"


def test_clients_made_before_the_invocation_and_thread_pools_are_checked(
    aws: None, reader: iam_enforce.Principal
) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")  # e.g. created at import (cold start)
    url = sqs.create_queue(QueueName="iam-enforce-test")["QueueUrl"]
    with acting_as(reader), ThreadPoolExecutor(max_workers=2) as pool:
        future = pool.submit(sqs.send_message, QueueUrl=url, MessageBody="x")
        with pytest.raises(ClientError) as denied:
            future.result()
    code, status, message = _error(denied)
    assert (code, status) == ("AccessDenied", 403)
    assert "sqs:sendmessage on resource: arn:aws:sqs:us-east-1:123456789012:iam-enforce-test" in message
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
        == "0"
    )


def test_scheduler_denial(aws: None, reader: iam_enforce.Principal) -> None:
    scheduler = boto3.client("scheduler", region_name="us-east-1")
    with acting_as(reader), pytest.raises(ClientError) as denied:
        scheduler.delete_schedule(Name="nope")
    code, _, message = _error(denied)
    assert code == "AccessDeniedException"
    assert (
        f"scheduler:DeleteSchedule on resource: arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule/default/nope"
        in message
    )


WRITER = """\
import boto3


def handler(event, context):
    boto3.client("ssm").put_parameter(Name="/app/iam-invoke", Value="v", Type="String", Overwrite=True)
    return "written"
"""


def test_make_invoke_runs_the_function_as_its_role(aws: None, tmp_path: Path) -> None:
    from local.invoke import run_invocation

    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text(WRITER)
    (tmp_path / "template.yaml").write_text(textwrap.dedent(SMALL_TEMPLATE))
    aws_env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    inv = run_invocation(
        load_template(tmp_path / "template.yaml"), "Reader", {}, aws_env=aws_env, log=io.StringIO()
    )
    assert inv.result is None and inv.error is not None
    assert inv.error["errorType"] == "AccessDeniedException"  # botocore models it for SSM
    assert "(AccessDeniedException) when calling the PutParameter operation" in inv.error["errorMessage"]
