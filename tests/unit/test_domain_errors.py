"""Issue 17 item 3: the core raises domain errors and never speaks HTTP; calbot.http maps them once.

The rule is pinned on the source (no service imports the HTTP layer, takes a request, passes a status
or builds a page link), the one table is pinned row by row, and the webhook's HTTP side (now in its
handler) is checked without AWS: the service functions are replaced by recorders.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calbot import errors
from calbot.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    ProviderFailed,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMedia,
)
from calbot.http import STATUS, Request, Response, api_handler, error_response, status_of, with_links
from calbot.models import BotPage, EventPage
from calbot.pages import Paged
from calbot.services.notifications import Received
from tests.function_apps import load_app

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "layers/core/calbot"
SERVICES = sorted((CORE / "services").glob("*.py"))

# The contract's statuses of each kind (API.md): the table must say exactly this.
CONTRACT = {
    Invalid: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedMedia: 415,
    RateLimited: 429,
    ProviderFailed: 502,
    Unavailable: 503,
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(tree: ast.Module) -> list[tuple[str, str | None]]:
    """(module, name) for every import in the file, at any depth (lazy imports count too)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [(node.module or "", alias.name) for alias in node.names]
    return found


# --- the rule ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_no_service_imports_the_http_layer_or_its_types(path: Path) -> None:
    for module, name in _imports(_tree(path)):
        assert module != "calbot.http" and not module.startswith(("werkzeug", "flask")), (path, module)
        assert name not in ("http", "Request", "Response", "ApiError"), (path, module, name)


def test_only_calbot_http_imports_calbot_http_in_the_core() -> None:
    for path in sorted(CORE.rglob("*.py")):
        if path.name == "http.py" and path.parent == CORE:
            continue
        for module, name in _imports(_tree(path)):
            assert module != "calbot.http" and (module, name) != ("calbot", "http"), path


# Connecting an account hands the provider the address it will notify (the account's webhook), which
# is built from the public base URL: that URL is the data of the subscription, not a link of an answer.
_NOTIFY_ADDRESS = {("connect", "connect_account"), ("connect", "_create"), ("connect", "webhook_url")}


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_no_service_takes_a_request_or_the_parts_of_a_url(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.FunctionDef):
            continue
        args = node.args.args + node.args.kwonlyargs + node.args.posonlyargs
        for arg in args:
            if arg.arg == "base_url" and (path.stem, node.name) in _NOTIFY_ADDRESS:
                continue
            assert arg.arg not in ("request", "base_url", "headers", "query_string"), (
                path.stem,
                node.name,
                arg.arg,
            )


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_no_service_raises_with_an_http_status(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            first = node.exc.args[0]
            is_status = isinstance(first, ast.Constant) and isinstance(first.value, int)
            assert not (is_status and 100 <= first.value < 600), (path.stem, node.lineno)


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_no_service_builds_a_query_string(path: Path) -> None:
    """Page links are the handler's (calbot.http.with_links); the one urlencode left in the services
    normalises a meeting link for de-duplication."""
    for fn in ast.walk(_tree(path)):
        if isinstance(fn, ast.FunctionDef) and fn.name != "normalize_meeting_url":
            calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
            names = {c.func.id for c in calls if isinstance(c.func, ast.Name)}
            assert "urlencode" not in names, (path.stem, fn.name)


def test_list_services_return_cursors_not_links() -> None:
    from calbot.services.events import list_events
    from calbot.services.schedule import list_bots

    for fn in (list_events, list_bots):
        assert str(inspect.signature(fn).return_annotation).startswith("Paged["), fn.__name__


def test_api_error_is_gone() -> None:
    assert not hasattr(errors, "ApiError")
    for base in ("layers", "functions"):
        for path in sorted((ROOT / base).rglob("*.py")):
            assert "ApiError" not in path.read_text(), path


# --- the one table -----------------------------------------------------------------------------------


def test_the_table_has_one_row_per_kind_and_says_what_the_contract_says() -> None:
    kinds = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, DomainError) and obj is not DomainError
    }
    assert kinds == set(STATUS)
    assert STATUS == CONTRACT


