"""DELETE /api/v1/webhooks/{webhook_id}: the endpoint and its secrets."""

from calbot.http import Request, api_handler
from calbot.models import WebhookDeleted, WebhookPath
from calbot.services.webhooks import delete_webhook


@api_handler
def handler(request: Request) -> WebhookDeleted:
    user_id = request.user_id
    return delete_webhook(user_id, request.path_as(WebhookPath).webhook_id)
