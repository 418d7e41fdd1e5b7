"""POST /api/v1/calendar/create_outlook_calendar (and its alias create_calendar): connect one account."""

from calbot.http import Request, Response, api_handler
from calbot.models import CreateConnectionRequest
from calbot.services.connect import connect_account


@api_handler
def handler(request: Request) -> Response:
    user_id = request.user_id
    body = request.body_as(CreateConnectionRequest)
    status, created = connect_account(user_id, body, base_url=request.base_url)
    return Response(status, created)
