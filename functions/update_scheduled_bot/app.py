"""PATCH /api/v1/calendar/scheduled_bots/{bot_id}: join time or config; record and schedule together."""

from calbot.http import Request, api_handler
from calbot.models import BotView, PatchBotRequest
from calbot.services.schedule import update_bot


@api_handler
def handler(request: Request) -> BotView:
    user_id = request.user_id
    body = request.body_as(PatchBotRequest)
    return update_bot(user_id, request.path_params.get("bot_id", ""), body)
