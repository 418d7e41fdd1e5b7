"""A local API Gateway HTTP API: template.yaml's HttpApi routes and authorizer over in-process handlers.

``Gateway(template)`` is a WSGI app. For each request it does what API Gateway HTTP APIs do for a
Lambda proxy integration with payload format 2.0:

* route selection: literal segments beat ``{param}`` beats ``{param+}`` (greedy, last segment only),
  a declared method beats ``ANY``, ``$default`` catches the rest; no route -> 404 ``Not Found``
  (HTTP APIs answer 404, not 405, when only the method differs);
* Lambda REQUEST authorizer: a missing identity source -> 401 without invoking it; simple responses
  (``isAuthorized``) or IAM policies; deny -> 403; authorizer failure or malformed answer -> 500;
  the returned ``context`` goes to ``requestContext.authorizer.lambda``; results are cached for
  ``ReauthorizeEvery`` seconds per identity when the authorizer has identity sources;
* the 2.0 event (lower-cased, comma-joined headers; ``cookies``; comma-joined query parameters;
  URL-decoded path parameters; base64 bodies for non-text content types);
* response mapping: ``statusCode`` dicts as written, anything else -> 200 JSON; handler failure -> 500;
* Lambda's per-function concurrency (local/concurrency.py): a route's or authorizer's function that
  already runs its limit of invocations (``ReservedConcurrentExecutions``, else the local stand-in for
  the account's pool) is throttled, and API Gateway answers 500 ``Internal Server Error`` without
  retrying, as it does when Lambda refuses the invoke; the clock's invocations (event sources) wait
  for a slot instead;
* invoke permissions, as SAM's transform grants them (``local.grants``): API Gateway invokes the
  authorizer only under a resource policy allowing ``{api}/authorizers/{id}`` (or as its
  ``FunctionInvokeRole``) and a route's function only under one allowing
  ``{api}/{stage}/{METHOD}{path}``; a refused invoke answers 500 ``Internal Server Error``, as
  API Gateway does (its log says "does not have permissions to call the authorizer/integration").

Each invocation (and the handler's cold import) runs as its function's IAM role, read from SAM's
translation of the template: AWS calls the role does not grant get the service's AccessDenied
(local/iam_enforce.py; ``enforce_iam=False`` turns that off).

Handlers are imported once per function under unique module names (every file is app.py) with the
template's layers on sys.path, and called with a Lambda-like context. One process cannot give each
function its own ``os.environ``, so the gateway refuses templates whose functions disagree on a
variable and exposes ``required_environment()`` for the stack to set once.
"""

from __future__ import annotations

import base64
import contextvars
import ctypes
import hashlib
import json
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import parse_qsl, quote, unquote

from werkzeug.wrappers import Request, Response

from local.concurrency import FunctionConcurrency, Throttled
from local.grants import grants
from local.iam_enforce import FunctionPolicies, acting_as
from local.iam_enforce import install as install_iam_enforcement
from local.invoke import (
    Handler,
    InvocationError,
    LambdaContext,
    add_layer_paths,
    import_handler,
    marshal,
    track_virtual_sleeps,
)
from local.template import AuthorizerSpec, Route, Template

JSON = "application/json"


class GatewayConfigError(Exception):
    """The template cannot be served by the local gateway as it stands."""


# --------------------------------------------------------------------------------------------------
# Route matching


_LITERAL, _PARAM, _GREEDY = 0, 1, 2


@dataclass(frozen=True)
class _CompiledRoute:
    route: Route
    segments: tuple[tuple[int, str], ...]  # (kind, literal text or parameter name)

    @property
    def specificity(self) -> tuple[Any, ...]:
        # Lower sorts first: literal segments first, then params, greedy last; more segments first;
        # a concrete method before ANY.
        return (
            tuple(kind for kind, _ in self.segments),
            -len(self.segments),
            self.route.method == "ANY",
        )


