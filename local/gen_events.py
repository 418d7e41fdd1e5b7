"""Generate events/<LogicalId>.json (sample Lambda events) for every function in template.yaml.

    python -m local.gen_events            # (re)write events/
    python -m local.gen_events --check    # exit 1 listing missing / extra / stale files
    python -m local.gen_events --prune    # also delete files that no function generates

The shape of each event comes from the template (the function's route and authorizer, its schedule,
its queue); what a template cannot say (request bodies, path values, SQS message bodies, the event
of a function nothing in the template triggers) comes from the small SPECIFICS table below. HTTP
events are built by the same code the local gateway uses for live requests, so the samples are
exactly what the function receives behind the gateway. Everything is deterministic (fixed ids and
time) so ``--check`` can tell a stale file.

Files: ``events/<LogicalId>.json`` is the function's first event source (or SPECIFICS' ``route``);
further event sources give ``events/<LogicalId>.<EventName>.json``; VARIANTS give
``events/<LogicalId>.<variant>.json``. Every file in events/ must be generated from here.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from local.demo import DEMO_API_KEY, DEMO_USER_ID, TEAMS_MEETING_ID, demo_event_id
from local.gateway import HttpRequest, build_authorizer_event, build_http_event
from local.template import EventSource, FunctionSpec, Route, Template, TemplateError, load_template

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPO_ROOT / "events"

# The local stack's seeded demo user, its fixed local-only API key, and its meetings (local/demo.py).
DEMO_AUTHORIZER_CONTEXT: dict[str, Any] = {"user_id": DEMO_USER_ID}

# Fixed so that regenerating gives byte-identical files.
EVENT_TIME = datetime(2025, 1, 6, 9, 0, 0, tzinfo=UTC)
SOURCE_IP = "203.0.113.10"  # TEST-NET-3
USER_AGENT = "curl/8.5.0"
_NAMESPACE = uuid.UUID("5b0e54d6-2a43-4c69-9b3a-6c5f1f0b7e21")

_UNSET: Any = object()


@dataclass(frozen=True)
class Specifics:
    """Per-function details the template cannot give."""

    route: str | None = None  # route key to use when the function has several (or is an authorizer)
    path: Mapping[str, str] = field(default_factory=dict)  # path parameter values, decoded
    query: str = ""  # raw query string, as a client would send it
    body: Any = None  # HTTP: a JSON value (sent as application/json) or a str; SQS: the message body
    headers: Mapping[str, str] = field(default_factory=dict)  # extra/override request headers
    api_key: bool | None = None  # send the demo key; default: when the route has an authorizer
    authorizer_context: Any = _UNSET  # requestContext.authorizer.lambda; default: the demo user
    message_group_id: str = "sample-group"  # SQS FIFO
    event: Any = _UNSET  # the whole event, for functions without an event source


SPECIFICS: dict[str, Specifics] = {
    "AuthorizerFunction": Specifics(route="GET /api/v1/calendar/connections"),
    "CreateConnectionFunction": Specifics(
        # The seed registers this refresh token at the Graph emulator for a third, not yet connected
        # account (sample.user@fabrikam.example), so the first invoke on a fresh stack answers 201.
        body={
            "microsoft_client_id": "demo-client-id",
            "microsoft_client_secret": "demo-client-secret-value",
            "microsoft_refresh_token": "M.C5_sample_event_refresh_token",
            "microsoft_tenant": "common",
        }
    ),
    "GetConnectionFunction": Specifics(path={"provider": "outlook", "account_id": "jane@contoso.example"}),
    # Disconnects the account CreateConnectionFunction's sample connected (samples run in name order).
    "DisconnectConnectionFunction": Specifics(
        path={"provider": "outlook", "account_id": "sample.user@fabrikam.example"}, query="purge_events=true"
    ),
    # The demo user has several connections: the legacy endpoint refuses to guess.
    "DisconnectFunction": Specifics(body={}),
    "ScheduleEventFunction": Specifics(
        # The demo seed's Teams meeting (two hours after the stack starts): the first invoke schedules it.
        path={"event_id": demo_event_id(TEAMS_MEETING_ID)},
        body={"bot_config": {"bot_name": "Notetaker", "audio_required": True}, "join_offset_seconds": 60},
    ),
    "UnscheduleEventFunction": Specifics(path={"event_id": demo_event_id(TEAMS_MEETING_ID)}, body={}),
    "UpdateScheduledBotFunction": Specifics(
        path={"bot_id": "sb_sample_missing"}, body={"bot_name": "Renamed"}
    ),
    "DeleteScheduledBotFunction": Specifics(path={"bot_id": "sb_sample_missing"}),
    "ToggleRecurrenceFunction": Specifics(
        body={"event_id": demo_event_id(TEAMS_MEETING_ID), "recurring_enabled": True}
    ),
    "AutoRescheduleFunction": Specifics(body={"event_id": demo_event_id(TEAMS_MEETING_ID)}),
    "BotLauncherFunction": Specifics(
        event={"action": "launch", "user_id": DEMO_USER_ID, "bot_id": "sb_sample_missing"}
    ),
    "RecurrenceRescheduleFunction": Specifics(
        event={"action": "reschedule", "user_id": DEMO_USER_ID, "bot_id": "sb_sample_missing"}
    ),
    "AutoScheduleEnableFunction": Specifics(
        body={
            "default_bot_config": {"bot_name": "Auto Notetaker", "audio_required": True},
            "join_offset_seconds": 60,
        }
    ),
    "AutoScheduleWorkerFunction": Specifics(body={"user_ids": [DEMO_USER_ID], "run_id": "sample-run"}),
    "RenewalWorkerFunction": Specifics(
        body={"subscription_ids": ["sample-missing-sub"], "run_id": "sample-run"}
    ),
    "SyncWorkerFunction": Specifics(
        body={
            "user_id": DEMO_USER_ID,
            "provider": "outlook",
            "account_id": "jane@contoso.example",
            "kind": "sync",
        },
        message_group_id="usr_demo#outlook#jane@contoso.example",
    ),
    # Customer-webhook delivery: one attempt of a delivery that does not exist (the worker drops it).
    "WebhookDeliveryFunction": Specifics(
        body={
            "kind": "attempt",
            "user_id": DEMO_USER_ID,
            "webhook_id": "wh_sample_missing",
            "delivery_id": "whd_0000000000000samplemissing",
            "token": "sample",
        }
    ),
    "ListWebhookDeliveriesFunction": Specifics(path={"webhook_id": "wh_sample_missing"}),
    "RetryWebhookDeliveryFunction": Specifics(
        path={"webhook_id": "wh_sample_missing", "delivery_id": "whd_0000000000000samplemissing"}
    ),
    "TestWebhookFunction": Specifics(path={"webhook_id": "wh_sample_missing"}),
    # Customer webhook endpoints (a missing id answers 404; the create body is refused as not https).
    "CreateWebhookFunction": Specifics(body={"url": "http://127.0.0.1:9/hooks", "event_types": ["*"]}),
    "GetWebhookFunction": Specifics(path={"webhook_id": "wh_sample_missing"}),
    "UpdateWebhookFunction": Specifics(path={"webhook_id": "wh_sample_missing"}, body={"enabled": False}),
    "DeleteWebhookFunction": Specifics(path={"webhook_id": "wh_sample_missing"}),
    "RotateWebhookSecretFunction": Specifics(path={"webhook_id": "wh_sample_missing"}),
    "ListEventsFunction": Specifics(query="provider=outlook&account_id=jane%40contoso.example&limit=10"),
    "GetEventsFunction": Specifics(query="limit=10"),
    "WebhookFunction": Specifics(
        # Microsoft Graph's subscription validation handshake: POST, empty text/plain body.
        path={"user_id": DEMO_USER_ID, "provider": "outlook", "account_id": "jane@contoso.example"},
        query="validationToken=Validation%3A+Testing+client+application+reachability",
        headers={"content-type": "text/plain; charset=utf-8", "content-length": "0"},
    ),
}

# Extra samples: events/<LogicalId>.<variant>.json.
VARIANTS: dict[str, dict[str, Specifics]] = {
    "ListConnectionsFunction": {
        # No API key: the authorizer still allows (it never denies) with an empty user id.
        "no_api_key": Specifics(api_key=False, authorizer_context={"user_id": ""}),
    },
}


class GenerationError(Exception):
    """A function's sample event cannot be generated (usually: SPECIFICS lacks what it needs)."""


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _trace_id(owner: str) -> str:
    # X-Ray's Root=1-<epoch seconds hex>-<24 hex>, derived from the owner so it is stable.
    return f"Root=1-{int(EVENT_TIME.timestamp()):08x}-{uuid.UUID(_uuid(owner, 'trace')).hex[:24]}"


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# -- HTTP ------------------------------------------------------------------------------------------


