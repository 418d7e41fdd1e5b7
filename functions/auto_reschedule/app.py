"""POST /api/v1/calendar/auto-reschedule: schedule a series' next occurrence with its last config."""

from calbot.errors import Forbidden
from calbot.http import Request, Response, api_handler
from calbot.models import AutoRescheduleRequest, NothingScheduled
from calbot.services.schedule import auto_reschedule


@api_handler
def handler(request: Request) -> Response:
    user_id = request.user_id
    body = request.body_as(AutoRescheduleRequest)
    if body.user_id and body.user_id != user_id:
        raise Forbidden("forbidden", "user_id must be your own.")
    result = auto_reschedule(user_id, body.event_id)
    if result is None:
        return Response(
            200,
            NothingScheduled(
                message="The next occurrence already has a bot, or there is no upcoming occurrence."
            ),
        )
    return Response(201, result)
