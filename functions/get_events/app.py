"""GET /api/v1/calendar/get_events: stored events only; never calls a provider."""

from calbot.http import Request, api_handler, with_links
from calbot.models import EventPage, EventsQuery
from calbot.services.events import list_events


@api_handler
def handler(request: Request) -> EventPage:
    user_id = request.user_id
    query = request.query_as(EventsQuery)
    return with_links(request, list_events(user_id, query, raw_params=request.query, sync=False))
