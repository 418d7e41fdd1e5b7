"""DELETE /api/v1/calendar/schedule/{event_id}: cancel an event's scheduled bots."""

from calbot.http import Request, api_handler
from calbot.models import CancelResult, EventPath, UnscheduleRequest
from calbot.services.schedule import unschedule_event


@api_handler
def handler(request: Request) -> CancelResult:
    event_id = request.path_as(EventPath).event_id
    return unschedule_event(request.user_id, event_id, request.body_as(UnscheduleRequest))
