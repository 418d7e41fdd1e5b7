"""local.emulators.bots: the Create Bot API sink (auth, validation, recording, faults, control routes)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from werkzeug.test import Client

from calbot import timeutil
from local.emulators.bots import BotSink
from local.servers import serve

KEY = "local-bot-key-123"
CREATE = "/api/v1/bots/create_bot"
AUTH = {"Authorization": f"Token {KEY}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink(clock: FakeClock) -> BotSink:
    return BotSink(KEY, clock=clock)


@pytest.fixture
def client(sink: BotSink) -> Client:
    return Client(sink)


def create(client: Client, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    payload = {"meeting_link": "https://meet.google.com/abc-defg-hij", "bot_name": "Notetaker"}
    resp = client.post(
        CREATE, json=payload if body is None else body, headers=AUTH if headers is None else headers
    )
    return resp.status_code, resp.get_json()


def test_a_valid_call_is_accepted_and_recorded_without_its_key(client: Client, sink: BotSink) -> None:
    status, body = create(client, headers={**AUTH, "X-Request-Id": "r-1"})
    assert status == 201
    assert body["status"] == "joining" and body["meeting_link"] == "https://meet.google.com/abc-defg-hij"
    assert body["bot_id"].startswith("bot_") and len(body["bot_id"]) == 4 + 32
    (call,) = sink.calls()
    assert call["bot_id"] == body["bot_id"] and call["path"] == CREATE
    assert call["body"] == {"meeting_link": "https://meet.google.com/abc-defg-hij", "bot_name": "Notetaker"}
    assert call["time"] == "2025-01-06T09:00:00Z"  # on the sink's clock
    assert call["headers"]["X-Request-Id"] == "r-1"
    assert "Authorization" not in call["headers"] and KEY not in str(call)


def test_each_call_gets_its_own_bot_id(client: Client, sink: BotSink) -> None:
    ids = [create(client)[1]["bot_id"] for _ in range(3)]
    assert len(set(ids)) == 3
    assert [c["bot_id"] for c in sink.calls()] == ids  # recorded oldest first


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Token wrong"}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": KEY}],
)
def test_a_missing_or_wrong_key_is_401(client: Client, sink: BotSink, headers: dict[str, str]) -> None:
    status, body = create(client, headers=headers)
    assert status == 401 and body["error"] == "unauthorized"
    assert sink.calls() == []
    assert [a["status"] for a in sink.attempts()] == [401]


@pytest.mark.parametrize(
    "body",
    [{}, {"meeting_link": 42}, {"meeting_link": ""}, ["https://meet.google.com/abc-defg-hij"], "not json"],
)
def test_a_body_without_a_meeting_link_string_is_400(client: Client, sink: BotSink, body: object) -> None:
    if body == "not json":
        resp = client.post(CREATE, data="meeting_link=x", headers=AUTH, content_type="text/plain")
        status, answer = resp.status_code, resp.get_json()
    else:
        status, answer = create(client, body=body)
    assert status == 400 and answer["error"] == "invalid_request"
    assert sink.calls() == []


def test_other_routes_and_methods(client: Client) -> None:
    assert client.get(CREATE, headers=AUTH).status_code == 405
    assert client.post("/api/v1/bots/other", json={}, headers=AUTH).status_code == 404
    # Any prefix works, since BOT_API_URL carries its own path.
    assert client.post("/bots/create_bot", json={"meeting_link": "x"}, headers=AUTH).status_code == 201


def test_fail_answers_the_next_n_calls_with_the_status(client: Client, sink: BotSink) -> None:
    sink.fail(status=503, times=2)
    assert [create(client)[0] for _ in range(3)] == [503, 503, 201]
    sink.fail(status=500, times=1)
    status, body = create(client)
    assert status == 500 and body["error"] == "injected_fault"
    assert len(sink.calls()) == 1
    assert [a["status"] for a in sink.attempts()] == [503, 503, 201, 500]


def test_down_until_is_judged_on_the_injected_clock(client: Client, sink: BotSink, clock: FakeClock) -> None:
    end = sink.down(600)  # a 10-minute outage on the sink's clock
    assert end == datetime(2025, 1, 6, 9, 10, tzinfo=UTC)
    assert create(client)[0] == 503
    clock.now += timedelta(minutes=9, seconds=59)
    assert create(client)[0] == 503
    clock.now += timedelta(seconds=1)
    assert create(client)[0] == 201
    sink.down_until(clock.now + timedelta(hours=1))
    assert create(client)[0] == 503
    sink.clear()
    assert create(client)[0] == 201


def test_the_default_clock_is_calbots(monkeypatch: pytest.MonkeyPatch) -> None:
    from calbot import timeutil

    sink = BotSink(KEY)
    virtual_now = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    monkeypatch.setattr(timeutil, "_clock", lambda: virtual_now)
    assert sink.now() == virtual_now
    sink.down(60)
    assert sink.faults()["down_until"] == "2030-05-01T12:01:00Z"


def test_delay_holds_each_call(sink: BotSink) -> None:
    sink.delay(0.3)
    with serve(sink) as server:
        started = time.monotonic()
        resp = requests.post(f"{server.url}{CREATE}", json={"meeting_link": "x"}, headers=AUTH, timeout=5)
        assert resp.status_code == 201 and time.monotonic() - started >= 0.3
        with pytest.raises(requests.Timeout):
            requests.post(f"{server.url}{CREATE}", json={"meeting_link": "x"}, headers=AUTH, timeout=0.1)


def test_concurrent_calls_are_all_recorded(sink: BotSink) -> None:
    client = Client(sink)
    errors: list[int] = []

    def hammer() -> None:
        for _ in range(20):
            status, _ = create(client)
            if status != 201:
                errors.append(status)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len({c["bot_id"] for c in sink.calls()}) == 160


def test_control_routes(client: Client, sink: BotSink, clock: FakeClock) -> None:
    create(client)
    calls = client.get("/_control/calls").get_json()["value"]
    assert len(calls) == 1 and calls[0]["body"]["meeting_link"].startswith("https://meet.google.com/")

    resp = client.post("/_control/faults", json={"status": 429, "times": 1})
    assert resp.status_code == 200 and resp.get_json()["fail"] == {"status": 429, "times": 1}
    assert create(client)[0] == 429 and create(client)[0] == 201

    faults = client.post("/_control/faults", json={"down_seconds": 120}).get_json()
    assert faults["down_until"] == "2025-01-06T09:02:00Z"
    assert create(client)[0] == 503
    clock.now += timedelta(minutes=2)
    assert create(client)[0] == 201

    client.post("/_control/faults", json={"down_until": "2025-01-06T10:00:00Z"})
    assert create(client)[0] == 503
    assert client.delete("/_control/faults").status_code == 204
    assert client.get("/_control/faults").get_json() == {
        "fail": {"status": 503, "times": 0},
        "down_until": None,
        "delay": 0.0,
    }
    assert create(client)[0] == 201

    assert client.post("/_control/faults", json={"delay": 0.01}).get_json()["delay"] == 0.01
    assert client.post("/_control/faults", json={"nonsense": 1}).status_code == 400
    assert client.post("/_control/faults", json={"status": 200}).status_code == 400
    assert client.post("/_control/faults", data="[]", content_type="application/json").status_code == 400

    statuses = [a["status"] for a in client.get("/_control/attempts").get_json()["value"]]
    assert statuses == [201, 429, 201, 503, 201, 503, 201]
    assert client.delete("/_control/calls").status_code == 204
    assert client.get("/_control/calls").get_json() == {"value": []} and sink.attempts() == []


def test_an_api_key_is_required() -> None:
    with pytest.raises(ValueError):
        BotSink("")


# -- the stack's wiring (in this file as it sorts first: later unit files' moto mocks reset its state)


def test_the_stack_serves_the_control_api_and_the_bot_sink_with_its_ssm_key(inproc_stack: Any) -> None:
    info = inproc_stack.info
    assert info["virtual_time"] is False and info["control_url"] == f"{info['gateway_url']}/_local"
    clock = requests.get(f"{info['control_url']}/clock", timeout=10).json()
    assert clock["virtual"] is False and abs(
        timeutil.parse_iso(clock["now"]) - datetime.now(UTC)
    ) < timedelta(seconds=5)
    assert isinstance(requests.get(f"{info['control_url']}/schedules", timeout=10).json()["value"], list)
    # The launcher's configuration: BOT_API_URL points at the sink, whose key is in SSM.
    environment = inproc_stack.gateway.required_environment()
    assert environment["BOT_API_URL"] == f"{info['bots_url']}/api/v1"
    ssm = boto3.session.Session(region_name="us-east-1").client("ssm", endpoint_url=info["moto_url"])
    key = ssm.get_parameter(Name=info["bot_api_key_param"], WithDecryption=True)["Parameter"]
    assert key["Type"] == "SecureString" and key["Value"] == inproc_stack.bots.api_key
    resp = requests.post(
        f"{environment['BOT_API_URL']}/bots/create_bot",
        json={"meeting_link": "https://meet.google.com/abc-defg-hij"},
        headers={"Authorization": f"Token {key['Value']}"},
        timeout=10,
    )
    assert resp.status_code == 201 and inproc_stack.bots.calls()[-1]["bot_id"] == resp.json()["bot_id"]
    # The gateway still serves the API on the same port.
    assert requests.get(f"{info['api_url']}/calendar/connections", timeout=30).status_code == 401
