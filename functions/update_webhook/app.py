"""PATCH /api/v1/webhooks/{webhook_id}: url (checked again), event_types, description, enabled."""

from calbot.http import Request, api_handler
from calbot.models import PatchWebhookRequest, WebhookPath, WebhookView
from calbot.services.webhooks import update_webhook


@api_handler
def handler(request: Request) -> WebhookView:
    webhook_id = request.path_as(WebhookPath).webhook_id
    return update_webhook(request.user_id, webhook_id, request.body_as(PatchWebhookRequest))
