"""The core's other retry loops on calbot.retry (issue 17 item 5): provider HTTP, the Create Bot API and
the wait for a busy token-refresh lock all sleep on the core's clock and never wait past the deadline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response as WsgiResponse

from calbot import botapi, deadline, store, timeutil, tokencache, tokens, vault
from calbot.config import reset_settings
from calbot.deadline import Deadline
from calbot.models import Connection
from calbot.providers.base import ProviderUnavailable
from calbot.providers.http import ProviderHttp
from local.servers import serve

CREATED = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def scripted() -> Iterator[tuple[str, list[tuple[int, dict[str, str], str]], list[str]]]:
    """A server answering each request with the next scripted (status, headers, body), then 200."""
    script: list[tuple[int, dict[str, str], str]] = []
    hits: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        hits.append(WsgiRequest(environ).path)
        status, headers, body = script.pop(0) if script else (200, {}, '{"bot_id": "bot_1"}')
        return WsgiResponse(body, status=status, headers=headers)(environ, start_response)

    server = serve(app)
    try:
        yield server.url, script, hits
    finally:
        server.shutdown()


def _closed_port_url() -> str:
    """A local URL nothing listens on: every request is a ConnectionError."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# ---------------------------------------------------------------------------------------------------
# ProviderHttp


def test_provider_http_retries_5xx_and_counts_every_request(scripted: Any, slept: list[float]) -> None:
    url, script, hits = scripted
    script += [(503, {}, "{}"), (500, {}, "{}")]
    http = ProviderHttp()  # sleeps on the core's clock by default
    answer = http.request("GET", f"{url}/x")
    assert answer.status_code == 200 and len(hits) == 3 and http.requests_made == 3
    assert len(slept) == 2 and 0.125 <= slept[0] <= 0.25 and 0.25 <= slept[1] <= 0.5


def test_provider_http_gives_up_with_the_last_answer(scripted: Any, slept: list[float]) -> None:
    url, script, hits = scripted
    script += [(503, {}, "{}")] * 4
    http = ProviderHttp(max_attempts=4)
    assert http.request("GET", url).status_code == 503
    assert len(hits) == 4 and http.requests_made == 4 and len(slept) == 3


def test_provider_http_refuses_a_retry_after_over_its_maximum(scripted: Any, slept: list[float]) -> None:
    url, script, hits = scripted
    script += [(429, {"Retry-After": "30"}, "{}")]
    with pytest.raises(ProviderUnavailable) as err:
        ProviderHttp(max_retry_after=20).request("GET", url)
    assert err.value.retry_after == 30 and err.value.status == 429 and slept == [] and len(hits) == 1
    script += [(429, {"Retry-After": "2"}, "{}")]
    assert ProviderHttp(max_retry_after=20).request("GET", url).status_code == 200
    assert slept == [2.0]


def test_provider_http_unreachable_is_unavailable_after_its_attempts(slept: list[float]) -> None:
    http = ProviderHttp(max_attempts=3)
    with pytest.raises(ProviderUnavailable, match=r"did not answer \(ConnectionError\)"):
        http.request("GET", _closed_port_url())
    assert http.requests_made == 3 and len(slept) == 2
    with deadline.active(Deadline.after(0.1)), pytest.raises(ProviderUnavailable, match="did not answer"):
        http.request("GET", _closed_port_url())  # no backoff fits before the deadline: one try
    assert http.requests_made == 4 and len(slept) == 2


def test_provider_http_returns_the_last_attempts_answer_whatever_its_retry_after(slept: list[float]) -> None:
    """Attempts are counted whether they failed to connect or answered: the last one's throttled answer
    is the caller's to map, even with a Retry-After longer than max_retry_after."""
    import requests

    answers: list[Any] = [requests.ConnectionError("refused")]
    throttled = requests.Response()
    throttled.status_code, throttled.headers["Retry-After"] = 429, "30"
    answers.append(throttled)

    def send(method: str, url: str, **kwargs: Any) -> requests.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    http = ProviderHttp(max_attempts=2, max_retry_after=20)
    http.session.request = send  # type: ignore[method-assign]
    assert http.request("GET", "http://provider.invalid/x") is throttled
    assert http.requests_made == 2 and len(slept) == 1


# ---------------------------------------------------------------------------------------------------
# The Create Bot API


@pytest.fixture
def bot_api(
    scripted: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[list[tuple[int, dict[str, str], str]], list[str]]]:
    url, script, hits = scripted
    monkeypatch.setenv("TABLE_NAME", "t")
    monkeypatch.setenv("SSM_PREFIX", "/calbot/test")
    monkeypatch.setenv("BOT_API_URL", url)
    monkeypatch.setattr(botapi, "_api_key", lambda: "service-key")
    reset_settings()
    try:
        yield script, hits
    finally:
        reset_settings()