def _compile(route: Route) -> _CompiledRoute:
    if route.path == "$default":
        return _CompiledRoute(route, ())
    if not route.path.startswith("/"):
        raise GatewayConfigError(f"{route.function}: route path {route.path!r} must start with /")
    segments: list[tuple[int, str]] = []
    parts = route.path[1:].split("/")
    for index, part in enumerate(parts):
        greedy = re.fullmatch(r"\{([A-Za-z0-9_.-]+)\+\}", part)
        param = re.fullmatch(r"\{([A-Za-z0-9_.-]+)\}", part)
        if greedy:
            if index != len(parts) - 1:
                raise GatewayConfigError(f"{route.route_key}: a greedy {{param+}} must be the last segment")
            segments.append((_GREEDY, greedy.group(1)))
        elif param:
            segments.append((_PARAM, param.group(1)))
        else:
            segments.append((_LITERAL, part))
    return _CompiledRoute(route, tuple(segments))


def _match_path(compiled: _CompiledRoute, raw_segments: list[str]) -> dict[str, str] | None:
    """Path parameters (URL-decoded, as API Gateway passes them) if the raw path fits the route."""
    params: dict[str, str] = {}
    for index, (kind, text) in enumerate(compiled.segments):
        if kind == _GREEDY:
            rest = raw_segments[index:]
            if not rest or rest == [""]:
                return None
            params[text] = unquote("/".join(rest))
            return params
        if index >= len(raw_segments):
            return None
        value = unquote(raw_segments[index])
        if kind == _LITERAL:
            if value != text:
                return None
        else:
            if value == "":
                return None
            params[text] = value
    return params if len(raw_segments) == len(compiled.segments) else None


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    path_parameters: dict[str, str]


# --------------------------------------------------------------------------------------------------
# Event builders (also used by local.gen_events so sample events and live events cannot diverge)


_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|.*\+json|xml|.*\+xml|javascript|ecmascript|x-javascript|graphql))$"
)


def is_text_content_type(content_type: str | None) -> bool:
    """Whether API Gateway passes a body of this type as text (otherwise base64)."""
    if not content_type:
        return False
    return bool(_TEXT_TYPES.match(content_type.split(";", 1)[0].strip().lower()))


def encode_body(body: bytes, content_type: str | None) -> tuple[str | None, bool]:
    """(body field, isBase64Encoded) for a request body; no body -> (None, False)."""
    if not body:
        return None, False
    if is_text_content_type(content_type):
        try:
            return body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), True


