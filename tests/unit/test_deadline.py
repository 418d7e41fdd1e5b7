"""calbot.deadline: the invocation's deadline, taken from the Lambda context by api_handler, read on the
core's clock (virtual sleeps count), and respected by the provider HTTP retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response as WsgiResponse

from calbot import deadline, timeutil
from calbot.deadline import Deadline
from calbot.http import Request, api_handler
from calbot.providers.base import ProviderUnavailable
from calbot.providers.http import ProviderHttp
from local.servers import serve
from tests.conftest import virtual_time


class Context:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def frozen() -> Iterator[list[datetime]]:
    """calbot's clock, standing still until a test (or a virtual sleep) moves it."""
    with virtual_time(datetime(2026, 12, 1, 12, 0, tzinfo=UTC)) as moment:
        yield moment


def test_from_context_keeps_a_reserve_and_caps_at_the_api_limit(frozen: list[datetime]) -> None:
    assert Deadline.from_context(Context(10_000)).remaining() == pytest.approx(10.0 - 1.5)
    capped = Deadline.from_context(Context(120_000), cap_seconds=30)
    assert capped.remaining() == pytest.approx(30 - 1.5)
    assert Deadline.from_context(None).remaining() == float("inf")
    assert Deadline.from_context(Context(500)).expired


def test_virtual_time_counts_against_it(frozen: list[datetime]) -> None:
    limit = Deadline.after(10)
    timeutil.sleep(4)
    assert limit.remaining() == pytest.approx(6) and limit.allows(5) and not limit.allows(6)
    timeutil.sleep(7)
    assert limit.expired


def test_api_handler_hands_the_invocations_deadline_to_the_endpoint(frozen: list[datetime]) -> None:
    seen: dict[str, Any] = {}

    @api_handler
    def endpoint(request: Request) -> dict[str, Any]:
        seen["request"] = request.deadline.remaining()
        seen["active"] = deadline.current().remaining()
        return {}

    signed_in = {"requestContext": {"authorizer": {"lambda": {"user_id": "usr_1"}}}}  # not a public route
    endpoint(signed_in, Context(12_000))
    assert seen == {"request": pytest.approx(10.5), "active": pytest.approx(10.5)}
    endpoint(signed_in, Context(300_000))  # API Gateway stops waiting at 30 s
    assert seen["request"] == pytest.approx(28.5)
    assert deadline.current().remaining() == float("inf")  # nothing leaks past the invocation


@pytest.fixture
def throttling() -> Iterator[tuple[str, list[str]]]:
    """A provider that answers every request with 429 (Retry-After as the path says, or none)."""
    hits: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = WsgiRequest(environ)
        hits.append(request.path)
        wait = request.path.strip("/")
        headers = {"Retry-After": wait} if wait.isdigit() else {}
        return WsgiResponse("{}", status=429, headers=headers)(environ, start_response)

    server = serve(app)
    try:
        yield server.url, hits
    finally:
        server.shutdown()


def test_a_retry_after_past_the_deadline_is_never_slept(
    throttling: tuple[str, list[str]], frozen: list[datetime]
) -> None:
    url, hits = throttling
    slept: list[float] = []
    http = ProviderHttp(sleep=slept.append, max_retry_after=20)
    with deadline.active(Deadline.after(3)), pytest.raises(ProviderUnavailable) as err:
        http.request("GET", f"{url}/5")
    assert slept == [] and hits == ["/5"]
    assert err.value.retry_after == 5 and "retry after 5 s" in err.value.message
    # Within the deadline the same answer is waited for and retried, as before.
    with deadline.active(Deadline.after(60)):
        http.request("GET", f"{url}/1")
    assert slept == [1.0, 1.0, 1.0]


def test_no_backoff_runs_past_the_deadline_and_no_request_starts_after_it(
    throttling: tuple[str, list[str]], frozen: list[datetime]
) -> None:
    url, hits = throttling
    slept: list[float] = []
    http = ProviderHttp(sleep=slept.append)
    with deadline.active(Deadline.after(0.1)):  # less than any backoff (>= 0.125 s)
        answer = http.request("GET", f"{url}/none")
    assert answer.status_code == 429 and slept == []  # the caller maps the answer; nothing waited
    with deadline.active(Deadline.after(0)), pytest.raises(ProviderUnavailable):
        http.request("GET", f"{url}/none")
    assert hits == ["/none"]


def test_each_thread_has_its_own_deadline() -> None:
    seen: list[float] = []
    with deadline.active(Deadline.after(5)):
        worker = threading.Thread(target=lambda: seen.append(deadline.current().remaining()))
        worker.start()
        worker.join()
    assert seen == [float("inf")]
