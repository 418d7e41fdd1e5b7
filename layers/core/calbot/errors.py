"""Domain errors: what the core raises when it refuses. They know nothing of HTTP.

Each kind says what went wrong (not found, conflict, invalid input...), and each error carries a stable
snake_case `code` (the `error` field of the API's answer, API.md), a human `message`, `details` (extra
fields of the answer) and, for the kinds a client may simply retry, `retry_after` seconds.
calbot.http turns them into answers with one table (`STATUS`); nothing else knows a status.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal. Raise one of the kinds below; a bare DomainError has no answer and is a bug."""

    def __init__(self, code: str, message: str, *, retry_after: int | None = None, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.details = details


class Invalid(DomainError):
    """The request cannot be done as asked (bad input, or a state that makes it impossible)."""


class Unauthenticated(DomainError):
    """No valid API key."""


class Forbidden(DomainError):
    """Authenticated, but not allowed to act on this."""


class NotFound(DomainError):
    """What the request names does not exist (for this user)."""


class Conflict(DomainError):
    """The thing exists but is in a state (or a race) that refuses the change."""


class TooLarge(DomainError):
    """The request body is larger than we read."""


class UnsupportedMedia(DomainError):
    """The request body is not in a format we read."""


class RateLimited(DomainError):
    """Too many requests with one key; `retry_after` says when the next one is allowed."""


class ProviderFailed(DomainError):
    """The calendar provider was unavailable or refused a request we had to make."""


class Unavailable(DomainError):
    """We (or AWS behind us) could not finish right now; calling again may succeed."""


def unauthorized() -> Unauthenticated:
    return Unauthenticated(
        "unauthorized", "A valid API key is required: send 'Authorization: Token <api_key>'."
    )


def service_unavailable() -> Unavailable:
    """AWS (or the key store behind the authorizer) was briefly unavailable: the client may retry."""
    return Unavailable(
        "service_unavailable", "The service is briefly unavailable; retry shortly.", retry_after=2
    )
