"""DELETE /api/v1/calendar/schedule/{event_id}: cancel an event's scheduled bots."""

from calbot.http import Request, api_handler
from calbot.models import CancelResult, UnscheduleRequest
from calbot.services.schedule import unschedule_event


@api_handler
def handler(request: Request) -> CancelResult:
    user_id = request.user_id
    body = request.body_as(UnscheduleRequest)
    return unschedule_event(user_id, request.path_params.get("event_id", ""), body)
