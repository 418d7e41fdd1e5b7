"""POST /api/v1/webhooks/{id}/test: send a webhook.test event to one customer webhook."""

from calbot.http import Request, Response, api_handler
from calbot.models import WebhookPath
from calbot.services.webhook_delivery import send_test


@api_handler
def handler(request: Request) -> Response:
    user_id = request.user_id
    return Response(202, send_test(user_id, request.path_as(WebhookPath).webhook_id))
