"""POST /api/v1/webhooks/{id}/deliveries/{delivery_id}/retry: attempt one delivery again now."""

from calbot.http import Request, Response, api_handler
from calbot.models import DeliveryPath
from calbot.services.webhook_delivery import retry_delivery


@api_handler
def handler(request: Request) -> Response:
    user_id = request.user_id
    path = request.path_as(DeliveryPath)
    return Response(202, retry_delivery(user_id, path.webhook_id, path.delivery_id))
