"""The OpenAPI document: valid 3.1, generated from the models, and in step with template.yaml's routes,
the handlers (functions/*/app.py) and the checked-in openapi.json."""

from __future__ import annotations

import ast
import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from calbot import models
from calbot.openapi import OPERATIONS, TEXT, Operation, document, render
from local.template import Route, Template, load_template

ROOT = Path(__file__).resolve().parents[2]
# The webhook's body is documented (Graph's notification shape) but read leniently by the service: it
# answers 202 to anything, so it never goes through body_as.
DOCUMENTED_ONLY_BODY = {"receiveChangeNotifications"}


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template(ROOT / "template.yaml")


def route_disagreements(routes: list[Route], operations: tuple[Operation, ...]) -> list[str]:
    """Every template route has exactly one operation (same method and path, same auth) and vice versa."""
    problems = []
    counts = Counter((op.method, op.path) for op in operations)
    problems += [f"operation listed {n} times: {m} {p}" for (m, p), n in counts.items() if n > 1]
    by_key = {(op.method, op.path): op for op in operations}
    route_keys = {(r.method, r.path) for r in routes}
    for route in routes:
        op = by_key.get((route.method, route.path))
        if op is None:
            problems.append(f"route without an operation: {route.route_key}")
        elif op.auth != (route.authorizer is not None):
            problems.append(f"auth differs: {route.route_key} (template authorizer {route.authorizer})")
    problems += [f"operation without a route: {m} {p}" for (m, p) in by_key if (m, p) not in route_keys]
    return problems


def handler_disagreements(source: str, op: Operation) -> list[str]:
    """What the handler reads and returns must be what the operation documents."""
    tree = ast.parse(source)
    problems = []
    calls = {
        node.func.attr: node.args[0].id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("body_as", "query_as", "path_as")
        and node.args
        and isinstance(node.args[0], ast.Name)
    }
    for call, documented in (("body_as", op.body), ("query_as", op.query), ("path_as", op.path_model)):
        used = calls.get(call)
        name = documented.__name__ if documented else None
        if call == "body_as" and used is None and op.operation_id in DOCUMENTED_ONLY_BODY:
            continue
        if used != name:
            problems.append(f"{op.operation_id}: handler {call}({used}) but the spec documents {name}")
    documented_models = {
        model.__name__
        for model in (op.body, op.query, op.path_model, *op.responses.values())
        if isinstance(model, type)
    }
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "calbot.models"
        for alias in node.names
    }
    problems += [
        f"{op.operation_id}: handler uses {name}, which the spec does not document"
        for name in sorted(imported - documented_models)
    ]
    handler = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "handler")
    returns = ast.unparse(handler.returns) if handler.returns else None
    success = [model for status, model in op.responses.items() if status < 300]
    if returns != "Response" and [getattr(s, "__name__", s) for s in success] != [returns]:
        problems.append(f"{op.operation_id}: handler returns {returns}, the spec documents {success}")
    return problems


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_route_has_exactly_one_operation_and_back(template: Template) -> None:
    assert route_disagreements(template.routes, OPERATIONS) == []
    spec_ops = [(m.upper(), p) for p, item in document()["paths"].items() for m in item]
    assert sorted(spec_ops) == sorted((r.method, r.path) for r in template.routes)


def test_the_route_check_catches_a_missing_an_extra_and_an_open_route(template: Template) -> None:
    ops = tuple(op for op in OPERATIONS if op.operation_id != "listConnections")
    extra = Operation("GET", "/api/v1/nowhere", "nowhere", "-", "-", {200: models.CancelResult})
    open_route = next(r for r in template.routes if r.authorizer is None)
    locked = [
        Route(r.method, r.path, r.function, "ApiKeyAuthorizer", r.api, r.event_name) if r is open_route else r
        for r in template.routes
    ]
    problems = route_disagreements(locked, (*ops, extra, ops[0]))
    assert any("route without an operation: GET /api/v1/calendar/connections" in p for p in problems)
    assert any("operation without a route: GET /api/v1/nowhere" in p for p in problems)
    assert any(p.startswith("auth differs") for p in problems)
    assert any(p.startswith("operation listed 2 times") for p in problems)


