"""SQS FIFO consumer (one message group per account): sync the account, then bots follow its changes."""

from typing import Any

from calbot.deadline import Deadline, active
from calbot.services.notifications import consume


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with active(Deadline.from_context(context)):
        return consume(event)
