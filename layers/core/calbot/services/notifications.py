"""The per-account provider webhook.

Graph validates a notification URL before creating a subscription by POSTing `?validationToken=...`
and expecting the token back as text/plain within 10 s. Notification processing (clientState check,
enqueue per account) arrives with the real-time changes capability.
"""

from __future__ import annotations

from calbot.http import Request, Response
from calbot.log import logger

MAX_VALIDATION_TOKEN = 2048


def handle(request: Request) -> Response:
    token = request.query.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            return Response(400, {"error": "invalid_request", "message": "validationToken is too long."})
        return Response(200, text=token)
    # Accepted and dropped until notification processing is built; the answer is the same whatever the
    # path names, so it is never an oracle for user or account ids.
    logger.info("notification received", extra={"provider": request.path_params.get("provider")})
    return Response(202)
