"""GET /api/v1/webhooks/{id}/deliveries: a customer webhook's recent deliveries, newest first."""

from calbot.http import Request, api_handler, with_links
from calbot.models import DeliveriesQuery, DeliveryPage, WebhookPath
from calbot.services.webhook_delivery import list_deliveries


@api_handler
def handler(request: Request) -> DeliveryPage:
    user_id = request.user_id
    webhook_id = request.path_as(WebhookPath).webhook_id
    return with_links(request, list_deliveries(user_id, webhook_id, request.query_as(DeliveriesQuery)))
