"""DELETE /api/v1/calendar/scheduled_bots/{bot_id}: cancel one bot and delete its schedule."""

from calbot.http import Request, api_handler
from calbot.models import BotPath, BotView
from calbot.services.schedule import delete_bot


@api_handler
def handler(request: Request) -> BotView:
    user_id = request.user_id
    return delete_bot(user_id, request.path_as(BotPath).bot_id)
