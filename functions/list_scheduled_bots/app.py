"""GET /api/v1/calendar/scheduled_bots: bots whose join time is in the future, soonest first."""

from calbot.http import Request, api_handler, with_links
from calbot.models import BotPage, ScheduledBotsQuery
from calbot.services.schedule import list_bots


@api_handler
def handler(request: Request) -> BotPage:
    user_id = request.user_id
    query = request.query_as(ScheduledBotsQuery)
    return with_links(request, list_bots(user_id, query, raw_params=request.query))
