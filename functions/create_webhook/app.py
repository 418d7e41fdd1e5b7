"""POST /api/v1/webhooks: register an endpoint; the answer shows its signing secret, once."""

from calbot.http import Request, Response, api_handler
from calbot.models import CreateWebhookRequest
from calbot.services.webhooks import create_webhook


@api_handler
def handler(request: Request) -> Response:
    user_id = request.user_id
    return Response(201, create_webhook(user_id, request.body_as(CreateWebhookRequest)))
