"""The one implementation both provider emulators share (local/emulators/core): routes declared on
their handlers, the shared /_control routes, fault rules, the request log and the clock."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request

from local.emulators.core.requestlog import redact_query
from local.emulators.core.routing import route, rules
from local.emulators.google import GoogleEmulator
from local.emulators.graph import GraphEmulator

SHARED_CONTROL = {
    "reset",
    "clock",
    "apps",
    "accounts",
    "account_calendars",
    "app_expire",
    "expire_access",
    "issued_tokens",
    "calendar_events",
    "account_events",
    "event",
    "event_cancel",
    "notifications",
    "notifications_config",
    "notifications_flush",
    "notifications_pause",
    "notifications_resume",
    "notifications_status",
    "faults",
    "fault",
    "requests",
}


def test_routes_are_collected_from_their_handlers() -> None:
    class App:
        @route("/a", "GET")
        @route("/a/<x>", "DELETE")
        def _h_a(self, request: Request, x: str = "") -> Any: ...

        @route("/any")
        def _h_any(self, request: Request) -> Any: ...

        def _h_unrouted(self, request: Request) -> Any: ...

    found = {(r.rule, r.endpoint, tuple(sorted(r.methods or ()))) for r in rules(App, "_h_")}
    assert found == {("/a", "a", ("GET", "HEAD")), ("/a/<x>", "a", ("DELETE",)), ("/any", "any", ())}


@pytest.mark.parametrize("emulator", [GraphEmulator, GoogleEmulator])
def test_both_emulators_serve_the_shared_control_routes(emulator: type) -> None:
    endpoints = {rule.endpoint for rule in emulator()._control_map.iter_rules()}
    assert endpoints >= SHARED_CONTROL


@pytest.mark.parametrize("emulator", [GraphEmulator, GoogleEmulator])
def test_fault_rules_clock_and_request_log_behave_alike(emulator: type) -> None:
    emu = emulator()
    client = Client(emu)
    assert client.post("/_control/faults", json={"method": "GET"}).status_code == 400  # no path
    assert client.post("/_control/faults", json={"path": "x", "times": 0, "status": 500}).status_code == 400
    assert (
        client.post("/_control/faults", json={"path": "x"}).json["error"].startswith("a fault needs status")
    )
    rule = client.post("/_control/faults", json={"path": "^/nowhere", "status": 503, "times": 2}).json
    assert (rule["hits"], rule["remaining"]) == (0, 2)
    for _ in range(3):
        client.get("/nowhere")
    statuses = [entry["status"] for entry in emu.requests(path_prefix="/nowhere")]
    assert statuses[:2] == [503, 503] and statuses[2] != 503
    assert emu.faults()[0]["remaining"] == 0
    before = emu.now()
    client.post("/_control/clock", json={"advance_seconds": 3600})
    assert (emu.now() - before).total_seconds() >= 3600
    assert client.post("/_control/clock", json={"advance_seconds": -5}).status_code == 400
    client.post("/_control/reset")
    assert emu.faults() == [] and emu.requests() == [] and (emu.now() - before).total_seconds() < 60


def test_redacted_query_hides_token_like_values_only() -> None:
    assert (
        redact_query("code=abc&state=s1&refresh_token=r")
        == "code=%3Credacted%3E&state=s1&refresh_token=%3Credacted%3E"
    )
