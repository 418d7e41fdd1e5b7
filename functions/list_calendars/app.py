"""GET /api/v1/calendar/calendars and GET /api/v1/calendar: live calendars of every in-scope account."""

from calbot.http import Request, api_handler
from calbot.models import CalendarList, ScopeQuery
from calbot.services.calendars import list_calendars


@api_handler
def handler(request: Request) -> CalendarList:
    user_id = request.user_id
    return list_calendars(user_id, request.query_as(ScopeQuery))
