"""cron(20 * * * ? *): the bots joining beyond ARM_WITHIN when they were made, now within it, go to the
launch queue, which arms them (calbot.services.arming)."""

from typing import Any

from calbot.config import get_settings
from calbot.services.arming import run_arming


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return run_arming(get_settings().require("launch_queue_url"))
