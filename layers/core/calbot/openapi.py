"""The OpenAPI 3.1 document of the public API, generated from the pydantic models (never hand-written).

`OPERATIONS` is the one table of every HTTP route: adding a route to template.yaml means adding one
`Operation` here (tests/unit/test_openapi.py fails until the template, the handlers and this table
agree). `document()` turns the table into the document: request and response schemas come from the
models in calbot.models through pydantic's JSON Schema generator, query models become query
parameters, and every error answer shares the `ErrorBody` schema. The document is served at
GET /api/v1/openapi.json and checked in as openapi.json (`make openapi`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from calbot import models as m

API_TITLE = "calbot"
API_VERSION = "1.0.0"
REF_TEMPLATE = "#/components/schemas/{model}"
TEXT = "text/plain"  # a response documented as plain text (the Graph validation handshake echo)
JSON_OBJECT = "object"  # a response documented as any JSON object (this document itself)

# Errors every API-key route can answer, whatever it does.
UNAVAILABLE = (
    "`service_unavailable`: AWS (or the key store behind the API-key check) was briefly unavailable "
    "or throttling; retry after the Retry-After header's seconds. Never a sign that the key is bad."
)
AUTH_ERRORS: Mapping[int, str] = {
    401: "`unauthorized`: the API key is missing, unknown or revoked.",
    429: "`rate_limited`: too many requests with this API key (per minute, or in one second); retry "
    "after the Retry-After header's seconds.",
    503: UNAVAILABLE,
}
BODY_ERRORS: Mapping[int, str] = {
    413: "`payload_too_large`: the body is larger than 256 KB.",
    415: "`unsupported_media_type`: the body is not sent as application/json.",
}
INVALID = "`invalid_request` (with `details`)"


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and every answer it gives."""

    method: str
    path: str  # exactly as in template.yaml
    operation_id: str
    summary: str
    tag: str
    # status -> response model (JSON), TEXT, JSON_OBJECT or None (no body)
    responses: Mapping[int, type[BaseModel] | str | None]
    errors: Mapping[int, str] = field(default_factory=dict)  # status -> which error codes and when
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = False
    path_model: type[BaseModel] | None = None  # schemas of the path parameters (else: strings)
    auth: bool = True  # False: no API key (the provider webhook, this document)
    description: str = ""


def _bad(*codes: str) -> str:
    return ", ".join([INVALID, *codes])


_LIST_EVENTS = Operation(
    "GET",
    "/api/v1/calendar/events",
    "listEvents",
    "Sync the in-scope accounts, then return their stored events (paged)",
    "Events",
    {200: m.EventPage},
    {400: _bad("`invalid_cursor`")},
    query=m.EventsQuery,
)
_LIST_CALENDARS = Operation(
    "GET",
    "/api/v1/calendar/calendars",
    "listCalendars",
    "Live calendar lists of every in-scope account",
    "Calendars",
    {200: m.CalendarList},
    {400: INVALID},
    query=m.ScopeQuery,
)

