"""local.template (template.yaml reader + intrinsic resolver) and local.aws_bootstrap (moto resources)."""

from __future__ import annotations

import base64
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from local.aws_bootstrap import create_resources
from local.template import TemplateError, load_template, load_yaml, parse_overrides

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

INTRINSICS = """\
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod, local]}
  Size: {Type: Number, Default: 5, MinValue: 1, MaxValue: 10}
  Zones: {Type: CommaDelimitedList, Default: "a,b,c"}
Mappings:
  Tiers:
    dev: {Memory: 256}
    prod: {Memory: 1024}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  NotProd: !Not [!Condition IsProd]
  ProdOrLocal: !Or [!Condition IsProd, !Equals [!Ref Stage, local]]
  Both: !And [!Condition NotProd, !Equals [!Ref Size, "5"]]
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      KeySchema: [{AttributeName: PK, KeyType: HASH}]
      AttributeDefinitions: [{AttributeName: PK, AttributeType: S}]
  NamedTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "things-${Stage}"
      BillingMode: PAY_PER_REQUEST
      KeySchema: [{AttributeName: PK, KeyType: HASH}]
      AttributeDefinitions: [{AttributeName: PK, AttributeType: S}]
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      ContentBasedDeduplication: true
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt JobsDlq.Arn
        maxReceiveCount: 3
  JobsDlq:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "jobs-dlq-${Stage}.fifo"
      FifoQueue: true
  Group:
    Type: AWS::Scheduler::ScheduleGroup
    Properties:
      Name: !Join ["-", [bots, !Ref Stage]]
  ProdOnly:
    Type: AWS::SQS::Queue
    Condition: IsProd
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: pkg.mod.main
      MemorySize: !FindInMap [Tiers, !Ref Stage, Memory]
      Environment:
        Variables:
          TABLE: !Ref Table
          NAMED: !Ref NamedTable
          TABLE_ARN: !GetAtt Table.Arn
          QUEUE_URL: !Ref Jobs
          QUEUE_NAME: !GetAtt Jobs.QueueName
          DLQ_ARN: !GetAtt [JobsDlq, Arn]
          GROUP: !Ref Group
          SUB_LIST: !Sub ["${Prefix}/${AWS::Region}/${Table.Arn}", {Prefix: !Ref Stage}]
          ESCAPED: !Sub "${!NotAVar}-${AWS::AccountId}"
          MODE: !If [IsProd, production, development]
          NOT_PROD: !If [NotProd, "yes", "no"]
          PROD_OR_LOCAL: !If [ProdOrLocal, "yes", "no"]
          BOTH: !If [Both, "yes", "no"]
          SECOND_ZONE: !Select [1, !Ref Zones]
          SPLIT_LAST: !Select [2, !Split [",", "x,y,z"]]
          ENCODED: !Base64 "hello"
          SIZE: !Ref Size
          FLAG: true
          PARTITION: !Sub "${AWS::Partition}.${AWS::URLSuffix}.${AWS::StackName}"
          DROPPED: !If [IsProd, kept, !Ref "AWS::NoValue"]
      Events:
        Nightly:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: cron(0 0 * * ? *)
            Input: !Sub '{"stage": "${Stage}"}'
        Hourly:
          Type: Schedule
          Properties: {Schedule: rate(1 hour)}
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 1
"""


@pytest.fixture
def intrinsics(tmp_path: Path) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(INTRINSICS)
    return path


def test_short_form_tags_become_long_form(intrinsics: Path) -> None:
    data = load_yaml(intrinsics)
    env = data["Resources"]["Fn"]["Properties"]["Environment"]["Variables"]
    assert env["TABLE"] == {"Ref": "Table"}
    assert env["TABLE_ARN"] == {"Fn::GetAtt": ["Table", "Arn"]}
    assert env["DLQ_ARN"] == {"Fn::GetAtt": ["JobsDlq", "Arn"]}
    assert env["MODE"] == {"Fn::If": ["IsProd", "production", "development"]}
    assert data["Conditions"]["NotProd"] == {"Fn::Not": [{"Condition": "IsProd"}]}
    assert env["ENCODED"] == {"Fn::Base64": "hello"}


