"""POST /api/v1/admin/schedule/users/{user_id}/{provider}/{account_id}: provider notifications.

No API key: each notification is authenticated by its per-subscription secret.
"""

from calbot.http import Request, Response, api_handler
from calbot.services.notifications import handle


@api_handler(public=True)
def handler(request: Request) -> Response:
    return handle(request)
