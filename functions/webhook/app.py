"""POST /api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}: provider notifications.

No API key: each notification is authenticated by its per-subscription secret. The HTTP side lives
here: Graph's validation handshake (echo `?validationToken=` as text/plain), and reading the path, the
headers and the JSON body into a Notice; the service has the provider the path names check it (each
provider reads its own format, e.g. Google's header-only notifications) and enqueues. Every
notification is answered the provider's way (202; a Google channel's `sync` 200) whatever was dropped.
"""

from urllib.parse import unquote

from calbot.errors import Invalid
from calbot.http import Request, Response, api_handler
from calbot.services.notifications import Notice, receive

MAX_VALIDATION_TOKEN = 2048


@api_handler(public=True)
def handler(request: Request) -> Response:
    token = request.query.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            raise Invalid("invalid_request", "validationToken is too long.")
        return Response(200, text=token)
    try:
        body = request.json()
    except Exception:  # too large, not JSON, not an object: dropped, answered as any other
        body = None
    path = request.path_params
    account_id = unquote(path.get("account_id", ""))
    notice = Notice(path.get("user_id", ""), path.get("provider", ""), account_id, request.headers, body)
    return Response(receive(notice).answer)
