"""GET /api/v1/calendar/auto-schedule/settings: the user's auto-schedule settings and last run."""

from calbot.http import Request, api_handler
from calbot.models import AutoScheduleSettingsView
from calbot.services.auto_schedule import get_settings_view


@api_handler
def handler(request: Request) -> AutoScheduleSettingsView:
    return get_settings_view(request.user_id)
