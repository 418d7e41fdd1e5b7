"""The customer-webhook delivery worker: consumer of the webhook queue (fans events out to their
endpoints' deliveries, POSTs each due attempt, reschedules failures on the queue)."""

from typing import Any

from calbot.deadline import Deadline, active
from calbot.services.webhook_delivery import consume


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with active(Deadline.from_context(context)):
        return consume(event)
