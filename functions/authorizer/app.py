"""HttpApi Lambda REQUEST authorizer (payload 2.0, simple responses).

Resolves `Authorization: Token <key>` (or `Bearer <key>`) to a user id. It never denies: HTTP APIs
cannot shape the authorizer's own 401/403 bodies, so each handler answers the contract's
401 {"error": "unauthorized"} itself when `user_id` is empty.
"""

from typing import Any

from calbot.auth import parse_authorization, user_for_key
from calbot.log import logger


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        user_id = user_for_key(parse_authorization(headers.get("authorization")))
    except Exception:
        logger.exception("authorizer lookup failed")
        user_id = None
    return {"isAuthorized": True, "context": {"user_id": user_id or ""}}
