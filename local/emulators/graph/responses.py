"""Microsoft Graph v1.0's wire side: routing, error shapes, fault answers, `Prefer` headers, and the
handlers of /me, calendars, events, instances, calendarView delta and subscriptions."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote_plus, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import requests as _http
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.wrappers import Request, Response

from local.emulators import windows_zones
from local.emulators.core.backend import AccessToken
from local.emulators.core.delivery import LOOPBACK_HOSTS, is_loopback_url
from local.emulators.core.routing import route
from local.emulators.core.service import bearer_token
from local.emulators.graph.events import (
    _DELTA_CONTEXT,
    _EVENT_JSON_TYPE,
    _MAX_SYNC_TOKENS,
    _NOT_FOUND_IN_STORE,
    _PREFER_BODY_RE,
    _PREFER_PAGE_RE,
    _PREFER_TZ_RE,
    _DeltaRound,
    _html_to_text,
    _local_dt,
    _Prefs,
    _removed_item,
    _SyncToken,
    _ViewItem,
    _zone,
)
from local.emulators.graph.identity import _AAD_DEFAULT_CODE, GraphIdentity, _AadError
from local.emulators.graph.models import (
    _HEX_COLORS,
    _ID_RE,
    _RESOURCE_RE,
    CHANGE_TYPES,
    GRAPH_JSON,
    GRAPH_METADATA,
    TLS_VERSIONS,
    Account,
    Calendar,
    GraphContext,
    GraphFault,
    Subscription,
    _graph_dt,
    _has_scope_family,
    _odata_function_path,
    _parse_datetime,
)

_GRAPH_DEFAULT_ERROR: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Bad request."),
    401: ("InvalidAuthenticationToken", "Access token has expired or is not yet valid."),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ResourceNotFound", "The object was not found."),
    409: ("Conflict", "Conflict."),
    410: ("Gone", "The resource is gone."),
    429: ("TooManyRequests", "Please retry after"),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceNotAvailable", "Service is unavailable. Please retry after"),
    504: ("GatewayTimeout", "Gateway timeout."),
}


class _GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


log = logging.getLogger(__name__)


class GraphResponses(GraphIdentity):
    """The service routes (`_h_<endpoint>`) and the hooks of the shared request pipeline."""

    def _new_context(self, request: Request) -> GraphContext:
        ctx = GraphContext(
            request_id=str(uuid.uuid4()),
            client_request_id=request.headers.get("client-request-id") or str(uuid.uuid4()),
        )
        ctx.identity = "/oauth2/" in request.path or "/v2.0/" in request.path
        # Behind a TLS terminator (or an https-rewriting client, as in the MSAL test) the public scheme
        # is the forwarded one: MSAL accepts only https authorities and token endpoints.
        scheme = request.headers.get("X-Forwarded-Proto") or request.scheme
        ctx.base_url = f"{scheme}://{request.host}"
        return ctx

    def _is_token_request(self, request: Request) -> bool:
        return request.path.endswith("/oauth2/v2.0/token")

    def _is_authorize_request(self, request: Request) -> bool:
        return request.path.endswith("/oauth2/v2.0/authorize")

    def _login_hint(self, request: Request) -> str | None:
        return request.values.get("login_hint") or request.values.get("account_id")

    def _service_path(self, request: Request) -> str | None:
        return _odata_function_path(request.path)

    def _routing_error(self, exc: HTTPException, request: Request) -> Exception:
        if isinstance(exc, MethodNotAllowed):
            return _GraphError(
                405, "BadRequest", f"The HTTP method '{request.method}' is not supported for this resource."
            )
        if isinstance(exc, NotFound):
            if request.path.startswith("/v1.0/"):
                segment = request.path.rstrip("/").rsplit("/", 1)[-1]
                return _GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
            return _GraphError(404, "NotFound", f"No such endpoint: {request.path}")
        return _GraphError(exc.code or 400, "BadRequest", exc.description or "Bad request.")

    def _error_response(self, exc: Exception, ctx: GraphContext) -> Response | None:
        if isinstance(exc, _AadError):
            return self._aad_error_response(exc, ctx)
        if isinstance(exc, _GraphError):
            return self._graph_error(exc, ctx)
        return None

    def _internal_error(self, ctx: GraphContext) -> Response:
        return self._graph_error(_GraphError(500, "InternalServerError", "Emulator failure."), ctx)

    def _finish_response(self, response: Response, request: Request, ctx: GraphContext) -> None:
        response.headers["request-id"] = ctx.request_id
        response.headers["client-request-id"] = ctx.client_request_id
        if ctx.identity:
            response.headers["x-ms-request-id"] = ctx.request_id

    def _log_extra(self, ctx: GraphContext) -> dict[str, Any]:
        return {"request_id": ctx.request_id}

    def _fault_response(self, rule: GraphFault, request: Request, ctx: GraphContext) -> Response:
        headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
        if ctx.identity:
            error = rule.error or (
                "invalid_request" if (rule.status or 500) < 429 else "temporarily_unavailable"
            )
            status = rule.status or (401 if error == "invalid_client" else 400)
            code = rule.aadsts or _AAD_DEFAULT_CODE.get(error, 90033)
            response = self._aad_error_response(_AadError(status, error, code, param="emulated"), ctx)
            response.headers.update(headers)
            return response
        status = rule.status or 400
        default_code, default_message = _GRAPH_DEFAULT_ERROR.get(
            status, ("UnknownError", "Emulated failure.")
        )
        return self._graph_error(
            _GraphError(status, rule.error or default_code, rule.message or default_message, headers), ctx
        )

    def _prefs(self, request: Request) -> _Prefs:
        header = ", ".join(request.headers.getlist("Prefer"))
        applied: list[str] = []
        zone: tuple[str, ZoneInfo] | None
        if self.default_response_timezone is None:
            zone = ("UTC", ZoneInfo("UTC"))
        elif self.default_response_timezone == "original":
            zone = None
        else:
            zone = (self.default_response_timezone, ZoneInfo(_zone(self.default_response_timezone)[0]))
        match = _PREFER_TZ_RE.search(header)
        if match:
            name = (match.group(1) if match.group(1) is not None else match.group(2)).strip()
            try:
                iana, _ = windows_zones.resolve(name)
            except ValueError:
                raise _GraphError(
                    400,
                    "TimeZoneNotSupportedException",
                    "A valid TimeZone value must be specified. The following TimeZone value is not "
                    f"supported: '{name}'.",
                ) from None
            zone = (name, ZoneInfo(iana))
            applied.append(f'outlook.timezone="{name}"')
        page_size = None
        match = _PREFER_PAGE_RE.search(header)
        if match:
            page_size = max(1, min(int(match.group(1)), 1000))
            applied.append(f"odata.maxpagesize={page_size}")
        match = _PREFER_BODY_RE.search(header)
        text_body = bool(match and match.group(1).lower() == "text")
        if match:
            applied.append(f'outlook.body-content-type="{match.group(1).lower()}"')
        return _Prefs(zone, page_size, text_body, applied)

    @staticmethod
    def _times_json(value: datetime, item: _ViewItem, prefs: _Prefs) -> dict[str, str]:
        label, tz = prefs.zone if prefs.zone is not None else (item.zone_name, value.tzinfo)
        # All-day events are floating: midnight of their dates in whatever zone is asked for.
        local = value if item.is_all_day else value.astimezone(tz)
        return {"dateTime": _local_dt(local.replace(tzinfo=None)), "timeZone": label}

    def _render(
        self, item: _ViewItem, prefs: _Prefs, *, minimal: bool = False, delta: bool = False
    ) -> dict[str, Any]:
        start, end = self._times_json(item.start, item, prefs), self._times_json(item.end, item, prefs)
        if minimal:
            # calendarView delta: occurrences and exceptions carry only these.
            return {
                "@odata.type": _EVENT_JSON_TYPE,
                "@odata.etag": item.full["@odata.etag"],
                "id": item.id,
                "seriesMasterId": item.full["seriesMasterId"],
                "type": item.type,
                "start": start,
                "end": end,
            }
        body: dict[str, Any] = {"@odata.type": _EVENT_JSON_TYPE} if delta else {}
        body.update(item.full)
        body["start"], body["end"] = start, end
        if prefs.text_body:
            body["body"] = {"contentType": "text", "content": _html_to_text(body["body"]["content"])}
        return body

    def _prefer_response(self, body: dict[str, Any], prefs: _Prefs) -> Response:
        response = self._graph_json(body)
        if prefs.applied:
            response.headers["Preference-Applied"] = ", ".join(prefs.applied)
        return response

    def _graph_json(self, body: dict[str, Any] | None, status: int = 200) -> Response:
        if body is None:
            return Response(status=status)
        return Response(json.dumps(body), status=status, content_type=GRAPH_JSON)

    def _graph_error(self, exc: _GraphError, ctx: GraphContext) -> Response:
        body = {
            "error": {
                "code": exc.code,
                "message": exc.message,
                "innerError": {
                    "date": self.now().strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": ctx.request_id,
                    "client-request-id": ctx.client_request_id,
                },
            }
        }
        response = self._graph_json(body, exc.status)
        response.headers.update(exc.headers)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="", '
                'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                'client_id="00000003-0000-0000-c000-000000000000"'
            )
        return response

    def _authenticate(self, request: Request, ctx: GraphContext) -> tuple[AccessToken, Account]:
        token = bearer_token(request)
        if token is None:
            raise _GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        at = self._access_tokens.get(token)
        account = self._accounts.get(at.account_id) if at else None
        if at is None or account is None or at.expires_at <= self.now():
            raise _GraphError(
                401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."
            )
        ctx.account_id, ctx.client_id = account.id, at.client_id
        return at, account

    @staticmethod
    def _require_scope(at: AccessToken, family: str) -> None:
        if not _has_scope_family(at.scopes, family):
            raise _GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    @staticmethod
    def _select(item: dict[str, Any], request: Request, type_name: str) -> dict[str, Any]:
        raw = request.args.get("$select")
        if not raw:
            return item
        wanted = [s.strip() for s in raw.split(",") if s.strip()]
        for name in wanted:
            if name not in item:
                raise _GraphError(
                    400,
                    "BadRequest",
                    f"Could not find a property named '{name}' on type 'microsoft.graph.{type_name}'.",
                )
        return {k: v for k, v in item.items() if k in wanted or k == "id" or k.startswith("@odata.")}

    @staticmethod
    def _json_body(request: Request) -> dict[str, Any]:
        body = request.get_json(silent=True) if request.mimetype == "application/json" else None
        if not isinstance(body, dict):
            raise _GraphError(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload "
                "is of valid JSON format.",
            )
        return body

    @route("/v1.0/me", "GET")
    def _h_me(self, request: Request, ctx: GraphContext) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            if not _has_scope_family(at.scopes, "User"):
                raise _GraphError(
                    403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
                )
            given, _, surname = acc.display_name.partition(" ")
            body: dict[str, Any] = {
                "@odata.context": f"{GRAPH_METADATA}#users/$entity",
                "businessPhones": [],
                "displayName": acc.display_name,
                "givenName": given or None,
                "jobTitle": None,
                "mail": acc.mail,
                "mobilePhone": None,
                "officeLocation": None,
                "preferredLanguage": "en-US",
                "surname": surname or None,
                "userPrincipalName": acc.user_principal_name,
                "id": acc.id,
            }
            return self._graph_json(self._select(body, request, "user"))

    def _calendar_json(self, cal: Calendar) -> dict[str, Any]:
        return {
            "id": cal.id,
            "name": cal.name,
            "color": cal.color,
            "hexColor": _HEX_COLORS.get(cal.color, ""),
            "isDefaultCalendar": cal.is_default,
            "changeKey": cal.change_key,
            "canShare": cal.owned,
            "canViewPrivateItems": cal.owned,
            "canEdit": cal.can_edit,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
            "isTallyingResponses": cal.owned,
            "isRemovable": cal.owned and not cal.is_default,
            "owner": {"name": cal.owner_name, "address": cal.owner_address},
        }

    @route("/v1.0/me/calendars", "GET")
    def _h_calendars(self, request: Request, ctx: GraphContext) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            top = self._top(request)
            offset = self._decode_skiptoken(request.args.get("$skiptoken"))
            calendars = list(acc.calendars.values())
            page = calendars[offset : offset + top]
            body: dict[str, Any] = {
                "@odata.context": f"{GRAPH_METADATA}#users('{acc.id}')/calendars",
                "value": [self._select(self._calendar_json(c), request, "calendar") for c in page],
            }
            if offset + top < len(calendars):
                body["@odata.nextLink"] = self._next_link(
                    request, "$skiptoken", self._skiptoken(offset + top)
                )
            return self._graph_json(body)

    @route("/v1.0/me/calendars/<calendar_id>", "GET")
    def _h_calendar(self, request: Request, ctx: GraphContext, calendar_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            if not _ID_RE.match(calendar_id):
                raise _GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            cal = acc.calendars.get(calendar_id)
            if cal is None:
                raise _GraphError(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            body = {"@odata.context": f"{GRAPH_METADATA}#users('{acc.id}')/calendars/$entity"}
            body.update(self._calendar_json(cal))
            return self._graph_json(self._select(body, request, "calendar"))

    def _top(self, request: Request) -> int:
        raw = request.args.get("$top")
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise _GraphError(400, "BadRequest", f"Invalid value '{raw}' for $top query option found.")
        return int(raw)

    @staticmethod
    def _skiptoken(offset: int) -> str:
        # Opaque to clients (and base64 with '=', so it must be URL-encoded in the nextLink).
        return base64.b64encode(json.dumps({"o": offset, "n": secrets.token_hex(4)}).encode()).decode()

    @staticmethod
    def _decode_skiptoken(raw: str | None) -> int:
        if raw is None:
            return 0
        try:
            offset = json.loads(base64.b64decode(raw, validate=True))["o"]
            if not isinstance(offset, int) or offset < 0:
                raise ValueError
            return offset
        except (ValueError, KeyError, TypeError):
            raise _GraphError(400, "BadRequest", "The $skiptoken is invalid or has expired.") from None

    @staticmethod
    def _next_link(request: Request, key: str, value: str) -> str:
        # Absolute, on the host the client used; other query options ($top, $select) carried over.
        params = [(k, v) for k, v in request.args.items(multi=True) if k != key] + [(key, value)]
        return f"{request.host_url.rstrip('/')}{request.path}?{urlencode(params, safe='$')}"

    def _graph_calendar(self, acc: Account, calendar_id: str | None) -> Calendar:
        if calendar_id is None:
            default = next((c for c in acc.calendars.values() if c.is_default), None)
            if default is None:
                raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND_IN_STORE)
            return default
        if not _ID_RE.match(calendar_id):
            raise _GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        cal = acc.calendars.get(calendar_id)
        if cal is None:
            raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND_IN_STORE)
        return cal

    @staticmethod
    def _window(request: Request) -> tuple[datetime, datetime]:
        raw_start, raw_end = request.args.get("startDateTime"), request.args.get("endDateTime")
        if not raw_start or not raw_end:
            raise _GraphError(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified by the query string parameters "
                "StartDateTime and EndDateTime.",
            )
        start, end = _parse_datetime(raw_start), _parse_datetime(raw_end)
        for name, raw, value in (("StartDateTime", raw_start, start), ("EndDateTime", raw_end, end)):
            if value is None:
                raise _GraphError(
                    400, "ErrorInvalidParameter", f"The value '{raw}' of parameter '{name}' is invalid."
                )
        assert start is not None and end is not None
        if end <= start:
            raise _GraphError(
                400,
                "ErrorInvalidParameter",
                "The parameter 'EndDateTime' must be later than 'StartDateTime'.",
            )
        return start, end

    @staticmethod
    def _select_loose(item: dict[str, Any], request: Request) -> dict[str, Any]:
        # Loose $select: keep what was asked for among the properties we have; unknown names are
        # ignored (Graph knows many more properties than the emulator models).
        raw = request.args.get("$select")
        if not raw:
            return item
        wanted = {s.strip() for s in raw.split(",") if s.strip()}
        return {k: v for k, v in item.items() if k in wanted or k == "id" or k.startswith("@odata.")}

    @route("/v1.0/me/events/<event_id>", "GET")
    def _h_event(
        self, request: Request, ctx: GraphContext, event_id: str, calendar_id: str | None = None
    ) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            cal = self._graph_calendar(acc, calendar_id) if calendar_id is not None else None
            if not _ID_RE.match(event_id):
                raise _GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            prefs = self._prefs(request)
            item = self._resolve_item(acc, event_id, cal)
            if item is None:
                raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND_IN_STORE)
            scope = f"users('{acc.id}')" + (f"/calendars('{cal.id}')" if cal is not None else "")
            body = {"@odata.context": f"{GRAPH_METADATA}#{scope}/events/$entity", **self._render(item, prefs)}
            return self._prefer_response(self._select_loose(body, request), prefs)

    @route("/v1.0/me/calendars/<calendar_id>/events/<event_id>", "GET")
    def _h_calendar_event(
        self, request: Request, ctx: GraphContext, calendar_id: str, event_id: str
    ) -> Response:
        return self._h_event(request, ctx, event_id, calendar_id)

    @route("/v1.0/me/events/<event_id>/instances", "GET")
    def _h_event_instances(self, request: Request, ctx: GraphContext, event_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            if not _ID_RE.match(event_id):
                raise _GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            window = self._window(request)
            prefs = self._prefs(request)
            found = next(
                ((c, c.events[event_id]) for c in acc.calendars.values() if event_id in c.events), None
            )
            if found is None:
                raise _GraphError(404, "ErrorItemNotFound", _NOT_FOUND_IN_STORE)
            cal, ev = found
            # Only a series has instances; a single event (or an occurrence) lists none.
            items = self._calendar_view(acc, cal, window, series=ev.id) if ev.type == "seriesMaster" else []
            top = prefs.page_size or self._top(request)
            offset = self._decode_skiptoken(request.args.get("$skiptoken"))
            body: dict[str, Any] = {
                "@odata.context": f"{GRAPH_METADATA}#Collection(event)",
                "value": [
                    self._select_loose(self._render(i, prefs), request) for i in items[offset : offset + top]
                ],
            }
            if offset + top < len(items):
                body["@odata.nextLink"] = self._next_link(
                    request, "$skiptoken", self._skiptoken(offset + top)
                )
            return self._prefer_response(body, prefs)

    @route("/v1.0/me/calendarView/delta", "GET")
    @route("/v1.0/me/calendarview/delta", "GET")
    def _h_view_delta(self, request: Request, ctx: GraphContext, calendar_id: str | None = None) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            self._require_scope(at, "Calendars")
            cal = self._graph_calendar(acc, calendar_id)
            prefs = self._prefs(request)
            if acc.id in self._resync_required:
                self._resync_required.discard(acc.id)
                raise _GraphError(
                    410,
                    "resyncRequired",
                    "Resync required. Replace any local cached data with the data returned by a full sync.",
                )
            skip, delta = request.args.get("$skiptoken"), request.args.get("$deltatoken")
            if skip is not None or delta is not None:
                # The window (and everything else) comes from the token; new start/end are ignored.
                state = self._sync_state(
                    skip if skip is not None else delta, "skip" if skip else "delta", acc, cal
                )
                if state.kind == "skip":
                    round_, offset = state.round, state.offset
                else:
                    round_, offset = self._incremental_round(acc, cal, state.round), 0
            else:
                window = self._window(request)
                items = self._calendar_view(acc, cal, window)
                snapshot = {item.id: item.version for item in items}
                round_, offset = _DeltaRound(acc.id, cal.id, window, list(items), snapshot), 0
            return self._serve_round(request, prefs, round_, offset)

    @route("/v1.0/me/calendars/<calendar_id>/calendarView/delta", "GET")
    @route("/v1.0/me/calendars/<calendar_id>/calendarview/delta", "GET")
    def _h_calendar_view_delta(self, request: Request, ctx: GraphContext, calendar_id: str) -> Response:
        return self._h_view_delta(request, ctx, calendar_id)

    def _sync_state(self, token: str | None, kind: str, acc: Account, cal: Calendar) -> _SyncToken:
        state = self._sync_state_of(token or "", kind, (acc.id, cal.id), self.delta_token_max_age)
        if state is None:
            raise _GraphError(410, "syncStateNotFound", "The sync state generation is not found.")
        return state

    def _incremental_round(self, acc: Account, cal: Calendar, previous: _DeltaRound) -> _DeltaRound:
        """What changed in the window since `previous` started: created/updated items in their
        current state (each once), then removals (deleted, cancelled, moved out of the window)."""
        items = self._calendar_view(acc, cal, previous.window)
        snapshot = {item.id: item.version for item in items}
        old = previous.snapshot
        entries: list[_ViewItem | dict[str, Any]] = [i for i in items if old.get(i.id) != i.version]
        entries += [_removed_item(item_id) for item_id in old if item_id not in snapshot]
        return _DeltaRound(acc.id, cal.id, previous.window, entries, snapshot)

    def _mint_sync_token(self, state: _SyncToken) -> str:
        token = secrets.token_urlsafe(96)
        self._sync_tokens[token] = state
        while len(self._sync_tokens) > _MAX_SYNC_TOKENS:  # the oldest sync states are forgotten
            del self._sync_tokens[next(iter(self._sync_tokens))]
        return token

    def _serve_round(self, request: Request, prefs: _Prefs, round_: _DeltaRound, offset: int) -> Response:
        size = prefs.page_size or self.delta_page_size
        page = round_.entries[offset : offset + size]
        value = [
            entry
            if isinstance(entry, dict)
            else self._render(entry, prefs, minimal=entry.type != "singleInstance", delta=True)
            for entry in page
        ]
        body: dict[str, Any] = {"@odata.context": _DELTA_CONTEXT}
        base = f"{request.host_url.rstrip('/')}{request.path}"
        if offset + size < len(round_.entries):
            following = offset + size
            token = round_.skip_tokens.get(following)
            if token is None or token not in self._sync_tokens:
                token = self._mint_sync_token(
                    _SyncToken("skip", round_.account_id, round_.calendar_id, self.now(), round_, following)
                )
                round_.skip_tokens[following] = token
            body["@odata.nextLink"] = f"{base}?{urlencode([('$skiptoken', token)], safe='$')}"
        else:
            token = round_.delta_token
            if token is None or token not in self._sync_tokens:
                token = self._mint_sync_token(
                    _SyncToken("delta", round_.account_id, round_.calendar_id, self.now(), round_)
                )
                round_.delta_token = token
        body["value"] = value
        if offset + size >= len(round_.entries):
            body["@odata.deltaLink"] = f"{base}?{urlencode([('$deltatoken', token)], safe='$')}"
        return self._prefer_response(body, prefs)

    def _subscription_json(self, sub: Subscription, with_context: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if with_context:
            body["@odata.context"] = f"{GRAPH_METADATA}#subscriptions/$entity"
        body.update(
            {
                "id": sub.id,
                "resource": sub.resource,
                "applicationId": sub.client_id,
                "changeType": sub.change_type,
                "clientState": sub.client_state,
                "notificationUrl": sub.notification_url,
                "notificationQueryOptions": None,
                "lifecycleNotificationUrl": sub.lifecycle_notification_url,
                "expirationDateTime": _graph_dt(sub.expiration),
                "creatorId": sub.account_id,
                "includeResourceData": None,
                "latestSupportedTlsVersion": sub.latest_tls,
                "encryptionCertificate": None,
                "encryptionCertificateId": None,
                "notificationUrlAppId": None,
                "notificationContentType": None,
            }
        )
        return body

    def _check_expiration(self, raw: object) -> datetime:
        expiration = _parse_datetime(raw)
        if expiration is None:
            raise _GraphError(400, "InvalidRequest", f"Invalid expirationDateTime '{raw}'.")
        now = self.now()
        limit = self.subscription_max_minutes
        if expiration <= now:
            raise _GraphError(400, "InvalidRequest", "Subscription expiration can only be in the future.")
        if expiration > now + timedelta(minutes=limit):
            raise _GraphError(
                400, "InvalidRequest", f"Subscription expiration can only be {limit} minutes in the future."
            )
        return expiration

    @staticmethod
    def _check_notification_url(name: str, url: object) -> str:
        if not isinstance(url, str):
            raise _GraphError(400, "InvalidRequest", f"'{name}' must be a string.")
        parts = urlsplit(url)
        # https only, like Graph; plain http is tolerated for loopback so the local stack can run.
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
        ):
            raise _GraphError(400, "InvalidRequest", f"Invalid {name} '{url}'. The url must use https.")
        return url

    def _subscription_for(self, acc: Account, at: AccessToken, subscription_id: str) -> Subscription:
        sub = self._subscriptions.get(subscription_id)
        if (
            sub is None
            or sub.account_id != acc.id
            or sub.client_id != at.client_id
            or sub.expiration <= self.now()
        ):
            raise _GraphError(404, "ResourceNotFound", "The object was not found.")
        return sub

    @route("/v1.0/subscriptions", "GET", "POST")
    def _h_subscriptions(self, request: Request, ctx: GraphContext) -> Response:
        if request.method == "POST":
            return self._create_subscription(request, ctx)
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            now = self.now()
            value = [
                self._subscription_json(s, with_context=False)
                for s in self._subscriptions.values()
                if s.account_id == acc.id and s.client_id == at.client_id and s.expiration > now
            ]
            return self._graph_json({"@odata.context": f"{GRAPH_METADATA}#subscriptions", "value": value})

    def _create_subscription(self, request: Request, ctx: GraphContext) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            body = self._json_body(request)
            for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
                if not body.get(name):
                    raise _GraphError(400, "InvalidRequest", f"'{name}' is a required property.")
            resource = body["resource"]
            match = _RESOURCE_RE.match(resource) if isinstance(resource, str) else None
            if match is None:
                raise _GraphError(400, "InvalidRequest", f"Unsupported resource '{resource}'.")
            self._require_scope(at, "Calendars")
            calendar_id = match.group("cal") or match.group("calq")
            if calendar_id is not None:
                calendar_id = unquote(calendar_id)
                # Another mailbox's calendar looks exactly like a missing one.
                if calendar_id not in acc.calendars:
                    raise _GraphError(
                        404, "ResourceNotFound", "The specified object was not found in the store."
                    )
            change_types = [c.strip() for c in str(body["changeType"]).split(",")]
            if any(c not in CHANGE_TYPES for c in change_types) or len(set(change_types)) != len(
                change_types
            ):
                raise _GraphError(
                    400,
                    "InvalidRequest",
                    f"Invalid changeType '{body['changeType']}'; use created, updated, deleted.",
                )
            client_state = body.get("clientState")
            if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
                raise _GraphError(
                    400, "InvalidRequest", "clientState must be a string of at most 128 characters."
                )
            expiration = self._check_expiration(body["expirationDateTime"])
            notification_url = self._check_notification_url("notificationUrl", body["notificationUrl"])
            lifecycle_url = body.get("lifecycleNotificationUrl")
            if lifecycle_url is not None:
                lifecycle_url = self._check_notification_url("lifecycleNotificationUrl", lifecycle_url)
            tls = body.get("latestSupportedTlsVersion") or "v1_2"
            if tls not in TLS_VERSIONS:
                raise _GraphError(400, "InvalidRequest", f"Invalid latestSupportedTlsVersion '{tls}'.")
            if body.get("includeResourceData"):
                raise _GraphError(
                    400,
                    "InvalidRequest",
                    "includeResourceData requires an encryptionCertificate (not emulated).",
                )
            client_id = at.client_id

        # The handshake runs without the lock: the endpoint may call back into this emulator.
        for url in filter(None, (notification_url, lifecycle_url)):
            if not self._validate_endpoint(url):
                raise _GraphError(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK "
                    "to validation request.",
                )

        with self._lock:
            sub = Subscription(
                id=str(uuid.uuid4()),
                account_id=acc.id,
                client_id=client_id,
                resource=resource,
                calendar_id=calendar_id,
                change_type=",".join(change_types),
                notification_url=notification_url,
                lifecycle_notification_url=lifecycle_url,
                client_state=client_state,
                expiration=expiration,
                latest_tls=tls,
                created_at=self.now(),
            )
            self._subscriptions[sub.id] = sub
            return self._graph_json(self._subscription_json(sub), 201)

    def _validate_endpoint(self, url: str) -> bool:
        """Graph's handshake: POST ?validationToken=<token>; the endpoint must echo it as text/plain."""
        token = (
            f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        )
        separator = "&" if urlsplit(url).query else "?"
        # quote_plus: spaces arrive as '+', so endpoints must decode the query properly.
        target = f"{url}{separator}validationToken={quote_plus(token)}"
        session = _http.Session()
        # Loopback endpoints must not be sent through an HTTP(S)_PROXY from the environment.
        session.trust_env = not is_loopback_url(url)
        try:
            answer = session.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=self.validation_timeout,
                allow_redirects=False,
            )
        except _http.RequestException as exc:
            log.info("subscription validation of %s failed: %s", url, exc)
            return False
        finally:
            session.close()
        content_type = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return (
            answer.status_code == 200
            and content_type == "text/plain"
            and answer.content.decode("utf-8", "replace") == token
        )

    @route("/v1.0/subscriptions/<subscription_id>", "GET", "PATCH", "DELETE")
    def _h_subscription(self, request: Request, ctx: GraphContext, subscription_id: str) -> Response:
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            sub = self._subscription_for(acc, at, subscription_id)
            if request.method == "GET":
                return self._graph_json(self._subscription_json(sub))
            if request.method == "DELETE":
                del self._subscriptions[sub.id]
                return self._graph_json(None, 204)
            body = self._json_body(request)
            if not body.get("expirationDateTime"):
                raise _GraphError(400, "InvalidRequest", "'expirationDateTime' is a required property.")
            sub.expiration = self._check_expiration(body["expirationDateTime"])
            sub.reauthorization_required_at = None  # renewing also reauthorizes
            return self._graph_json(self._subscription_json(sub))

    @route("/v1.0/subscriptions/<subscription_id>/reauthorize", "POST")
    def _h_subscription_reauthorize(
        self, request: Request, ctx: GraphContext, subscription_id: str
    ) -> Response:
        """POST /subscriptions/{id}/reauthorize: answer a reauthorizationRequired challenge (no renewal)."""
        with self._lock:
            at, acc = self._authenticate(request, ctx)
            sub = self._subscription_for(acc, at, subscription_id)
            sub.reauthorization_required_at = None
            return self._graph_json(None, 204)