def test_every_handler_reads_and_returns_what_its_operation_documents(template: Template) -> None:
    by_key = {(op.method, op.path): op for op in OPERATIONS}
    problems = []
    for route in template.routes:
        source = template.functions[route.function].module_path.read_text()
        problems += handler_disagreements(source, by_key[(route.method, route.path)])
    assert problems == []


def test_the_handler_check_catches_a_model_the_spec_does_not_know() -> None:
    op = next(o for o in OPERATIONS if o.operation_id == "toggleRecurrence")
    source = (ROOT / "functions/toggle_recurrence/app.py").read_text()
    assert handler_disagreements(source, op) == []
    wrong_body = source.replace("body_as(ToggleRecurrenceRequest)", "body_as(AutoRescheduleRequest)")
    assert any("body_as(AutoRescheduleRequest)" in p for p in handler_disagreements(wrong_body, op))
    wrong_return = source.replace("-> ToggleRecurrenceResult:", "-> CancelResult:")
    assert any("handler returns CancelResult" in p for p in handler_disagreements(wrong_return, op))


def test_the_checked_in_openapi_json_is_the_generated_one() -> None:
    checked_in = (ROOT / "openapi.json").read_text(encoding="utf-8")
    assert checked_in == render(), "openapi.json is stale: run `make openapi`"


