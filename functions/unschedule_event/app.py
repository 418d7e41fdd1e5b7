"""DELETE /api/v1/calendar/schedule/{event_id}: cancel an event's scheduled bots."""

from calbot.http import Request, api_handler
from calbot.models import CancelResult, EventPath, UnscheduleRequest
from calbot.services.schedule import unschedule_event


@api_handler
def handler(request: Request) -> CancelResult:
    user_id = request.user_id
    path = request.path_as(EventPath)
    body = request.body_as(UnscheduleRequest)
    return unschedule_event(user_id, path.event_id, body)
