"""GET /api/v1/calendar/auto-schedule/preview: each upcoming meeting, whether it would get an
automatic bot, and why not."""

from calbot.http import Request, api_handler
from calbot.models import PreviewQuery, PreviewResult
from calbot.services.auto_schedule import preview


@api_handler
def handler(request: Request) -> PreviewResult:
    user_id = request.user_id
    return preview(user_id, request.query_as(PreviewQuery))
