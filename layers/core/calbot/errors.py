"""Errors that map to an HTTP answer: status, snake_case code, human message, extra fields."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "message": self.message, **self.extra}


def not_found(error: str, message: str, **extra: Any) -> ApiError:
    return ApiError(404, error, message, **extra)


def bad_request(error: str, message: str, **extra: Any) -> ApiError:
    return ApiError(400, error, message, **extra)


def unauthorized() -> ApiError:
    return ApiError(
        401, "unauthorized", "A valid API key is required: send 'Authorization: Token <api_key>'."
    )


def service_unavailable() -> ApiError:
    """AWS (or the key store behind the authorizer) was briefly unavailable: the client may retry."""
    return ApiError(
        503,
        "service_unavailable",
        "The service is briefly unavailable; retry shortly.",
        retry_after=2,
    )