def _raw_path(route: Route, values: Mapping[str, str], owner: str) -> str:
    segments: list[str] = []
    for segment in route.path.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            name = segment[1:-1]
            greedy = name.endswith("+")
            name = name.rstrip("+")
            if name not in values:
                raise GenerationError(f"{owner}: SPECIFICS needs a value for path parameter {name!r}")
            segments.append(quote(values[name], safe="/" if greedy else ""))
        else:
            segments.append(segment)
    return "/".join(segments)


def _http_request(template: Template, route: Route, spec: Specifics, owner: str) -> HttpRequest:
    if route.path == "$default":
        raise GenerationError(f"{owner}: a $default route needs a whole event in SPECIFICS")
    method = "GET" if route.method == "ANY" else route.method
    api_id = str(template.ref(route.api))
    body = b""
    headers: dict[str, str] = {"accept": "*/*"}
    send_key = spec.api_key if spec.api_key is not None else route.authorizer is not None
    if send_key:
        headers["authorization"] = f"Token {DEMO_API_KEY}"
    if spec.body is not None:
        is_json = not isinstance(spec.body, str)
        body = (json.dumps(spec.body) if is_json else spec.body).encode("utf-8")
        headers["content-length"] = str(len(body))
        headers["content-type"] = "application/json" if is_json else "text/plain; charset=utf-8"
    headers |= {
        "host": f"{api_id}.execute-api.{template.region}.{template.url_suffix}",
        "user-agent": USER_AGENT,
        "x-amzn-trace-id": _trace_id(owner),
        "x-forwarded-for": SOURCE_IP,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    headers |= {k.lower(): v for k, v in spec.headers.items()}
    return HttpRequest(
        method=method,
        raw_path=_raw_path(route, spec.path, owner),
        raw_query=spec.query,
        headers=tuple(sorted(headers.items())),
        body=body,
        source_ip=SOURCE_IP,
    )


def _pick_route(routes: Sequence[Route], spec: Specifics, owner: str) -> Route:
    if spec.route is None:
        return routes[0]
    for route in routes:
        if route.route_key == spec.route:
            return route
    raise GenerationError(
        f"{owner}: SPECIFICS route {spec.route!r} is not one of {[r.route_key for r in routes]}"
    )


def http_event(template: Template, route: Route, spec: Specifics, owner: str) -> dict[str, Any]:
    request = _http_request(template, route, spec, owner)
    context = DEMO_AUTHORIZER_CONTEXT if spec.authorizer_context is _UNSET else spec.authorizer_context
    return build_http_event(
        request,
        route=route,
        path_parameters=dict(spec.path),
        api_id=str(template.ref(route.api)),
        account_id=template.account_id,
        request_id=_uuid(owner, "request"),
        now=EVENT_TIME,
        authorizer_context=context,
        authorized=route.authorizer is not None,
    )


def authorizer_event(template: Template, fn: FunctionSpec, spec: Specifics, owner: str) -> dict[str, Any]:
    names = {a.name for a in template.authorizers.values() if a.function == fn.logical_id}
    routes = [r for r in template.routes if r.authorizer in names]
    if not routes:
        raise GenerationError(f"{owner}: no route uses this authorizer, so there is no request to sample")
    route = _pick_route(routes, spec, owner)
    assert route.authorizer is not None
    return build_authorizer_event(
        _http_request(template, route, spec, owner),
        spec=template.authorizers[route.authorizer],
        route=route,
        path_parameters=dict(spec.path),
        api_id=str(template.ref(route.api)),
        account_id=template.account_id,
        region=template.region,
        request_id=_uuid(owner, "request"),
        now=EVENT_TIME,
    )


# -- schedules and queues --------------------------------------------------------------------------


def _input(source: EventSource) -> Any:
    value = source.properties.get("Input")
    if value is None:
        return _UNSET
    try:
        return json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError:
        return value  # Input may be any text; the target then receives it as a JSON string


def schedule_event(template: Template, fn: FunctionSpec, source: EventSource) -> Any:
    """What an EventBridge rule (Schedule) or EventBridge Scheduler schedule (ScheduleV2) delivers."""
    given = _input(source)
    if given is not _UNSET:
        return given  # both deliver only the configured Input when there is one
    name = str(source.properties.get("Name") or f"{template.stack_name}-{fn.logical_id}{source.name}")
    base = {
        "version": "0",
        "id": _uuid(fn.logical_id, source.name),
        "detail-type": "Scheduled Event",
        "account": template.account_id,
        "time": EVENT_TIME.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": template.region,
    }
    if source.type == "ScheduleV2":
        group = str(source.properties.get("GroupName") or "default")
        arn = (
            f"arn:{template.partition}:scheduler:{template.region}:{template.account_id}:"
            f"schedule/{group}/{name}"
        )
        # EventBridge Scheduler's envelope carries detail as the string "{}", not an object.
        return {**base, "source": "aws.scheduler", "resources": [arn], "detail": "{}"}
    arn = f"arn:{template.partition}:events:{template.region}:{template.account_id}:rule/{name}"
    return {**base, "source": "aws.events", "resources": [arn], "detail": {}}


def sqs_event(template: Template, fn: FunctionSpec, source: EventSource, spec: Specifics) -> dict[str, Any]:
    """A one-record batch as Lambda's SQS event source mapping delivers it."""
    if spec.body is None:
        raise GenerationError(f"{fn.logical_id}: SPECIFICS needs the SQS message body for {source.name}")
    queue_arn = str(source.properties.get("Queue"))
    queue_id = template.resource_for_arn(queue_arn)
    queue_props = template.resources_of_type("AWS::SQS::Queue").get(queue_id or "", {})
    body = spec.body if isinstance(spec.body, str) else json.dumps(spec.body)
    sent = EVENT_TIME - timedelta(seconds=2)
    attributes = {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": str(_epoch_ms(sent)),
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": str(_epoch_ms(sent) + 3),
    }
    if queue_arn.endswith(".fifo"):
        content_dedup = str(queue_props.get("ContentBasedDeduplication", "")).lower() == "true"
        attributes |= {
            "SequenceNumber": "18849496460467696128",
            "MessageGroupId": spec.message_group_id,
            "MessageDeduplicationId": (
                hashlib.sha256(body.encode()).hexdigest() if content_dedup else _uuid(fn.logical_id, "dedup")
            ),
        }
    message_id = _uuid(fn.logical_id, source.name, "message")
    receipt = base64.b64encode(hashlib.sha512(message_id.encode()).digest()).decode()
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": receipt,
                "body": body,
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # what SQS reports
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": template.region,
            }
        ]
    }


