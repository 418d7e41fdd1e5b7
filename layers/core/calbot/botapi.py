"""The Create Bot API (outbound): POST {BOT_API_URL}/bots/create_bot with the service credential from SSM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from calbot import deadline, params
from calbot.config import get_settings
from calbot.timeutil import sleep

_session = requests.Session()


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
    """The created bot (its `bot_id`); retries 5xx and timeouts a few times within this invocation."""
    url = f"{get_settings().bot_api_url.rstrip('/')}/bots/create_bot"
    headers = {"Authorization": f"Token {_api_key()}", "Idempotency-Key": idempotency_key}
    last = ""
    budget = deadline.current()
    for attempt in range(1, attempts + 1):
        if budget.expired:
            last = last or "out of time"
            break
        try:
            resp = _session.post(url, json=body, headers=headers, timeout=min(15.0, budget.remaining()))
        except (requests.ConnectionError, requests.Timeout) as err:
            last = type(err).__name__
        else:
            if resp.status_code in (200, 201):
                data = resp.json()
                if not isinstance(data, dict) or not data.get("bot_id"):
                    raise BotApiRejected(resp.status_code, "the answer carried no bot_id")
                return data
            if resp.status_code < 500 and resp.status_code != 429:
                raise BotApiRejected(resp.status_code, resp.text[:300])
            last = f"HTTP {resp.status_code}"
        pause = 2 ** (attempt - 1)
        if attempt < attempts:
            if not budget.allows(pause):
                break  # the launcher's retry-later path takes over; never sleep past the deadline
            sleep(pause)
    raise BotApiUnavailable(last)
