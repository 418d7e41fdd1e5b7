"""DELETE /api/v1/calendar/connections/{provider}/{account_id}?purge_events=true: disconnect one account."""

from calbot.http import Request, api_handler
from calbot.models import ConnectionPath, DisconnectQuery, DisconnectResult
from calbot.services.disconnect import disconnect


@api_handler
def handler(request: Request) -> DisconnectResult:
    user_id = request.user_id
    path = request.path_as(ConnectionPath)
    query = request.query_as(DisconnectQuery)
    return disconnect(
        user_id, path.provider, path.account_id, purge_events=query.purge_events, deadline=request.deadline
    )