def test_schemas_come_from_the_models() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    # Request models in validation mode, response models as they serialise.
    own = models.ScheduleRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert own.pop("$defs")["BotConfig"] == schemas["BotConfig"]
    assert schemas["ScheduleRequest"] == own
    served = models.ScheduledBot.model_fields.keys() & models.BotView.model_fields.keys()
    assert served <= set(schemas["BotView"]["properties"])
    assert set(schemas["CreateConnectionRequest"]["properties"]) == set(
        models.CreateConnectionRequest.model_fields
    )
    assert set(schemas["EventView"]["properties"]) == set(models.EventView.model_fields)
    assert schemas["ErrorBody"]["required"] == ["error", "message"]
    assert set(schemas["ErrorBody"]["properties"]) == {"error", "message", "details"}
    events = doc["paths"]["/api/v1/calendar/events"]["get"]
    assert {p["name"] for p in events["parameters"]} == set(models.EventsQuery.model_fields)
    limit = next(p for p in events["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"default": 50, "maximum": 100, "minimum": 1, "type": "integer"}
    provider = next(p for p in events["parameters"] if p["name"] == "provider")
    assert set(provider["schema"]["enum"]) == {"outlook", "google", "microsoft"}


def test_every_error_answer_uses_the_shared_error_schema_and_security_is_declared() -> None:
    doc = document()
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if int(status) >= 400:
                    assert answer["content"]["application/json"]["schema"] == error_ref, (method, path)
            declared = next(o for o in OPERATIONS if o.operation_id == op["operationId"])
            if declared.auth:
                assert op["security"] == [{"TokenAuth": []}, {"BearerAuth": []}]
                assert "401" in op["responses"]
            else:
                assert op["security"] == []
                assert "401" not in op["responses"]
    webhook = doc["paths"]["/api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}"]["post"]
    assert webhook["responses"]["200"]["content"] == {TEXT: {"schema": {"type": "string"}}}
    assert "content" not in webhook["responses"]["202"]
    assert doc["components"]["securitySchemes"]["TokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Authorization: Token <api_key>` (keys come from the admin CLI).",
    }


def test_nothing_scheduled_keeps_the_json_it_replaced() -> None:
    body = models.NothingScheduled(message="m")
    assert json.loads(body.model_dump_json()) == {"scheduled": False, "message": "m"}


def _handler(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"fn_{name}", ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def test_the_document_is_served_without_an_api_key() -> None:
    event = json.loads((ROOT / "events/OpenApiFunction.json").read_text())
    assert "authorization" not in {k.lower() for k in event["headers"]}
    answer = _handler("openapi")(event, None)
    assert answer["statusCode"] == 200
    assert answer["headers"]["content-type"].startswith("application/json")
    assert json.loads(answer["body"]) == document()


# --------------------------------------------------------------------------------------------------
# Issue 16: what a generated client needs, and every answer that can happen is documented.


def _datetime_fields(model: type) -> list[str]:
    return [n for n, f in model.model_fields.items() if "datetime" in repr(f.annotation)]


def _schema_models() -> list[type]:
    return [
        m
        for m in vars(models).values()
        if isinstance(m, type)
        and issubclass(m, models.Model)
        and m.__name__ in document()["components"]["schemas"]
    ]


def _formats(prop: dict[str, Any]) -> set[str | None]:
    options = prop.get("anyOf") or [prop]
    return {o.get("format") for o in options if o.get("type") != "null"}


def test_every_timestamp_is_a_date_time_in_requests_and_responses() -> None:
    schemas = document()["components"]["schemas"]
    checked = []
    for model in _schema_models():
        for name in _datetime_fields(model):
            prop = schemas[model.__name__]["properties"][name]
            assert _formats(prop) == {"date-time"}, (model.__name__, name, prop)
            checked.append(f"{model.__name__}.{name}")
    # responses as well as requests: the timestamps a client reads
    assert {"BotView.scheduled_join_time", "ConnectionView.created_at", "EventView.start_time"} <= set(
        checked
    )
    events = document()["paths"]["/api/v1/calendar/events"]["get"]["parameters"]
    time_min = next(p for p in events if p["name"] == "time_min")
    assert time_min["schema"]["format"] == "date-time"


def test_page_links_are_documented_as_absolute_urls() -> None:
    schemas = document()["components"]["schemas"]
    for model, field in (("EventPage", "next"), ("EventPage", "previous"), ("BotPage", "next")):
        prop = schemas[model]["properties"][field]
        assert _formats(prop) == {"uri"}, (model, field)
        assert "absolute URL" in prop["description"]


def test_scheduled_join_time_is_a_deprecated_alias() -> None:
    schemas = document()["components"]["schemas"]
    for model in ("BotView", "ScheduleResult"):
        alias = schemas[model]["properties"]["ScheduledJoinTime"]
        assert alias["deprecated"] is True and "alias of `scheduled_join_time`" in alias["description"]
        assert alias["format"] == "date-time"
        assert "deprecated" not in schemas[model]["properties"]["scheduled_join_time"]
    # Still served (old clients read it), with the same value.
    view = models.ScheduleResult.model_json_schema(mode="serialization")
    assert "ScheduledJoinTime" in view["required"]


def test_the_fields_the_service_owns_are_documented_as_refused() -> None:
    schemas = document()["components"]["schemas"]
    assert schemas["BotConfig"]["propertyNames"] == {
        "not": {"enum": ["meeting_link", "meeting_url", "calendar_event_id", "scheduled_bot_id"]}
    }
    custom = schemas["BotConfig"]["properties"]["custom_attributes"]
    assert custom["propertyNames"] == {"not": {"enum": ["calendar_event_id", "scheduled_bot_id"]}}
    schedule = document()["paths"]["/api/v1/calendar/schedule/{event_id}"]["post"]
    assert "meeting_link" in schedule["description"] and "series_id" in schedule["description"]


def test_every_operation_documents_the_429_and_503_it_can_answer() -> None:
    """429 rate_limited: every operation behind the API key (calbot.http counts each keyed request).
    503 service_unavailable: every operation whose handler reaches AWS, which is all of them but the
    document itself, including the authorizer's unavailable key store."""
    for path, item in document()["paths"].items():
        for method, op in item.items():
            declared = next(o for o in OPERATIONS if o.operation_id == op["operationId"])
            statuses = set(op["responses"])
            if declared.auth:
                assert "429" in statuses and "rate_limited" in op["responses"]["429"]["description"], path
            else:
                assert "429" not in statuses, path
            if declared.operation_id != "getOpenApiDocument":
                assert "503" in statuses and "service_unavailable" in op["responses"]["503"]["description"], (
                    method,
                    path,
                )
