"""POST /api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}: provider notifications.

No API key: each notification is authenticated by its per-subscription secret. The HTTP side lives
here: Graph's validation handshake (echo `?validationToken=` as text/plain), reading the path, the
JSON body, and Google's header-only notifications; the service checks and enqueues. Every
notification is answered 202 (a Google channel's `sync` 200) whatever was dropped.
"""

from urllib.parse import unquote

from calbot.errors import Invalid
from calbot.http import Request, Response, api_handler
from calbot.services.notifications import ChannelNotice, Target, receive, receive_channel

MAX_VALIDATION_TOKEN = 2048


@api_handler(public=True)
def handler(request: Request) -> Response:
    token = request.query.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            raise Invalid("invalid_request", "validationToken is too long.")
        return Response(200, text=token)
    path, headers = request.path_params, request.headers
    target = Target(path.get("user_id", ""), path.get("provider", ""), unquote(path.get("account_id", "")))
    if "x-goog-channel-id" in headers:
        notice = _channel_notice(headers)
        receive_channel(target, notice)
        return Response(200 if notice.resource_state == "sync" else 202)
    try:
        body = request.json()
    except Exception:  # too large, not JSON, not an object: dropped, answered as any other
        body = None
    receive(target, body)
    return Response(202)


def _channel_notice(headers: dict[str, str]) -> ChannelNotice:
    return ChannelNotice(
        channel_id=headers.get("x-goog-channel-id", "")[:256],
        token=headers.get("x-goog-channel-token"),
        resource_state=headers.get("x-goog-resource-state", ""),
        resource_id=headers.get("x-goog-resource-id"),
        message_number=headers.get("x-goog-message-number", "")[:32],
    )
