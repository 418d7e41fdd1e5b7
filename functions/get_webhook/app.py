"""GET /api/v1/webhooks/{webhook_id}: one endpoint (never its secret)."""

from calbot.http import Request, api_handler
from calbot.models import WebhookPath, WebhookView
from calbot.services.webhooks import get_webhook


@api_handler
def handler(request: Request) -> WebhookView:
    user_id = request.user_id
    return get_webhook(user_id, request.path_as(WebhookPath).webhook_id)