_WEBHOOK_PATH = "/api/v1/webhooks/{webhook_id}"
_WEBHOOK_NOT_FOUND = "`webhook_not_found`: no such endpoint of yours (another user's id answers the same)."
# Customer webhooks: the endpoints' own routes (deliveries and the test event are listed after them).
_WEBHOOK_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/api/v1/webhooks",
        "createWebhook",
        "Register a webhook endpoint (the answer shows its signing secret, once)",
        "Webhooks",
        {201: m.WebhookCreated},
        {
            400: _bad(
                "`invalid_json`",
                "`invalid_webhook_url`: not https, a user:password in it, or a host that is or resolves "
                "to a loopback, private, link-local or metadata address",
                "`webhook_limit_reached` (with `limit`): at most 10 endpoints per user",
            )
        },
        body=m.CreateWebhookRequest,
        body_required=True,
        description="The events sent to it are described in this document's `webhooks` section; each "
        "delivery is signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
        "`webhook-signature`) with the `secret` returned here.",
    ),
    Operation(
        "GET",
        "/api/v1/webhooks",
        "listWebhooks",
        "The caller's webhook endpoints (never their secrets)",
        "Webhooks",
        {200: m.WebhookList},
    ),
    *(
        Operation(
            method,
            _WEBHOOK_PATH + suffix,
            operation_id,
            summary,
            "Webhooks",
            {200: answer},
            {
                400: _bad("`invalid_json`", "`invalid_webhook_url`") if body else INVALID,
                404: _WEBHOOK_NOT_FOUND,
            },
            body=body,
            body_required=body is not None,
            path_model=m.WebhookPath,
            description=description,
        )
        for method, suffix, operation_id, summary, answer, body, description in (
            ("GET", "", "getWebhook", "One webhook endpoint (never its secret)", m.WebhookView, None, ""),
            (
                "PATCH",
                "",
                "updateWebhook",
                "Change an endpoint's url (checked again), event types, description or enabled",
                m.WebhookView,
                m.PatchWebhookRequest,
                "`enabled: true` also re-enables an endpoint we disabled after 5 days of failed deliveries, "
                "with a fresh start.",
            ),
            (
                "DELETE",
                "",
                "deleteWebhook",
                "Delete an endpoint and its signing secrets",
                m.WebhookDeleted,
                None,
                "",
            ),
            (
                "POST",
                "/rotate-secret",
                "rotateWebhookSecret",
                "A new signing secret (shown once); the previous one keeps signing beside it for 24 hours",
                m.WebhookSecretRotated,
                None,
                "",
            ),
        )
    ),
)

