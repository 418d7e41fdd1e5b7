"""The helper's settings: credentials and endpoints from a `.env` file and the real environment.

Real environment variables win over the `.env` file (python-dotenv's usual precedence), so a one-off
`MICROSOFT_TENANT=contoso.onmicrosoft.com python -m oauth_helper` works without editing the file.
Endpoints are settings so that the local emulators can stand in for Microsoft and Google.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 3000
API_URL_PLACEHOLDER = "https://<your-api>/api/v1"
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,253}$")

KEYS = (
    "MICROSOFT_CLIENT_ID",
    "MICROSOFT_CLIENT_SECRET",
    "MICROSOFT_TENANT",
    "MICROSOFT_LOGIN_BASE_URL",
    "GRAPH_BASE_URL",
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "GOOGLE_AUTH_URL",
    "GOOGLE_TOKEN_URL",
    "GOOGLE_USERINFO_URL",
    "CALBOT_API_URL",
    "OAUTH_HELPER_PORT",
)


@dataclass(frozen=True)
class Settings:
    port: int = DEFAULT_PORT
    microsoft_client_id: str = ""
    microsoft_client_secret: str = ""
    microsoft_tenant: str = "common"
    microsoft_login_base_url: str = "https://login.microsoftonline.com"
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    google_client_id: str = ""
    google_client_secret: str = ""
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    calbot_api_url: str = API_URL_PLACEHOLDER

    @property
    def base_url(self) -> str:
        # `localhost`, not 127.0.0.1: the redirect URI users register in Azure/Google says localhost.
        return f"http://localhost:{self.port}"


def local_stack_api_url(state_file: Path = ROOT / ".local" / "stack.json") -> str | None:
    """The running local stack's API URL (written by `python -m local.stack`), if there is one."""
    try:
        url = json.loads(state_file.read_text()).get("api_url")
    except (OSError, ValueError, AttributeError):
        return None
    return url if isinstance(url, str) and url else None


def load_settings(
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    port: int | None = None,
    stack_state: Path = ROOT / ".local" / "stack.json",
) -> Settings:
    """Settings from `env_file` (default ./.env; a missing file is fine) overlaid with `environ`
    (default os.environ); an explicit `port` (--port) beats both."""
    path = env_file if env_file is not None else Path.cwd() / ".env"
    file_values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    env = os.environ if environ is None else environ
    values = {key: (env.get(key) or file_values.get(key) or "").strip() for key in KEYS}
    defaults = Settings()

    def pick(key: str, default: str) -> str:
        return values[key] or default

    if port is None:
        raw_port = values["OAUTH_HELPER_PORT"]
        try:
            port = int(raw_port) if raw_port else DEFAULT_PORT
        except ValueError:
            raise ValueError(f"OAUTH_HELPER_PORT must be a number, not {raw_port!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, not {port}")
    tenant = pick("MICROSOFT_TENANT", defaults.microsoft_tenant)
    if not _TENANT_RE.match(tenant):  # it becomes a URL path segment
        raise ValueError("MICROSOFT_TENANT must be common, organizations, consumers, a domain or a GUID")
    return Settings(
        port=port,
        microsoft_client_id=values["MICROSOFT_CLIENT_ID"],
        microsoft_client_secret=values["MICROSOFT_CLIENT_SECRET"],
        microsoft_tenant=tenant,
        microsoft_login_base_url=pick("MICROSOFT_LOGIN_BASE_URL", defaults.microsoft_login_base_url).rstrip(
            "/"
        ),
        graph_base_url=pick("GRAPH_BASE_URL", defaults.graph_base_url).rstrip("/"),
        google_client_id=values["GOOGLE_CLIENT_ID"],
        google_client_secret=values["GOOGLE_CLIENT_SECRET"],
        google_auth_url=pick("GOOGLE_AUTH_URL", defaults.google_auth_url),
        google_token_url=pick("GOOGLE_TOKEN_URL", defaults.google_token_url),
        google_userinfo_url=pick("GOOGLE_USERINFO_URL", defaults.google_userinfo_url),
        calbot_api_url=(
            values["CALBOT_API_URL"] or local_stack_api_url(stack_state) or API_URL_PLACEHOLDER
        ).rstrip("/"),
    )
