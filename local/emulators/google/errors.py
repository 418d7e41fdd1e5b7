"""The error shapes of Google's endpoints: oauth2.googleapis.com's bare `{"error",
"error_description"}` and the Google API's `{"error": {"errors": [...], "code", "message"}}`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_MSG_401 = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


_MSG_410 = "Sync token is no longer valid, a full sync is required."


# (domain, reason, message) of the errors a fault produces when it names only a status.
_DEFAULT_FAULT_ERROR: dict[int, tuple[str, str, str]] = {
    400: ("global", "badRequest", "Bad Request"),
    401: ("global", "authError", "Invalid Credentials"),
    403: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    404: ("global", "notFound", "Not Found"),
    409: ("global", "duplicate", "The requested identifier already exists."),
    410: ("calendar", "fullSyncRequired", _MSG_410),
    429: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("global", "backendError", "Backend Error"),
    503: ("global", "backendError", "Backend Error"),
}


_REASON_MESSAGES = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Calendar usage limits exceeded."),
    "backendError": ("global", "Backend Error"),
    "authError": ("global", "Invalid Credentials"),
    "fullSyncRequired": ("calendar", _MSG_410),
    "forbidden": ("global", "Forbidden"),
}


class _OAuthError(Exception):
    """An oauth2.googleapis.com error: `{"error": ..., "error_description": ...}`."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status, self.error, self.description = status, error, description


class _ApiError(Exception):
    """A Google API error: `{"error": {"errors": [{domain, reason, message, ...}], "code", "message"}}`."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str = "parameter",
        status_text: str | None = None,
        top_message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message, self.domain = status, reason, message, domain
        self.location, self.location_type, self.status_text = location, location_type, status_text
        self.top_message = top_message or message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location is not None:
            item.update(locationType=self.location_type, location=self.location)
        error: dict[str, Any] = {"errors": [item], "code": self.status, "message": self.top_message}
        if self.status_text:
            error["status"] = self.status_text
        return {"error": error}


def _unauthenticated() -> _ApiError:
    return _ApiError(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
        status_text="UNAUTHENTICATED",
        top_message=_MSG_401,
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'},
    )


def _insufficient_scopes() -> _ApiError:
    return _ApiError(
        403,
        "insufficientPermissions",
        "Insufficient Permission",
        status_text="PERMISSION_DENIED",
        top_message="Request had insufficient authentication scopes.",
    )


def _not_found() -> _ApiError:
    return _ApiError(404, "notFound", "Not Found")


def _invalid_param(name: str, message: str | None = None) -> _ApiError:
    return _ApiError(400, "invalid", message or "Invalid Value", location=name)


def _parse_rfc3339(raw: str, name: str) -> datetime:
    """A timeMin/timeMax/updatedMin value: RFC 3339 with a mandatory offset, else 400."""
    text = raw.strip()
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _ApiError(400, "badRequest", "Bad Request") from None
    if "T" not in text.upper() or value.tzinfo is None:
        raise _ApiError(400, "badRequest", "Bad Request")
    return value.astimezone(UTC)


def _parse_bool(raw: str | None, name: str, default: bool) -> bool:
    if raw is None:
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise _invalid_param(name, f"Invalid boolean value: '{raw}'.")
