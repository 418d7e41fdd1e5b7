"""Google's API wire side: routing, error and fault answers, userinfo, and the Calendar API v3
handlers (calendarList, events with expansion, page and sync tokens, events/watch, channels/stop)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.wrappers import Request, Response

from local.emulators.core.backend import AccessToken
from local.emulators.core.delivery import LOOPBACK_HOSTS
from local.emulators.core.requestlog import RequestContext
from local.emulators.core.routing import route
from local.emulators.core.service import bearer_token
from local.emulators.google.errors import (
    _DEFAULT_FAULT_ERROR,
    _MSG_410,
    _REASON_MESSAGES,
    _ApiError,
    _insufficient_scopes,
    _invalid_param,
    _not_found,
    _OAuthError,
    _parse_bool,
    _parse_rfc3339,
    _unauthenticated,
)
from local.emulators.google.events import _etag, _ms, _parse_instance_id, _rfc3339_ms
from local.emulators.google.identity import GoogleIdentity
from local.emulators.google.models import (
    _CALENDAR_LIST_SCOPES,
    _CHANNEL_ID_RE,
    _EVENT_SCOPES,
    _MAX_PAGE_STATES,
    CALENDAR_LIST_DEFAULT_MAX,
    CALENDAR_LIST_HARD_MAX,
    CHANNEL_DEFAULT_TTL_SECONDS,
    JSON_TYPE,
    LIST_DEFAULT_MAX,
    LIST_HARD_MAX,
    SCOPE_EMAIL,
    SCOPE_PROFILE,
    GoogleAccount,
    GoogleCalendar,
    GoogleFault,
    _Channel,
    _PageState,
    _Query,
    _SyncState,
)


class GoogleResponses(GoogleIdentity):
    """The service routes (`_h_<endpoint>`) and the hooks of the shared request pipeline."""

    redact_logged_query = True

    def _is_token_request(self, request: Request) -> bool:
        return request.path.rstrip("/") == "/token"

    def _is_authorize_request(self, request: Request) -> bool:
        return request.path.startswith("/o/oauth2/")

    def _routing_error(self, exc: HTTPException, request: Request) -> Exception:
        if isinstance(exc, MethodNotAllowed):
            return _ApiError(405, "httpMethodNotAllowed", "HTTP method not allowed")
        if isinstance(exc, NotFound):
            return _ApiError(404, "notFound", "Not Found")
        return _ApiError(exc.code or 400, "badRequest", exc.description or "Bad Request")

    def _error_response(self, exc: Exception, ctx: RequestContext) -> Response | None:
        if isinstance(exc, _OAuthError):
            return self._oauth_error(exc)
        if isinstance(exc, _ApiError):
            return self._api_error(exc)
        return None

    def _internal_error(self, ctx: RequestContext) -> Response:
        return self._api_error(_ApiError(500, "backendError", "Backend Error"))

    def _fault_response(self, rule: GoogleFault, request: Request, ctx: RequestContext) -> Response:
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        if self._is_token_request(request):
            error = rule.error or ("invalid_grant" if (rule.status or 400) < 500 else "internal_failure")
            status = rule.status or (401 if error == "invalid_client" else 400)
            description = rule.message or {
                "invalid_grant": "Token has been expired or revoked.",
                "invalid_client": "Unauthorized",
            }.get(error, "Emulated failure.")
            response = self._oauth_error(_OAuthError(status, error, description))
        else:
            if rule.reason is not None:
                domain, message = _REASON_MESSAGES.get(rule.reason, ("global", rule.reason))
                forbidden = ("rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "forbidden")
                status = rule.status or (403 if rule.reason in forbidden else 400)
                reason = rule.reason
            else:
                status = rule.status or 400
                domain, reason, message = _DEFAULT_FAULT_ERROR.get(
                    status, ("global", "backendError", "Backend Error")
                )
            if status == 401:
                exc = _unauthenticated()
            else:
                exc = _ApiError(
                    status,
                    reason,
                    rule.message or message,
                    domain=domain,
                    location="syncToken" if reason == "fullSyncRequired" else None,
                )
            response = self._api_error(exc)
        response.headers.update(headers)
        return response

    def _api_error(self, exc: _ApiError) -> Response:
        response = Response(json.dumps(exc.body()), status=exc.status, content_type=JSON_TYPE)
        response.headers.update(exc.headers)
        return response

    def _authenticate(self, request: Request, ctx: RequestContext) -> tuple[AccessToken, GoogleAccount]:
        at = self._access_tokens.get(bearer_token(request) or "")
        account = self._accounts.get(at.account_id) if at else None
        if at is None or account is None or at.expires_at <= self.now():
            raise _unauthenticated()
        app = self._apps.get(at.client_id)
        if app is None or app.deleted:
            raise _unauthenticated()
        ctx.account_id, ctx.client_id = account.id, at.client_id
        return at, account

    @route("/v1/userinfo", "GET")
    @route("/oauth2/v3/userinfo", "GET")
    def _h_userinfo(self, request: Request, ctx: RequestContext) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            body: dict[str, Any] = {"sub": acc.id}
            if SCOPE_PROFILE in at.scopes:
                body.update(name=acc.name, given_name=acc.given_name, picture=acc.picture)
                if acc.family_name:
                    body["family_name"] = acc.family_name
            if SCOPE_EMAIL in at.scopes:
                body.update(email=acc.email, email_verified=True)
            if len(body) == 1 and "openid" not in at.scopes:
                raise _unauthenticated()
            return self._json(body)

    def _api_calendar(self, acc: GoogleAccount, calendar_id: str) -> GoogleCalendar:
        if calendar_id == "primary":
            calendar_id = acc.email
        cal = acc.calendars.get(calendar_id)
        if cal is None or cal.deleted:
            raise _not_found()
        return cal

    @staticmethod
    def _max_results(request: Request, default: int, hard_max: int) -> int:
        raw = request.args.get("maxResults")
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) < 1:
            raise _invalid_param(
                "maxResults", f"Invalid value '{raw}'. Values must be within the range: [1, ...]"
            )
        return min(int(raw), hard_max)  # Google silently caps the page size

    @staticmethod
    def _max_attendees(request: Request) -> int | None:
        raw = request.args.get("maxAttendees")
        if raw is None:
            return None
        if not raw.isdigit() or int(raw) < 1:
            raise _invalid_param(
                "maxAttendees", f"Invalid value '{raw}'. Values must be within the range: [1, ...]"
            )
        return int(raw)

    @staticmethod
    def _cap_attendees(item: dict[str, Any], limit: int | None) -> dict[str, Any]:
        """maxAttendees: over the limit only the participant (the calendar's own row) is returned,
        with attendeesOmitted: true."""
        attendees = item.get("attendees")
        if limit is None or not isinstance(attendees, list) or len(attendees) <= limit:
            return item
        return {**item, "attendees": [a for a in attendees if a.get("self")], "attendeesOmitted": True}

    def _mint_sync_token(self, state: _SyncState) -> str:
        token = base64.urlsafe_b64encode(b"\x08" + secrets.token_bytes(18)).decode()
        self._sync_tokens[token] = state
        return token

    def _sync_state(self, token: str, kind: str, acc: GoogleAccount, calendar_id: str | None) -> _SyncState:
        state = self._sync_state_of(token, kind, (acc.id, calendar_id), self.sync_token_max_age)
        if state is None:
            raise _ApiError(410, "fullSyncRequired", _MSG_410, domain="calendar", location="syncToken")
        return state

    def _page(
        self,
        request: Request,
        signature: tuple[Any, ...],
        build: Callable[[], tuple[list[dict[str, Any]], str]],
        size: int,
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Serve one page of a frozen result list; `build` makes (items, nextSyncToken) on a first page."""
        page_token = request.args.get("pageToken")
        if page_token is not None:
            state = self._pages.get(page_token)
            if state is None or state.signature != signature:
                raise _invalid_param("pageToken", "Invalid page token value.")
            items, offset, end_token = state.items, state.offset, state.end_token
        else:
            items, end_token = build()
            offset = 0
        page = items[offset : offset + size]
        if offset + size < len(items):
            token = base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()
            self._pages[token] = _PageState(signature, items, offset + size, end_token)
            while len(self._pages) > _MAX_PAGE_STATES:
                del self._pages[next(iter(self._pages))]
            return page, {"nextPageToken": token}
        return page, {"nextSyncToken": end_token}

    @route("/calendar/v3/users/me/calendarList", "GET")
    def _h_calendar_list(self, request: Request, ctx: RequestContext) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _CALENDAR_LIST_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            size = self._max_results(request, CALENDAR_LIST_DEFAULT_MAX, CALENDAR_LIST_HARD_MAX)
            sync_token = request.args.get("syncToken")
            show_deleted = _parse_bool(request.args.get("showDeleted"), "showDeleted", False)
            since = self._sync_state(sync_token, "calendarList", acc, None).seq if sync_token else None

            def build() -> tuple[list[dict[str, Any]], str]:
                entries = []
                for cal in acc.calendars.values():
                    if since is not None and cal.list_seq <= since:
                        continue
                    if cal.deleted:
                        if since is not None or show_deleted:
                            entries.append(
                                {
                                    "kind": "calendar#calendarListEntry",
                                    "etag": _etag(self.now(), cal.list_seq),
                                    "id": cal.id,
                                    "deleted": True,
                                }
                            )
                        continue
                    entries.append(self._calendar_entry(cal))
                if since is not None and not entries and sync_token:
                    return entries, sync_token
                state = _SyncState("calendarList", acc.id, None, acc.list_seq, None, self.now())
                return entries, self._mint_sync_token(state)

            signature = (acc.id, "calendarList", sync_token, show_deleted)
            items, links = self._page(request, signature, build, size)
            body = {
                "kind": "calendar#calendarList",
                "etag": _etag(self.now(), acc.list_seq),
                **links,
                "items": items,
            }
            return self._json(body)

    def _calendar_entry(self, cal: GoogleCalendar) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "kind": "calendar#calendarListEntry",
            "etag": f'"{cal.list_seq}{_ms(datetime(2026, 1, 1, tzinfo=UTC))}"',
            "id": cal.id,
            "summary": cal.summary,
            "timeZone": cal.time_zone,
            "colorId": cal.color_id,
            "backgroundColor": cal.background_color,
            "foregroundColor": "#000000",
            "selected": True,
            "accessRole": cal.access_role,
            "defaultReminders": [{"method": "popup", "minutes": 10}] if cal.access_role == "owner" else [],
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }
        if cal.primary:
            entry["primary"] = True
        return entry

    @route("/calendar/v3/users/me/calendarList/<calendar_id>", "GET")
    def _h_calendar_list_entry(self, request: Request, ctx: RequestContext, calendar_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _CALENDAR_LIST_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            return self._json(self._calendar_entry(self._api_calendar(acc, calendar_id)))

    def _events_query(self, request: Request) -> tuple[_Query, str | None]:
        args = request.args
        single = _parse_bool(args.get("singleEvents"), "singleEvents", False)
        show_deleted_raw = args.get("showDeleted")
        show_deleted = _parse_bool(show_deleted_raw, "showDeleted", False)
        order_by = args.get("orderBy")
        if order_by is not None and order_by not in ("startTime", "updated"):
            raise _invalid_param("orderBy", f"Invalid value for orderBy: {order_by}")
        sync_token = args.get("syncToken")
        if sync_token is not None:
            restricted = [
                n for n in ("timeMin", "timeMax", "orderBy", "updatedMin", "q", "iCalUID") if n in args
            ]
            if restricted or show_deleted_raw is not None and not show_deleted:
                raise _ApiError(
                    400,
                    "syncTokenWithRequestRestrictions",
                    "Sync token cannot be used with other request restrictions.",
                    location=(restricted or ["showDeleted"])[0],
                )
        if order_by == "startTime" and not single:
            raise _ApiError(
                400, "badRequest", "The requested ordering is not available for the particular query."
            )
        time_min = _parse_rfc3339(args["timeMin"], "timeMin") if "timeMin" in args else None
        time_max = _parse_rfc3339(args["timeMax"], "timeMax") if "timeMax" in args else None
        if time_min is not None and time_max is not None and time_max <= time_min:
            raise _ApiError(
                400,
                "timeRangeEmpty",
                "The specified time range is empty.",
                domain="calendar",
                location="timeMax",
            )
        updated_min = _parse_rfc3339(args["updatedMin"], "updatedMin") if "updatedMin" in args else None
        return _Query(single, time_min, time_max, show_deleted, order_by, updated_min), sync_token

    @route("/calendar/v3/calendars/<calendar_id>/events", "GET")
    def _h_events(self, request: Request, ctx: RequestContext, calendar_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _EVENT_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            cal = self._api_calendar(acc, calendar_id)
            size = self._max_results(request, LIST_DEFAULT_MAX, LIST_HARD_MAX)
            max_attendees = self._max_attendees(request)
            query, sync_token = self._events_query(request)
            state = self._sync_state(sync_token, "events", acc, cal.id) if sync_token else None

            def build() -> tuple[list[dict[str, Any]], str]:
                if state is None:
                    items = self._full_items(acc, cal, query)
                    time_min = query.time_min
                else:
                    items = self._changed_items(acc, cal, state, query.single_events)
                    if not items and sync_token:
                        return items, sync_token  # nothing changed: the same token again
                    time_min = state.time_min
                fresh = _SyncState("events", acc.id, cal.id, cal.change_seq, time_min, self.now())
                return items, self._mint_sync_token(fresh)

            signature = (
                acc.id,
                cal.id,
                sync_token,
                request.args.get("singleEvents"),
                request.args.get("timeMin"),
                request.args.get("timeMax"),
                request.args.get("orderBy"),
                request.args.get("showDeleted"),
            )
            items, links = self._page(request, signature, build, size)
            updated = max((ev.updated for ev in cal.events.values()), default=self.now())
            body = {
                "kind": "calendar#events",
                "etag": _etag(updated, cal.change_seq),
                "summary": cal.summary,
                "description": "",
                "updated": _rfc3339_ms(updated),
                "timeZone": cal.time_zone,
                "accessRole": cal.access_role,
                "defaultReminders": [{"method": "popup", "minutes": 10}]
                if cal.access_role == "owner"
                else [],
                **links,
                "items": [self._cap_attendees(i, max_attendees) for i in items],
            }
            return self._json(body)

    @route("/calendar/v3/calendars/<calendar_id>/events/<event_id>", "GET")
    def _h_event(self, request: Request, ctx: RequestContext, calendar_id: str, event_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _EVENT_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            cal = self._api_calendar(acc, calendar_id)
            ev = cal.events.get(event_id)
            if ev is None:
                parsed = _parse_instance_id(event_id)
                master = cal.events.get(parsed[0]) if parsed else None
                if parsed is None or master is None or not master.recurrence:
                    raise _not_found()
                ev = self._virtual_instance(master, parsed[1])
                if ev is None:
                    raise _not_found()
            body = self._event_json(acc, cal, ev)
            master = cal.events.get(ev.recurring_event_id) if ev.recurring_event_id else None
            if master is not None and master.status == "cancelled":
                body["status"] = "cancelled"
            return self._json(self._cap_attendees(body, self._max_attendees(request)))

    @staticmethod
    def _json_body(request: Request) -> dict[str, Any]:
        body = request.get_json(silent=True) if request.mimetype == "application/json" else None
        if not isinstance(body, dict):
            raise _ApiError(400, "parseError", "Parse Error")
        return body

    def _project_number(self, client_id: str) -> str:
        digits = client_id.split("-", 1)[0]
        return (
            digits if digits.isdigit() else str(int(hashlib.sha256(client_id.encode()).hexdigest()[:10], 16))
        )

    @route("/calendar/v3/calendars/<calendar_id>/events/watch", "POST")
    def _h_watch(self, request: Request, ctx: RequestContext, calendar_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _EVENT_SCOPES & set(at.scopes):
                raise _insufficient_scopes()
            cal = self._api_calendar(acc, calendar_id)
            body = self._json_body(request)
            channel_id = body.get("id")
            if not channel_id:
                raise _ApiError(400, "required", "Required", location="id")
            if not isinstance(channel_id, str) or not _CHANNEL_ID_RE.match(channel_id):
                raise _invalid_param("id", f"Invalid channel id: {channel_id}")
            if str(body.get("type", "")).lower() not in ("web_hook", "webhook"):
                raise _invalid_param("type", f"Channel type {body.get('type')!r} is not supported.")
            address = body.get("address")
            if not isinstance(address, str) or not address:
                raise _ApiError(400, "required", "Required", location="address")
            parts = urlsplit(address)
            # https only, like Google; plain http is tolerated for loopback so the local stack can run.
            if not parts.hostname or not (
                parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
            ):
                raise _ApiError(400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}")
            token = body.get("token")
            if token is not None and (not isinstance(token, str) or len(token) > 256):
                raise _invalid_param("token", "Channel token must be a string of at most 256 characters.")
            existing = self._channels.get(channel_id)
            if existing is not None and existing.client_id == at.client_id and self._channel_live(existing):
                raise _ApiError(400, "channelIdNotUnique", f"Channel id {channel_id} not unique")
            now = self.now()
            expiration = now + timedelta(seconds=self._ttl(body, now))
            digest = hashlib.sha256(f"{acc.id}/{cal.id}".encode()).digest()
            base = request.host_url.rstrip("/")
            resource_uri = f"{base}/calendar/v3/calendars/{quote(cal.id, safe='@')}/events?alt=json"
            channel = _Channel(
                id=channel_id,
                resource_id=base64.urlsafe_b64encode(digest).decode()[:27],
                resource_uri=resource_uri,
                token=token,
                address=address,
                expiration=expiration,
                account_id=acc.id,
                client_id=at.client_id,
                calendar_id=cal.id,
                created_at=now,
            )
            self._channels[channel.id] = channel
            delivery = self._new_delivery(channel, "sync")
            answer: dict[str, Any] = {
                "kind": "api#channel",
                "id": channel.id,
                "resourceId": channel.resource_id,
                "resourceUri": channel.resource_uri,
            }
            if token is not None:
                answer["token"] = token
            answer["expiration"] = str(_ms(expiration))
        self._launch(delivery)
        return self._json(answer)

    def _ttl(self, body: dict[str, Any], now: datetime) -> float:
        """Requested lifetime in seconds (params.ttl or expiration ms), silently capped like Google."""
        seconds: float = CHANNEL_DEFAULT_TTL_SECONDS
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise _invalid_param("params")
        if params.get("ttl") is not None:
            try:
                seconds = float(params["ttl"])
            except (TypeError, ValueError):
                raise _invalid_param("params.ttl") from None
        elif body.get("expiration") is not None:
            try:
                seconds = (int(body["expiration"]) - _ms(now)) / 1000
            except (TypeError, ValueError):
                raise _invalid_param("expiration") from None
        if seconds <= 0:
            raise _invalid_param("expiration", "Channel expiration must be in the future.")
        return min(seconds, self.channel_max_ttl)

    @route("/calendar/v3/channels/stop", "POST")
    def _h_channel_stop(self, request: Request, ctx: RequestContext) -> Response:
        with self._lock:
            at, _ = self._authenticate(request, ctx)
            body = self._json_body(request)
            channel_id, resource_id = body.get("id"), body.get("resourceId")
            channel = self._channels.get(channel_id) if isinstance(channel_id, str) else None
            if (
                channel is None
                or channel.client_id != at.client_id
                or channel.resource_id != resource_id
                or not self._channel_live(channel)
            ):
                message = (
                    f"Channel '{channel_id}' not found for project '{self._project_number(at.client_id)}'"
                )
                raise _ApiError(404, "notFound", message)
            channel.stopped = True
            return self._json(None, 204)
