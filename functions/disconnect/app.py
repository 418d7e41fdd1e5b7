"""POST or DELETE /api/v1/calendar/disconnect (legacy): disconnect the one connection in scope."""

from calbot.http import Request, api_handler
from calbot.models import DisconnectResult, LegacyDisconnectRequest
from calbot.services.disconnect import legacy_disconnect


@api_handler
def handler(request: Request) -> DisconnectResult:
    user_id = request.user_id
    return legacy_disconnect(user_id, request.body_as(LegacyDisconnectRequest), deadline=request.deadline)
