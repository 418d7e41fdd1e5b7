"""The Graph emulator's own control routes (/_control, JSON, no auth: local only); the shared ones
(reset, clock, faults, requests, notifications, ...) are local/emulators/core/control.py's."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request

from local.emulators.core.control import control_body, window_args
from local.emulators.core.errors import EmulatorError, check_fields
from local.emulators.core.routing import route
from local.emulators.graph.backend import UPDATABLE
from local.emulators.graph.models import DEFAULT_SCOPES
from local.emulators.graph.responses import GraphResponses

_CALENDAR_FIELDS = {"name", "is_default", "can_edit", "color", "owner_name", "owner_address", "calendar_id"}


_EVENT_PATCH_FIELDS = set(UPDATABLE)


_EVENT_FIELDS = _EVENT_PATCH_FIELDS | {"is_all_day", "organizer", "id", "attendees"}


class GraphControl(GraphResponses):
    """`_c_<endpoint>(request, **args) -> (status, body)` for the Graph-only routes."""

    control_event_fields = _EVENT_FIELDS
    control_event_patch_fields = _EVENT_PATCH_FIELDS
    control_app_fields = {"client_id", "client_secret"}
    control_account_fields = {
        "client_id",
        "mail",
        "user_principal_name",
        "display_name",
        "calendars",
        "scopes",
        "id",
        "refresh_token",
    }
    control_account_required = ("client_id", "user_principal_name")
    control_calendar_fields = _CALENDAR_FIELDS
    control_calendar_required = ("name",)

    def _control_add_account(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.add_account(
            client_id=body["client_id"],
            user_principal_name=body["user_principal_name"],
            mail=body.get("mail"),
            display_name=body.get("display_name"),
            calendars=body.get("calendars"),
            scopes=body.get("scopes") or DEFAULT_SCOPES,
            object_id=body.get("id"),
            refresh_token=body.get("refresh_token"),
        )

    @route("/_control/accounts/<account>/refresh-token", "POST")
    def _c_account_token(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"client_id", "scopes", "refresh_token"}, ["client_id"])
        token = self.issue_refresh_token(
            account, body["client_id"], body.get("scopes"), refresh_token=body.get("refresh_token")
        )
        return 201, {"refresh_token": token}

    @route("/_control/accounts/<account>/revoke", "POST")
    def _c_account_revoke(self, request: Request, account: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"code"})
        return 200, {"revoked": self.revoke(account, int(body.get("code") or 50173))}

    @route("/_control/events/<event_id>/respond", "POST")
    def _c_event_respond(self, request: Request, event_id: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"attendee", "response"}, ["attendee", "response"])
        return 200, self.respond_event(event_id, str(body["attendee"]), str(body["response"]))

    @route("/_control/refresh-tokens", "GET")
    def _c_refresh_tokens(self, request: Request) -> tuple[int, Any]:
        account = request.args.get("account")
        if not account:
            raise EmulatorError("query parameter 'account' is required")
        return 200, {"value": self.refresh_tokens(account)}

    @route("/_control/subscriptions", "GET")
    def _c_subscriptions(self, request: Request) -> tuple[int, Any]:
        active_only = request.args.get("active", "") in ("1", "true")
        return 200, {"value": self.subscriptions(active_only=active_only)}

    @route("/_control/subscriptions/<subscription_id>", "DELETE")
    def _c_subscription(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        """Remove a subscription behind the client's back (Graph then answers 404 for it)."""
        self.delete_subscription(subscription_id)
        return 204, None

    @route("/_control/subscriptions/<subscription_id>/expire", "POST")
    def _c_subscription_expire(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        return 200, self.expire_subscription(subscription_id)

    @route("/_control/subscriptions/<subscription_id>/lifecycle", "POST")
    def _c_subscription_lifecycle(self, request: Request, subscription_id: str) -> tuple[int, Any]:
        body = control_body(request)
        check_fields(body, {"event"}, ["event"])
        return 200, self.send_lifecycle_notification(subscription_id, body["event"])

    @route("/_control/accounts/<account>/delta/expire", "POST")
    def _c_delta_expire(self, request: Request, account: str) -> tuple[int, Any]:
        return 200, {"expired": self.expire_delta_tokens(account)}

    @route("/_control/accounts/<account>/delta/resync-required", "POST")
    def _c_delta_resync(self, request: Request, account: str) -> tuple[int, Any]:
        self.require_resync(account)
        return 200, {"resync_required": True}

    @route("/_control/events/<event_id>/occurrences", "GET")
    def _c_event_occurrences(self, request: Request, event_id: str) -> tuple[int, Any]:
        return 200, {"value": self.occurrences(event_id, *window_args(request))}
