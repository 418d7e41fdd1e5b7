"""HttpApi Lambda REQUEST authorizer (payload 2.0, simple responses).

Resolves `Authorization: Token <key>` (or `Bearer <key>`) to a user id and the key's non-secret
key_id (what the per-key rate limiter counts under). It never denies: HTTP APIs cannot shape the
authorizer's own 401/403 bodies, so each handler answers the contract's 401 {"error": "unauthorized"}
itself when `user_id` is empty.

When the key store cannot be read, the key may be perfectly valid: a 401 would make clients drop a
live key. A simple-response authorizer can only allow or deny (raising makes API Gateway answer a
bare 500), so it allows with `unavailable` set in the context, and the route's handler answers the
contract's 503 service_unavailable (calbot.http.Request.user_id) before doing anything else.
"""

from typing import Any

from calbot.auth import parse_authorization, resolve_key
from calbot.log import logger


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        record = resolve_key(parse_authorization(headers.get("authorization")))
    except Exception as err:
        logger.warning("authorizer lookup failed", extra={"error": type(err).__name__})
        return {"isAuthorized": True, "context": {"user_id": "", "key_id": "", "unavailable": True}}
    if record is None:
        return {"isAuthorized": True, "context": {"user_id": "", "key_id": ""}}
    return {"isAuthorized": True, "context": {"user_id": record.user_id, "key_id": record.key_id}}
