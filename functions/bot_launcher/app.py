"""The bot launcher: target of a bot's launch schedule (sends the delayed launch message) and consumer
of the launch queue (launches the batch's bots at their join time; idempotent). It never waits out a
join time."""

from typing import Any

import requests  # noqa: F401  every launch posts to the Create Bot API: loaded at init, not by the first call

from calbot.deadline import Deadline, active
from calbot.models import ScheduleInput
from calbot.services.launcher import arm, consume


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with active(Deadline.from_context(context)):
        if "Records" in event:
            return consume(event)
        return arm(ScheduleInput.model_validate(event))
