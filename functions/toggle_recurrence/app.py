"""POST /api/v1/calendar/toggle-recurrence: auto-rescheduling of a recurring event on or off."""

from calbot.http import Request, api_handler
from calbot.models import ToggleRecurrenceRequest, ToggleRecurrenceResult
from calbot.services.schedule import toggle_recurrence


@api_handler
def handler(request: Request) -> ToggleRecurrenceResult:
    user_id = request.user_id
    body = request.body_as(ToggleRecurrenceRequest)
    return toggle_recurrence(user_id, body.event_id, body.recurring_enabled)
