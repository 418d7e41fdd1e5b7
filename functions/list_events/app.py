"""GET /api/v1/calendar/events: sync the in-scope accounts, then return stored events, paged."""

import calbot.services.sync  # noqa: F401  a first page syncs (by default): loaded at init, not by the first call
from calbot.http import Request, api_handler, with_links
from calbot.models import EventPage, EventsQuery
from calbot.services.events import list_events


@api_handler
def handler(request: Request) -> EventPage:
    user_id = request.user_id
    query = request.query_as(EventsQuery)
    page = list_events(user_id, query, raw_params=request.query, sync=query.sync, deadline=request.deadline)
    return with_links(request, page)
