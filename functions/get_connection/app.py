"""GET /api/v1/calendar/connections/{provider}/{account_id}: one connection record."""

from calbot.http import Request, api_handler
from calbot.models import ConnectionPath, ConnectionView
from calbot.services.connections import get_connection


@api_handler
def handler(request: Request) -> ConnectionView:
    user_id = request.user_id
    return get_connection(user_id, request.path_as(ConnectionPath))
