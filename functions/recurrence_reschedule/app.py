"""Target of a recurring bot's end-of-meeting schedule: the series' next occurrence gets its bot."""

from typing import Any

from calbot.deadline import Deadline, active
from calbot.models import ScheduleInput
from calbot.services.launcher import reschedule_after_meeting


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    payload = ScheduleInput.model_validate(event)
    with active(Deadline.from_context(context)):
        return reschedule_after_meeting(payload.user_id, payload.bot_id)
