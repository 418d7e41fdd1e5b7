"""cron(0 0 * * ? *): enqueue one auto-schedule message per enabled user (the fan-out; no work here)."""

from typing import Any

from calbot.config import get_settings
from calbot.services.auto_schedule import fan_out


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return fan_out(get_settings().require("auto_schedule_queue_url"))