OPERATIONS: tuple[Operation, ...] = (
    *(
        Operation(
            "POST",
            path,
            operation_id,
            summary,
            "Connections",
            {201: m.ConnectionCreated, 200: m.ConnectionCreated},
            {
                400: _bad("`invalid_json`", "`invalid_credentials`", "`connection_limit_reached`"),
                409: "`already_connected` (with `account_id`), `connect_in_progress`, `connection_changed`, "
                "`disconnect_in_progress`",
                502: "`provider_unavailable`: the provider failed or throttled.",
            },
            body=m.CreateConnectionRequest,
            body_required=True,
            description="201 for a new connection; 200 when `replace` (or a `needs_reauth` connection) "
            "updated an existing one in place.",
        )
        for path, operation_id, summary in (
            (
                "/api/v1/calendar/create_outlook_calendar",
                "createOutlookCalendar",
                "Connect one calendar account (Microsoft or Google, chosen by the body)",
            ),
            (
                "/api/v1/calendar/create_calendar",
                "createCalendar",
                "The Google guide's name for create_outlook_calendar: same body, same behaviour",
            ),
        )
    ),
    Operation(
        "GET",
        "/api/v1/calendar/connections",
        "listConnections",
        "Every connection of the caller, grouped by provider",
        "Connections",
        {200: m.ConnectionList},
    ),
    Operation(
        "GET",
        "/api/v1/calendar/connections/{provider}/{account_id}",
        "getConnection",
        "One connection record",
        "Connections",
        {200: m.ConnectionView},
        {400: INVALID, 404: "`connection_not_found`"},
        path_model=m.ConnectionPath,
    ),
    Operation(
        "DELETE",
        "/api/v1/calendar/connections/{provider}/{account_id}",
        "disconnectConnection",
        "Disconnect one account: stop its subscriptions, cancel its pending bots, purge its events",
        "Connections",
        {200: m.DisconnectResult},
        {
            400: INVALID,
            404: "`connection_not_found` (also the answer to a second call)",
            409: "`connect_in_progress`: the account is being connected or disconnected right now",
            503: "`service_unavailable` (with `retry_after`): a large account was not finished within one "
            "call; call again to resume",
        },
        query=m.DisconnectQuery,
        path_model=m.ConnectionPath,
        description="Resumable: a retried call finishes what an interrupted one started.",
    ),
    *(
        Operation(
            method,
            "/api/v1/calendar/disconnect",
            operation_id,
            f"Legacy disconnect{form}: the one connection in scope (name it with provider/account_id)",
            "Connections",
            {200: m.DisconnectResult},
            {
                400: _bad(
                    "`invalid_json`",
                    "`ambiguous_disconnect` (with `connection_count`, `connections`, `next_steps`)",
                ),
                404: "`connection_not_found`",
                409: "`connect_in_progress`",
            },
            body=m.LegacyDisconnectRequest,
        )
        for method, operation_id, form in (
            ("POST", "disconnectLegacy", ""),
            ("DELETE", "disconnectLegacyDelete", " (DELETE form)"),
        )
    ),
    _LIST_EVENTS,
    replace(
        _LIST_EVENTS,
        path="/api/v1/calendar/get_events",
        operation_id="getEvents",
        summary="Stored events only; never calls a provider",
    ),
    _LIST_CALENDARS,
    replace(
        _LIST_CALENDARS,
        path="/api/v1/calendar",
        operation_id="listCalendarsAlias",
        summary="Alias of GET /calendar/calendars",
    ),
    Operation(
        "POST",
        "/api/v1/calendar/schedule/{event_id}",
        "scheduleEvent",
        "Schedule a bot for an event (this occurrence, the next, one date, or many)",
        "Scheduling",
        {201: m.ScheduleResult},
        {
            400: _bad(
                "`invalid_json`",
                "`no_meeting_link`",
                "`event_in_past`",
                "`event_cancelled`",
                "`not_recurring`",
                "`occurrence_not_found`",
            ),
            404: "`event_not_found`",
            409: "`already_scheduled` (with `bot_id` and `bot_ids`)",
        },
        body=m.ScheduleRequest,
        path_model=m.EventPath,
        description="`{event_id}` is an event's `id` or a series' `series_id` (then the series' next "
        "upcoming occurrence, or its occurrences with `schedule_all_occurrences`). `bot_config` cannot "
        "set the fields the service owns: `meeting_link`, `meeting_url`, `calendar_event_id`, "
        "`scheduled_bot_id` (nor the last two inside `custom_attributes`); they are refused with 400 "
        "`invalid_request`.",
    ),
    Operation(
        "DELETE",
        "/api/v1/calendar/schedule/{event_id}",
        "unscheduleEvent",
        "Cancel an event's scheduled bots",
        "Scheduling",
        {200: m.CancelResult},
        {400: _bad("`invalid_json`"), 404: "`event_not_found`, `not_scheduled`"},
        body=m.UnscheduleRequest,
        path_model=m.EventPath,
    ),
    Operation(
        "GET",
        "/api/v1/calendar/scheduled_bots",
        "listScheduledBots",
        "Live bots whose join time is ahead (or, with `status`, the bots in one status or all)",
        "Scheduling",
        {200: m.BotPage},
        {400: _bad("`invalid_cursor`")},
        query=m.ScheduledBotsQuery,
    ),
    Operation(
        "PATCH",
        "/api/v1/calendar/scheduled_bots/{bot_id}",
        "updateScheduledBot",
        "Change a scheduled bot's join time or config (record and schedule together)",
        "Scheduling",
        {200: m.BotView},
        {
            400: _bad("`invalid_json`", "`join_time_in_past`"),
            404: "`bot_not_found`",
            409: "`bot_not_scheduled`: it already ran or was cancelled.",
        },
        body=m.PatchBotRequest,
        body_required=True,
        path_model=m.BotPath,
        description="`bot_config` and `custom_attributes` cannot set the fields the service owns (see "
        "scheduleEvent): 400 `invalid_request`.",
    ),
    Operation(
        "DELETE",
        "/api/v1/calendar/scheduled_bots/{bot_id}",
        "deleteScheduledBot",
        "Cancel one scheduled bot and delete its schedule",
        "Scheduling",
        {200: m.BotView},
        {
            400: INVALID,
            404: "`bot_not_found`",
            409: "`bot_not_scheduled`: it already ran or was cancelled.",
        },
        path_model=m.BotPath,
    ),
    Operation(
        "POST",
        "/api/v1/calendar/toggle-recurrence",
        "toggleRecurrence",
        "Turn auto-rescheduling of a recurring event on or off",
        "Recurrence",
        {200: m.ToggleRecurrenceResult},
        {400: _bad("`invalid_json`", "`not_recurring`"), 404: "`event_not_found`"},
        body=m.ToggleRecurrenceRequest,
        body_required=True,
    ),
    Operation(
        "POST",
        "/api/v1/calendar/auto-reschedule",
        "autoReschedule",
        "Schedule a series' next occurrence with its last bot config",
        "Recurrence",
        {201: m.ScheduleResult, 200: m.NothingScheduled},
        {
            400: _bad("`invalid_json`", "`not_recurring`"),
            403: "`forbidden`: `user_id` is not the caller's.",
            404: "`event_not_found`",
        },
        body=m.AutoRescheduleRequest,
        body_required=True,
    ),
    Operation(
        "POST",
        "/api/v1/calendar/auto-schedule/enable",
        "enableAutoSchedule",
        "Turn auto-scheduling on (and schedule the next 24 hours at once)",
        "Auto-scheduling",
        {200: m.AutoScheduleSettingsView},
        {400: _bad("`invalid_json`")},
        body=m.EnableAutoScheduleRequest,
    ),
    Operation(
        "POST",
        "/api/v1/calendar/auto-schedule/disable",
        "disableAutoSchedule",
        "Turn auto-scheduling off (scheduled bots stay)",
        "Auto-scheduling",
        {200: m.AutoScheduleSettingsView},
    ),
    Operation(
        "GET",
        "/api/v1/calendar/auto-schedule/settings",
        "getAutoScheduleSettings",
        "Auto-schedule settings and the last run",
        "Auto-scheduling",
        {200: m.AutoScheduleSettingsView},
    ),
    Operation(
        "POST",
        "/api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}",
        "receiveChangeNotifications",
        "Provider change notifications for one account (the URL given to the provider)",
        "Change notifications",
        {200: TEXT, 202: None},
        {
            400: "`invalid_request`: validationToken is too long.",
            503: "`service_unavailable`: AWS was briefly unavailable; the provider retries the delivery.",
        },
        query=None,
        body=m.ChangeNotifications,
        auth=False,
        description="No API key: each notification item is authenticated by its subscription's "
        "`clientState`. With `?validationToken=...` (Graph's handshake) the token is echoed as "
        "text/plain with 200. Otherwise 202 with no body, whether or not items were accepted (unknown "
        "users, accounts and subscriptions get the same answer). Google channel notifications come "
        "with no body and the headers `X-Goog-Channel-ID`, `X-Goog-Channel-Token`, `X-Goog-Resource-ID`, "
        "`X-Goog-Resource-State` and `X-Goog-Message-Number`: the channel must be ours for this account "
        "and carry its token; `sync` answers 200, any other state 202, valid or not.",
    ),
    *_WEBHOOK_OPERATIONS,
    Operation(
        "GET",
        "/api/v1/webhooks/{webhook_id}/deliveries",
        "listWebhookDeliveries",
        "A customer webhook's recent deliveries, newest first",
        "Webhooks",
        {200: m.DeliveryPage},
        {400: _bad("`invalid_cursor`"), 404: "`webhook_not_found`: none of yours has this id."},
        query=m.DeliveriesQuery,
        path_model=m.WebhookPath,
        description="One entry per event sent to this endpoint: its attempts so far, the receiver's last "
        "status, when it was last tried and when it will be tried next, and its state (`pending` while "
        "retries remain, `delivered` once a 2xx came back, `failed` after every retry).",
    ),
    Operation(
        "POST",
        "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        "retryWebhookDelivery",
        "Attempt one delivery again now",
        "Webhooks",
        {202: m.DeliveryView},
        {
            400: INVALID,
            404: "`webhook_not_found`, `delivery_not_found`: none of yours has this id.",
            409: "`webhook_disabled`: enable the webhook first; `delivery_busy`: it is being attempted.",
        },
        path_model=m.DeliveryPath,
        description="Queued, never sent inline: the answer is the delivery, `pending`; its state follows.",
    ),
    Operation(
        "POST",
        "/api/v1/webhooks/{webhook_id}/test",
        "testWebhook",
        "Send a `webhook.test` event to this webhook",
        "Webhooks",
        {202: m.DeliveryView},
        {
            400: INVALID,
            404: "`webhook_not_found`: none of yours has this id.",
            409: "`webhook_disabled`: enable the webhook first.",
        },
        path_model=m.WebhookPath,
        description="Queued like every event and signed the same way; the delivery is listed with the "
        "others.",
    ),
    Operation(
        "GET",
        "/api/v1/openapi.json",
        "getOpenApiDocument",
        "This OpenAPI document",
        "Meta",
        {200: JSON_OBJECT},
        auth=False,
    ),
)