def test_create_bot_retries_5xx_and_429_waiting_1_then_2_seconds(bot_api: Any, slept: list[float]) -> None:
    script, hits = bot_api
    script += [(503, {}, "{}"), (429, {}, "{}")]
    assert botapi.create_bot({"meeting_url": "x"}, idempotency_key="k")["bot_id"] == "bot_1"
    assert hits == ["/bots/create_bot"] * 3 and slept == [1, 2]


def test_create_bot_gives_up_after_its_attempts(bot_api: Any, slept: list[float]) -> None:
    script, hits = bot_api
    script += [(502, {}, "{}")] * 3
    with pytest.raises(botapi.BotApiUnavailable, match="HTTP 502"):
        botapi.create_bot({}, idempotency_key="k")
    assert len(hits) == 3 and slept == [1, 2]


def test_create_bot_rejections_are_not_retried(bot_api: Any, slept: list[float]) -> None:
    script, hits = bot_api
    script += [(400, {}, '{"detail": "bad meeting url"}')]
    with pytest.raises(botapi.BotApiRejected) as err:
        botapi.create_bot({}, idempotency_key="k")
    assert err.value.status == 400 and len(hits) == 1 and slept == []


def test_create_bot_never_sleeps_past_the_deadline(bot_api: Any, slept: list[float]) -> None:
    script, hits = bot_api
    script += [(503, {}, "{}")] * 3
    with deadline.active(Deadline.after(1.5)), pytest.raises(botapi.BotApiUnavailable, match="HTTP 503"):
        botapi.create_bot({}, idempotency_key="k")
    assert len(hits) == 2 and slept == [1]  # the 2 s wait would end past the deadline: not started
    with deadline.active(Deadline.after(0)), pytest.raises(botapi.BotApiUnavailable, match="out of time"):
        botapi.create_bot({}, idempotency_key="k")
    assert len(hits) == 2  # nothing sent once the deadline has passed


# ---------------------------------------------------------------------------------------------------
# Waiting for another invocation's token refresh


def _conn() -> Connection:
    return Connection(
        user_id="usr_1",
        provider="outlook",
        account_id="a@b.c",
        webhook_url="https://x.example/hook",
        credential_path="/calbot/test/users/usr_1/outlook/a-0123456789ab",
        created_at=CREATED,
        updated_at=CREATED,
    )


def _cached(access_token: str, expires: datetime) -> tokencache.CachedAccessToken:
    return tokencache.CachedAccessToken(access_token=access_token, expires_at=expires)


def _shared_cache(monkeypatch: pytest.MonkeyPatch, read: Any) -> None:
    """The shared token cache answers `read(path)`; the credential store must never be read (the
    lock's loser waits for the winner's token in the cache, not in SSM)."""

    def no_store(path: str) -> None:
        raise AssertionError("the credential store was read while waiting for the lock")

    monkeypatch.setattr(tokencache, "remembered", lambda path: None)
    monkeypatch.setattr(tokencache, "shared", read)
    monkeypatch.setattr(vault, "secrets", no_store)


@pytest.fixture
def busy_lock(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The refresh lock is always held by someone else; each try is recorded."""
    tries: list[str] = []

    def acquire(name: str, *, ttl_seconds: int = 60) -> str:
        tries.append(name)
        raise store.LockBusy(name)

    monkeypatch.setattr(store, "acquire_lock", acquire)
    return tries


def test_a_busy_token_lock_is_waited_for_on_the_core_clock(
    busy_lock: list[str], slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten seconds of polling every 0.2 s, virtual: the test spends no real time waiting."""
    start = timeutil.now()  # the `slept` fixture holds the clock here
    stale = _cached("old", start)
    _shared_cache(monkeypatch, lambda path: stale)
    began = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="already in progress"):
        tokens.access_token(_conn())
    assert time.monotonic() - began < 2.0
    assert slept == [0.2] * 50 and len(busy_lock) == 51
    assert timeutil.now() - start == timedelta(seconds=10)


def test_the_lock_waiter_takes_the_winners_fresh_token(
    busy_lock: list[str], slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    start = timeutil.now()
    reads = [_cached("old", start)] * 4 + [_cached("winner", start + timedelta(hours=1))]
    _shared_cache(monkeypatch, lambda path: reads.pop(0) if len(reads) > 1 else reads[0])
    assert tokens.access_token(_conn()) == "winner"
    assert slept == [0.2] * 4 and len(busy_lock) == 4  # the shared cache is read after each wait


def test_the_lock_wait_stops_before_the_deadline(
    busy_lock: list[str], slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    _shared_cache(monkeypatch, lambda path: _cached("old", timeutil.now() - timedelta(hours=1)))
    with deadline.active(Deadline.after(1.0)), pytest.raises(ProviderUnavailable):
        tokens.access_token(_conn())
    assert sum(slept) < 1.0 and len(slept) == 4
