"""The WSGI side every emulator shares: one app serving the provider's wire protocol and /_control,
the per-request pipeline (who is calling, fault rules, routing, error answers, the request log) and
small request helpers. The wire handlers themselves (`_h_<endpoint>`) are the emulator's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response

from local.emulators.core.control import ControlRoutes
from local.emulators.core.faults import FaultRule
from local.emulators.core.requestlog import RequestContext
from local.emulators.core.routing import rules

log = logging.getLogger(__name__)


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def redirect(location: str) -> Response:
    response = Response(status=302)
    response.headers["Location"] = location
    return response


class Emulator(ControlRoutes):
    """Base of an emulator: state under one re-entrant lock (the app is served by a threaded server),
    the clock, the request log, fault rules, notification delivery and the control API."""

    _service_map: Map
    _refresh_tokens: dict[str, Any]
    _auth_codes: dict[str, Any]

    def _init_emulator(self, knobs: dict[str, Any]) -> None:
        """Call first in __init__ (reset() last): the lock, delivery defaults and the route maps."""
        self._lock = threading.RLock()
        self._init_delivery(knobs)
        self._service_map = Map(rules(type(self), "_h_"), strict_slashes=False, merge_slashes=False)
        self._control_map = self._build_control_map()

    def _reset_state(self) -> None:
        """Forget the emulator's own records (lock held; reset() calls it)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget everything: apps, accounts, tokens, the emulator's own records (subscriptions,
        channels, sync states), faults, the logs and the clock offset. Deliveries still running from
        before are abandoned (a new generation)."""
        with self._lock:
            self._apps = {}
            self._accounts = {}
            self._refresh_tokens = {}
            self._access_tokens = {}
            self._auth_codes = {}
            self._reset_state()
            self._reset_faults()
            self._reset_log()
            self._reset_clock()
            self._reset_delivery()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.wsgi_app(environ, start_response)

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if request.path == "/_control" or request.path.startswith("/_control/"):
            response = self._dispatch_control(request)
        else:
            response = self._dispatch_service(request)
        return response(environ, start_response)

    # -- what the emulator provides ------------------------------------------------------------------

    def _new_context(self, request: Request) -> RequestContext:
        return RequestContext()

    def _is_token_request(self, request: Request) -> bool:
        raise NotImplementedError

    def _is_authorize_request(self, request: Request) -> bool:
        raise NotImplementedError

    def _login_hint(self, request: Request) -> str | None:
        return request.values.get("login_hint")

    def _service_path(self, request: Request) -> str | None:
        """The path routed (None: as sent)."""
        return None

    def _routing_error(self, exc: HTTPException, request: Request) -> Exception:
        """The emulator's error for a request no route serves (or one with the wrong method)."""
        raise NotImplementedError

    def _fault_response(self, rule: Any, request: Request, ctx: Any) -> Response:
        raise NotImplementedError

    def _error_response(self, exc: Exception, ctx: Any) -> Response | None:
        """The answer to an error a handler raised; None: not one of the emulator's (a bug)."""
        raise NotImplementedError

    def _internal_error(self, ctx: Any) -> Response:
        raise NotImplementedError

    def _finish_response(self, response: Response, request: Request, ctx: Any) -> None:
        """Headers every answer carries."""

    # -- the pipeline --------------------------------------------------------------------------------

    def _dispatch_service(self, request: Request) -> Response:
        ctx = self._new_context(request)
        with self._lock:
            self._resolve_caller(request, ctx)
            rule: FaultRule | None = self._take_fault(request, ctx)
        try:
            response: Response | None = None
            if rule is not None:
                if rule.delay:
                    time.sleep(rule.delay)  # outside the lock: other requests keep flowing
                if rule.answers:
                    response = self._fault_response(rule, request, ctx)
            if response is None:
                response = self._route(request, ctx)
        except Exception as exc:
            response = self._error_response(exc, ctx)
            if response is None:  # a bug in the emulator: answer like the provider, keep the trace
                log.exception("%s emulator failed on %s %s", self.name, request.method, request.path)
                response = self._internal_error(ctx)
        self._finish_response(response, request, ctx)
        self._append_log(request, ctx, response.status_code)
        return response

    def _route(self, request: Request, ctx: RequestContext) -> Response:
        adapter = self._service_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match(self._service_path(request))
        except HTTPException as exc:
            raise self._routing_error(exc, request) from None
        handler: Callable[..., Response] = getattr(self, f"_h_{endpoint}")
        return handler(request, ctx, **args)

    def _resolve_caller(self, request: Request, ctx: RequestContext) -> None:
        """Which account/app a request is about (for fault matching and the log), valid or not."""
        if self._is_token_request(request) and request.method == "POST":
            rt = self._refresh_tokens.get(request.form.get("refresh_token", ""))
            code = self._auth_codes.get(request.form.get("code", ""))
            ctx.client_id = request.form.get("client_id") or None
            if rt is not None:
                ctx.account_id = rt.account_id
            elif code is not None:
                ctx.account_id = code.account_id
        elif self._is_authorize_request(request):
            hint = self._login_hint(request)
            found = self._find_account(hint) if hint else None
            ctx.client_id = request.values.get("client_id") or None
            ctx.account_id = found.id if found else None
        else:
            at = self._access_tokens.get(bearer_token(request) or "")
            if at is not None:
                ctx.account_id, ctx.client_id = at.account_id, at.client_id