# -- per function ----------------------------------------------------------------------------------


def function_events(
    template: Template, fn: FunctionSpec, spec: Specifics, owner: str
) -> list[tuple[str, Any]]:
    """(event source name or "", event) for each sample of ``fn``; the first is the main file."""
    if spec.event is not _UNSET:
        return [("", spec.event)]
    if fn.logical_id in template.authorizer_functions():
        return [("", authorizer_event(template, fn, spec, owner))]
    samples: list[tuple[str, Any]] = []
    routes = template.routes_for(fn.logical_id)
    if spec.route is not None:
        main_route = _pick_route(routes, spec, owner)
        samples.append((main_route.event_name, http_event(template, main_route, spec, owner)))
    for source in fn.events:
        if any(name == source.name for name, _ in samples):
            continue
        if source.type == "HttpApi":
            route = next(r for r in routes if r.event_name == source.name)
            samples.append((source.name, http_event(template, route, spec, owner)))
        elif source.type in ("Schedule", "ScheduleV2"):
            samples.append((source.name, schedule_event(template, fn, source)))
        elif source.type == "SQS":
            samples.append((source.name, sqs_event(template, fn, source, spec)))
        else:
            raise GenerationError(
                f"{owner}: no generator for event type {source.type!r} ({source.name}); "
                "add `event=` to SPECIFICS"
            )
    if not samples:
        raise GenerationError(
            f"{owner}: nothing in template.yaml triggers this function; add its event to SPECIFICS in "
            "local/gen_events.py"
        )
    return samples


