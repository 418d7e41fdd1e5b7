"""The thin layer between API Gateway HTTP API (payload 2.0) events and the services.

Each Lambda serves one route, so no router is needed: `api_handler` parses the event into a `Request`,
lets the endpoint validate what it needs with pydantic, and turns results and errors into JSON answers.
(Powertools' resolver with validation was measured at ~120 ms of extra cold import, which would push a
handler past 1.5x `import boto3`; see bench/cold_start.py.)
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload
from urllib.parse import urlencode

from pydantic import BaseModel, ValidationError

from calbot import deadline as deadlines
from calbot.config import get_settings
from calbot.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    ProviderFailed,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UnsupportedMedia,
    service_unavailable,
    unauthorized,
)
from calbot.log import logger
from calbot.pages import Paged

M = TypeVar("M", bound=BaseModel)
MAX_BODY_BYTES = 256 * 1024
MAX_JSON_DEPTH = 64  # far beyond any body of the contract; deeper input is refused, never recursed into
# On every answer: no browser may sniff a body into something it renders (the validation echo is
# caller-chosen text), and nothing we send is ever a page: no scripts, no framing, no subresources.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
}
JSON_HEADERS = {"content-type": "application/json; charset=utf-8", "cache-control": "no-store"}


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialised unless `text` is given
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None  # a plain-text answer (the Graph validation handshake)


@dataclass
class Request:
    event: dict[str, Any]
    # What the invocation may still spend (the Lambda Timeout and API Gateway's 30 s, less time to
    # answer in); endpoints hand it to their service.
    deadline: deadlines.Deadline = field(default_factory=deadlines.Deadline)

    @property
    def method(self) -> str:
        return self.event.get("requestContext", {}).get("http", {}).get("method", "GET").upper()

    @property
    def headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in (self.event.get("headers") or {}).items()}

    @property
    def query(self) -> dict[str, str]:
        return dict(self.event.get("queryStringParameters") or {})

    @property
    def path(self) -> str:
        return self.event.get("rawPath") or self.event.get("requestContext", {}).get("http", {}).get(
            "path", ""
        )

    @property
    def path_params(self) -> dict[str, str]:
        return dict(self.event.get("pathParameters") or {})

    @property
    def user_id(self) -> str:
        """The caller's user id as resolved by the API-key authorizer; 401 when there is none."""
        context = _authorizer_context(self.event)
        if context.get("unavailable"):
            # The authorizer could not read the key store: the key may well be valid, so never 401.
            raise service_unavailable()
        user_id = context.get("user_id")
        if not user_id:
            raise unauthorized()
        return str(user_id)

    @property
    def raw_body(self) -> bytes:
        body = self.event.get("body")
        if body is None:
            return b""
        if self.event.get("isBase64Encoded"):
            return base64.b64decode(body)
        return body.encode()

    def json(self) -> dict[str, Any]:
        raw = self.raw_body
        if len(raw) > MAX_BODY_BYTES:
            raise TooLarge("payload_too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        if not raw.strip():
            return {}
        ctype = self.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise UnsupportedMedia(
                "unsupported_media_type", "Send the body as JSON with 'Content-Type: application/json'."
            )
        try:
            data = json.loads(raw, parse_constant=_not_json)
        except (ValueError, UnicodeDecodeError):
            raise Invalid("invalid_json", "The request body is not valid JSON.") from None
        except RecursionError:
            raise _too_deep() from None
        if not isinstance(data, dict):
            raise Invalid("invalid_json", "The request body must be a JSON object.")
        if json_depth(data) > MAX_JSON_DEPTH:
            raise _too_deep()
        try:  # JSON's \ud800-style escapes can spell a lone surrogate, which no store or encoder takes
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid(
                "invalid_json", "The request body holds a lone surrogate escape (\\ud800-\\udfff)."
            ) from None
        return data

    def body_as(self, model: type[M]) -> M:
        return model.model_validate(self.json())

    def query_as(self, model: type[M]) -> M:
        return model.model_validate(self.query)

    def path_as(self, model: type[M]) -> M:
        return model.model_validate(self.path_params)

    @property
    def base_url(self) -> str:
        """Public base URL for links we hand out (webhook URLs): configured, or the request's own host."""
        configured = get_settings().public_base_url.rstrip("/")
        if configured:
            return configured
        domain = self.event.get("requestContext", {}).get("domainName") or self.headers.get("host", "")
        proto = self.headers.get("x-forwarded-proto", "https")
        return f"{proto}://{domain}"


def _too_deep() -> Invalid:
    return Invalid("invalid_json", f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.")


def json_depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (a scalar is 0), counted without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _not_json(name: str) -> Any:
    # Python's json module reads NaN and Infinity, which JSON (and DynamoDB) do not have.
    raise ValueError(f"{name} is not JSON")


def validation_details(err: ValidationError) -> list[dict[str, str]]:
    # Never echo the rejected input: it may be a refresh token or a secret.
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in err.errors()
    ]


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body, default=_default)
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {}), **SECURITY_HEADERS},
        "body": text,
    }


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# The one place a domain error becomes a status: each kind of calbot.errors answers with its row.
STATUS: dict[type[DomainError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    UnsupportedMedia: 415,
    RateLimited: 429,
    ProviderFailed: 502,
    Unavailable: 503,
}


def status_of(err: DomainError) -> int:
    """The status of an error's kind (its nearest class in the table); a kind with no row is a bug."""
    for kind in type(err).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    raise LookupError(f"{type(err).__name__} has no status in calbot.http.STATUS")


def error_body(err: DomainError) -> dict[str, Any]:
    return {"error": err.code, "message": err.message, **err.details}


def error_response(err: DomainError) -> dict[str, Any]:
    headers = {"retry-after": str(err.retry_after)} if err.retry_after is not None else None
    return json_response(status_of(err), error_body(err), headers)


def with_links[P: BaseModel](request: Request, result: Paged[P]) -> P:
    """A service's page with its cursors turned into links: this request's own URL (its other query
    parameters as sent) with `cursor` set to the next (or previous) page's."""

    def link(token: str) -> str:
        params = {k: v for k, v in request.query.items() if k != "cursor"}
        params["cursor"] = token
        return f"{request.base_url}{request.path}?{urlencode(params)}"

    links = {"next": result.next_cursor, "previous": result.previous_cursor}
    return result.page.model_copy(update={k: link(v) for k, v in links.items() if v is not None})


# Throttling and outages by name (each service names its own: SQS `RequestThrottled`); any AWS answer
# with a 5xx status is an outage too (SQS `InternalError`, Scheduler `InternalServerException`).
_TRANSIENT_CODES = {
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
}


# An account quota of ours that AWS says is used up (Scheduler's Number of schedules: CreateSchedule's
# ServiceQuotaExceededException, HTTP 402). Not the caller's fault and nothing they can change: the
# contract's 503, logged as an error an operator must act on (raise the quota), never a 500.
_QUOTA_CODES = {"ServiceQuotaExceededException", "LimitExceededException"}


def _aws_quota_exceeded(err: Exception) -> str | None:
    """The AWS error code when `err` is one of our account's quotas running out, else None."""
    from botocore.exceptions import ClientError

    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        return code if code in _QUOTA_CODES else None
    return None


def _transient_aws(err: Exception) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(err, ConnectionError | HTTPClientError):  # timeouts, resets, endpoint unreachable
        return True
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        reasons = [r.get("Code") for r in err.response.get("CancellationReasons", [])]
        return (
            code in _TRANSIENT_CODES
            or status >= 500
            or (code == "TransactionCanceledException" and "TransactionConflict" in reasons)
        )
    return False


def _internal_error() -> dict[str, Any]:
    return json_response(500, {"error": "internal_error", "message": "An unexpected error occurred."})


def _authorizer_context(event: dict[str, Any]) -> dict[str, Any]:
    """What the API-key authorizer resolved (user_id, key_id); empty on open routes."""
    return ((event.get("requestContext") or {}).get("authorizer") or {}).get("lambda") or {}


Endpoint = Callable[[Request], Response | BaseModel | dict[str, Any]]
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


@overload
def api_handler(fn: Endpoint, /) -> LambdaHandler: ...
@overload
def api_handler(*, public: bool = False) -> Callable[[Endpoint], LambdaHandler]: ...
def api_handler(
    fn: Endpoint | None = None, /, *, public: bool = False
) -> LambdaHandler | Callable[[Endpoint], LambdaHandler]:
    """Wrap an endpoint as a Lambda handler: `@api_handler` or `@api_handler(public=True)`.

    Secure by default: unless the route is declared public (and template.yaml serves it with
    `Authorizer: NONE`), a request the API-key authorizer resolved to no user answers 401 before the
    endpoint runs, so an endpoint that never reads `request.user_id` is still not open to everyone.
    The wrapped handler's `public` attribute says which it is (tests list the public routes from it).
    """
    if fn is None:
        return lambda endpoint: _wrap(endpoint, public)
    return _wrap(fn, public)


def _wrap(fn: Endpoint, public: bool) -> LambdaHandler:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        deadline = deadlines.Deadline.from_context(context, cap_seconds=deadlines.API_GATEWAY_LIMIT_SECONDS)
        with deadlines.active(deadline):
            response = _dispatch(Request(event, deadline), event)
        # One access-log line per request: what was asked and how it ended, never headers or bodies.
        logger.info(
            "request",
            extra={
                "route": event.get("routeKey"),
                "status": response["statusCode"],
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                "user_id": _authorizer_context(event).get("user_id") or None,
                "request_id": (event.get("requestContext") or {}).get("requestId"),
            },
        )
        return response

    def _dispatch(request: Request, event: dict[str, Any]) -> dict[str, Any]:
        if not public:
            try:
                request.user_id  # noqa: B018 - 401 (or 503 if the key store was down) when no user
            except DomainError as err:
                return error_response(err)
        # Every route behind the API-key authorizer is limited per key; the public routes (no
        # authorizer, no key) are not.
        key_id = _authorizer_context(event).get("key_id")
        if key_id:
            from calbot import ratelimit  # imports the store: only keyed requests need it

            verdict = ratelimit.check(str(key_id))
            if not verdict.allowed:
                logger.info("rate limited", extra={"key_id": key_id, "limit": verdict.limit})
                return error_response(ratelimit.rate_limited(verdict))
        try:
            result = fn(request)
        except DomainError as err:
            try:
                return error_response(err)
            except LookupError:  # a bare DomainError, or a new kind with no row: a bug, so a 500
                logger.exception("domain error with no status", extra={"route": event.get("routeKey")})
                return _internal_error()
        except ValidationError as err:
            return json_response(
                400,
                {
                    "error": "invalid_request",
                    "message": "The request is not valid.",
                    "details": validation_details(err),
                },
            )
        except Exception as err:
            quota = _aws_quota_exceeded(err)
            if quota:
                logger.error(
                    "aws quota exceeded",
                    extra={
                        "route": event.get("routeKey"),
                        "error": quota,
                        "operation": getattr(err, "operation_name", ""),
                    },
                )
                return error_response(service_unavailable())
            if _transient_aws(err):
                # AWS was slow or throttled us: the contract's 503, and the client may retry.
                logger.warning(
                    "aws unavailable", extra={"route": event.get("routeKey"), "error": type(err).__name__}
                )
                return error_response(service_unavailable())
            # A 500 is always a bug: log it (never the event, which carries headers and bodies).
            logger.exception("unhandled error", extra={"route": event.get("routeKey")})
            return _internal_error()
        if isinstance(result, Response):
            if result.text is not None:
                # Plain text only (the Graph validation echo): with nosniff and the sandboxing CSP, a
                # browser shows it as text whatever it contains.
                return {
                    "statusCode": result.status,
                    "body": result.text,
                    "headers": {
                        **result.headers,
                        "content-type": "text/plain; charset=utf-8",
                        "cache-control": "no-store",
                        **SECURITY_HEADERS,
                    },
                }
            if result.body is None:
                return {
                    "statusCode": result.status,
                    "headers": {**result.headers, **SECURITY_HEADERS},
                    "body": "",
                }
            return json_response(result.status, result.body, result.headers)
        return json_response(200, result)

    # Function attributes mypy cannot see on a Callable; set for introspection (tests, `public` routes).
    handler.__wrapped__ = fn  # type: ignore[attr-defined]
    handler.public = public  # type: ignore[attr-defined]
    return handler
