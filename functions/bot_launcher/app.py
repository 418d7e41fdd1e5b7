"""Target of a bot's one-time schedule: waits the last seconds, then launches the bot (idempotent)."""

from typing import Any

import requests  # noqa: F401  every launch posts to the Create Bot API: loaded at init, not by the first call

from calbot.deadline import Deadline, active
from calbot.models import ScheduleInput
from calbot.services.launcher import launch


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    payload = ScheduleInput.model_validate(event)
    with active(Deadline.from_context(context)):
        return launch(payload.user_id, payload.bot_id)