# Query parameters of operations that take them without a pydantic query model.
EXTRA_QUERY: Mapping[str, list[dict[str, Any]]] = {
    "receiveChangeNotifications": [
        {
            "name": "validationToken",
            "in": "query",
            "required": False,
            "description": "Microsoft Graph's subscription validation handshake: echoed back as text/plain.",
            "schema": {"type": "string", "maxLength": 1024},
        }
    ]
}

PATH_PARAM = re.compile(r"{([^}]+)}")

# -- the `webhooks` section: what we POST to a user's endpoints (API.md "Customer webhooks") ----------

WEBHOOK_HEADERS: tuple[tuple[str, str], ...] = (
    ("webhook-id", "The event's `id` (`evt_…`): the same on every retry of it; dedupe by it."),
    ("webhook-timestamp", "When this attempt was signed, in Unix seconds."),
    (
        "webhook-signature",
        '`v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`, keyed by the base64 '
        "part of the endpoint's `whsec_` secret (Standard Webhooks); two signatures, space-separated, "
        "while a rotated-out secret still signs.",
    ),
)
WEBHOOK_ANSWER = (
    "Any 2xx within 10 seconds delivers the event. Anything else (a redirect included: none is "
    "followed) is retried with growing delays for at least 24 hours; an endpoint failing every delivery "
    "for 5 days is disabled."
)


