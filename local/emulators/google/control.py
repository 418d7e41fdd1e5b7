"""The Google emulator's own control routes (/_control, JSON, no auth: local only); the shared ones
(reset, clock, faults, requests, notifications, ...) are local/emulators/core/control.py's."""

from __future__ import annotations

from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request

from local.emulators.core.control import control_body
from local.emulators.core.errors import EmulatorError, check_fields
from local.emulators.google.responses import GoogleResponses

_CALENDAR_FIELDS = {"summary", "calendar_id", "primary", "access_role", "time_zone", "background_color"}


_EVENT_PATCH_FIELDS = {
    "summary",
    "description",
    "location",
    "start",
    "end",
    "time_zone",
    "recurrence",
    "status",
    "meet",
    "conference_data",
    "attendees",
}


_EVENT_FIELDS = _EVENT_PATCH_FIELDS | {"all_day", "organizer", "id"}


class GoogleControl(GoogleResponses):
    """`_c_<endpoint>(request, **args) -> (status, body)` for the Google-only routes."""

    control_event_fields = _EVENT_FIELDS

    def _emulator_control_rules(self) -> list[Rule]:
        return [
            Rule("/_control/apps", endpoint="apps", methods=["GET", "POST"]),
            Rule("/_control/apps/<client_id>", endpoint="app", methods=["DELETE"]),
            Rule("/_control/accounts", endpoint="accounts", methods=["GET", "POST"]),
            Rule("/_control/accounts/<account>/refresh-token", endpoint="account_token", methods=["POST"]),
            Rule("/_control/accounts/<account>/revoke", endpoint="account_revoke", methods=["POST"]),
            Rule("/_control/accounts/<account>/calendars", endpoint="account_calendars", methods=["POST"]),
            Rule(
                "/_control/accounts/<account>/calendars/<calendar_id>",
                endpoint="account_calendar",
                methods=["DELETE"],
            ),
            Rule("/_control/accounts/<account>/sync-tokens/expire", endpoint="sync_expire", methods=["POST"]),
            Rule("/_control/events/<event_id>", endpoint="event", methods=["GET", "PATCH", "DELETE"]),
            Rule("/_control/events/<event_id>/instances", endpoint="event_instances", methods=["GET"]),
            Rule("/_control/channels", endpoint="channels", methods=["GET"]),
            Rule("/_control/channels/<channel_id>/expire", endpoint="channel_expire", methods=["POST"]),
        ]

    def _c_apps(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.apps()}
        body = control_body(request)
        check_fields(body, {"client_id", "client_secret", "redirect_uris", "testing"})
        return 201, self.add_app(
            body.get("client_id"),
            body.get("client_secret"),
            redirect_uris=body.get("redirect_uris"),
            testing=bool(body.get("testing")),
        )

    def _c_app(self, request: Request, client_id: str) -> tuple[int, Any]:
        self.delete_app(client_id)
        return 204, None

    def _c_accounts(self, request: Request) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"value": self.accounts()}
        body = control_body(request)
        allowed = {"email", "name", "time_zone", "client_id", "scopes", "consent", "sub", "calendars"}
        check_fields(body, allowed, ["email"])
        calendars = body.get("calendars")
        if calendars is not None:
            if not isinstance(calendars, list) or not all(isinstance(c, dict) for c in calendars):
                raise EmulatorError("calendars must be a list of objects")
            for spec in calendars:
                check_fields(spec, _CALENDAR_FIELDS, ["summary"])
        fields = dict(body)
        email = fields.pop("email")
        return 201, self.add_account(email, **fields)

    def _c_account_token(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"client_id", "scopes"}, ["client_id"])
        return 201, {
            "refresh_token": self.issue_refresh_token(account, body["client_id"], body.get("scopes"))
        }

    def _c_account_revoke(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"client_id"})
        return 200, {"revoked": self.revoke(account, body.get("client_id"))}

    def _c_account_calendars(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, _CALENDAR_FIELDS, ["summary"])
        return 201, self.add_calendar(account, **body)

    def _c_account_calendar(self, request: Request, account: str, calendar_id: str) -> tuple[int, Any]:
        self.delete_calendar(account, calendar_id)
        return 204, None

    def _c_sync_expire(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"expired": self.expire_sync_tokens(account)}

    def _c_event(self, request: Request, event_id: str) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, self.event(event_id)
        if request.method == "DELETE":
            return 200, self.delete_event(event_id)
        body = control_body(request)
        check_fields(body, _EVENT_PATCH_FIELDS)
        return 200, self.update_event(event_id, **body)

    def _c_event_instances(self, request: Request, event_id: str) -> tuple[int, Any]:
        start, end = request.args.get("start"), request.args.get("end")
        if not start or not end:
            raise EmulatorError("query parameters 'start' and 'end' are required")
        return 200, {"value": self.instances(event_id, start, end)}

    def _c_channels(self, request: Request) -> tuple[int, Any]:
        return 200, {"value": self.channels(active_only=request.args.get("active", "") in ("1", "true"))}

    def _c_channel_expire(self, request: Request, channel_id: str) -> tuple[int, Any]:
        return 200, self.expire_channel(channel_id)
