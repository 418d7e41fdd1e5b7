"""PUT /api/v1/calendar/auto-schedule/rules: which meetings get an automatic bot."""

from calbot.http import Request, api_handler
from calbot.models import AutoScheduleRules, AutoScheduleSettingsView
from calbot.services.auto_schedule import set_rules


@api_handler
def handler(request: Request) -> AutoScheduleSettingsView:
    user_id = request.user_id
    return set_rules(user_id, request.body_as(AutoScheduleRules))