def _answer(err: Exception) -> dict[str, Any]:
    @api_handler
    def endpoint(request: Request) -> Response:
        raise err

    ev = {
        "routeKey": "GET /x",
        "headers": {},
        "requestContext": {"http": {"method": "GET"}, "authorizer": {"lambda": {"user_id": "usr_1"}}},
    }
    return endpoint(ev, None)


@pytest.mark.parametrize(("kind", "status"), list(CONTRACT.items()), ids=lambda v: getattr(v, "__name__", v))
def test_each_kind_answers_its_status_with_the_contract_body(kind: type[DomainError], status: int) -> None:
    resp = _answer(kind("some_code", "Said for humans.", bot_id="sb_1", bot_ids=["sb_1"]))
    assert resp["statusCode"] == status
    assert json.loads(resp["body"]) == {
        "error": "some_code",
        "message": "Said for humans.",
        "bot_id": "sb_1",
        "bot_ids": ["sb_1"],
    }
    assert list(json.loads(resp["body"])) == ["error", "message", "bot_id", "bot_ids"]  # today's order
    assert resp["headers"]["content-type"] == "application/json; charset=utf-8"
    assert "retry-after" not in resp["headers"]


def test_retry_after_is_a_header_and_never_a_body_field() -> None:
    for err in (
        RateLimited("rate_limited", "Slow down.", retry_after=7),
        Unavailable("service_unavailable", "Again.", retry_after=1, provider="outlook"),
        ProviderFailed("provider_unavailable", "Later.", retry_after=0),
    ):
        resp = _answer(err)
        assert resp["headers"]["retry-after"] == str(err.retry_after)
        assert "retry_after" not in json.loads(resp["body"])
    resp = _answer(Unavailable("service_unavailable", "Again.", retry_after=1, provider="outlook"))
    assert json.loads(resp["body"]) == {
        "error": "service_unavailable",
        "message": "Again.",
        "provider": "outlook",
    }


def test_a_kind_of_a_kind_answers_as_its_kind() -> None:
    class WebhookUnreachable(Unavailable):
        pass

    assert status_of(WebhookUnreachable("service_unavailable", "x")) == 503
    assert _answer(WebhookUnreachable("service_unavailable", "x"))["statusCode"] == 503


def test_a_domain_error_of_no_kind_is_a_bug_answered_500_without_its_details() -> None:
    with pytest.raises(LookupError):
        error_response(DomainError("secret_code", "secret message"))
    resp = _answer(DomainError("secret_code", "secret message", token="t0k"))
    assert resp["statusCode"] == 500
    assert json.loads(resp["body"]) == {"error": "internal_error", "message": "An unexpected error occurred."}


def test_the_shared_refusals_keep_their_answers() -> None:
    assert (status_of(errors.unauthorized()), errors.unauthorized().code) == (401, "unauthorized")
    unavailable = errors.service_unavailable()
    assert (status_of(unavailable), unavailable.code, unavailable.retry_after) == (
        503,
        "service_unavailable",
        2,
    )


# --- page links --------------------------------------------------------------------------------------


@pytest.fixture()
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from calbot.config import reset_settings

    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.setenv("SSM_PREFIX", "/calbot/test")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://cal.example.com/")
    reset_settings()
    yield
    reset_settings()


def _request(query: dict[str, str], path: str) -> Request:
    return Request(
        {
            "rawPath": path,
            "headers": {"host": "api.example"},
            "queryStringParameters": query,
            "requestContext": {"http": {"method": "GET"}, "domainName": "api.example"},
        }
    )


@pytest.mark.usefixtures("settings")
def test_with_links_makes_the_cursors_this_requests_own_url_with_the_cursor_swapped() -> None:
    request = _request({"provider": "outlook", "cursor": "old", "limit": "5"}, "/api/v1/calendar/events")
    page = EventPage(next=None, previous=None, has_more=True, results=[])
    linked = with_links(request, Paged(page, next_cursor="n.1", previous_cursor="p.2"))
    base = "https://cal.example.com/api/v1/calendar/events"
    assert linked.next == f"{base}?provider=outlook&limit=5&cursor=n.1"
    assert linked.previous == f"{base}?provider=outlook&limit=5&cursor=p.2"
    assert list(linked.model_dump()) == ["next", "previous", "has_more", "results", "partial_errors"]