def generate(
    template: Template,
    specifics: Mapping[str, Specifics] | None = None,
    variants: Mapping[str, Mapping[str, Specifics]] | None = None,
) -> dict[str, Any]:
    """File name -> event for every function (and variant) of the template (tables default to
    this module's SPECIFICS and VARIANTS)."""
    specifics = SPECIFICS if specifics is None else specifics
    variants = VARIANTS if variants is None else variants
    files: dict[str, Any] = {}
    for logical_id, fn in template.functions.items():
        samples = function_events(template, fn, specifics.get(logical_id, Specifics()), logical_id)
        files[f"{logical_id}.json"] = samples[0][1]
        for name, event in samples[1:]:
            files[f"{logical_id}.{name}.json"] = event
        for variant, spec in variants.get(logical_id, {}).items():
            owner = f"{logical_id}.{variant}"
            files[f"{owner}.json"] = function_events(template, fn, spec, owner)[0][1]
    for logical_id in variants.keys() - template.functions.keys():
        raise GenerationError(f"VARIANTS names {logical_id}, which is not a function of the template")
    return files


def render(event: Any) -> str:
    return json.dumps(event, indent=2, ensure_ascii=False) + "\n"


def differences(events_dir: Path, files: Mapping[str, Any]) -> list[str]:
    """``missing: x`` / ``extra: x`` / ``stale: x`` lines; empty when events/ is up to date."""
    present = {p.name for p in events_dir.glob("*.json")} if events_dir.is_dir() else set()
    lines = [f"missing: {events_dir.name}/{name}" for name in sorted(files.keys() - present)]
    lines += [f"extra: {events_dir.name}/{name}" for name in sorted(present - files.keys())]
    for name in sorted(files.keys() & present):
        if (events_dir / name).read_text(encoding="utf-8") != render(files[name]):
            lines.append(f"stale: {events_dir.name}/{name}")
    return lines