def _camel(event_type: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[._]", event_type))


@cache
def webhook_event_models() -> dict[str, type[BaseModel]]:
    """One envelope model per event type (`BotScheduledEvent`...): WebhookEvent with its `type` fixed
    and its `data` the type's own model."""
    from typing import Literal

    from pydantic import create_model

    made: dict[str, type[BaseModel]] = {}
    for event_type, (data_model, summary) in m.WEBHOOK_EVENT_DATA.items():
        fields: dict[str, Any] = {
            "type": (Literal[event_type], ...),
            "data": (data_model, ...),
        }
        made[event_type] = create_model(
            f"{_camel(event_type)}Event",
            __base__=m.WebhookEvent,
            __doc__=f"`{event_type}`: {summary}",
            **fields,
        )
    assert set(made) == set(m.WEBHOOK_EVENT_TYPES), "every event type needs its data model"
    return made


def _webhooks(refs: Mapping[Any, Any]) -> dict[str, Any]:
    headers = [
        {"name": name, "in": "header", "required": True, "description": why, "schema": {"type": "string"}}
        for name, why in WEBHOOK_HEADERS
    ]
    section = {}
    for event_type, model in webhook_event_models().items():
        section[event_type] = {
            "post": {
                "operationId": f"{model.__name__[0].lower()}{model.__name__[1:]}",
                "summary": m.WEBHOOK_EVENT_DATA[event_type][1],
                "tags": ["Webhooks"],
                "parameters": headers,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(model, "serialization")]}},
                },
                "responses": {"2XX": {"description": WEBHOOK_ANSWER}},
            }
        }
    return section


