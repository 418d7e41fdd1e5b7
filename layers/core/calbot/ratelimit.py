"""Per-API-key rate limiting: a fixed one-minute window per key with a per-second burst cap.

Every request that carries a valid API key costs exactly one conditional UpdateItem (one write unit,
see `store.count_request`): the counters of the key's current window and of the current second in it
are incremented together unless either is at its limit, so concurrent Lambdas never over-admit and no
read is needed first. A token bucket would need a read-modify-write (two calls and a retry loop on
contention), since DynamoDB update expressions cannot compute a refill from elapsed time.

A fixed window admits up to twice the per-minute limit across a window boundary; the burst cap bounds
how fast that can happen. The limiter fails open: when DynamoDB cannot be reached the request goes
through (with a warning log line), because refusing or failing every call for a counter outage would
turn a hiccup of a best-effort guard into an outage of the whole API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calbot import store
from calbot.config import get_settings
from calbot.errors import RateLimited
from calbot.log import logger
from calbot.timeutil import now

WINDOW_SECONDS = 60
# Counter items outlive their window a little (DynamoDB deletes expired items lazily anyway).
TTL_GRACE_SECONDS = 300


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # seconds until a retry can succeed (when refused)
    limit: str = ""  # "minute" or "burst" (when refused)


ALLOWED = Verdict(True)


def check(key_id: str) -> Verdict:
    """Count this request against the key's limits; a refusal says when to come back."""
    settings = get_settings()
    if settings.rate_limit_per_minute <= 0:
        return ALLOWED
    t = now().timestamp()
    window_start = int(t // WINDOW_SECONDS) * WINDOW_SECONDS
    window_end = window_start + WINDOW_SECONDS
    try:
        result = store.count_request(
            key_id,
            window_start,
            int(t) - window_start,
            window_limit=settings.rate_limit_per_minute,
            second_limit=settings.rate_limit_burst,
            ttl_epoch=window_end + TTL_GRACE_SECONDS,
        )
    except Exception as err:  # fail open: see the module docstring
        logger.warning("rate limit check failed; request allowed", extra={"error": type(err).__name__})
        return ALLOWED
    if result.counted:
        return ALLOWED
    if result.window_count >= settings.rate_limit_per_minute:
        return Verdict(False, max(1, math.ceil(window_end - t)), "minute")
    return Verdict(False, 1, "burst")  # the next second has a fresh burst allowance


def rate_limited(verdict: Verdict) -> RateLimited:
    settings = get_settings()
    if verdict.limit == "burst":
        what = f"at most {settings.rate_limit_burst} requests in one second"
    else:
        what = f"at most {settings.rate_limit_per_minute} requests a minute"
    seconds = "second" if verdict.retry_after == 1 else "seconds"
    return RateLimited(
        "rate_limited",
        f"Too many requests with this API key ({what}). Retry in {verdict.retry_after} {seconds}.",
        retry_after=verdict.retry_after,
    )