def fold_headers(headers: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Lower-cased headers with repeats comma-joined, and the cookies taken out of ``cookie``."""
    folded: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        folded[key] = f"{folded[key]},{value}" if key in folded else value
    return folded, cookies


def query_parameters(raw_query: str) -> dict[str, str]:
    """Decoded query parameters, repeated names comma-joined (payload 2.0)."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    return params


def request_time(now: datetime) -> tuple[str, int]:
    """requestContext.time ("12/Mar/2020:19:03:58 +0000") and timeEpoch (ms)."""
    return now.strftime("%d/%b/%Y:%H:%M:%S +0000"), int(now.timestamp() * 1000)


@dataclass(frozen=True)
class HttpRequest:
    """The parts of an HTTP request an API Gateway event is built from."""

    method: str
    raw_path: str  # as sent, still percent-encoded
    raw_query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    source_ip: str = "127.0.0.1"
    protocol: str = "HTTP/1.1"


def build_request_context(
    request: HttpRequest,
    *,
    route_key: str,
    api_id: str,
    account_id: str,
    stage: str,
    request_id: str,
    now: datetime,
) -> dict[str, Any]:
    headers, _ = fold_headers(request.headers)
    domain = headers.get("host", "")
    time_text, epoch = request_time(now)
    return {
        "accountId": account_id,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": domain.split(".", 1)[0],
        "http": {
            "method": request.method,
            "path": request.raw_path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": stage,
        "time": time_text,
        "timeEpoch": epoch,
    }


def build_http_event(
    request: HttpRequest,
    *,
    route: Route,
    path_parameters: Mapping[str, str] | None,
    api_id: str,
    account_id: str,
    request_id: str,
    now: datetime,
    authorizer_context: Any = None,
    authorized: bool = False,
    stage: str = "$default",
) -> dict[str, Any]:
    """The payload-2.0 event API Gateway sends the route's integration."""
    headers, cookies = fold_headers(request.headers)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    query = query_parameters(request.raw_query)
    if query:
        event["queryStringParameters"] = query
    context = build_request_context(
        request,
        route_key=route.route_key,
        api_id=api_id,
        account_id=account_id,
        stage=stage,
        request_id=request_id,
        now=now,
    )
    if authorized:
        # Only routes with an authorizer carry requestContext.authorizer at all.
        context["authorizer"] = {"lambda": authorizer_context}
    event["requestContext"] = context
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    body, is_b64 = encode_body(request.body, headers.get("content-type"))
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = is_b64
    return event


def route_arn(*, region: str, account_id: str, api_id: str, stage: str, method: str, raw_path: str) -> str:
    return f"arn:aws:execute-api:{region}:{account_id}:{api_id}/{stage}/{method}{raw_path}"


def authorizer_arn(*, region: str, account_id: str, api_id: str, authorizer_id: str) -> str:
    """The SourceArn API Gateway invokes a Lambda authorizer from."""
    return f"arn:aws:execute-api:{region}:{account_id}:{api_id}/authorizers/{authorizer_id}"


def identity_values(spec: AuthorizerSpec, request: HttpRequest) -> list[str] | None:
    """The values of the authorizer's identity sources, or None when one is missing (-> 401)."""
    headers, _ = fold_headers(request.headers)
    query = query_parameters(request.raw_query)
    values: list[str] = []
    for name in spec.identity_headers:
        value = headers.get(name.lower())
        if not value:
            return None
        values.append(value)
    for name in spec.identity_query_strings:
        value = query.get(name)
        if not value:
            return None
        values.append(value)
    return values


def build_authorizer_event(
    request: HttpRequest,
    *,
    spec: AuthorizerSpec,
    route: Route,
    path_parameters: Mapping[str, str] | None,
    api_id: str,
    account_id: str,
    region: str,
    request_id: str,
    now: datetime,
    stage: str = "$default",
) -> dict[str, Any]:
    """The event API Gateway sends a Lambda REQUEST authorizer (payload 2.0, or 1.0 if configured)."""
    headers, cookies = fold_headers(request.headers)
    query = query_parameters(request.raw_query)
    arn = route_arn(
        region=region,
        account_id=account_id,
        api_id=api_id,
        stage=stage,
        method=request.method,
        raw_path=request.raw_path,
    )
    context = build_request_context(
        request,
        route_key=route.route_key,
        api_id=api_id,
        account_id=account_id,
        stage=stage,
        request_id=request_id,
        now=now,
    )
    identity = identity_values(spec, request) or []
    if spec.payload_format_version == "1.0":
        return {
            "version": "1.0",
            "type": "REQUEST",
            "methodArn": arn,
            "identitySource": ",".join(identity),
            "authorizationToken": ",".join(identity),
            "resource": route.path,
            "path": request.raw_path,
            "httpMethod": request.method,
            "headers": headers,
            "queryStringParameters": query,
            "requestContext": context,
            "pathParameters": dict(path_parameters or {}),
            "stageVariables": {},
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": arn,
        "identitySource": identity,
        "routeKey": route.route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = context
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    return event


# --------------------------------------------------------------------------------------------------
# Responses


def _json_response(status: int, payload: Any, request_id: str) -> Response:
    return Response(
        json.dumps(payload),
        status=status,
        headers=[("Content-Type", JSON), ("apigw-requestid", request_id)],
    )


def _message(status: int, message: str, request_id: str) -> Response:
    return _json_response(status, {"message": message}, request_id)


class MalformedResponse(ValueError):
    """A handler's statusCode-style answer API Gateway could not map (it answers 500)."""


def convert_response(result: Any, request_id: str) -> Response:
    """Map a handler's (marshalled) return value to HTTP as API Gateway does for payload 2.0."""
    if not isinstance(result, dict) or "statusCode" not in result:
        # No statusCode: API Gateway assumes 200, application/json, and the value itself as body.
        return Response(
            json.dumps(result), status=200, headers=[("Content-Type", JSON), ("apigw-requestid", request_id)]
        )
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise MalformedResponse(f"statusCode must be an HTTP status integer, got {status!r}")
    body = result.get("body", "")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise MalformedResponse(f"body must be a string, got {type(body).__name__}")
    data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
    headers: list[tuple[str, str]] = []
    for name, value in (result.get("headers") or {}).items():
        headers.append((str(name), _header_value(value)))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((str(name), _header_value(v)) for v in values)
    headers.extend(("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or [])
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", JSON))
    headers.append(("apigw-requestid", request_id))
    response = Response(data, status=status)
    response.headers.clear()
    for name, value in headers:
        response.headers.add(name, value)
    return response


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------------------------------
# Time limits


API_INTEGRATION_TIMEOUT = 30.0  # seconds: an HTTP API answers 503 when its integration takes longer
_POLL_SECONDS = 0.05  # how often a waiting caller looks at the (possibly virtual) clock


class IntegrationTimeout(Exception):
    """API Gateway stopped waiting for the integration (HTTP APIs answer 503 Service Unavailable)."""


class _Killed(BaseException):
    """Raised into a handler's thread at its Timeout (BaseException: `except Exception` can't eat it)."""


def _wait(done: threading.Event, clock: Callable[[], float], until: float) -> None:
    """Wait for ``done`` until the clock reads ``until``. The clock may be virtual and jump (a virtual
    sleep, an advance), so it is looked at every few milliseconds rather than waited on once."""
    while not done.is_set():
        left = until - clock()
        if left <= 0:
            return
        done.wait(min(_POLL_SECONDS, left))


def overrun_failure(records: list[dict[str, Any]]) -> str | None:
    """What a test session must fail with when the stack recorded overruns (None when there are none):
    a route or function that ran past a limit here would be cut off on AWS."""
    if not records:
        return None
    lines = [
        f"  {r.get('function')}: {r.get('kind')} after {r.get('elapsed_s')} s (limit {r.get('limit_s')} s)"
        for r in records
    ]
    return f"{len(records)} invocation(s) overran their time limit on the local stack:\n" + "\n".join(lines)


def _kill(worker: threading.Thread) -> None:
    """Lambda kills the sandbox; in-process, the nearest is an exception raised into the handler's
    thread, which stops it at its next Python instruction (a blocking call finishes first)."""
    if worker.ident is not None and worker.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(_Killed))


# --------------------------------------------------------------------------------------------------
# The gateway


class Gateway:
    """WSGI app serving ``template``'s HttpApi routes through the functions' handlers in-process."""

    def __init__(
        self,
        template: Template,
        *,
        log: TextIO | None = None,
        enforce_iam: bool = True,
        concurrency: int | None = None,
        account_concurrency: int | None = None,
    ) -> None:
        self.template = template
        self._log = log
        # At most so many invocations of a function at once (its reserved concurrency, else
        # `concurrency`, else LOCAL_LAMBDA_CONCURRENCY): see local/concurrency.py.
        self.concurrency = FunctionConcurrency(template, concurrency, account_limit=account_concurrency)
        # Each invocation runs as its function's role: AWS calls it is not granted get AccessDenied.
        self.iam: FunctionPolicies | None = None
        if enforce_iam:
            self.iam = FunctionPolicies(template)
            install_iam_enforcement()
        self._compiled = sorted((_compile(r) for r in template.routes), key=lambda c: c.specificity)
        self._default = [c for c in self._compiled if c.route.path == "$default"]
        self._handlers: dict[str, Handler] = {}
        self._handler_lock = threading.Lock()
        self._auth_cache: dict[tuple[str, tuple[str, ...]], tuple[float, bool, Any]] = {}
        self._advanced: Callable[[], float] = lambda: 0.0  # the stack's clock replaces it
        self._overruns: list[dict[str, Any]] = []
        self._overrun_lock = threading.Lock()
        # function logical id -> [invocations, their virtual sleeps summed, the longest one's]
        self._sleeps: dict[str, list[float]] = {}
        self._environment = self._merged_environment()
        self._grants = grants(template)
        for route in template.routes:
            if route.payload_format_version != "2.0":
                raise GatewayConfigError(f"{route.route_key}: only PayloadFormatVersion 2.0 is emulated")
            if route.authorizer is not None:
                spec = template.authorizers[route.authorizer]
                if spec.kind != "REQUEST" or spec.function is None:
                    raise GatewayConfigError(f"{route.route_key}: {spec.kind} authorizers are not emulated")
        # Every function, not only the routed ones: the clock invokes the others through this gateway.
        for fn in template.functions.values():
            if not fn.module_path.is_file():
                raise GatewayConfigError(f"{fn.logical_id}: handler file {fn.module_path} does not exist")
            # Like the Lambda layer's /opt/python: on the path before any handler imports calbot.
            add_layer_paths(fn)

    # -- configuration -----------------------------------------------------------------------------

    def _merged_environment(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        conflicts: list[str] = []
        for fn in self.template.functions.values():
            for key, value in fn.environment.items():
                if key in merged and merged[key] != value:
                    conflicts.append(f"{key}: {owner[key]}={merged[key]!r} vs {fn.logical_id}={value!r}")
                    continue
                merged.setdefault(key, value)
                owner.setdefault(key, fn.logical_id)
        if conflicts:
            raise GatewayConfigError(
                "functions define the same environment variable with different values, which one "
                "in-process stack cannot give them (use distinct names): " + "; ".join(conflicts)
            )
        return merged

    def required_environment(self) -> dict[str, str]:
        """The union of every function's resolved environment, to be set in os.environ once."""
        return dict(self._environment)

    # -- routing -----------------------------------------------------------------------------------

    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """The route API Gateway would pick for ``method`` and the (still percent-encoded) path."""
        method = method.upper()
        raw_segments = raw_path[1:].split("/") if raw_path.startswith("/") else [raw_path]
        for compiled in self._compiled:
            route = compiled.route
            if route.path == "$default" or route.method not in (method, "ANY"):
                continue
            params = _match_path(compiled, raw_segments)
            if params is not None:
                return RouteMatch(route, params)
        if self._default:
            return RouteMatch(self._default[0].route, {})
        return None

    def function_for_route(self, method: str, path: str) -> str | None:
        """Logical id of the function serving ``method path`` (a concrete request path), if any."""
        found = self.match(method, path)
        return found.route.function if found else None

    # -- invoking ----------------------------------------------------------------------------------

    def handler(self, logical_id: str) -> Handler:
        """The function's handler, imported once and cached."""
        handler = self._handlers.get(logical_id)
        if handler is None:
            with self._handler_lock:
                handler = self._handlers.get(logical_id)
                if handler is None:
                    handler = import_handler(self.template.function(logical_id))
                    self._handlers[logical_id] = handler
        return handler

    def use_clock(self, clock: Any) -> None:
        """Count the stack clock's advances (``clock.advanced_seconds()``: its jumps other than virtual
        sleeps) in every invocation's time; virtual sleeps count for the invocation that made them."""
        self._advanced = clock.advanced_seconds

    def _invocation_clock(self) -> tuple[Callable[[], float], list[float]]:
        """An invocation's own clock (seconds since it started): real time, its own virtual sleeps
        (counted in the returned list) and the stack clock's advances meanwhile."""
        slept = [0.0]
        real_start = time.monotonic()
        advanced = self._advanced
        advanced_start = advanced()

        def clock() -> float:
            return (time.monotonic() - real_start) + slept[0] + (advanced() - advanced_start)

        return clock, slept

    def virtual_sleeps(self) -> dict[str, dict[str, float]]:
        """Per function: invocations run, virtual seconds slept in all, and by the one that slept most."""
        with self._overrun_lock:
            return {
                fn: {"invocations": n, "slept_s": total, "max_slept_s": most}
                for fn, (n, total, most) in self._sleeps.items()
            }

    def reset_virtual_sleeps(self) -> None:
        with self._overrun_lock:
            self._sleeps.clear()

    def _count_sleep(self, logical_id: str, slept: float) -> None:
        with self._overrun_lock:
            entry = self._sleeps.setdefault(logical_id, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += slept
            entry[2] = max(entry[2], slept)

    def overruns(self) -> list[dict[str, Any]]:
        """Every invocation that ran past its function's Timeout or past the 30 s integration limit."""
        with self._overrun_lock:
            return [dict(o) for o in self._overruns]

    def invoke_function(
        self,
        logical_id: str,
        event: Any,
        *,
        request_id: str | None = None,
        integration_timeout: float | None = None,
        wait_for_slot: bool = True,
    ) -> Any:
        """Call a function's handler like Lambda would and return its JSON-marshalled result.

        Concurrency: the invocation holds one of the function's slots (``self.concurrency``) until its
        handler has finished, even after a caller stopped waiting. With none free, a synchronous
        invoke (``wait_for_slot=False``: API Gateway) raises ``Throttled`` (Lambda's 429
        TooManyRequestsException); an event source's (the default) waits for one.

        Exceptions from the handler propagate (the caller decides: 500, retry, DLQ...); a result
        Lambda could not serialise raises ``InvocationError`` (Runtime.MarshalError).

        Time limits are real, on the gateway's clock (virtual in tests, so a virtual sleep counts):
        the handler runs in its own thread, and once the function's ``Timeout`` has passed it is
        treated as killed: an exception is raised into its thread at the next Python instruction, its
        result is discarded even when it returns, and ``InvocationError`` (``Sandbox.Timedout``) is
        raised, as Lambda reports it. With ``integration_timeout`` (API Gateway's 30 s) the caller
        stops waiting then with ``IntegrationTimeout`` while the function runs on to its own
        Timeout, as on AWS. Either is recorded in ``overruns()`` and logged.
        """
        spec = self.template.function(logical_id)
        principal = self.iam.principal(logical_id) if self.iam is not None else None
        self.concurrency.acquire(logical_id, wait=wait_for_slot)
        try:
            with acting_as(principal):  # the cold import's calls are the function's too
                handler = self.handler(logical_id)
                # The handler's thread runs in this context: it acts as the function's role.
                run_context = contextvars.copy_context()
        except BaseException:
            self.concurrency.release(logical_id)
            raise
        clock, slept = self._invocation_clock()
        started = clock()
        context = LambdaContext(spec, request_id, started=started, clock=clock)
        killed_at = context.deadline
        give_up_at = min(killed_at, started + integration_timeout) if integration_timeout else killed_at
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                run_context.run(track_virtual_sleeps, slept)
                box["result"] = run_context.run(handler, event, context)
            except BaseException as exc:  # handed to the waiting caller, as Lambda reports it
                box["error"] = exc
            finally:
                box["finished"] = clock()
                self._count_sleep(logical_id, slept[0])
                self.concurrency.release(logical_id)  # before done: a caller's next invoke finds it free
                done.set()

        worker = threading.Thread(target=run, name=f"lambda-{logical_id}", daemon=True)
        try:
            worker.start()
        except BaseException:
            self.concurrency.release(logical_id)
            raise
        _wait(done, clock, give_up_at)
        finished = box.get("finished")
        if finished is not None and finished <= killed_at:
            if integration_timeout and finished > started + integration_timeout:
                self._overran(logical_id, "integration_timeout", integration_timeout, finished - started)
                raise IntegrationTimeout(logical_id)
            if "error" in box:
                raise box["error"]
            return json.loads(marshal(box.get("result")))
        if finished is None and clock() < killed_at:
            # API Gateway gave up at 30 s; the function runs on until its own Timeout kills it.
            self._overran(logical_id, "integration_timeout", integration_timeout or 0.0, clock() - started)
            threading.Thread(
                target=self._kill_at, args=(worker, done, clock, killed_at, logical_id, started), daemon=True
            ).start()
            raise IntegrationTimeout(logical_id)
        if finished is None:
            _kill(worker)
        self._overran(logical_id, "timeout", float(spec.timeout), (finished or clock()) - started)
        raise InvocationError(
            {
                "errorMessage": f"RequestId: {context.aws_request_id} Error: "
                f"Task timed out after {spec.timeout:.2f} seconds",
                "errorType": "Sandbox.Timedout",
            }
        )

    def _kill_at(
        self,
        worker: threading.Thread,
        done: threading.Event,
        clock: Callable[[], float],
        killed_at: float,
        logical_id: str,
        started: float,
    ) -> None:
        """After the caller stopped waiting: kill the function if it is still running at its Timeout."""
        _wait(done, clock, killed_at)
        if not done.is_set():
            _kill(worker)
            self._overran(logical_id, "timeout", killed_at - started, clock() - started)

    def _overran(self, logical_id: str, kind: str, limit: float, elapsed: float) -> None:
        record = {"function": logical_id, "kind": kind, "limit_s": limit, "elapsed_s": round(elapsed, 3)}
        with self._overrun_lock:
            self._overruns.append(record)
        what = "API Gateway's integration timeout" if kind == "integration_timeout" else "its Timeout"
        self._write(f"[gateway] OVERRUN {logical_id} ran {elapsed:.1f}s, past {what} of {limit:g}s\n")

    # -- WSGI --------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, req: Request) -> Response:
        request_id = str(uuid.uuid4())
        request = self._http_request(req)
        found = self.match(request.method, request.raw_path)
        if found is None:
            return _message(404, "Not Found", request_id)
        route = found.route
        now = datetime.now(UTC)
        api_id = str(self.template.ref(route.api))
        authorizer_context: Any = None
        if route.authorizer is not None:
            outcome = self._authorize(request, found, api_id, request_id, now)
            if isinstance(outcome, Response):
                return outcome
            authorizer_context = outcome
        event = build_http_event(
            request,
            route=route,
            path_parameters=found.path_parameters,
            api_id=api_id,
            account_id=self.template.account_id,
            request_id=request_id,
            now=now,
            authorizer_context=authorizer_context,
            authorized=route.authorizer is not None,
        )
        source = route_arn(
            region=self.template.region,
            account_id=self.template.account_id,
            api_id=api_id,
            stage="$default",
            method=request.method,
            raw_path=request.raw_path,
        )
        if route.path == "$default":  # the $default route's SourceArn is {api}/{stage}/$default
            source = source.split("/", 1)[0] + "/$default/$default"
        refusal = self._grants.api_route_refusal(route.function, source)
        if refusal is not None:
            self._write(
                f"[gateway] {route.route_key}: API Gateway does not have permissions to call the "
                f"integration {route.function}: {refusal}\n"
            )
            return _message(500, "Internal Server Error", request_id)
        try:
            result = self.invoke_function(
                route.function,
                event,
                request_id=request_id,
                integration_timeout=API_INTEGRATION_TIMEOUT,
                wait_for_slot=False,  # API Gateway invokes synchronously: Lambda throttles, no queue
            )
            return convert_response(result, request_id)
        except IntegrationTimeout:
            return _message(503, "Service Unavailable", request_id)
        except Throttled as exc:
            self._throttled(exc)
            return _message(500, "Internal Server Error", request_id)
        except Exception as exc:
            self._report(route.function, exc)
            return _message(500, "Internal Server Error", request_id)

    def _authorize(
        self, request: HttpRequest, found: RouteMatch, api_id: str, request_id: str, now: datetime
    ) -> Response | Any:
        """The authorizer's context when allowed, else the Response API Gateway would send."""
        assert found.route.authorizer is not None
        spec = self.template.authorizers[found.route.authorizer]
        identity = identity_values(spec, request)
        if identity is None:
            return _message(401, "Unauthorized", request_id)
        cache_key = (spec.name, tuple(identity))
        cacheable = spec.ttl > 0 and bool(identity)
        cached = self._auth_cache.get(cache_key) if cacheable else None
        if cached and cached[0] > time.monotonic():
            _, allowed, context = cached
        else:
            event = build_authorizer_event(
                request,
                spec=spec,
                route=found.route,
                path_parameters=found.path_parameters,
                api_id=api_id,
                account_id=self.template.account_id,
                region=self.template.region,
                request_id=request_id,
                now=now,
            )
            assert spec.function is not None
            source = authorizer_arn(
                region=self.template.region,
                account_id=self.template.account_id,
                api_id=api_id,
                authorizer_id=self._authorizer_id(spec),
            )
            refusal = self._grants.api_authorizer_refusal(spec.function, source, spec.invoke_role)
            if refusal is not None:
                self._write(
                    f"[gateway] authorizer {spec.name}: API Gateway does not have permissions to call "
                    f"the authorizer {spec.function}: {refusal}\n"
                )
                return _message(500, "Internal Server Error", request_id)
            try:
                answer = self.invoke_function(spec.function, event, wait_for_slot=False)
                allowed, context = self._read_authorizer_answer(spec, answer, event)
            except Throttled as exc:
                self._throttled(exc)
                return _message(500, "Internal Server Error", request_id)
            except Exception as exc:
                self._report(spec.function, exc)
                return _message(500, "Internal Server Error", request_id)
            if cacheable:
                self._auth_cache[cache_key] = (time.monotonic() + spec.ttl, allowed, context)
        if not allowed:
            return _message(403, "Forbidden", request_id)
        return context

    def _authorizer_id(self, spec: AuthorizerSpec) -> str:
        # API Gateway's authorizer ids are short random strings; hash so every process agrees.
        seed = f"{self.template.stack_name}/{spec.api}/{spec.name}"
        return hashlib.sha256(seed.encode()).hexdigest()[:6]

    @staticmethod
    def _read_authorizer_answer(
        spec: AuthorizerSpec, answer: Any, event: Mapping[str, Any]
    ) -> tuple[bool, Any]:
        if not isinstance(answer, dict):
            raise MalformedResponse(f"authorizer returned {type(answer).__name__}, not an object")
        if spec.simple_responses and spec.payload_format_version == "2.0":
            if not isinstance(answer.get("isAuthorized"), bool):
                raise MalformedResponse("a simple-response authorizer must return a boolean isAuthorized")
            return answer["isAuthorized"], answer.get("context")
        statements = (answer.get("policyDocument") or {}).get("Statement")
        if not isinstance(statements, list):
            raise MalformedResponse("authorizer returned no policyDocument.Statement list")
        arn = str(event.get("routeArn") or event.get("methodArn"))
        effects = [
            str(s.get("Effect"))
            for s in statements
            if _action_matches(s.get("Action")) and _resource_matches(s.get("Resource"), arn)
        ]
        return ("Allow" in effects and "Deny" not in effects), answer.get("context")

    # -- plumbing ----------------------------------------------------------------------------------

    @staticmethod
    def _http_request(req: Request) -> HttpRequest:
        environ = req.environ
        raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if raw_uri:
            # WSGI servers hand the URI over latin-1 encoded; undo that to get the bytes sent.
            raw_uri = raw_uri.encode("latin-1").decode("utf-8", "replace")
            raw_path = raw_uri.split("?", 1)[0]
            if "://" in raw_path:  # absolute-form request target
                raw_path = "/" + raw_path.split("://", 1)[1].partition("/")[2]
        else:
            raw_path = quote(req.path, safe="/:@!$&'()*+,;=-._~")
        headers = list(req.headers.items())
        header_names = {name.lower() for name, _ in headers}
        # Headers API Gateway adds in front of the integration.
        added = {
            "x-amzn-trace-id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
            "x-forwarded-for": req.remote_addr or "127.0.0.1",
            "x-forwarded-port": str(environ.get("SERVER_PORT", "")),
            "x-forwarded-proto": req.scheme,
        }
        headers.extend((k, v) for k, v in added.items() if k not in header_names)
        return HttpRequest(
            method=req.method.upper(),
            raw_path=raw_path or "/",
            raw_query=environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8", "replace"),
            headers=tuple(headers),
            body=req.get_data(),
            source_ip=req.remote_addr or "127.0.0.1",
            protocol=environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        )

    def _write(self, text: str) -> None:
        stream = self._log or sys.stderr
        stream.write(text)
        stream.flush()

    def _throttled(self, exc: Throttled) -> None:
        """Say so on the first throttle of a function and every 100th after (a burst is thousands)."""
        count = self.concurrency.throttles(exc.logical_id)
        if count == 1 or count % 100 == 0:
            self._write(
                f"[gateway] {exc.logical_id} throttled ({count} so far): it already runs {exc.limit} "
                "invocation(s) at once; API Gateway answers 500\n"
            )

    def _report(self, logical_id: str, exc: BaseException) -> None:
        if isinstance(exc, InvocationError):
            detail = json.dumps(exc.payload)
        else:
            detail = "".join(traceback.format_exception(exc))
        self._write(f"[gateway] {logical_id} failed:\n{detail}\n")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _wildcard(pattern: str, text: str) -> bool:
    regex = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
    return re.match(regex.replace(r"\?", "."), text) is not None


def _action_matches(action: Any) -> bool:
    return any(_wildcard(a, "execute-api:Invoke") for a in _as_list(action))


def _resource_matches(resource: Any, arn: str) -> bool:
    return any(_wildcard(r, arn) for r in _as_list(resource))
