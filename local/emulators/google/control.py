"""The Google emulator's own control routes (/_control, JSON, no auth: local only); the shared ones
(reset, clock, faults, requests, notifications, ...) are local/emulators/core/control.py's."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request

from local.emulators.core.control import control_body, window_args
from local.emulators.core.errors import check_fields
from local.emulators.core.routing import route
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
    control_event_patch_fields = _EVENT_PATCH_FIELDS
    control_app_fields = {"client_id", "client_secret", "redirect_uris", "testing"}
    control_account_fields = {
        "email",
        "name",
        "time_zone",
        "client_id",
        "scopes",
        "consent",
        "sub",
        "calendars",
    }
    control_account_required = ("email",)
    control_calendar_fields = _CALENDAR_FIELDS
    control_calendar_required = ("summary",)

    def _control_add_account(self, body: dict[str, Any]) -> dict[str, Any]:
        fields = dict(body)
        email = fields.pop("email")
        return self.add_account(email, **fields)

    @route("/_control/accounts/<account>/refresh-token", "POST")
    def _c_account_token(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"client_id", "scopes"}, ["client_id"])
        return 201, {
            "refresh_token": self.issue_refresh_token(account, body["client_id"], body.get("scopes"))
        }

    @route("/_control/accounts/<account>/revoke", "POST")
    def _c_account_revoke(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"client_id"})
        return 200, {"revoked": self.revoke(account, body.get("client_id"))}

    @route("/_control/accounts/<account>/calendars/<calendar_id>", "DELETE")
    def _c_account_calendar(self, request: Request, account: str, calendar_id: str) -> tuple[int, Any]:
        self.delete_calendar(account, calendar_id)
        return 204, None

    @route("/_control/accounts/<account>/sync-tokens/expire", "POST")
    def _c_sync_expire(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"expired": self.expire_sync_tokens(account)}

    @route("/_control/events/<event_id>/instances", "GET")
    def _c_event_instances(self, request: Request, event_id: str) -> tuple[int, Any]:
        return 200, {"value": self.instances(event_id, *window_args(request))}

    @route("/_control/channels", "GET")
    def _c_channels(self, request: Request) -> tuple[int, Any]:
        return 200, {"value": self.channels(active_only=request.args.get("active", "") in ("1", "true"))}

    @route("/_control/channels/<channel_id>/expire", "POST")
    def _c_channel_expire(self, request: Request, channel_id: str) -> tuple[int, Any]:
        return 200, self.expire_channel(channel_id)

    @route("/_control/apps/<client_id>", "DELETE")
    def _c_app(self, request: Request, client_id: str) -> tuple[int, Any]:
        self.delete_app(client_id)
        return 204, None
