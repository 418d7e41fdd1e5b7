"""The OpenAPI document's 3.1 `webhooks` section: one entry per event type of the contract, each
with the Standard Webhooks headers and the envelope whose `data` is that type's model, generated from
the pydantic models like the rest of the document; what the services emit validates against it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator, ValidationError
from openapi_spec_validator import validate

from calbot import models, webhook_events
from calbot.models import Connection, LastRun, ScheduledBot
from calbot.openapi import document

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DATA_MODELS = {
    "bot.scheduled": "BotView",
    "bot.updated": "BotView",
    "bot.cancelled": "BotView",
    "bot.launched": "BotView",
    "bot.failed": "BotView",
    "connection.created": "ConnectionView",
    "connection.needs_reauth": "ConnectionView",
    "connection.disconnected": "ConnectionView",
    "auto_schedule.completed": "AutoScheduleCompletedData",
    "webhook.test": "WebhookTestData",
}
SECRET_NAMED = re.compile(r"(?i)(token|secret|client_?state|credential|password)")


def envelope_schema(event_type: str) -> dict[str, Any]:
    doc = document()
    ref = doc["webhooks"][event_type]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return {"$ref": ref, "components": doc["components"]}


def test_the_document_with_its_webhooks_is_valid_openapi_3_1() -> None:
    doc = document()
    validate(doc)
    assert list(doc["webhooks"]) == list(models.WEBHOOK_EVENT_TYPES) == list(DATA_MODELS)


@pytest.mark.parametrize("event_type", list(DATA_MODELS))
def test_each_event_type_documents_its_envelope_headers_and_data(event_type: str) -> None:
    doc = document()
    post = doc["webhooks"][event_type]["post"]
    assert {p["name"] for p in post["parameters"] if p["in"] == "header" and p["required"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert "2XX" in post["responses"] and "10 seconds" in post["responses"]["2XX"]["description"]
    name = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    envelope = doc["components"]["schemas"][name]
    assert envelope["required"] == ["id", "type", "timestamp", "data"]
    assert envelope["properties"]["type"]["const"] == event_type
    assert envelope["properties"]["timestamp"]["format"] == "date-time"
    assert envelope["properties"]["data"] == {"$ref": f"#/components/schemas/{DATA_MODELS[event_type]}"}


def test_the_bot_data_is_the_scheduled_bots_row() -> None:
    schemas = document()["components"]["schemas"]
    # the same schema GET /calendar/scheduled_bots answers with: one model, one schema
    page = schemas["BotPage"]["properties"]["results"]["items"]
    assert page == {"$ref": "#/components/schemas/BotView"}
    assert {"reason", "remote_bot_id", "status", "bot_id"} <= set(schemas["BotView"]["properties"])
    counts = set(schemas["AutoScheduleCompletedData"]["properties"])
    assert {"scheduled", "skipped_existing", "skipped_no_link", "run_at"} <= counts


def _properties(schema: Any, schemas: dict[str, Any], seen: set[str]) -> set[str]:
    if isinstance(schema, dict):
        found: set[str] = set()
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                found |= _properties(schemas[name], schemas, seen)
        found |= set(schema.get("properties", {}))
        for value in schema.values():
            found |= _properties(value, schemas, seen)
        return found
    if isinstance(schema, list):
        return {p for item in schema for p in _properties(item, schemas, seen)}
    return set()


def test_no_payload_documents_a_secret_field() -> None:
    doc = document()
    for event_type in DATA_MODELS:
        names = _properties(
            {"$ref": envelope_schema(event_type)["$ref"]}, doc["components"]["schemas"], set()
        )
        assert {"id", "type", "timestamp", "data"} <= names
        assert not [n for n in names if SECRET_NAMED.search(n)], event_type


def test_what_the_services_emit_validates_against_the_document(monkeypatch: pytest.MonkeyPatch) -> None:
    from calbot.services import webhook_delivery

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(
        webhook_delivery,
        "enqueue_event",
        lambda user, event: sent.append(json.loads(event.model_dump_json())),
    )
    bot = ScheduledBot(
        bot_id="sb_1",
        user_id="usr_1",
        event_id="evt_1",
        series_key="evt_1",
        provider="outlook",
        account_id="jane@contoso.example",
        meeting_url="https://zoom.us/j/1",
        occurrence_start=T0,
        meeting_end=T0 + timedelta(hours=1),
        scheduled_join_time=T0 - timedelta(minutes=1),
        status="Cancelled",
        reason="event_cancelled",
        dedup_key="k",
        created_at=T0,
        updated_at=T0,
    )
    conn = Connection(
        user_id="usr_1",
        provider="google",
        account_id="sam@example.com",
        webhook_url="https://api.example/x",
        credential_path="/calbot/dev/users/usr_1/google/sam",
        created_at=T0,
        updated_at=T0,
    )
    webhook_events.emit_bot(bot, "bot.cancelled")
    webhook_events.emit_connection(conn, "connection.created")
    webhook_events.emit(
        "usr_1", "auto_schedule.completed", webhook_events.auto_schedule_payload(T0, LastRun())
    )
    webhook_events.emit("usr_1", "webhook.test", {"webhook_id": "wh_1", "message": "hello"})
    assert [e["type"] for e in sent] == [
        "bot.cancelled",
        "connection.created",
        "auto_schedule.completed",
        "webhook.test",
    ]
    for event in sent:
        Draft202012Validator(envelope_schema(event["type"])).validate(event)
    wrong = {**sent[0], "data": {k: v for k, v in sent[0]["data"].items() if k != "bot_id"}}
    with pytest.raises(ValidationError):
        Draft202012Validator(envelope_schema("bot.cancelled")).validate(wrong)
    with pytest.raises(ValidationError):  # a bot's data under a connection type
        Draft202012Validator(envelope_schema("connection.created")).validate(
            {**sent[0], "type": "connection.created"}
        )
