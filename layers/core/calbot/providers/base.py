"""The interface every calendar provider implements, and the errors they raise.

Services above this line never know which provider they talk to. Errors are split by what the caller
must do: `ProviderAuthError` (credentials are dead: mark the connection needs_reauth),
`ProviderUnavailable` (throttled, 5xx, timeout: try again later, never needs_reauth), and
`ProviderRequestError` (the provider refused this one request, e.g. 403/404 on a calendar).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

from calbot.models import CalendarInfo, Credentials, ProviderName


class ProviderError(Exception):
    """Base class. `message` is safe to show to the user and to log: it never contains a token."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProviderAuthError(ProviderError):
    def __init__(self, message: str, *, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # invalid_grant | invalid_client | unauthorized | consent_required
        self.code = code  # e.g. AADSTS70008


class ProviderUnavailable(ProviderError):
    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ProviderRequestError(ProviderError):
    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None  # None when the provider did not rotate it
    expires_at: datetime
    scope: str

    def __repr__(self) -> str:
        return f"TokenSet(expires_at={self.expires_at!r}, scope={self.scope!r})"


@dataclass(frozen=True)
class AccountProfile:
    account_id: str  # primary email as the provider reports it
    email: str | None
    name: str | None
    provider_user_id: str


@dataclass(frozen=True)
class ProviderSubscription:
    id: str
    calendar_id: str
    expires_at: datetime
    resource_id: str | None = None  # Google channels need it to stop


class CalendarProvider(ABC):
    name: ProviderName
    display_name: str
    scopes: str

    @abstractmethod
    def refresh(self, creds: Credentials) -> TokenSet:
        """Exchange the refresh token for an access token (the returned refresh token may be new)."""

    @abstractmethod
    def profile(self, access_token: str) -> AccountProfile: ...

    @abstractmethod
    def list_calendars(self, access_token: str) -> list[CalendarInfo]: ...

    @abstractmethod
    def create_subscription(
        self, access_token: str, *, calendar_id: str, notification_url: str, client_state: str
    ) -> ProviderSubscription: ...

    @abstractmethod
    def get_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        """The subscription if it still exists at the provider, else None."""

    @abstractmethod
    def renew_subscription(self, access_token: str, subscription_id: str) -> ProviderSubscription | None:
        """Extend to the maximum lifetime; None when the provider says it is gone."""

    @abstractmethod
    def delete_subscription(
        self, access_token: str, subscription_id: str, *, resource_id: str | None = None
    ) -> bool:
        """Stop it at the provider; False when it was already gone."""
