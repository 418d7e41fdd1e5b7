"""POST /api/v1/calendar/schedule/{event_id}: schedule a bot (this occurrence, the next, one, or many)."""

from calbot.http import Request, Response, api_handler
from calbot.models import EventPath, ScheduleRequest
from calbot.services.schedule import schedule_event


@api_handler
def handler(request: Request) -> Response:
    user_id = request.user_id
    path = request.path_as(EventPath)
    body = request.body_as(ScheduleRequest)
    return Response(201, schedule_event(user_id, path.event_id, body))
