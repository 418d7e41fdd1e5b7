"""GET /api/v1/calendar/connections: every connection of the caller, grouped by provider."""

from calbot.http import Request, api_handler
from calbot.models import ConnectionList
from calbot.services.connections import list_connections


@api_handler
def handler(request: Request) -> ConnectionList:
    return list_connections(request.user_id)
