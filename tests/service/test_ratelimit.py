"""calbot.ratelimit against moto's DynamoDB (the inproc stack): per-key fixed windows, the per-second
burst cap, atomicity under concurrency, cost, failing open, and the 429 through api_handler."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from calbot import aws, ratelimit, store
from calbot.config import Settings, get_settings, reset_settings
from calbot.http import Request, Response, api_handler
from local.stack import LocalStack
from tests.conftest import DynamoWrites, item_size, virtual_time

_keys = itertools.count()
# A window start well away from "now" so nothing else in the session shares these counters.
T0 = datetime(2031, 3, 4, 10, 0, 0, tzinfo=UTC)


def new_key_id() -> str:
    return f"key_rltest{next(_keys):06d}"


@pytest.fixture
def clock(inproc_stack: LocalStack) -> Iterator[list[datetime]]:
    """now() is whatever the test says; the previous time source is put back afterwards."""
    with virtual_time(T0 + timedelta(seconds=10)) as at:
        yield at


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def set_limits(per_minute: int, burst: int = 1000) -> None:
        monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", str(per_minute))
        monkeypatch.setenv("RATE_LIMIT_BURST", str(burst))
        reset_settings()

    yield set_limits
    monkeypatch.undo()
    reset_settings()


def counter_item(key_id: str, window_start: datetime) -> dict[str, Any]:
    resp = aws.dynamodb().get_item(
        TableName=get_settings().table_name,
        Key={"PK": {"S": f"RATE#{key_id}"}, "SK": {"S": f"WINDOW#{int(window_start.timestamp())}"}},
        ConsistentRead=True,
    )
    return resp["Item"]


def test_defaults_are_600_a_minute_with_a_burst_of_100_in_the_template_and_the_settings() -> None:
    from local.template import load_template

    env = load_template("template.yaml").functions["ListConnectionsFunction"].environment
    assert (env["RATE_LIMIT_PER_MINUTE"], env["RATE_LIMIT_BURST"]) == ("600", "100")
    bare = Settings(table_name="t", ssm_prefix="/calbot/t")
    assert (bare.rate_limit_per_minute, bare.rate_limit_burst) == (600, 100)


def test_the_limit_applies_per_key_and_per_window(clock: list[datetime], limits: Any) -> None:
    limits(3)
    key, other = new_key_id(), new_key_id()
    assert [ratelimit.check(key).allowed for _ in range(3)] == [True, True, True]
    refused = ratelimit.check(key)
    # 10 s into the window: the next one starts in 50 s.
    assert (refused.allowed, refused.limit, refused.retry_after) == (False, "minute", 50)
    clock[0] += timedelta(seconds=20)
    assert ratelimit.check(key).retry_after == 30  # refused requests are not counted, nor extend it
    assert ratelimit.check(other).allowed  # another key has its own counter

    clock[0] = T0 + timedelta(seconds=60)  # the next window
    assert [ratelimit.check(key).allowed for _ in range(4)] == [True, True, True, False]
    item = store.from_item(counter_item(key, T0))
    assert item["n"] == 3  # the first window kept its own count: 3 admitted, the 2 refusals not added


def test_the_burst_cap_limits_one_second(clock: list[datetime], limits: Any) -> None:
    limits(100, burst=2)
    key = new_key_id()
    assert [ratelimit.check(key).allowed for _ in range(3)] == [True, True, False]
    refused = ratelimit.check(key)
    assert (refused.limit, refused.retry_after) == ("burst", 1)
    clock[0] += timedelta(seconds=1)
    assert [ratelimit.check(key).allowed for _ in range(3)] == [True, True, False]
    assert store.from_item(counter_item(key, T0))["n"] == 4  # both seconds count toward the minute


def test_concurrent_requests_never_over_admit(clock: list[datetime], limits: Any) -> None:
    limits(7)
    key = new_key_id()
    with ThreadPoolExecutor(12) as pool:
        verdicts = list(pool.map(lambda _: ratelimit.check(key), range(30)))
    assert sum(v.allowed for v in verdicts) == 7
    assert store.from_item(counter_item(key, T0))["n"] == 7


def test_one_update_item_and_one_write_unit_per_request(
    clock: list[datetime], limits: Any, ddb_writes: DynamoWrites
) -> None:
    limits(600, burst=100)
    key = new_key_id()
    clock[0] = T0
    for _ in range(60):  # a request in every second of the window: the largest the item can get
        assert ratelimit.check(key).allowed
        clock[0] += timedelta(seconds=1)
    clock[0] = T0 + timedelta(seconds=59)
    limits(60, burst=100)
    assert not ratelimit.check(key).allowed  # a refusal is one (failed, still billed) write as well
    assert ddb_writes.calls == ["UpdateItem"] * 61
    item = counter_item(key, T0)
    assert item_size(item) < 1024  # so each of those writes is one write unit, never two
    data = store.from_item(item)
    assert data["n"] == 60 and data["kind"] == "ratelimit"
    # Expires a few minutes after its window ends (DynamoDB TTL, epoch seconds).
    assert int(T0.timestamp()) + 60 < data["ttl"] <= int(T0.timestamp()) + 60 + 600


def test_a_limit_of_zero_turns_it_off_without_touching_dynamodb(
    clock: list[datetime], limits: Any, ddb_writes: DynamoWrites
) -> None:
    limits(0)
    assert all(ratelimit.check(new_key_id()).allowed for _ in range(5))
    assert ddb_writes.calls == []


def test_dynamodb_failures_fail_open_with_a_log_line(
    clock: list[datetime], limits: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limits(1)
    key = new_key_id()
    assert ratelimit.check(key).allowed and not ratelimit.check(key).allowed
    monkeypatch.setenv("TABLE_NAME", "no-such-table")  # ResourceNotFoundException: a ClientError
    reset_settings()
    with caplog.at_level(logging.WARNING, logger="calbot"):
        assert ratelimit.check(key).allowed

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise EndpointConnectionError(endpoint_url="https://dynamodb.example")

    monkeypatch.setattr(store, "count_request", unreachable)
    with caplog.at_level(logging.WARNING, logger="calbot"):
        assert ratelimit.check(key).allowed
    failures = [r for r in caplog.records if "rate limit check failed" in r.getMessage()]
    assert len(failures) == 2


@api_handler
def ping(request: Request) -> Response:
    return Response(200, {"user": request.user_id})


def keyed_event(key_id: str | None, user_id: str = "usr_rl") -> dict[str, Any]:
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "GET /api/v1/ping",
        "headers": {},
        "requestContext": {"http": {"method": "GET"}, "requestId": "r1"},
    }
    if key_id is not None:
        event["requestContext"]["authorizer"] = {"lambda": {"user_id": user_id, "key_id": key_id}}
    return event


def test_api_handler_answers_429_with_retry_after(clock: list[datetime], limits: Any) -> None:
    limits(2)
    key = new_key_id()
    assert [ping(keyed_event(key), None)["statusCode"] for _ in range(2)] == [200, 200]
    refused = ping(keyed_event(key), None)
    assert refused["statusCode"] == 429
    assert refused["headers"]["retry-after"] == "50"
    assert refused["headers"]["content-type"].startswith("application/json")
    body = json.loads(refused["body"])
    assert body["error"] == "rate_limited"
    assert "2 requests a minute" in body["message"] and "50 seconds" in body["message"]
    assert "Traceback" not in refused["body"]
    assert ping(keyed_event(new_key_id()), None)["statusCode"] == 200


def test_routes_without_a_key_are_not_limited(
    clock: list[datetime], limits: Any, ddb_writes: DynamoWrites
) -> None:
    limits(1)
    # The webhook has no authorizer; an unknown key resolves to empty ids (the handler's 401).
    for _ in range(3):
        assert ping(keyed_event(None), None)["statusCode"] == 401
        assert ping(keyed_event("", user_id=""), None)["statusCode"] == 401
    assert ddb_writes.calls == []


def test_the_authorizer_passes_the_key_id_and_never_the_key(inproc_stack: LocalStack) -> None:
    import importlib.util
    from pathlib import Path

    from calbot import auth

    spec = importlib.util.spec_from_file_location(
        "authorizer_app", Path(__file__).resolve().parents[2] / "functions/authorizer/app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    key, record = auth.issue_api_key("usr_rl_auth")
    answer = module.handler({"headers": {"Authorization": f"Token {key}"}}, None)
    assert answer == {"isAuthorized": True, "context": {"user_id": "usr_rl_auth", "key_id": record.key_id}}
    assert key not in json.dumps(answer) and record.key_id == auth.key_id_of(key)
    unknown = module.handler({"headers": {"Authorization": "Token cbk_unknown"}}, None)
    assert unknown["context"] == {"user_id": "", "key_id": ""}


def test_every_function_behind_the_authorizer_may_write_its_counters() -> None:
    """In AWS a handler without dynamodb:UpdateItem would fail open on every request: never limited."""
    from local.iam_enforce import ALLOW, FunctionPolicies, evaluate
    from local.template import load_template

    template = load_template("template.yaml")
    keyed = {r.function for r in template.routes if r.authorizer is not None}
    assert len(keyed) >= 10
    roles = FunctionPolicies(template)
    table = template.arn("Table")
    counter = {"dynamodb:LeadingKeys": ["RATE#k1"]}
    for logical_id in keyed:
        policies = roles.principal(logical_id).policies
        assert evaluate(policies, "dynamodb:UpdateItem", table, counter) == ALLOW, logical_id
    statement = template.data["Resources"]["RateLimitPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Action"] == "dynamodb:UpdateItem"
    assert statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] == ["RATE#*"]
