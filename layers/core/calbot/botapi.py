"""The Create Bot API (outbound): POST {BOT_API_URL}/bots/create_bot with the service credential from SSM."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from tenacity import retry_if_exception_type, wait_exponential

from calbot import deadline, params
from calbot.config import get_settings
from calbot.retry import retrying

if TYPE_CHECKING:
    import requests


@cache
def _session() -> requests.Session:
    """One keep-alive session per container, made on the first launch: `requests` costs ~30 ms to
    import, and functions that only import the launcher's module (recurrence_reschedule) never post."""
    import requests

    return requests.Session()


class BotApiUnavailable(Exception):
    """5xx, timeouts, connection errors: worth trying again later."""


@dataclass(frozen=True)
class BotApiRejected(Exception):
    status: int
    detail: str


def _api_key() -> str:
    """The service credential, re-read from SSM once it is older than params.PARAMETER_MAX_AGE_SECONDS."""
    return params.get_secure(get_settings().bot_api_key_param)


def create_bot(body: dict[str, Any], *, idempotency_key: str, attempts: int = 3) -> dict[str, Any]:
    """The created bot (its `bot_id`); retries 5xx, 429 and timeouts a few times within this invocation.

    Waits 1 s, then 2 s, between tries, never past the deadline: when the next wait would end after it,
    BotApiUnavailable is raised at once and the launcher's retry-later path takes over.
    """
    url = f"{get_settings().bot_api_url.rstrip('/')}/bots/create_bot"
    headers = {"Authorization": f"Token {_api_key()}", "Idempotency-Key": idempotency_key}
    budget = deadline.current()
    import requests  # see _session

    def attempt() -> dict[str, Any]:
        if budget.expired:
            raise BotApiUnavailable("out of time")
        try:
            resp = _session().post(url, json=body, headers=headers, timeout=min(15.0, budget.remaining()))
        except (requests.ConnectionError, requests.Timeout) as err:
            raise BotApiUnavailable(type(err).__name__) from None
        if resp.status_code in (200, 201):
            data = resp.json()
            if not isinstance(data, dict) or not data.get("bot_id"):
                raise BotApiRejected(resp.status_code, "the answer carried no bot_id")
            return data
        if resp.status_code < 500 and resp.status_code != 429:
            raise BotApiRejected(resp.status_code, resp.text[:300])
        raise BotApiUnavailable(f"HTTP {resp.status_code}")

    policy = retrying(
        retry=retry_if_exception_type(BotApiUnavailable),
        attempts=attempts,
        wait=wait_exponential(multiplier=1, exp_base=2),
    )
    return policy(attempt)
