"""PATCH /api/v1/calendar/scheduled_bots/{bot_id}: join time or config; record and schedule together."""

from calbot.http import Request, api_handler
from calbot.models import BotPath, BotView, PatchBotRequest
from calbot.services.schedule import update_bot


@api_handler
def handler(request: Request) -> BotView:
    user_id = request.user_id
    path = request.path_as(BotPath)
    body = request.body_as(PatchBotRequest)
    return update_bot(user_id, path.bot_id, body)