def _request_models() -> list[type[BaseModel]]:
    return [op.body for op in OPERATIONS if op.body is not None]


def _response_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = [m.ErrorBody]
    for op in OPERATIONS:
        for model in op.responses.values():
            if isinstance(model, type) and issubclass(model, BaseModel) and model not in seen:
                seen.append(model)
    return seen


def _no_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query or path parameter is a string or absent, never JSON null: drop the null branch."""
    options = schema.get("anyOf")
    if options:
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(rest[0])
            if merged.get("default", "") is None:
                merged.pop("default")
            return merged
    return schema


def _model_parameters(model: type[BaseModel], where: str, defs: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation", ref_template=REF_TEMPLATE)
    defs.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _no_null(dict(prop))
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required}
        if prop.get("description"):
            param["description"] = prop["description"]
        prop.pop("title", None)
        param["schema"] = prop
        params.append(param)
    return params


def _path_parameters(op: Operation, defs: dict[str, Any]) -> list[dict[str, Any]]:
    names = PATH_PARAM.findall(op.path)
    given = {p["name"]: p for p in _model_parameters(op.path_model, "path", defs)} if op.path_model else {}
    return [
        given.get(name)
        or {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in names
    ]


def _content(model: type[BaseModel] | str | None, refs: Mapping[Any, Any]) -> dict[str, Any] | None:
    if model is None:
        return None
    if model == TEXT:
        return {"text/plain": {"schema": {"type": "string"}}}
    if model == JSON_OBJECT:
        return {"application/json": {"schema": {"type": "object"}}}
    return {"application/json": {"schema": refs[(model, "serialization")]}}


def _operation(op: Operation, refs: Mapping[Any, Any], defs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    params = _path_parameters(op, defs)
    if op.query is not None:
        params += _model_parameters(op.query, "query", defs)
    params += EXTRA_QUERY.get(op.operation_id, [])
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        answer: dict[str, Any] = {"description": "OK" if status < 300 else str(status)}
        content = _content(model, refs)
        if content:
            answer["content"] = content
        responses[str(status)] = answer
    errors = dict(op.errors)
    if op.body is not None and op.auth:
        errors = {**BODY_ERRORS, **errors}
    if op.auth:
        errors = {**AUTH_ERRORS, **errors}
    error_content = {"application/json": {"schema": refs[(m.ErrorBody, "serialization")]}}
    for status, why in sorted(errors.items()):
        responses[str(status)] = {"description": why, "content": error_content}
    out["responses"] = responses
    out["security"] = [{"TokenAuth": []}, {"BearerAuth": []}] if op.auth else []
    return out


@cache
def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document (built once per process)."""
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation") for model in _request_models()
    ]
    outputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "serialization") for model in [*_response_models(), *webhook_event_models().values()]
    ]
    refs, top = models_json_schema([*inputs, *outputs], ref_template=REF_TEMPLATE)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs, defs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": "Calendar integration for meeting bots. Every error answer is "
            '`{"error": "<snake_case_code>", "message": "<sentence>", ...}`; a 400 `invalid_request` '
            "lists the bad fields in `details`.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "webhooks": _webhooks(refs),
        "components": {
            "schemas": dict(sorted(defs.items())),
            "securitySchemes": {
                "TokenAuth": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Authorization: Token <api_key>` (keys come from the admin CLI).",
                },
                "BearerAuth": {"type": "http", "scheme": "bearer", "description": "The same key as Bearer."},
            },
        },
    }


def render() -> str:
    """openapi.json as checked in: stable key order, one trailing newline."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # `make openapi`: python -m calbot.openapi openapi.json
    import sys
    from pathlib import Path

    Path(sys.argv[1] if len(sys.argv) > 1 else "openapi.json").write_text(render(), encoding="utf-8")
