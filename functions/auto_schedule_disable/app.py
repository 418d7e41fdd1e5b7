"""POST /api/v1/calendar/auto-schedule/disable: turn auto-scheduling off (scheduled bots stay)."""

from calbot.http import Request, api_handler
from calbot.models import AutoScheduleSettingsView
from calbot.services.auto_schedule import disable


@api_handler
def handler(request: Request) -> AutoScheduleSettingsView:
    return disable(request.user_id)
