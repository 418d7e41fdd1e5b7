"""SQS consumer: renew the subscriptions of each message, each on its own (partial batch failures)."""

from typing import Any

from calbot.deadline import Deadline, active
from calbot.services.subscriptions import consume


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with active(Deadline.from_context(context)):
        return consume(event)
