"""POST /api/v1/calendar/auto-schedule/enable: turn auto-scheduling on (and cover the next 24 h at once)."""

from calbot.http import Request, api_handler
from calbot.models import AutoScheduleSettingsView, EnableAutoScheduleRequest
from calbot.services.auto_schedule import enable


@api_handler
def handler(request: Request) -> AutoScheduleSettingsView:
    user_id = request.user_id
    return enable(user_id, request.body_as(EnableAutoScheduleRequest))
