"""The handler wrapper: request parsing, validation errors, JSON answers, and no stack traces."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from calbot.errors import NotFound, ProviderFailed
from calbot.http import Request, Response, api_handler


class Body(BaseModel):
    name: str
    count: int = 1


def event(
    body: str | None = None, *, ctype: str = "application/json", user: str | None = "usr_1", **extra: Any
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "POST /x",
        "headers": {"content-type": ctype},
        "requestContext": {"http": {"method": "POST"}, "domainName": "abc.example"},
        "body": body,
        "isBase64Encoded": False,
        **extra,
    }
    if user is not None:
        ev["requestContext"]["authorizer"] = {"lambda": {"user_id": user}}
    return ev


@api_handler
def echo(request: Request) -> Response:
    parsed = request.body_as(Body)
    return Response(201, {"user": request.user_id, **parsed.model_dump()})


def call(ev: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = echo(ev, None)
    assert resp["headers"]["content-type"].startswith("application/json")
    return resp["statusCode"], json.loads(resp["body"])


def test_valid_body() -> None:
    assert call(event('{"name": "a"}')) == (201, {"user": "usr_1", "name": "a", "count": 1})


@pytest.mark.parametrize(
    ("body", "ctype", "status", "error"),
    [
        ('{"count": "x"}', "application/json", 400, "invalid_request"),
        ("{not json", "application/json", 400, "invalid_json"),
        ("[1, 2]", "application/json", 400, "invalid_json"),
        ('{"name": "a"}', "text/plain", 415, "unsupported_media_type"),
        ("x" * (256 * 1024 + 1), "application/json", 413, "payload_too_large"),
    ],
)
def test_bad_bodies_are_clear_json_errors(body: str, ctype: str, status: int, error: str) -> None:
    code, data = call(event(body, ctype=ctype))
    assert (code, data["error"]) == (status, error) and data["message"]


def test_validation_details_never_echo_input() -> None:
    code, data = call(event('{"name": 12345678901234567890123, "count": "secret-value-xyz"}'))
    assert code == 400 and "secret-value-xyz" not in json.dumps(data)
    assert {d["field"] for d in data["details"]} == {"name", "count"}


def test_missing_user_is_401() -> None:
    code, data = call(event('{"name": "a"}', user=None))
    assert (code, data["error"]) == (401, "unauthorized")
    code, data = call(event('{"name": "a"}', user=""))
    assert code == 401


def test_unexpected_exception_is_json_500_without_trace() -> None:
    @api_handler
    def broken(request: Request) -> Response:
        raise ZeroDivisionError("internal detail")

    resp = broken(event("{}"), None)
    assert resp["statusCode"] == 500
    assert json.loads(resp["body"]) == {"error": "internal_error", "message": "An unexpected error occurred."}


def test_api_error_extra_fields_and_retry_after_header() -> None:
    @api_handler
    def throttled(request: Request) -> Response:
        raise ProviderFailed("provider_unavailable", "later", retry_after=30, account_id="a@b.c")

    resp = throttled(event("{}"), None)
    assert resp["headers"]["retry-after"] == "30"
    assert json.loads(resp["body"]) == {
        "error": "provider_unavailable",
        "message": "later",
        "account_id": "a@b.c",
    }


def test_plain_text_response() -> None:
    @api_handler
    def plain(request: Request) -> Response:
        return Response(200, text="tok en")

    resp = plain(event(None), None)
    assert resp["body"] == "tok en" and resp["headers"]["content-type"].startswith("text/plain")


def test_base64_body_and_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    from calbot.config import reset_settings

    ev = event(base64.b64encode(b'{"name": "b64"}').decode(), isBase64Encoded=True)
    assert call(ev)[1]["name"] == "b64"
    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.setenv("SSM_PREFIX", "/calbot/test")
    monkeypatch.setenv("PUBLIC_BASE_URL", "")
    reset_settings()
    assert Request(ev).base_url == "https://abc.example"
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://cal.example.com/")
    reset_settings()
    assert Request(ev).base_url == "https://cal.example.com"
    reset_settings()


def test_transient_aws_failures_are_503_and_other_errors_stay_500() -> None:
    from botocore.exceptions import ClientError, ReadTimeoutError

    def raising(err: Exception) -> dict[str, Any]:
        @api_handler
        def fn(request: Request) -> Response:
            raise err

        return fn(event("{}"), None)

    timeout = raising(ReadTimeoutError(endpoint_url="http://dynamodb"))
    assert timeout["statusCode"] == 503 and timeout["headers"]["retry-after"] == "2"
    assert json.loads(timeout["body"])["error"] == "service_unavailable"
    throttled = raising(ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "PutItem"))
    assert throttled["statusCode"] == 503
    conflict = raising(
        ClientError(
            {
                "Error": {"Code": "TransactionCanceledException"},
                "CancellationReasons": [{"Code": "TransactionConflict"}],
            },
            "TransactWriteItems",
        )
    )
    assert conflict["statusCode"] == 503
    bug = raising(ClientError({"Error": {"Code": "ValidationException"}}, "PutItem"))
    assert bug["statusCode"] == 500 and json.loads(bug["body"])["error"] == "internal_error"


def test_sqs_and_scheduler_failures_are_503_too() -> None:
    """Each service names its own outage: SQS `InternalError` (HTTP 500) and `RequestThrottled`,
    Scheduler `InternalServerException` (500) — what botocore raises once its retries are spent. A
    genuine change notification that cannot be queued answers 503 (Graph retries it), never 500."""
    from botocore.exceptions import ClientError

    def raising(code: str, status: int, operation: str) -> dict[str, Any]:
        answer = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        err = ClientError(answer, operation)

        @api_handler
        def fn(request: Request) -> Response:
            raise err

        return fn(event("{}"), None)

    for code, status, operation in [
        ("InternalError", 500, "SendMessage"),
        ("RequestThrottled", 400, "SendMessage"),
        ("InternalServerException", 500, "CreateSchedule"),
        ("ServiceUnavailable", 503, "GetParameter"),
    ]:
        answer = raising(code, status, operation)
        assert answer["statusCode"] == 503, (code, answer)
        assert json.loads(answer["body"])["error"] == "service_unavailable"
    # a refusal (4xx) is still not an outage
    assert raising("InvalidParameterValue", 400, "SendMessage")["statusCode"] == 500


def test_every_kind_of_answer_carries_nosniff_and_the_echo_renders_nothing() -> None:
    """Issue 16: JSON, plain text, empty, errors, 401, 503 and 500 alike."""
    from botocore.exceptions import ReadTimeoutError

    def answer(result: Any) -> dict[str, Any]:
        @api_handler
        def fn(request: Request) -> Any:
            if isinstance(result, Exception):
                raise result
            return result

        return fn(event("{}"), None)

    answers = [
        answer({"ok": True}),
        answer(Response(201, {"ok": True}, {"cache-control": "public, max-age=300"})),
        answer(Response(202)),
        answer(Response(200, text="<script>alert(1)</script>")),
        answer(NotFound("nope", "Not here.")),
        answer(ReadTimeoutError(endpoint_url="http://dynamodb")),
        answer(RuntimeError("bug")),
        echo(event("{}", user=None), None),  # 401
        echo(event("{nope"), None),  # 400
    ]
    for resp in answers:
        headers = {k.lower(): v for k, v in resp["headers"].items()}
        assert headers["x-content-type-options"] == "nosniff", resp
        assert (
            "default-src 'none'" in headers["content-security-policy"]
            and "sandbox" in (headers["content-security-policy"])
        )
    text = answers[3]
    assert text["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert text["body"] == "<script>alert(1)</script>"  # echoed as text, never as markup


def test_the_graph_validation_echo_is_plain_text_with_nosniff() -> None:
    path = Path(__file__).resolve().parents[2] / "functions/webhook/app.py"
    spec = importlib.util.spec_from_file_location("webhook_app_nosniff", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ev = event(None, user=None, queryStringParameters={"validationToken": "<html><body>hi</body></html>"})
    resp = module.handler(ev, None)
    assert resp["statusCode"] == 200 and resp["body"] == "<html><body>hi</body></html>"
    assert resp["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert resp["headers"]["x-content-type-options"] == "nosniff"


def test_an_unavailable_key_store_is_503_never_401() -> None:
    """The authorizer could not read the key store (context flag): the key may be valid, so the route
    answers 503 service_unavailable with Retry-After, never 401 (clients drop keys they think dead)."""
    ev = event('{"name": "a"}', user=None)
    ev["requestContext"]["authorizer"] = {"lambda": {"user_id": "", "key_id": "", "unavailable": True}}
    resp = echo(ev, None)
    assert resp["statusCode"] == 503 and resp["headers"]["retry-after"] == "2"
    assert json.loads(resp["body"])["error"] == "service_unavailable"


def test_a_handler_that_forgets_the_user_is_not_public() -> None:
    """Secure by default: without an authorizer user, a non-public endpoint answers 401 before its body
    runs, even when it never reads `request.user_id`; only a declared public route lets it through."""
    ran: list[str] = []

    @api_handler
    def forgetful(request: Request) -> dict[str, Any]:
        ran.append("service")
        return {"secret": "everyone's data"}

    for ev in (
        event(None, user=None),  # no authorizer context at all
        event(None, user=""),  # the authorizer ran but resolved no user (unknown or revoked key)
    ):
        resp = forgetful(ev, None)
        assert resp["statusCode"] == 401 and json.loads(resp["body"])["error"] == "unauthorized"
    assert ran == []
    assert forgetful(event(None), None)["statusCode"] == 200 and ran == ["service"]

    @api_handler(public=True)
    def open_route(request: Request) -> dict[str, Any]:
        ran.append("public")
        return {"ok": True}

    assert open_route(event(None, user=None), None)["statusCode"] == 200 and ran[-1] == "public"
    assert (forgetful.public, open_route.public) == (False, True)  # type: ignore[attr-defined]


# The routes anyone may call without an API key. Adding one is a change to review: it must be declared
# both here and in template.yaml (`Auth: Authorizer: NONE`) and on its handler (`public=True`).
PUBLIC_ROUTES = {
    "POST /api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}",  # provider webhook
    "GET /api/v1/openapi.json",
}


def _http_routes() -> dict[str, tuple[str, bool]]:
    """Each HttpApi route of template.yaml: its function's code directory and whether it skips auth."""
    from local.template import load_yaml

    template = load_yaml(Path(__file__).resolve().parents[2] / "template.yaml")
    routes = {}
    for resource in template["Resources"].values():
        for source in (resource.get("Properties", {}).get("Events") or {}).values():
            if source["Type"] != "HttpApi":
                continue
            props = source["Properties"]
            open_route = (props.get("Auth") or {}).get("Authorizer") == "NONE"
            routes[f"{props['Method']} {props['Path']}"] = (resource["Properties"]["CodeUri"], open_route)
    return routes


def test_public_routes_are_exactly_the_templates_unauthenticated_ones() -> None:
    routes = _http_routes()
    assert {route for route, (_, open_route) in routes.items() if open_route} == PUBLIC_ROUTES
    public_handlers = set()
    for route, (code_uri, _) in routes.items():
        path = Path(__file__).resolve().parents[2] / code_uri / "app.py"
        spec = importlib.util.spec_from_file_location(f"app_{code_uri.strip('/').replace('/', '_')}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if module.handler.public:
            public_handlers.add(route)
    assert public_handlers == PUBLIC_ROUTES
    assert len(routes) > len(PUBLIC_ROUTES)  # the authenticated routes were read too
