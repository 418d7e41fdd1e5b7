"""GET /api/v1/webhooks: the caller's webhook endpoints (never their secrets)."""

from calbot.http import Request, api_handler
from calbot.models import WebhookList
from calbot.services.webhooks import list_webhooks


@api_handler
def handler(request: Request) -> WebhookList:
    return list_webhooks(request.user_id)
