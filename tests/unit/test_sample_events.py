"""events/ (sample Lambda events) is complete, generated and consistent with template.yaml's routes;
local.gen_events' generators for event types the template does not use yet."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from local import gen_events
from local.gateway import Gateway
from local.template import Template, load_template

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml")


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def test_every_function_has_an_event_and_every_event_a_function(template: Template) -> None:
    files = sorted(p.name for p in EVENTS.glob("*.json"))
    missing = [f"{lid}.json" for lid in template.functions if f"{lid}.json" not in files]
    orphans = [name for name in files if name.split(".", 1)[0] not in template.functions]
    assert missing == [], "run python -m local.gen_events"
    assert orphans == []


def test_events_are_up_to_date_with_the_generator(template: Template) -> None:
    assert gen_events.differences(EVENTS, gen_events.generate(template)) == []
    assert gen_events.main(["--check"]) == 0


def test_http_events_match_a_declared_route_of_their_function(template: Template) -> None:
    gateway = Gateway(template)
    authorizers = template.authorizer_functions()
    checked = 0
    for path in sorted(EVENTS.glob("*.json")):
        logical_id = path.name.split(".", 1)[0]
        event = load(path.name)
        if not isinstance(event, dict) or event.get("version") != "2.0":
            continue
        found = gateway.match(event["requestContext"]["http"]["method"], event["rawPath"])
        assert found is not None, path.name
        assert found.route.route_key == event["routeKey"] == event["requestContext"]["routeKey"], path.name
        # Path parameters are exactly what the gateway would decode from rawPath.
        assert event.get("pathParameters", {}) == found.path_parameters, path.name
        if logical_id in authorizers:
            assert event["type"] == "REQUEST"
            assert found.route.authorizer is not None
            assert event["headers"]["authorization"] == f"Token {gen_events.DEMO_API_KEY}"
        else:
            assert found.route.function == logical_id, path.name
            if found.route.authorizer is None:
                assert "authorizer" not in event["requestContext"], path.name
        checked += 1
    assert checked >= len(template.routes)


def test_main_http_events_carry_the_demo_user(template: Template) -> None:
    for route in template.routes:
        event = load(f"{route.function}.json")
        if route.authorizer is not None:
            assert event["requestContext"]["authorizer"] == {"lambda": {"user_id": "usr_demo"}}
            assert event["headers"]["authorization"] == "Token cbk_demo_local_key_0000000000000000"


def test_specific_samples() -> None:
    create = load("CreateConnectionFunction.json")
    assert json.loads(create["body"])["microsoft_refresh_token"] == "M.C5_sample_event_refresh_token"
    assert create["headers"]["content-type"] == "application/json"
    get = load("GetConnectionFunction.json")
    assert get["rawPath"] == "/api/v1/calendar/connections/outlook/jane%40contoso.example"
    assert get["pathParameters"] == {"provider": "outlook", "account_id": "jane@contoso.example"}
    webhook = load("WebhookFunction.json")
    assert webhook["rawPath"] == "/api/v1/admin/schedule/users/usr_demo/outlook/jane%40contoso.example"
    assert webhook["queryStringParameters"] == {
        "validationToken": "Validation: Testing client application reachability"
    }
    assert "body" not in webhook and "authorization" not in webhook["headers"]
    auth = load("AuthorizerFunction.json")
    assert auth["routeKey"] == "GET /api/v1/calendar/connections"


# -- generators for event types the template does not have yet -------------------------------------

FUTURE = """\
Resources:
  Work:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true, ContentBasedDeduplication: true}
  Plain:
    Type: AWS::SQS::Queue
  Consumer:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Events:
        Fifo: {Type: SQS, Properties: {Queue: !GetAtt Work.Arn}}
        Std: {Type: SQS, Properties: {Queue: !GetAtt Plain.Arn}}
  Cron:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Events:
        Midnight: {Type: ScheduleV2, Properties: {ScheduleExpression: "cron(0 0 * * ? *)"}}
        WithInput:
          Type: ScheduleV2
          Properties: {ScheduleExpression: "cron(0 3 * * ? *)", Input: '{"job": "renew"}'}
        Rule: {Type: Schedule, Properties: {Schedule: rate(1 hour)}}
  Target:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
"""


@pytest.fixture
def future(tmp_path: Path) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(FUTURE))
    return load_template(path, stack_name="st")


def test_unsourced_function_without_specifics_fails_loudly(future: Template) -> None:
    specifics = {"Consumer": gen_events.Specifics(body={"k": 1})}
    with pytest.raises(gen_events.GenerationError, match="Target"):
        gen_events.generate(future, specifics, {})


def test_sqs_consumer_without_a_body_fails_loudly(future: Template) -> None:
    specifics = {"Target": gen_events.Specifics(event={"bot_id": "b"})}
    with pytest.raises(gen_events.GenerationError, match="Consumer"):
        gen_events.generate(future, specifics, {})


def test_sqs_schedule_and_target_generators(future: Template) -> None:
    specifics = {
        "Consumer": gen_events.Specifics(body={"account": "a"}, message_group_id="usr_1#outlook#a"),
        "Target": gen_events.Specifics(event={"bot_id": "b"}),
    }
    files = gen_events.generate(future, specifics, {})
    assert sorted(files) == [
        "Consumer.Std.json",
        "Consumer.json",
        "Cron.Rule.json",
        "Cron.WithInput.json",
        "Cron.json",
        "Target.json",
    ]

    [fifo] = files["Consumer.json"]["Records"]
    assert fifo["eventSource"] == "aws:sqs"
    assert fifo["eventSourceARN"] == "arn:aws:sqs:us-east-1:123456789012:st-Work.fifo"
    assert json.loads(fifo["body"]) == {"account": "a"}
    assert fifo["md5OfBody"] == hashlib.md5(fifo["body"].encode()).hexdigest()
    assert fifo["attributes"]["MessageGroupId"] == "usr_1#outlook#a"
    assert fifo["attributes"]["MessageDeduplicationId"] == hashlib.sha256(fifo["body"].encode()).hexdigest()
    assert "SequenceNumber" in fifo["attributes"]
    [std] = files["Consumer.Std.json"]["Records"]
    assert "MessageGroupId" not in std["attributes"] and std["attributes"]["ApproximateReceiveCount"] == "1"

    midnight = files["Cron.json"]
    assert midnight["source"] == "aws.scheduler" and midnight["detail-type"] == "Scheduled Event"
    assert midnight["resources"] == [
        "arn:aws:scheduler:us-east-1:123456789012:schedule/default/st-CronMidnight"
    ]
    assert files["Cron.WithInput.json"] == {"job": "renew"}  # Scheduler delivers only the Input
    rule = files["Cron.Rule.json"]
    assert rule["source"] == "aws.events" and rule["detail"] == {}
    assert rule["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/st-CronRule"]

    assert files["Target.json"] == {"bot_id": "b"}


def test_check_reports_missing_extra_and_stale(future: Template, tmp_path: Path) -> None:
    specifics = {"Consumer": gen_events.Specifics(body="x"), "Target": gen_events.Specifics(event={})}
    files = gen_events.generate(future, specifics, {})
    out = tmp_path / "events"
    gen_events.write(out, files)
    assert gen_events.differences(out, files) == []
    (out / "Cron.json").write_text("{}\n")
    (out / "Target.json").unlink()
    (out / "Gone.json").write_text("{}\n")
    assert gen_events.differences(out, files) == [
        "missing: events/Target.json",
        "extra: events/Gone.json",
        "stale: events/Cron.json",
    ]
    gen_events.write(out, files, prune=True)
    assert gen_events.differences(out, files) == []
