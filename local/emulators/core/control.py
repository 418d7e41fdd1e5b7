"""The control API's routing (`/_control/...`, JSON, no auth: local only) and the routes every
emulator has: reset, clock, faults, the request log, notification delivery, and the account, token
and event routes whose shape both share. A route is declared on its handler, `@route(path,
*methods)` above `_c_<endpoint>(request, **args) -> (status, body)`; an emulator adds its own the
same way (core/routing.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response

from local.emulators.core.clock import iso
from local.emulators.core.delivery import NotificationDelivery
from local.emulators.core.errors import EmulatorError, check_fields, number
from local.emulators.core.faults import FaultRules
from local.emulators.core.requestlog import RequestLog
from local.emulators.core.routing import route, rules


def window_args(request: Request) -> tuple[str, str]:
    """The `start` and `end` query parameters a series' occurrences are listed between."""
    start, end = request.args.get("start"), request.args.get("end")
    if not start or not end:
        raise EmulatorError("query parameters 'start' and 'end' are required")
    return start, end


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
    # POST /_control/apps, /_control/accounts and .../calendars: the fields they take.
    control_app_fields: ClassVar[set[str]] = set()
    control_account_fields: ClassVar[set[str]] = set()
    control_account_required: ClassVar[tuple[str, ...]] = ()
    control_calendar_fields: ClassVar[set[str]] = set()
    control_calendar_required: ClassVar[tuple[str, ...]] = ()
    control_event_patch_fields: ClassVar[set[str]] = set()

    # The emulator's Python control API (signatures differ between emulators).
    add_app: Callable[..., dict[str, Any]]
    apps: Callable[[], list[dict[str, Any]]]
    accounts: Callable[[], list[dict[str, Any]]]
    add_calendar: Callable[..., dict[str, Any]]
    add_event: Callable[..., dict[str, Any]]  # (account, calendar_id, event_id=..., **fields)
    event: Callable[[str], dict[str, Any]]
    update_event: Callable[..., dict[str, Any]]
    delete_event: Callable[[str], dict[str, Any] | None]

    def _control_add_account(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /_control/accounts with a checked body: the emulator's add_account."""
        raise NotImplementedError

    _control_map: Map

    # -- what the emulator provides ------------------------------------------------------------------

    def reset(self) -> None:
        raise NotImplementedError  # service.Emulator's

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
        return Map(rules(type(self), "_c_"), strict_slashes=False, merge_slashes=False)

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

    @route("/_control/reset", "POST")
    def _c_reset(self, request: Request) -> tuple[int, Any]:
        self.reset()
        return 204, None

    @route("/_control/clock", "GET", "POST")
    def _c_clock(self, request: Request) -> tuple[int, Any]:
        if request.method == "POST":
            body = control_body(request)
            check_fields(body, {"advance_seconds"}, ["advance_seconds"])
            self.advance_clock(number(body["advance_seconds"], "advance_seconds", minimum=0))
        return 200, {"now": iso(self.now())}

    @route("/_control/apps", "GET", "POST")
    def _c_apps(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.apps()}
        body = control_body(request)
        check_fields(body, self.control_app_fields)
        return 201, self.add_app(**body)

    @route("/_control/accounts", "GET", "POST")
    def _c_accounts(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.accounts()}
        body = control_body(request)
        check_fields(body, self.control_account_fields, self.control_account_required)
        calendars = body.get("calendars")
        if calendars is not None:
            if not isinstance(calendars, list) or not all(isinstance(c, dict) for c in calendars):
                raise EmulatorError("calendars must be a list of objects")
            for spec in calendars:
                check_fields(spec, self.control_calendar_fields, self.control_calendar_required)
        return 201, self._control_add_account(body)

    @route("/_control/accounts/<account>/calendars", "POST")
    def _c_account_calendars(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, self.control_calendar_fields, self.control_calendar_required)
        return 201, self.add_calendar(account, **body)

    @route("/_control/events/<event_id>", "GET", "PATCH", "DELETE")
    def _c_event(self, request: Request, event_id: str) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, self.event(event_id)
        if request.method == "DELETE":
            deleted = self.delete_event(event_id)  # Graph's answers nothing, Google's the tombstone
            return (204, None) if deleted is None else (200, deleted)
        body = control_body(request)
        check_fields(body, self.control_event_patch_fields)
        return 200, self.update_event(event_id, **body)

    @route("/_control/apps/<client_id>/expire-secret", "POST")
    def _c_app_expire(self, request: Request, client_id: str) -> tuple[int, Any]:
        self.expire_app_secret(client_id)
        return 200, {"client_id": client_id, "secret_expired": True}

    @route("/_control/access-tokens/expire", "POST")
    def _c_expire_access(self, request: Request) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"account"})
        return 200, {"expired": self.expire_access_tokens(body.get("account"))}

    @route("/_control/issued-tokens", "GET")
    def _c_issued_tokens(self, request: Request) -> tuple[int, Any]:
        return 200, self.issued_tokens()

    @route("/_control/accounts/<account>/calendars/<calendar_id>/events", "POST")
    def _c_calendar_events(self, request: Request, account: str, calendar_id: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, self.control_event_fields | {"id"}, ["start", "end"])
        fields = dict(body)
        event_id = fields.pop("id", None)
        return 201, self.add_event(account, calendar_id, event_id=event_id, **fields)

    @route("/_control/accounts/<account>/events", "GET")
    def _c_account_events(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"value": self.events(account)}

    @route("/_control/events/<event_id>/cancel", "POST")
    def _c_event_cancel(self, request: Request, event_id: str) -> tuple[int, Any]:
        return 200, self.cancel_event(event_id)

    @route("/_control/notifications", "GET", "DELETE")
    def _c_notifications(self, request: Request) -> tuple[int, Any]:
        if request.method == "DELETE":
            self.clear_notifications()
            return 204, None
        return 200, {
            "value": self.notifications(*(request.args.get(name) for name in self.notification_filters))
        }

    @route("/_control/notifications/config", "GET", "POST")
    def _c_notifications_config(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, self.notification_config()
        return 200, self.configure_notifications(**control_body(request))

    @route("/_control/notifications/flush", "POST")
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

    @route("/_control/notifications/pause", "POST")
    def _c_notifications_pause(self, request: Request) -> tuple[int, Any]:
        return 200, self.pause_notifications()

    @route("/_control/notifications/resume", "POST")
    def _c_notifications_resume(self, request: Request) -> tuple[int, Any]:
        return 200, self.resume_notifications()

    @route("/_control/notifications/status", "GET")
    def _c_notifications_status(self, request: Request) -> tuple[int, Any]:
        return 200, self.notification_status()

    @route("/_control/faults", "GET", "POST", "DELETE")
    def _c_faults(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.faults()}
        if request.method == "DELETE":
            self.clear_faults()
            return 204, None
        body = control_body(request)
        check_fields(body, self.fault_type.keys(), ["path"])
        return 201, self.add_fault(**body)

    @route("/_control/faults/<fault_id>", "DELETE")
    def _c_fault(self, request: Request, fault_id: str) -> tuple[int, Any]:
        self.remove_fault(fault_id)
        return 204, None

    @route("/_control/requests", "GET", "DELETE")
    def _c_requests(self, request: Request) -> tuple[int, Any]:
        if request.method == "DELETE":
            self.clear_requests()
            return 204, None
        args = request.args
        return 200, {"value": self.requests(args.get("account"), args.get("path_prefix"), args.get("method"))}
