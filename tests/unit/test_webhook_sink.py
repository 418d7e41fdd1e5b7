"""The local stack's webhook receiver sink: records deliveries, answers a status for a while, and is
down (connection refused) until a time on its clock, then back on the same port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.emulators.webhook_sink import WebhookSink

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def sink() -> Iterator[tuple[WebhookSink, list[datetime]]]:
    moment = [START]
    sink = WebhookSink(clock=lambda: moment[0])
    sink.start()
    try:
        yield sink, moment
    finally:
        sink.stop()


def post(
    url: str, body: Any = None, *, method: str = "POST", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b"{}"
    request = urllib.request.Request(
        url, data=data if method == "POST" else None, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, None


def test_records_each_delivery_with_headers_and_body(sink: tuple[WebhookSink, list[datetime]]) -> None:
    s, _ = sink
    status, _ = post(s.url + "/hooks/a", {"id": "evt_1"}, headers={"webhook-id": "evt_1"})
    assert status == 200
    (got,) = s.deliveries()
    assert got["path"] == "/hooks/a" and json.loads(got["body"]) == {"id": "evt_1"}
    assert got["headers"]["webhook-id"] == "evt_1" and got["status"] == 200
    status, listed = post(s.control_url + "/_control/deliveries", method="GET")
    assert status == 200 and listed["value"] == s.deliveries()


def test_answers_a_status_n_times_or_until_a_clock_time(sink: tuple[WebhookSink, list[datetime]]) -> None:
    s, moment = sink
    post(s.control_url + "/_control/faults", {"status": 500, "times": 2})
    assert [post(s.url)[0] for _ in range(3)] == [500, 500, 200]
    post(s.control_url + "/_control/faults", {"status": 503, "seconds": 60})
    assert post(s.url)[0] == 503
    moment[0] += timedelta(seconds=61)
    assert post(s.url)[0] == 200
    assert [d["status"] for d in s.deliveries()] == [500, 500, 200, 503, 200]


def test_down_refuses_connections_until_the_clock_gets_there(
    sink: tuple[WebhookSink, list[datetime]],
) -> None:
    s, moment = sink
    port = s.port
    status, faults = post(s.control_url + "/_control/faults", {"down_seconds": 7200})
    assert status == 200 and faults["up"] is False
    with pytest.raises(urllib.error.URLError) as refused:
        post(s.url)
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    moment[0] += timedelta(hours=1)
    s.tick()
    assert not s.is_up
    moment[0] += timedelta(hours=1)
    s.tick()  # what the stack's clock listener does when the clock moves
    assert s.is_up and s.port == port
    assert post(s.url)[0] == 200


def test_clearing_faults_brings_it_back(sink: tuple[WebhookSink, list[datetime]]) -> None:
    s, _ = sink
    s.down(3600)
    assert not s.is_up
    assert post(s.control_url + "/_control/faults", method="DELETE")[0] == 204
    assert s.is_up and post(s.url)[0] == 200
    assert post(s.control_url + "/_control/faults", {"nonsense": 1})[0] == 400
