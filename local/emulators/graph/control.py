"""The Graph emulator's own control routes (/_control, JSON, no auth: local only); the shared ones
(reset, clock, faults, requests, notifications, ...) are local/emulators/core/control.py's."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request

from local.emulators.core.control import control_body
from local.emulators.core.errors import EmulatorError, check_fields
from local.emulators.graph.models import DEFAULT_SCOPES
from local.emulators.graph.responses import GraphResponses

_CALENDAR_FIELDS = {"name", "is_default", "can_edit", "color", "owner_name", "owner_address", "calendar_id"}


_EVENT_PATCH_FIELDS = {
    "subject",
    "start",
    "end",
    "time_zone",
    "body_html",
    "location",
    "online_meeting_url",
    "recurrence",
}


_EVENT_FIELDS = _EVENT_PATCH_FIELDS | {"is_all_day", "organizer", "id", "attendees"}


class GraphControl(GraphResponses):
    """`_c_<endpoint>(request, **args) -> (status, body)` for the Graph-only routes."""

    control_event_fields = _EVENT_FIELDS

    def _emulator_control_rules(self) -> list[Rule]:
        return [
            Rule("/_control/apps", endpoint="apps", methods=["GET", "POST"]),
            Rule("/_control/accounts", endpoint="accounts", methods=["GET", "POST"]),
            Rule("/_control/accounts/<account>/calendars", endpoint="account_calendars", methods=["POST"]),
            Rule("/_control/accounts/<account>/refresh-token", endpoint="account_token", methods=["POST"]),
            Rule("/_control/accounts/<account>/revoke", endpoint="account_revoke", methods=["POST"]),
            Rule("/_control/refresh-tokens", endpoint="refresh_tokens", methods=["GET"]),
            Rule("/_control/subscriptions", endpoint="subscriptions", methods=["GET"]),
            Rule("/_control/subscriptions/<subscription_id>", endpoint="subscription", methods=["DELETE"]),
            Rule(
                "/_control/subscriptions/<subscription_id>/expire",
                endpoint="subscription_expire",
                methods=["POST"],
            ),
            Rule(
                "/_control/subscriptions/<subscription_id>/lifecycle",
                endpoint="subscription_lifecycle",
                methods=["POST"],
            ),
            Rule("/_control/accounts/<account>/delta/expire", endpoint="delta_expire", methods=["POST"]),
            Rule(
                "/_control/accounts/<account>/delta/resync-required",
                endpoint="delta_resync",
                methods=["POST"],
            ),
            Rule("/_control/events/<event_id>", endpoint="event", methods=["GET", "PATCH", "DELETE"]),
            Rule("/_control/events/<event_id>/occurrences", endpoint="event_occurrences", methods=["GET"]),
        ]

    def _c_apps(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.apps()}
        body = control_body(request)
        check_fields(body, {"client_id", "client_secret"})
        return 201, self.add_app(body.get("client_id"), body.get("client_secret"))

    def _c_accounts(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.accounts()}
        body = control_body(request)
        allowed = {
            "client_id",
            "mail",
            "user_principal_name",
            "display_name",
            "calendars",
            "scopes",
            "id",
            "refresh_token",
        }
        check_fields(body, allowed, ["client_id", "user_principal_name"])
        calendars = body.get("calendars")
        if calendars is not None:
            if not isinstance(calendars, list) or not all(isinstance(c, dict) for c in calendars):
                raise EmulatorError("calendars must be a list of objects")
            for spec in calendars:
                check_fields(spec, _CALENDAR_FIELDS, ["name"])
        result = self.add_account(
            client_id=body["client_id"],
            user_principal_name=body["user_principal_name"],
            mail=body.get("mail"),
            display_name=body.get("display_name"),
            calendars=calendars,
            scopes=body.get("scopes") or DEFAULT_SCOPES,
            object_id=body.get("id"),
            refresh_token=body.get("refresh_token"),
        )
        return 201, result

    def _c_account_calendars(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, _CALENDAR_FIELDS, ["name"])
        return 201, self.add_calendar(account, **body)

    def _c_account_token(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"client_id", "scopes", "refresh_token"}, ["client_id"])
        token = self.issue_refresh_token(
            account, body["client_id"], body.get("scopes"), refresh_token=body.get("refresh_token")
        )
        return 201, {"refresh_token": token}

    def _c_account_revoke(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"code"})
        return 200, {"revoked": self.revoke(account, int(body.get("code") or 50173))}

    def _c_refresh_tokens(self, request: Request) -> tuple[int, Any]:
        account = request.args.get("account")
        if not account:
            raise EmulatorError("query parameter 'account' is required")
        return 200, {"value": self.refresh_tokens(account)}

    def _c_subscriptions(self, request: Request) -> tuple[int, Any]:
        active_only = request.args.get("active", "") in ("1", "true")
        return 200, {"value": self.subscriptions(active_only=active_only)}

    def _c_subscription(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        self.delete_subscription(subscription_id)
        return 204, None

    def _c_subscription_expire(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        return 200, self.expire_subscription(subscription_id)

    def _c_subscription_lifecycle(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"event"}, ["event"])
        return 200, self.send_lifecycle_notification(subscription_id, body["event"])

    def _c_delta_expire(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"expired": self.expire_delta_tokens(account)}

    def _c_delta_resync(self, request: Request, account: str) -> tuple[int, Any]:
        self.require_resync(account)
        return 200, {"resync_required": True}

    def _c_event(self, request: Request, event_id: str) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, self.event(event_id)
        if request.method == "DELETE":
            self.delete_event(event_id)
            return 204, None
        body = control_body(request)
        check_fields(body, _EVENT_PATCH_FIELDS)
        return 200, self.update_event(event_id, **body)

    def _c_event_occurrences(self, request: Request, event_id: str) -> tuple[int, Any]:
        start, end = request.args.get("start"), request.args.get("end")
        if not start or not end:
            raise EmulatorError("query parameters 'start' and 'end' are required")
        return 200, {"value": self.occurrences(event_id, start, end)}
