"""cron(0 0 * * ? *): enqueue one auto-schedule message per enabled user (the fan-out; no work here)."""

import os
from typing import Any

from calbot.services.auto_schedule import fan_out


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return fan_out(os.environ["AUTO_SCHEDULE_QUEUE_URL"])
