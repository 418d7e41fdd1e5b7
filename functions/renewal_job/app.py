"""cron(0 3 * * ? *): enqueue the subscriptions expiring within two days, several a message, for the
renewal worker (the fan-out; no provider call here)."""

from typing import Any

from calbot.config import get_settings
from calbot.services.subscriptions import run_renewal


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return run_renewal(get_settings().require("renewal_queue_url"))
