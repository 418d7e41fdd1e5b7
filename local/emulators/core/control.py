"""The control API's routing (`/_control/...`, JSON, no auth: local only) and the routes every
emulator has: reset, clock, faults, the request log, notification delivery, and the account, token
and event routes whose shape both share. An emulator adds its own with `_emulator_control_rules`;
a rule's endpoint `x` is served by the method `_c_x(request, **args) -> (status, body)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from local.emulators.core.clock import iso
from local.emulators.core.delivery import NotificationDelivery
from local.emulators.core.errors import EmulatorError, check_fields, number
from local.emulators.core.faults import FaultRules
from local.emulators.core.requestlog import RequestLog

_SHARED_RULES = [
    Rule("/_control/reset", endpoint="reset", methods=["POST"]),
    Rule("/_control/clock", endpoint="clock", methods=["GET", "POST"]),
    Rule("/_control/apps/<client_id>/expire-secret", endpoint="app_expire", methods=["POST"]),
    Rule("/_control/access-tokens/expire", endpoint="expire_access", methods=["POST"]),
    Rule("/_control/issued-tokens", endpoint="issued_tokens", methods=["GET"]),
    Rule(
        "/_control/accounts/<account>/calendars/<calendar_id>/events",
        endpoint="calendar_events",
        methods=["POST"],
    ),
    Rule("/_control/accounts/<account>/events", endpoint="account_events", methods=["GET"]),
    Rule("/_control/events/<event_id>/cancel", endpoint="event_cancel", methods=["POST"]),
    Rule("/_control/notifications", endpoint="notifications", methods=["GET", "DELETE"]),
    Rule("/_control/notifications/config", endpoint="notifications_config", methods=["GET", "POST"]),
    Rule("/_control/notifications/flush", endpoint="notifications_flush", methods=["POST"]),
    Rule("/_control/notifications/pause", endpoint="notifications_pause", methods=["POST"]),
    Rule("/_control/notifications/resume", endpoint="notifications_resume", methods=["POST"]),
    Rule("/_control/notifications/status", endpoint="notifications_status", methods=["GET"]),
    Rule("/_control/faults", endpoint="faults", methods=["GET", "POST", "DELETE"]),
    Rule("/_control/faults/<fault_id>", endpoint="fault", methods=["DELETE"]),
    Rule("/_control/requests", endpoint="requests", methods=["GET", "DELETE"]),
]


def control_body(request: Request) -> dict[str, Any]:
    """The request's JSON object ({} when empty); EmulatorError for anything else."""
    if not request.get_data():
        return {}
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise EmulatorError("body must be a JSON object")
    return body


class ControlRoutes(NotificationDelivery, FaultRules, RequestLog):
    """Mixin: /_control dispatch and the shared routes."""

    # The query parameters GET /_control/notifications filters by, in `notifications()`'s order.
    notification_filters: ClassVar[tuple[str, str]] = ("", "")
    # The fields POST .../events takes (besides `id`, which names the new event).
    control_event_fields: ClassVar[set[str]] = set()
    add_event: Callable[..., dict[str, Any]]  # (account, calendar_id, event_id=..., **fields)
    _control_map: Map

    # -- what the emulator provides ------------------------------------------------------------------

    def reset(self) -> None:
        raise NotImplementedError

    def _emulator_control_rules(self) -> list[Rule]:
        return []

    def notifications(self, first: str | None = None, second: str | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def issued_tokens(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def events(self, account: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def cancel_event(self, event_id: str) -> dict[str, Any]:
        raise NotImplementedError

    # -- dispatch ------------------------------------------------------------------------------------

    def _build_control_map(self) -> Map:
        rules = [rule.empty() for rule in _SHARED_RULES] + self._emulator_control_rules()
        return Map(rules, strict_slashes=False, merge_slashes=False)

    def _dispatch_control(self, request: Request) -> Response:
        adapter = self._control_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
            handler: Callable[..., tuple[int, Any]] = getattr(self, f"_c_{endpoint}")
            status, body = handler(request, **args)
        except EmulatorError as exc:
            status, body = exc.status, {"error": str(exc)}
        except HTTPException as exc:
            status, body = exc.code or 400, {"error": exc.description}
        except (TypeError, ValueError) as exc:  # wrong argument types in a JSON body
            status, body = 400, {"error": str(exc)}
        if body is None:
            return Response(status=status)
        return Response(json.dumps(body), status=status, content_type="application/json")

    # -- the shared routes ---------------------------------------------------------------------------

    def _c_reset(self, request: Request) -> tuple[int, Any]:
        self.reset()
        return 204, None

    def _c_clock(self, request: Request) -> tuple[int, Any]:
        if request.method == "POST":
            body = control_body(request)
            check_fields(body, {"advance_seconds"}, ["advance_seconds"])
            self.advance_clock(number(body["advance_seconds"], "advance_seconds", minimum=0))
        return 200, {"now": iso(self.now())}

    def _c_app_expire(self, request: Request, client_id: str) -> tuple[int, Any]:
        self.expire_app_secret(client_id)
        return 200, {"client_id": client_id, "secret_expired": True}

    def _c_expire_access(self, request: Request) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"account"})
        return 200, {"expired": self.expire_access_tokens(body.get("account"))}

    def _c_issued_tokens(self, request: Request) -> tuple[int, Any]:
        return 200, self.issued_tokens()

    def _c_calendar_events(self, request: Request, account: str, calendar_id: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, self.control_event_fields | {"id"}, ["start", "end"])
        fields = dict(body)
        event_id = fields.pop("id", None)
        return 201, self.add_event(account, calendar_id, event_id=event_id, **fields)

    def _c_account_events(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"value": self.events(account)}

    def _c_event_cancel(self, request: Request, event_id: str) -> tuple[int, Any]:
        return 200, self.cancel_event(event_id)

    def _c_notifications(self, request: Request) -> tuple[int, Any]:
        if request.method == "DELETE":
            self.clear_notifications()
            return 204, None
        return 200, {
            "value": self.notifications(*(request.args.get(name) for name in self.notification_filters))
        }

    def _c_notifications_config(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, self.notification_config()
        return 200, self.configure_notifications(**control_body(request))

    def _c_notifications_flush(self, request: Request) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"timeout"})
        timeout = number(body.get("timeout", 10.0), "timeout", minimum=0)
        flushed = self.flush_notifications(timeout)
        status = self.notification_status()
        if not flushed:
            error = f"deliveries still in flight after {timeout:g} s"
            return 504, {**status, "flushed": False, "error": error}
        return 200, {**status, "flushed": True}

    def _c_notifications_pause(self, request: Request) -> tuple[int, Any]:
        return 200, self.pause_notifications()

    def _c_notifications_resume(self, request: Request) -> tuple[int, Any]:
        return 200, self.resume_notifications()

    def _c_notifications_status(self, request: Request) -> tuple[int, Any]:
        return 200, self.notification_status()

    def _c_faults(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.faults()}
        if request.method == "DELETE":
            self.clear_faults()
            return 204, None
        body = control_body(request)
        check_fields(body, self.fault_type.keys(), ["path"])
        return 201, self.add_fault(**body)

    def _c_fault(self, request: Request, fault_id: str) -> tuple[int, Any]:
        self.remove_fault(fault_id)
        return 204, None

    def _c_requests(self, request: Request) -> tuple[int, Any]:
        if request.method == "DELETE":
            self.clear_requests()
            return 204, None
        args = request.args
        return 200, {"value": self.requests(args.get("account"), args.get("path_prefix"), args.get("method"))}
