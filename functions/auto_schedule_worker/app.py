"""SQS consumer: one user's next 24 hours per message, with partial-batch failure reporting."""

from typing import Any

import calbot.services.sync  # noqa: F401  every message syncs: loaded at init, not by the first call
from calbot.deadline import Deadline, active
from calbot.services.auto_schedule import consume


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with active(Deadline.from_context(context)):
        return consume(event)
