"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of the public API (no API key needed)."""

from calbot.http import Request, Response, api_handler
from calbot.openapi import document


@api_handler(public=True)
def handler(request: Request) -> Response:
    # Public and the same for everyone: caches may keep it for a while.
    return Response(200, document(), {"cache-control": "public, max-age=300"})
