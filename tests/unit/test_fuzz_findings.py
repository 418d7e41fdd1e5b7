"""What the Schemathesis run (tests/fuzz) found, pinned down without a stack: free-form JSON that a
user sends in bot_config / custom_attributes must either be stored or refused with a 400, never reach
DynamoDB in a shape it rejects (a 500); a provider that is not supported yet is a 400. And what issue 16
found: deep nesting, out-of-range date-times, over-long ids, and bot_config fields the service owns."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from calbot import models
from calbot.errors import DomainError
from calbot.http import Request, status_of
from calbot.models import (
    BotConfig,
    EnableAutoScheduleRequest,
    PatchBotRequest,
    ScheduleRequest,
)
from calbot.store import from_item, to_item


def _request(body: str) -> Request:
    return Request({"headers": {"content-type": "application/json"}, "body": body})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(literal: str) -> None:
    with pytest.raises(DomainError) as err:
        _request(f'{{"bot_config": {{"x": {literal}}}}}').json()
    assert (status_of(err.value), err.value.code) == (400, "invalid_json")


@pytest.mark.parametrize(
    "config",
    [
        {"": 1},  # DynamoDB: "Empty attribute name" at any depth (moto even stores a broken item)
        {"custom_attributes": {"a": {"": "x"}}},
        {"extra": [{"": None}]},
        {"x": 10**40},  # more than 38 digits
        {"x": 1e200},  # beyond 9.99E+125
        {"x": 1e-140},  # below 1E-130
        {"custom_attributes": {"n": -(10**39)}},
        {"deep": json.loads("[" * 40 + "]" * 40)},  # DynamoDB nests at most 32 levels
    ],
)
def test_bot_config_that_dynamodb_cannot_store_is_a_validation_error(config: dict[str, Any]) -> None:
    for model, body in (
        (ScheduleRequest, {"bot_config": config}),
        (EnableAutoScheduleRequest, {"default_bot_config": config}),
        (PatchBotRequest, {"bot_config": config}),
    ):
        with pytest.raises(ValidationError):
            model.model_validate(body)


def test_nan_passed_through_in_python_is_refused_too() -> None:
    with pytest.raises(ValidationError, match="finite"):
        BotConfig.model_validate({"score": float("nan")})


def test_patch_custom_attributes_are_checked_and_bounded() -> None:
    with pytest.raises(ValidationError):
        PatchBotRequest.model_validate({"custom_attributes": {"": 1}})
    with pytest.raises(ValidationError, match="16 KB"):
        PatchBotRequest.model_validate({"custom_attributes": {"k": "x" * 17_000}})
    assert PatchBotRequest.model_validate({"custom_attributes": {"k": 0.25}}).custom_attributes == {"k": 0.25}


def test_floats_in_bot_config_are_stored_and_read_back_unchanged() -> None:
    # boto3 refuses Python floats: this was a 500 for any fractional number in bot_config.
    config = BotConfig.model_validate(
        {"score": 0.1, "tiny": -4.3050267599787467e-54, "big": 63770464681459.0, "n": [1.5, {"m": 2.25}]}
    ).model_dump(mode="json")
    item = to_item({"bot_config": config})
    assert item["bot_config"]["M"]["score"] == {"N": "0.1"}
    assert from_item(item) == {"bot_config": config}


# --------------------------------------------------------------------------------------------------
# Issue 16, "No input reaches a 500": every class of input below was a 500 (or a DynamoDB
# ValidationException) before; each is now a 400 with a clear message, checked through the real
# handlers (no AWS is reachable here, so a request that got past validation would fail loudly).

ROOT = Path(__file__).resolve().parents[2]


def _handler(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"fuzzfinding_{name}", ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def _call(
    function: str,
    method: str,
    *,
    path: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    event = {
        "routeKey": f"{method} /test",
        "requestContext": {"http": {"method": method}, "authorizer": {"lambda": {"user_id": "usr_x"}}},
        "headers": {"content-type": "application/json"},
        "pathParameters": path or {},
        "queryStringParameters": query or {},
        "body": body,
    }
    return _handler(function)(event, None)


def _is_clear_400(answer: dict[str, Any], error: str = "invalid_request") -> dict[str, Any]:
    assert answer["statusCode"] == 400, answer
    data = json.loads(answer["body"])
    assert data["error"] == error and data["message"], data
    return data


# Every keyed route that reads a JSON body (the webhook reads it leniently and answers 202).
BODY_ROUTES = [
    ("create_connection", "POST", {}),
    ("schedule_event", "POST", {"event_id": "evt_x"}),
    ("unschedule_event", "DELETE", {"event_id": "evt_x"}),
    ("update_scheduled_bot", "PATCH", {"bot_id": "sb_x"}),
    ("toggle_recurrence", "POST", {}),
    ("auto_reschedule", "POST", {}),
    ("auto_schedule_enable", "POST", {}),
    ("disconnect", "POST", {}),
]


@pytest.mark.parametrize(("function", "method", "path"), BODY_ROUTES)
@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_json_is_a_clear_400_on_every_body_route(
    function: str, method: str, path: dict[str, str], depth: int
) -> None:
    # 100,000 levels made json.loads raise RecursionError (a 500); 65 is past our cap but parses.
    body = '{"bot_config": ' + "[" * depth + "]" * depth + "}"
    data = _is_clear_400(_call(function, method, path=path, body=body), "invalid_json")
    assert "nested more than 64 levels" in data["message"]


@pytest.mark.parametrize(("function", "method", "path"), BODY_ROUTES)
def test_a_lone_surrogate_escape_is_a_clear_400(function: str, method: str, path: dict[str, str]) -> None:
    body = '{"event_id": "evt_\\ud800", "bot_config": {"bot_name": "a\\udfff"}}'
    _is_clear_400(_call(function, method, path=path, body=body), "invalid_json")


OUT_OF_RANGE = [
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC: OverflowError before
    "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC: OverflowError before
    "0001-01-01T00:00:00Z",  # representable, but a day of arithmetic away from overflowing
    "9999-12-31T23:30:00Z",
]


def _datetime_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, f in model.model_fields.items() if "datetime" in repr(f.annotation)]


def test_every_request_datetime_is_an_input_datetime() -> None:
    # The class, not the examples: every date-time a request can carry goes through the same bounded
    # type, and the routes below exercise each of them.
    requests = [m for m in vars(models).values() if isinstance(m, type) and issubclass(m, models.Strict)]
    fields = {(m.__name__, f) for m in requests for f in _datetime_fields(m)}
    assert fields == {
        ("EventsQuery", "time_min"),
        ("EventsQuery", "time_max"),
        ("ScheduleRequest", "occurrence_date"),
        ("UnscheduleRequest", "from_date"),
        ("PatchBotRequest", "scheduled_join_time"),
    }
    for model_name, field in fields:
        model = getattr(models, model_name)
        for value in OUT_OF_RANGE:
            with pytest.raises(ValidationError):
                model.model_validate({field: value})


DATETIME_ROUTES = [
    ("list_events", "GET", {}, "query", "time_min"),
    ("list_events", "GET", {}, "query", "time_max"),
    ("get_events", "GET", {}, "query", "time_min"),
    ("get_events", "GET", {}, "query", "time_max"),
    ("schedule_event", "POST", {"event_id": "evt_x"}, "body", "occurrence_date"),
    ("unschedule_event", "DELETE", {"event_id": "evt_x"}, "body", "from_date"),
    ("update_scheduled_bot", "PATCH", {"bot_id": "sb_x"}, "body", "scheduled_join_time"),
]


@pytest.mark.parametrize(("function", "method", "path", "where", "field"), DATETIME_ROUTES)
@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_out_of_range_datetimes_are_a_clear_400_on_every_route(
    function: str, method: str, path: dict[str, str], where: str, field: str, value: str
) -> None:
    kwargs: dict[str, Any] = (
        {"query": {field: value}} if where == "query" else {"body": json.dumps({field: value})}
    )
    data = _is_clear_400(_call(function, method, path=path, **kwargs))
    assert [d["field"] for d in data["details"]] == [field]
    assert "UTC" in data["details"][0]["message"]


LONG_ACCOUNT = "\U0001f600" * 300 + "@acme.example"  # 313 characters, 1,213 bytes: past the sort key cap
ID_ROUTES = [
    ("get_connection", "GET", {"provider": "outlook", "account_id": LONG_ACCOUNT}),
    ("disconnect_connection", "DELETE", {"provider": "outlook", "account_id": LONG_ACCOUNT}),
    ("schedule_event", "POST", {"event_id": "e" * 3000}),
    ("unschedule_event", "DELETE", {"event_id": "e" * 3000}),
    ("update_scheduled_bot", "PATCH", {"bot_id": "b" * 3000}),
    ("delete_scheduled_bot", "DELETE", {"bot_id": "b" * 3000}),
]


@pytest.mark.parametrize(("function", "method", "path"), ID_ROUTES, ids=[r[0] + r[1] for r in ID_ROUTES])
def test_path_ids_past_dynamodbs_key_limits_are_a_clear_400(
    function: str, method: str, path: dict[str, str]
) -> None:
    body = '{"bot_name": "x"}' if method == "PATCH" else None
    data = _is_clear_400(_call(function, method, path=path, body=body))
    (bad,) = [k for k, v in path.items() if len(v) > 100]
    assert [d["field"] for d in data["details"]] == [bad]


SCOPED_ROUTES = ["list_events", "get_events", "list_calendars", "list_scheduled_bots"]


@pytest.mark.parametrize("function", SCOPED_ROUTES)
def test_query_account_ids_past_the_key_limit_are_a_clear_400(function: str) -> None:
    data = _is_clear_400(_call(function, "GET", query={"provider": "outlook", "account_id": LONG_ACCOUNT}))
    assert [d["field"] for d in data["details"]] == ["account_id"]
    assert "320 bytes" in data["details"][0]["message"]


@pytest.mark.parametrize(
    ("function", "body"),
    [
        ("toggle_recurrence", {"event_id": "e" * 3000, "recurring_enabled": True}),
        ("auto_reschedule", {"event_id": "e" * 3000}),
        ("disconnect", {"provider": "outlook", "account_id": LONG_ACCOUNT}),
    ],
)
def test_body_ids_past_the_key_limits_are_a_clear_400(function: str, body: dict[str, Any]) -> None:
    data = _is_clear_400(_call(function, "POST", body=json.dumps(body)))
    assert {d["field"] for d in data["details"]} <= {"event_id", "account_id"}


# --------------------------------------------------------------------------------------------------
# Issue 16, Security: bot_config cannot carry the fields the service owns.


@pytest.mark.parametrize("field", ["meeting_link", "meeting_url", "calendar_event_id", "scheduled_bot_id"])
def test_bot_config_cannot_set_a_field_the_service_owns(field: str) -> None:
    config = {"bot_name": "n", field: "https://evil.example/meeting"}
    for model, body in (
        (ScheduleRequest, {"bot_config": config}),
        (EnableAutoScheduleRequest, {"default_bot_config": config}),
        (PatchBotRequest, {"bot_config": config}),
    ):
        with pytest.raises(ValidationError, match=f"{field} cannot be set in bot_config"):
            model.model_validate(body)


@pytest.mark.parametrize("field", ["calendar_event_id", "scheduled_bot_id"])
def test_custom_attributes_cannot_set_our_ids(field: str) -> None:
    for model, body in (
        (ScheduleRequest, {"bot_config": {"custom_attributes": {field: "evt_other"}}}),
        (EnableAutoScheduleRequest, {"default_bot_config": {"custom_attributes": {field: "x"}}}),
        (PatchBotRequest, {"bot_config": {"custom_attributes": {field: "x"}}}),
        (PatchBotRequest, {"custom_attributes": {field: "x"}}),
    ):
        with pytest.raises(ValidationError, match=f"{field} cannot be set in custom_attributes"):
            model.model_validate(body)


def test_a_reserved_field_is_a_400_through_the_schedule_route() -> None:
    body = json.dumps({"bot_config": {"meeting_link": "https://evil.example/j/1"}})
    data = _is_clear_400(_call("schedule_event", "POST", path={"event_id": "evt_x"}, body=body))
    assert data["details"][0]["field"] == "bot_config"
    assert "meeting_link cannot be set" in data["details"][0]["message"]
    # Other Create Bot fields still pass through.
    assert ScheduleRequest.model_validate({"bot_config": {"recording_mode": "audio"}}).bot_config.model_extra
