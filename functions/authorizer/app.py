"""HttpApi Lambda REQUEST authorizer (payload 2.0, simple responses).

Resolves `Authorization: Token <key>` (or `Bearer <key>`) to a user id and the key's non-secret
key_id (what the per-key rate limiter counts under). It never denies: HTTP APIs cannot shape the
authorizer's own 401/403 bodies, so each handler answers the contract's 401 {"error": "unauthorized"}
itself when `user_id` is empty.
"""

from typing import Any

from calbot.auth import parse_authorization, resolve_key
from calbot.log import logger


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        record = resolve_key(parse_authorization(headers.get("authorization")))
    except Exception:
        logger.exception("authorizer lookup failed")
        record = None
    if record is None:
        return {"isAuthorized": True, "context": {"user_id": "", "key_id": ""}}
    return {"isAuthorized": True, "context": {"user_id": record.user_id, "key_id": record.key_id}}
