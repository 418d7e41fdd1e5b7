"""GET /api/v1/calendar/events: sync the in-scope accounts, then return stored events, paged."""

import calbot.services.sync  # noqa: F401  a first page syncs: loaded at init, not by the first call
from calbot.http import Request, api_handler
from calbot.models import EventPage, EventsQuery
from calbot.services.events import list_events


@api_handler
def handler(request: Request) -> EventPage:
    user_id = request.user_id
    query = request.query_as(EventsQuery)
    return list_events(
        user_id,
        query,
        raw_params=request.query,
        base_url=request.base_url,
        path=request.path,
        sync=query.sync,
        deadline=request.deadline,
    )