def test_unknown_tag_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  X: !Bogus 1\n")
    with pytest.raises(Exception, match="Bogus"):
        load_yaml(path)


def test_intrinsics_resolve_with_defaults(intrinsics: Path) -> None:
    t = load_template(intrinsics, stack_name="st")
    fn = t.functions["Fn"]
    env = fn.environment
    assert env["TABLE"] == "st-Table"
    assert env["NAMED"] == "things-dev"
    assert env["TABLE_ARN"] == "arn:aws:dynamodb:us-east-1:123456789012:table/st-Table"
    # FIFO queues without a QueueName get the .fifo suffix, as CloudFormation names them.
    assert env["QUEUE_URL"] == "https://sqs.us-east-1.amazonaws.com/123456789012/st-Jobs.fifo"
    assert env["QUEUE_NAME"] == "st-Jobs.fifo"
    assert env["DLQ_ARN"] == "arn:aws:sqs:us-east-1:123456789012:jobs-dlq-dev.fifo"
    assert env["GROUP"] == "bots-dev"
    assert env["SUB_LIST"] == "dev/us-east-1/arn:aws:dynamodb:us-east-1:123456789012:table/st-Table"
    assert env["ESCAPED"] == "${NotAVar}-123456789012"
    assert env["MODE"] == "development"
    assert (env["NOT_PROD"], env["PROD_OR_LOCAL"], env["BOTH"]) == ("yes", "no", "yes")
    assert env["SECOND_ZONE"] == "b"
    assert env["SPLIT_LAST"] == "z"
    assert base64.b64decode(env["ENCODED"]) == b"hello"
    assert env["SIZE"] == "5" and env["FLAG"] == "true"  # environment values are strings
    assert env["PARTITION"] == "aws.amazonaws.com.st"
    assert "DROPPED" not in env  # AWS::NoValue removes the key
    assert fn.memory_size == 256
    assert fn.handler_name == "main"
    assert fn.module_path == intrinsics.parent / "fn" / "pkg" / "mod.py"
    # Resources whose Condition is false do not exist.
    assert "ProdOnly" not in t.resources_of_type("AWS::SQS::Queue")


