"""Outbound HTTP to providers: timeouts, retries that honour Retry-After, request counting."""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import requests
from tenacity import RetryCallState, retry_if_exception_type, retry_if_result

from calbot import deadline, timeutil
from calbot.providers.base import ProviderRequestError, ProviderUnavailable, TokenSet
from calbot.retry import retrying

if TYPE_CHECKING:
    from calbot.config import Settings
    from calbot.models import Credentials

RETRY_STATUSES = {429, 500, 502, 503, 504}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ProviderHttp:
    """A requests.Session wrapper; one per provider, shared across invocations for keep-alive."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        max_attempts: int = 4,
        max_retry_after: float = 20.0,
        sleep: Callable[[float], None] = timeutil.sleep,  # the core's one time source (virtual in tests)
        retryable: Callable[[requests.Response], bool] | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self.sleep = sleep
        # Providers that throttle with other statuses (Google: 403 rateLimitExceeded) say so here.
        self.retryable = retryable or (lambda resp: resp.status_code in RETRY_STATUSES)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "calbot/1.0"
        self._count_lock = threading.Lock()
        self.requests_made = 0

    def _backoff(self, attempt: int) -> float:
        return min(8.0, 0.25 * (2 ** (attempt - 1))) * (0.5 + random.random() / 2)

    def _wait(self, state: RetryCallState) -> float:
        """A throttled answer's own Retry-After, else jittered exponential backoff."""
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            wait = parse_retry_after(outcome.result().headers.get("Retry-After"))
            if wait is not None:
                return wait
        return self._backoff(state.attempt_number)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send with retries on 429/5xx/timeouts; return the last response (the caller maps errors).

        Raises ProviderUnavailable when the provider cannot be reached at all, or asks us to wait
        longer than we may: more than ``max_retry_after``, or past the invocation's deadline
        (``calbot.deadline.current()``): a wait that cannot finish in time is never started, and no
        request is sent once the deadline has passed. A throttled answer we have no time to wait out
        (no Retry-After, the backoff past the deadline) is returned for the caller to map.
        """
        budget = deadline.current()
        timeout = kwargs.pop("timeout", self.timeout)
        tries = 0

        def attempt() -> requests.Response:
            nonlocal tries
            tries += 1
            left = budget.remaining()
            if left <= 0:
                raise ProviderUnavailable("Out of time for this request; the provider was not called.")
            with self._count_lock:
                self.requests_made += 1
            # A request never outlives the invocation either.
            resp = self.session.request(method, url, timeout=_bounded(timeout, left), **kwargs)
            if tries < self.max_attempts and self.retryable(resp):
                wait = parse_retry_after(resp.headers.get("Retry-After"))
                if wait is not None and (wait > self.max_retry_after or not budget.allows(wait)):
                    raise ProviderUnavailable(
                        f"The provider is throttling; retry after {math.ceil(wait)} s.",
                        status=resp.status_code,
                        retry_after=wait,
                    )
            return resp

        policy = retrying(
            retry=retry_if_exception_type((requests.ConnectionError, requests.Timeout))
            | retry_if_result(self.retryable),
            attempts=self.max_attempts,
            wait=self._wait,
            sleep=self.sleep,
            retry_error_callback=_last_answer,
        )
        return policy(attempt)

    def bearer(
        self, method: str, url: str, token: str, *, host: str, refusal: str, **kwargs: Any
    ) -> requests.Response:
        """`request` with the access token, only to a URL under `host` (next links included): a token
        never goes anywhere else; any other URL is refused with `refusal` before anything is sent."""
        if not url.startswith(host.rstrip("/") + "/"):
            raise ProviderRequestError(refusal, status=400)
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            **(kwargs.pop("headers", None) or {}),  # Outlook adds Prefer headers
        }
        return self.request(method, url, headers=headers, **kwargs)


def _last_answer(state: RetryCallState) -> requests.Response:
    """Out of attempts or of time: the last answer, or ProviderUnavailable when none came."""
    assert state.outcome is not None
    if state.outcome.failed:
        err = state.outcome.exception()
        raise ProviderUnavailable(f"The provider did not answer ({type(err).__name__}).") from None
    return cast(requests.Response, state.outcome.result())


def _bounded(timeout: Any, left: float) -> Any:
    """requests' timeout (seconds or a (connect, read) pair) cut to the time left."""
    if timeout is None:
        return left if math.isfinite(left) else None
    if isinstance(timeout, tuple):
        return tuple(_bounded(t, left) for t in timeout)
    return min(float(timeout), left)


def json_object(resp: requests.Response) -> dict[str, Any]:
    """The body as a JSON object; {} for anything else (providers' error pages are not always JSON)."""
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def for_settings(settings: Settings, **kwargs: Any) -> ProviderHttp:
    """A client with the settings' request timeout and longest Retry-After; `kwargs` add a provider's own."""
    return ProviderHttp(
        timeout=settings.http_timeout_seconds, max_retry_after=settings.max_retry_after_seconds, **kwargs
    )


def refresh_grant(
    http: ProviderHttp, url: str, creds: Credentials, **extra: str
) -> tuple[requests.Response, dict[str, Any], TokenSet | None]:
    """An OAuth 2.0 refresh_token grant (RFC 6749 6): the answer, its JSON body, and the new tokens when
    it worked (None: the caller maps the provider's error, which differs between providers)."""
    data = {
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
        "grant_type": "refresh_token",
        "refresh_token": creds.refresh_token,
        **extra,
    }
    resp = http.request("POST", url, data=data)
    body = json_object(resp)
    if resp.status_code != 200 or not body.get("access_token"):
        return resp, body, None
    tokens = TokenSet(
        access_token=body["access_token"],
        refresh_token=body.get("refresh_token"),
        expires_at=timeutil.now() + timedelta(seconds=int(body.get("expires_in", 3600))),
        scope=str(body.get("scope") or ""),
    )
    return resp, body, tokens
