"""`python -m oauth_helper [--port N] [--env-file PATH]` (what `make oauth-helper` runs).

Serves on 127.0.0.1 only: the pages show refresh tokens and client secrets, so nothing else on the
network may reach them. Access log lines carry the method, the path and the status, never the query
string (the callback's query holds the authorization code).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from oauth_helper.config import load_settings
from oauth_helper.flow import providers
from oauth_helper.web import OAuthHelperApp

HOST = "127.0.0.1"
_QUERY = re.compile(r"\?[^\s\"']*")


def redact_query(message: str) -> str:
    return _QUERY.sub("?<redacted>", message)


class PathOnlyRequestHandler(WSGIRequestHandler):
    """werkzeug's handler, but every line it logs (access and error lines, which quote the request
    line) has its query strings removed."""

    def log(self, type: str, message: str, *args: Any) -> None:
        text = message % args if args else message
        super().log(type, "%s", redact_query(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oauth_helper",
        description="Get a Microsoft or Google refresh token for calbot in your browser.",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port on localhost (default: OAUTH_HELPER_PORT or 3000)"
    )
    parser.add_argument(
        "--env-file", type=Path, default=None, help="credentials file (default: ./.env; may be absent)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = load_settings(env_file=args.env_file, port=args.port)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = OAuthHelperApp(settings)
    try:
        server = make_server(HOST, settings.port, app, threaded=True, request_handler=PathOnlyRequestHandler)
    except SystemExit:  # werkzeug prints why it could not bind, then exits; add what to do about it
        print(
            f"error: could not listen on port {settings.port}. If the port is in use, pick another "
            "with --port or OAUTH_HELPER_PORT and register the matching redirect URIs.",
            file=sys.stderr,
        )
        return 1
    lines = [f"OAuth helper: open {settings.base_url} in your browser", "Redirect URIs to register:"]
    for provider in providers(settings).values():
        status = "ready" if provider.configured else f"disabled, set {' and '.join(provider.missing)}"
        lines.append(f"  {provider.label:<9} {provider.redirect_uri}   ({status})")
    lines.append(f"calbot API for the curl: {settings.calbot_api_url}")
    lines.append("Ctrl-C stops it.")
    print("\n".join(lines), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