@pytest.mark.usefixtures("settings")
def test_with_links_leaves_a_last_page_without_links() -> None:
    request = _request({}, "/api/v1/calendar/scheduled_bots")
    linked = with_links(request, Paged(BotPage(results=[], next=None, has_more=False)))
    assert linked.model_dump() == {"results": [], "next": None, "has_more": False}
    linked = with_links(request, Paged(BotPage(results=[], next=None, has_more=True), next_cursor="c"))
    assert linked.next == "https://cal.example.com/api/v1/calendar/scheduled_bots?cursor=c"


# --- the webhook's HTTP side ---------------------------------------------------------------------------


@pytest.fixture()
def webhook(monkeypatch: pytest.MonkeyPatch) -> Any:
    module = load_app("webhook", "webhook_app_domain_errors")
    module.calls = []
    module.answer = 202

    def receive(notice: Any) -> Received:
        module.calls.append(notice)
        return Received(0, 0, 0, module.answer)

    monkeypatch.setattr(module, "receive", receive)
    return module


def _post(
    webhook: Any, *, body: str | None = None, headers: dict[str, str] | None = None, **extra: Any
) -> Any:
    ev = {
        "routeKey": "POST /webhook",
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {"http": {"method": "POST"}},
        "pathParameters": {"user_id": "usr_1", "provider": "microsoft", "account_id": "a%40b.example"},
        "body": body,
        **extra,
    }
    return webhook.handler(ev, None)


def test_a_too_long_validation_token_is_todays_400(webhook: Any) -> None:
    resp = _post(webhook, queryStringParameters={"validationToken": "x" * 2049})
    assert resp["statusCode"] == 400
    assert json.loads(resp["body"]) == {"error": "invalid_request", "message": "validationToken is too long."}
    assert webhook.calls == []


def _target(notice: Any) -> tuple[str, str, str]:
    return (notice.user_id, notice.provider, notice.account_id)


def test_a_graph_body_reaches_the_service_parsed_with_the_path_unquoted(webhook: Any) -> None:
    resp = _post(webhook, body='{"value": [{"subscriptionId": "s1"}]}')
    assert (resp["statusCode"], resp["body"]) == (202, "")
    assert [(_target(n), n.body) for n in webhook.calls] == [
        (("usr_1", "microsoft", "a@b.example"), {"value": [{"subscriptionId": "s1"}]})
    ]


@pytest.mark.parametrize(
    "body", ["{nope", "[1]", "x" * (256 * 1024 + 1)], ids=["not-json", "array", "too-large"]
)
def test_an_unreadable_body_is_handed_over_as_none_and_answered_202(webhook: Any, body: str) -> None:
    assert _post(webhook, body=body)["statusCode"] == 202
    assert [n.body for n in webhook.calls] == [None]


def test_a_google_notification_reaches_the_service_with_its_headers_and_gets_its_answer(
    webhook: Any,
) -> None:
    """Google's notifications are headers only: the handler hands them over as they came (the Google
    provider reads and bounds them: tests/unit/test_provider_registry.py) and answers what the
    provider's protocol wants (200 to a channel's `sync`: tests/service/test_google_webhook.py)."""
    headers = {
        "X-Goog-Channel-ID": "c" * 300,
        "X-Goog-Channel-Token": "tok",
        "X-Goog-Resource-ID": "res-1",
        "X-Goog-Resource-State": "exists",
        "X-Goog-Message-Number": "9" * 40,
    }
    assert _post(webhook, headers=headers)["statusCode"] == 202
    (notice,) = webhook.calls
    assert _target(notice) == ("usr_1", "microsoft", "a@b.example") and notice.body == {}
    assert {k: v for k, v in notice.headers.items() if k.startswith("x-goog-")} == {
        k.lower(): v for k, v in headers.items()
    }
    webhook.answer = 200
    assert _post(webhook, headers={**headers, "X-Goog-Resource-State": "sync"})["statusCode"] == 200
