"""PATCH /api/v1/calendar/scheduled_bots/{bot_id}: join time or config; record and schedule together."""

from calbot.http import Request, api_handler
from calbot.models import BotPath, BotView, PatchBotRequest
from calbot.services.schedule import update_bot


@api_handler
def handler(request: Request) -> BotView:
    bot_id = request.path_as(BotPath).bot_id
    return update_bot(request.user_id, bot_id, request.body_as(PatchBotRequest))