def test_parameter_overrides_change_everything_downstream(intrinsics: Path) -> None:
    t = load_template(intrinsics, {"Stage": "prod", "Size": "7"})
    env = t.functions["Fn"].environment
    assert env["NAMED"] == "things-prod"
    assert env["GROUP"] == "bots-prod"
    assert env["MODE"] == "production"
    assert env["DROPPED"] == "kept"
    assert env["SIZE"] == "7"
    assert t.functions["Fn"].memory_size == 1024
    assert "ProdOnly" in t.resources_of_type("AWS::SQS::Queue")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"Nope": "x"}, "not declared"),
        ({"Stage": "qa"}, "not one of"),
        ({"Size": "11"}, "MaxValue"),
        ({"Size": "many"}, "not a number"),
    ],
)
def test_bad_overrides_are_rejected_like_cloudformation(
    intrinsics: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        load_template(intrinsics, overrides)


def test_parse_overrides_accepts_both_sam_syntaxes() -> None:
    assert parse_overrides(["A=1", "ParameterKey=B,ParameterValue=x=y", "C="]) == {
        "A": "1",
        "B": "x=y",
        "C": "",
    }
    with pytest.raises(TemplateError):
        parse_overrides(["novalue"])


def test_queue_urls_follow_the_endpoint_when_given(intrinsics: Path) -> None:
    t = load_template(intrinsics, endpoint_url="http://127.0.0.1:5000/")
    assert t.ref("Jobs") == "http://127.0.0.1:5000/123456789012/calbot-local-Jobs.fifo"
    assert t.get_att("Jobs", "QueueUrl") == t.ref("Jobs")


def test_event_sources_are_resolved_and_grouped_by_type(intrinsics: Path) -> None:
    t = load_template(intrinsics)
    [(fn, nightly)] = t.functions_by_event_type("ScheduleV2")
    assert fn.logical_id == "Fn"
    assert json.loads(nightly.properties["Input"]) == {"stage": "dev"}
    [(_, work)] = t.functions_by_event_type("SQS")
    assert work.properties["Queue"] == "arn:aws:sqs:us-east-1:123456789012:calbot-local-Jobs.fifo"
    assert t.resource_for_arn(work.properties["Queue"]) == "Jobs"
    assert [ev.name for _, ev in t.functions_by_event_type("Schedule")] == ["Hourly"]
    assert t.functions_by_event_type("HttpApi") == []


def test_import_value_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            Resources:
              Fn:
                Type: AWS::Serverless::Function
                Properties:
                  CodeUri: fn/
                  Handler: app.handler
                  Environment: {Variables: {X: !ImportValue other-stack-output}}
            """
        )
    )
    with pytest.raises(TemplateError, match="ImportValue"):
        load_template(path)


# -- the real template.yaml ------------------------------------------------------------------------


def test_real_template_globals_are_merged_into_every_function() -> None:
    t = load_template(TEMPLATE)
    assert {
        "AuthorizerFunction",
        "CreateConnectionFunction",
        "GetConnectionFunction",
        "WebhookFunction",
    } <= set(t.functions)
    for fn in t.functions.values():
        assert fn.module_path.is_file(), fn.logical_id
        assert fn.runtime == "python3.12"
        assert fn.memory_size == 512
        assert fn.layer_dirs == [ROOT / "layers" / "core"]  # !Ref CoreLayer -> its ContentUri
        assert fn.environment["TABLE_NAME"] == "calbot-local-Table"
        assert fn.environment["SSM_PREFIX"] == "/calbot/dev"
        assert fn.environment["SCHEDULE_GROUP"] == "calbot-bots-dev"
        assert fn.environment["POWERTOOLS_SERVICE_NAME"] == "calbot"
        assert fn.environment["CONNECTION_LIMIT"] == "200"
    assert t.functions["WebhookFunction"].timeout == 10  # the function's own value beats Globals
    assert t.functions["GetConnectionFunction"].timeout == 29


def test_real_template_overrides_reach_the_environment() -> None:
    t = load_template(TEMPLATE, {"Stage": "local", "GraphBaseUrl": "http://127.0.0.1:9/v1.0"}, "other")
    env = t.functions["CreateConnectionFunction"].environment
    assert env["STAGE"] == "local"
    assert env["SSM_PREFIX"] == "/calbot/local"
    assert env["SCHEDULE_GROUP"] == "calbot-bots-local"
    assert env["TABLE_NAME"] == "other-Table"
    assert env["GRAPH_BASE_URL"] == "http://127.0.0.1:9/v1.0"


def test_real_template_routes_and_authorizer() -> None:
    t = load_template(TEMPLATE)
    routes = {r.route_key: r for r in t.routes}
    get = routes["GET /api/v1/calendar/connections/{provider}/{account_id}"]
    assert (get.function, get.authorizer, get.api) == ("GetConnectionFunction", "ApiKeyAuthorizer", "HttpApi")
    assert routes["POST /api/v1/calendar/create_outlook_calendar"].function == "CreateConnectionFunction"
    webhook = routes["POST /api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}"]
    assert webhook.function == "WebhookFunction"
    assert webhook.authorizer is None  # Auth.Authorizer: NONE
    auth = t.authorizers["ApiKeyAuthorizer"]
    assert auth.function == "AuthorizerFunction"  # from FunctionArn: !GetAtt AuthorizerFunction.Arn
    assert auth.payload_format_version == "2.0"
    assert auth.simple_responses is True
    assert auth.identity_headers == []
    assert auth.ttl == 0
    assert t.authorizer_functions() == {"AuthorizerFunction"}
    # Every route but the webhook is behind the authorizer.
    public = {"WebhookFunction", "OpenApiFunction"}  # provider notifications; the API document
    assert all(r.authorizer == "ApiKeyAuthorizer" for r in t.routes if r.function not in public)
    assert all(r.authorizer is None for r in t.routes if r.function in public)


def test_real_template_refs() -> None:
    t = load_template(TEMPLATE, {"Stage": "prod"})
    assert t.ref("Table") == "calbot-local-Table"
    assert t.ref("BotScheduleGroup") == "calbot-bots-prod"
    assert t.get_att("AuthorizerFunction", "Arn") == (
        "arn:aws:lambda:us-east-1:123456789012:function:calbot-local-AuthorizerFunction"
    )
    api_id = t.ref("HttpApi")
    assert len(api_id) == 10 and api_id.isalnum()
    outputs = t.resolve(t.data["Outputs"])
    assert outputs["ApiUrl"]["Value"] == f"https://{api_id}.execute-api.us-east-1.amazonaws.com"


# -- bootstrap -------------------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.Session]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # No reset: moto's backends are process-wide and the session's in-process stack keeps its data
    # there; these tests use names of their own instead.
    mock = mock_aws()
    mock.start(reset=False)
    try:
        yield boto3.Session(region_name="us-east-1")
    finally:
        mock.stop(remove_data=False)


def test_bootstrap_creates_the_real_templates_resources(aws: boto3.Session) -> None:
    t = load_template(TEMPLATE, {"Stage": "tpltest"}, stack_name="calbot-tpltest")
    report = create_resources(t, aws)
    assert sorted(report.created) == [
        "AutoScheduleDeadLetterQueue",
        "AutoScheduleQueue",
        "BotScheduleGroup",
        "CredentialKey",
        "LaunchDeadLetterQueue",
        "LaunchQueue",
        "RenewalDeadLetterQueue",
        "RenewalQueue",
        "ScheduleDeadLetterQueue",
        "SyncDeadLetterQueue",
        "SyncQueue",
        "Table",
        "WebhookDeadLetterQueue",  # customer-webhook deliveries
        "WebhookQueue",
    ]
    # The envelope key exists under the id the functions' CREDENTIAL_KEY_ARN names, and works.
    kms = aws.client("kms")
    key_arn = t.get_att("CredentialKey", "Arn")
    assert kms.describe_key(KeyId=key_arn)["KeyMetadata"]["Arn"] == key_arn
    data_key = kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256", EncryptionContext={"u": "1"})
    plain = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext={"u": "1"})
    assert plain["Plaintext"] == data_key["Plaintext"]
    assert create_resources(t, aws).existing.count("CredentialKey") == 1  # idempotent
    ddb = aws.client("dynamodb")
    table = ddb.describe_table(TableName="calbot-tpltest-Table")["Table"]
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {"GSI1", "GSI2", "GSI3"}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert ddb.describe_time_to_live(TableName="calbot-tpltest-Table")["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "ttl",
    }
    assert aws.client("scheduler").get_schedule_group(Name="calbot-bots-tpltest")["State"] == "ACTIVE"


def test_bootstrap_queues_and_idempotence(aws: boto3.Session, intrinsics: Path) -> None:
    t = load_template(intrinsics, stack_name="calbot-intrinsics")
    clients = {svc: aws.client(svc) for svc in ("dynamodb", "sqs", "scheduler")}
    first = create_resources(t, clients)
    assert set(first.created) == {"Table", "NamedTable", "Jobs", "JobsDlq", "Group"}
    sqs = clients["sqs"]
    attrs = sqs.get_queue_attributes(QueueUrl=first.physical_ids["Jobs"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert attrs["FifoQueue"] == "true"
    assert json.loads(attrs["RedrivePolicy"]) == {
        "deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:jobs-dlq-dev.fifo",
        "maxReceiveCount": 3,
    }
    # A schedule in the group must survive a second bootstrap (moto would replace a re-created group).
    clients["scheduler"].create_schedule(
        Name="keep-me",
        GroupName="bots-dev",
        ScheduleExpression="at(2030-01-01T00:00:00)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": t.functions["Fn"].arn, "RoleArn": "arn:aws:iam::123456789012:role/r"},
    )
    second = create_resources(t, clients)
    assert second.created == []
    assert set(second.existing) == set(first.created)
    assert second.physical_ids == first.physical_ids
    assert clients["scheduler"].get_schedule(Name="keep-me", GroupName="bots-dev")["Name"] == "keep-me"
    # The queue URL in the functions' environment addresses the queue bootstrap created.
    sqs.send_message(QueueUrl=t.functions["Fn"].environment["QUEUE_URL"], MessageBody="x", MessageGroupId="g")
    got = sqs.receive_message(QueueUrl=first.physical_ids["Jobs"])["Messages"]
    assert [m["Body"] for m in got] == ["x"]