def write(events_dir: Path, files: Mapping[str, Any], *, prune: bool = False) -> list[str]:
    """Write every file whose content differs; with ``prune`` delete the extras. Returns what changed."""
    events_dir.mkdir(parents=True, exist_ok=True)
    changed: list[str] = []
    for name, event in sorted(files.items()):
        path = events_dir / name
        text = render(event)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(f"wrote: {events_dir.name}/{name}")
    for path in sorted(events_dir.glob("*.json")):
        if path.name not in files:
            if prune:
                path.unlink()
                changed.append(f"deleted: {events_dir.name}/{path.name}")
            else:
                changed.append(f"extra (not generated; --prune deletes it): {events_dir.name}/{path.name}")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.gen_events", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 when events/ is out of date"
    )
    parser.add_argument("--prune", action="store_true", help="delete events/*.json that nothing generates")
    parser.add_argument("-t", "--template", default=str(REPO_ROOT / "template.yaml"))
    parser.add_argument("--events-dir", default=str(EVENTS_DIR))
    args = parser.parse_args(argv)
    try:
        files = generate(load_template(args.template))
    except (GenerationError, TemplateError) as exc:
        print(f"local.gen_events: {exc}", file=sys.stderr)
        return 2
    events_dir = Path(args.events_dir)
    if args.check:
        lines = differences(events_dir, files)
        for line in lines:
            print(line)
        if lines:
            print(
                "events/ is out of date: run `python -m local.gen_events` (or `make events`)", file=sys.stderr
            )
            return 1
        return 0
    for line in write(events_dir, files, prune=args.prune):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
