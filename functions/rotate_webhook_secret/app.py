"""POST /api/v1/webhooks/{webhook_id}/rotate-secret: a new secret, shown once; the old one signs
beside it for 24 hours."""

from calbot.http import Request, api_handler
from calbot.models import WebhookPath, WebhookSecretRotated
from calbot.services.webhooks import rotate_secret


@api_handler
def handler(request: Request) -> WebhookSecretRotated:
    user_id = request.user_id
    return rotate_secret(user_id, request.path_as(WebhookPath).webhook_id)
