"""Customer webhook delivery (issue 19, part B owns this module).

PLACEHOLDER until part B's delivery pipeline is merged: `enqueue_event` is the seam calbot.webhook_events
calls (webhooks_contract.md). Part B replaces this module with the real one (the user's enabled
endpoints subscribed to the type, one delivery each, through a queue).
"""

from __future__ import annotations

from calbot.log import logger
from calbot.models import WebhookEvent


def enqueue_event(user_id: str, event: WebhookEvent) -> None:
    """Queue one delivery per subscribed endpoint (placeholder: records nothing, sends nothing)."""
    logger.debug("webhook event", extra={"user_id": user_id, "event_id": event.id, "event_type": event.type})
